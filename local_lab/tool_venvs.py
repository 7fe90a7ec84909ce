"""The lab's tool virtual environments: created when absent, reinstalled when their lock changes.

Dynamo and AIPerf pin conflicting dependencies, so each gets its own venv, apart from the
project's `.venv`. Each venv is installed from its hash lock (facts/wheel_locks.py) with pip's
resolver off, and records the lock's digest: a venv is current when it holds that digest and
its executables. On an interpreter the locks were not made for, the top-level pins are
installed instead, and the lab says so.
"""
from __future__ import annotations

import subprocess
import venv
from dataclasses import dataclass
from pathlib import Path

from facts import wheel_locks
from facts.wheel_locks import WheelLock

# pip warnings that say nothing about this install (a site-wide pip config on some machines).
_PIP_NOISE = ("is ignored", "[notice]")
STAMP = ".benchlab-lock"  # in the venv: what it was installed from


class ToolSetupError(RuntimeError):
    """A tool venv is missing, broken, or could not be installed."""


@dataclass(frozen=True)
class ToolVenv:
    name: str
    lock: WheelLock
    executables: tuple[str, ...]       # under bin/, checked after setup

    def path(self, tools_dir: Path) -> Path:
        return tools_dir / self.name

    def requirements(self) -> list[str]:
        return list(self.lock.requirements)


DYNAMO = ToolVenv("dynamo", wheel_locks.DYNAMO, ("python", "nats-server"))
AIPERF = ToolVenv("aiperf", wheel_locks.AIPERF, ("aiperf",))  # the cloud Jobs' lock
CHECKOV = ToolVenv("checkov", wheel_locks.CHECKOV, ("checkov",))
# `benchlab plan`'s performance model (planner/aiconfigurator.py is the one caller).
AICONFIGURATOR = ToolVenv("aiconfigurator", wheel_locks.AICONFIGURATOR, ("aiconfigurator",))
TOOL_VENVS = (DYNAMO, AIPERF)  # what the local lab runs
ALL_TOOLS = (DYNAMO, AIPERF, CHECKOV, AICONFIGURATOR)  # what the test suite needs besides .venv


def ensure_tools(tools_dir: Path, install: bool, say=print,
                 tools: tuple[ToolVenv, ...] = TOOL_VENVS) -> None:
    """Make every tool venv current (or, with install=False, only check that it is)."""
    for tool in tools:
        if _current(tool, tools_dir):
            continue
        if not install:
            raise ToolSetupError(
                f"{tool.path(tools_dir)} lacks {', '.join(tool.requirements())} as locked in "
                f"facts/locks/{tool.lock.file_name}; run without --no-install to install it, or "
                f"point --tools-dir at a directory holding it")
        say(f"setting up {tool.path(tools_dir)} ({', '.join(tool.requirements())}); "
            f"first time only, a few minutes")
        _install(tool, tools_dir, say)
        if not _current(tool, tools_dir):
            raise ToolSetupError(f"{tool.path(tools_dir)}: install finished but its executables "
                                 f"{', '.join(tool.executables)} are not all there")


def tool_path(tool: ToolVenv, tools_dir: Path, exe: str) -> Path:
    return tool.path(tools_dir) / "bin" / exe


def _current(tool: ToolVenv, tools_dir: Path) -> bool:
    path = tool.path(tools_dir)
    try:
        stamp = (path / STAMP).read_text().strip()
    except OSError:
        return False
    return stamp == wheel_locks.install_stamp(tool.lock) and all((path / "bin" / exe).exists()
                                                for exe in tool.executables)


def _install(tool: ToolVenv, tools_dir: Path, say) -> None:
    """A new venv from the lock (the stamp last, so an interrupted install is redone)."""
    path = tool.path(tools_dir)
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    what, mismatch = wheel_locks.install_args(tool.lock)
    if mismatch:
        say(f"{path}: {mismatch}: installing the top-level pins without their lock")
    # Stdout of pip is noise on success and the evidence on failure: keep it for the error.
    result = subprocess.run([str(path / "bin" / "python"), "-m", "pip", "install", "--quiet",
                             "--disable-pip-version-check", *what],
                            capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in (result.stdout + result.stderr).splitlines()
                 if not any(noise in line for noise in _PIP_NOISE)]
        raise ToolSetupError(f"pip install {' '.join(what)} into {path} failed:\n"
                             + "\n".join(lines[-20:]))
    (path / STAMP).write_text(wheel_locks.install_stamp(tool.lock) + "\n")
