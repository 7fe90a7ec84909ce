"""`benchlab tools`: create (or check) the tool virtual environments beside the project's .venv:
Dynamo + NATS and AIPerf for the local lab, checkov for the security scan, aiconfigurator for
`benchlab plan`. Each is installed from its hash lock (facts/locks/); re-running reuses a venv
installed from the lock as it is now."""
from __future__ import annotations

import argparse
from pathlib import Path

from cli.cli import CliError
from local_lab import tool_venvs

HELP = ("set up the tool venvs (dynamo, aiperf, checkov, aiconfigurator) under .venvs/; "
        "reuses what is current")
REPO_ROOT = Path(__file__).resolve().parents[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tools-dir", type=Path, default=REPO_ROOT / ".venvs", metavar="DIR",
                        help="where the tool venvs live (default: .venvs)")
    parser.add_argument("--check", action="store_true",
                        help="only check that every tool venv is current; install nothing")


def run(args: argparse.Namespace) -> int:
    try:
        tool_venvs.ensure_tools(args.tools_dir.resolve(), install=not args.check,
                                tools=tool_venvs.ALL_TOOLS)
    except tool_venvs.ToolSetupError as err:
        raise CliError(str(err)) from None
    print(f"tools ready in {args.tools_dir}: "
          + ", ".join(" ".join(t.requirements()) for t in tool_venvs.ALL_TOOLS))
    return 0
