"""Read a stack's `Pulumi.<stack>.yaml` into the validated StackConfig, for the CLI commands
that need the stack config without running Pulumi (preflight, cost, synth).

Secret values (`pulumi config set --secret`) sit in the file encrypted as `{secure: ...}`;
they cannot be decrypted here and are never needed: only which secret keys are set.
"""
from __future__ import annotations

import argparse
import json
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
    # the file's placeholder CIDRs that `values` carries TEST_PUBLIC_ACCESS_CIDR in place of
    test_cidr_replaced: tuple[str, ...] = ()

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


def load(stack: str | None, root: Path | None = None, *, test_cidr: bool = True) -> StackFile:
    """`Pulumi.<stack>.yaml`; stack None is the selected stack (cli/pulumi_cli.py). With
    `test_cidr` (the offline commands) a placeholder CIDR is replaced by offline's
    TEST_PUBLIC_ACCESS_CIDR; without (preflight), the values are what `pulumi up` validates."""
    stack = pulumi_cli.selected_stack() if stack is None else stack
    root = REPO_ROOT if root is None else root
    path = root / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        known = sorted(p.name[len("Pulumi."):-len(".yaml")] for p in root.glob("Pulumi.*.yaml"))
        raise CliError(f"no stack file {path}; stacks here: {', '.join(known) or 'none'}")
    try:
        written = offline.stack_config(str(path), test_cidr=False)
    except (OSError, yaml.YAMLError) as err:
        raise CliError(f"{path.name}: cannot read: {err}") from None
    raw = offline.with_test_cidr(written) if test_cidr else written
    secret = tuple(sorted(k for k, v in raw.items() if _is_encrypted(v)))
    values = {k: v for k, v in raw.items() if k not in secret}
    replaced = tuple(offline.placeholder_cidrs(written)) if test_cidr else ()
    return StackFile(stack, path, values, secret, replaced)


def _is_encrypted(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"secure"}


IMAGE_DIGESTS_KEY = f"{config.NAMESPACE}:imageDigests"


def record_image_digests(path: Path, digests: dict[str, str]) -> None:
    """Write `benchlab:imageDigests` into the stack file, replacing any earlier lock and
    leaving every other line (comments included) as it was."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    config_at = next((i for i, line in enumerate(lines) if line.rstrip() == "config:"), None)
    if config_at is None:
        lines += ["config:"]
        config_at = len(lines) - 1
    end = next((i for i in range(config_at + 1, len(lines))
                if lines[i] and not lines[i][0].isspace() and not lines[i].startswith("#")), len(lines))
    entries = [i for i in range(config_at + 1, end) if lines[i].strip() and not lines[i].lstrip().startswith("#")]
    indent = (len(lines[entries[0]]) - len(lines[entries[0]].lstrip())) if entries else 2
    # drop the old block: its key line and every line indented below it
    kept, skipping = [], False
    for i, line in enumerate(lines):
        if config_at < i < end and line.strip().startswith(f"{IMAGE_DIGESTS_KEY}:"):
            skipping = True
            continue
        if skipping and (not line.strip() or len(line) - len(line.lstrip()) > indent):
            continue
        skipping = False
        kept.append(line)
    end -= len(lines) - len(kept)
    while end > config_at + 1 and not kept[end - 1].strip():
        end -= 1  # insert before trailing blank lines of the config block
    pad = " " * indent
    block = [f"{pad}{IMAGE_DIGESTS_KEY}:"] + [
        f"{pad}  {json.dumps(reference)}: {json.dumps(digest)}" for reference, digest in sorted(digests.items())]
    updated = "\n".join(kept[:end] + block + kept[end:]) + "\n"
    written = yaml.safe_load(updated)["config"]
    before = (yaml.safe_load(text) or {}).get("config") or {}
    expected = {**{k: v for k, v in before.items() if k != IMAGE_DIGESTS_KEY}, IMAGE_DIGESTS_KEY: digests}
    if written != expected:  # never write a file that reads back differently
        raise CliError(f"{path.name}: could not record the image digests without changing other keys")
    path.write_text(updated, encoding="utf-8")
