"""`python -m cli <command>`: the lab operator's CLI.

Each command lives in its own module exposing `HELP`, `add_arguments(parser)` and
`run(args) -> int`; modules are imported only when their command runs, so `benchlab report`
does not pay for boto3 or Pulumi.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "local": "cli.local_command",
    "report": "cli.report_command",
    "synth": "cli.synth",
    "preflight": "cli.preflight",
    "cost": "cli.cost",
    "plan": "cli.plan_command",
    "results": "cli.results",
    "leftovers": "cli.leftovers",
    "tools": "cli.tools_command",
    "lock-wheels": "cli.lock_wheels",
    "lock-images": "cli.lock_images",
}


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit code 2."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="benchlab", description="benchlab operator CLI")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = argv[0] if argv and argv[0] in COMMANDS else None
    for name, module_name in COMMANDS.items():
        if wanted and name != wanted:
            sub.add_parser(name)  # listed in usage; its options load when it is chosen
            continue
        module = importlib.import_module(module_name)
        module.add_arguments(sub.add_parser(name, help=module.HELP, description=module.HELP))
    args = parser.parse_args(argv)
    module = importlib.import_module(COMMANDS[args.command])
    try:
        return module.run(args)
    except CliError as err:
        print(f"benchlab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        if not _is_aws_error(err):
            raise
        # One line, whatever the AWS SDK raised (ProfileNotFound, NoCredentialsError, ClientError)
        print(f"benchlab {args.command}: error: AWS: {err}", file=sys.stderr)
        return 2


def _is_aws_error(err: Exception) -> bool:
    """Any botocore error: those a session raises (bad profile, no credentials) and AWS's
    refusals. botocore is only loaded by the commands that use AWS."""
    botocore = sys.modules.get("botocore.exceptions")
    return botocore is not None and isinstance(err, (botocore.BotoCoreError,
                                                     botocore.ClientError))
