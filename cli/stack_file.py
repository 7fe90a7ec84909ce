"""Read a stack's `Pulumi.<stack>.yaml` into the validated StackConfig, for the CLI commands
that need the stack config without running Pulumi (preflight, cost, synth).

Secret values (`pulumi config set --secret`) sit in the file encrypted as `{secure: ...}`;
they cannot be decrypted here and are never needed: only which secret keys are set.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cli import offline, pulumi_cli
from cli.cli import CliError
from stacks import config

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class StackFile:
    name: str
    path: Path
    values: dict[str, Any]  # the plain `benchlab:` keys, prefix removed
    secret_keys: tuple[str, ...]  # keys set with --secret (their values stay encrypted)

    def config(self) -> config.StackConfig:
        try:
            return config.parse(self.values)
        except config.ConfigError as err:
            raise CliError(f"{self.path.name}: {err}") from None


def add_stack_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", metavar="NAME",
                        help="stack whose Pulumi.<NAME>.yaml (in the repo root) to read "
                             "(default: the stack `pulumi stack select` chose when the pulumi "
                             f"CLI is installed, else {pulumi_cli.DEFAULT_STACK})")


def load(stack: str | None, root: Path | None = None) -> StackFile:
    """`Pulumi.<stack>.yaml`; stack None is the selected stack (cli/pulumi_cli.py)."""
    stack = pulumi_cli.selected_stack() if stack is None else stack
    root = REPO_ROOT if root is None else root
    path = root / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        known = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in root.glob("Pulumi.*.yaml"))
        raise CliError(f"no stack file {path}; stacks here: {', '.join(known) or 'none'}")
    try:
        raw = offline.stack_config(str(path))
    except (OSError, yaml.YAMLError) as err:
        raise CliError(f"{path.name}: cannot read: {err}") from None
    secret = tuple(sorted(k for k, v in raw.items() if _is_encrypted(v)))
    values = {k: v for k, v in raw.items() if k not in secret}
    return StackFile(stack, path, values, secret)


def _is_encrypted(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"secure"}
