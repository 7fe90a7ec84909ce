"""What the Pulumi CLI knows, when it is installed: the selected stack, and a stack's outputs.

Without the CLI (as on a machine that only runs the local lab) commands keep their own
defaults: stack `dev`, and a results bucket given with --bucket.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from cli.cli import CliError

DEFAULT_STACK = "dev"
TIMEOUT_SECONDS = 60
PROJECT_DIR = Path(__file__).resolve().parent.parent  # where Pulumi.yaml is


def _pulumi(*args: str) -> subprocess.CompletedProcess | None:
    """`pulumi <args>` in the project directory, or None when the CLI is not installed."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        return None
    try:
        return subprocess.run([pulumi, *args, "--non-interactive"], cwd=PROJECT_DIR,
                              capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise CliError(f"`pulumi {' '.join(args)}` did not answer in {TIMEOUT_SECONDS} s "
                       "(is the backend reachable? `pulumi whoami`)") from None


def selected_stack() -> str:
    """The stack `pulumi stack select` chose, else `dev` (no CLI, or no stack selected)."""
    # `pulumi stack --show-name` prints only the current stack's name:
    # https://www.pulumi.com/docs/iac/cli/commands/pulumi_stack/
    result = _pulumi("stack", "--show-name")
    if result is None or result.returncode != 0 or not result.stdout.strip():
        return DEFAULT_STACK
    return result.stdout.strip().splitlines()[-1].strip()


def stack_outputs(stack: str) -> dict:
    """The stack's outputs (secrets stay masked), from `pulumi stack output --json`."""
    # https://www.pulumi.com/docs/iac/cli/commands/pulumi_stack_output/ (--json, --stack)
    result = _pulumi("stack", "output", "--json", "--stack", stack)
    if result is None:
        raise CliError("the pulumi CLI is not installed here, so the stack's outputs cannot be "
                       "read: pass --bucket (and --region)")
    if result.returncode != 0:
        detail = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise CliError(f"`pulumi stack output --stack {stack}` failed: {detail}")
    try:
        outputs = json.loads(result.stdout)
    except json.JSONDecodeError:
        raise CliError(f"`pulumi stack output --json --stack {stack}` printed no JSON") from None
    return outputs if isinstance(outputs, dict) else {}
