"""Child processes the lab starts, and the guarantee that every one of them is stopped.

Each child leads its own session, so a terminal's Ctrl-C reaches only the lab (which then
stops the children in reverse start order) and a stop signal reaches a child's own children
too (AIPerf forks a dozen services). Each child also dies with the lab if the lab is killed
outright (parent-death signal); inside the lab's PID namespace, so do their own children.
When the lab runs as root, its children run as an unprivileged user (local_lab/run_as.py).
Once a stop signal has come (local_lab/isolation.py), no child starts and every wait on the
children ends: `Interrupted` is raised; stopping them is never cut short.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from local_lab.isolation import check_stop, die_with_parent
from local_lab.run_as import RunAs

# Dynamo's graceful shutdown takes seconds and buys nothing here: each run's stores are new.
STOP_TIMEOUT_SECONDS = 3.0
LOG_TAIL_LINES = 15


class ProcessFailed(RuntimeError):
    """A child exited when it should not have; the message carries its log tail."""


class StepTimedOut(RuntimeError):
    """A run-to-end child outlived its limit (and was stopped)."""


@dataclass
class Child:
    name: str
    popen: subprocess.Popen
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class ProcessGroup:
    """Starts children with their output in log files; `stop_all` ends every one."""

    def __init__(self, log_dir: Path, run_as: RunAs | None = None):
        self.log_dir = log_dir
        self.run_as = run_as
        self.children: list[Child] = []

    def writable(self, path: Path) -> Path:
        """`path`, created, and writable by the children (handed over when they run as another
        user)."""
        if self.run_as is None:
            path.mkdir(parents=True, exist_ok=True)
            return path
        return self.run_as.hand_over(path)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Child:
        check_stop()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        user = {}
        if self.run_as is not None:
            user = self.run_as.popen_args()
            env = {**env, "HOME": str(self.writable(self.log_dir.parent / "home"))}
        with log_path.open("wb") as log:
            popen = subprocess.Popen(argv,
                                     stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                     preexec_fn=die_with_parent, **user)
        child = Child(name, popen, log_path)
        self.children.append(child)
        return child

    def run_to_end(self, name: str, argv: list[str], env: dict[str, str], timeout: float,
                   others_alive=lambda: None) -> int:
        """Run one child to its end (bounded by `timeout`); returns its exit code.

        While it runs, `others_alive()` is called every half second so a crash elsewhere
        (the serving graph) ends the wait at once instead of after the timeout.
        """
        child = self.start(name, argv, env)
        deadline = time.monotonic() + timeout
        try:
            while child.alive():
                check_stop()
                others_alive()
                if time.monotonic() > deadline:
                    raise StepTimedOut(f"{name} ran past its {timeout:.0f} s limit; "
                                        f"log {child.log_path}:\n{child.log_tail()}")
                time.sleep(0.5)
            return child.popen.returncode
        finally:
            self._stop(child)

    def check_alive(self) -> None:
        """Raises ProcessFailed for a child that exited, and Interrupted after a stop signal:
        every wait on the children (the graph's start-up too) ends at once."""
        check_stop()
        for child in self.children:
            if not child.alive():
                raise ProcessFailed(f"{child.name} exited with code {child.popen.returncode}; "
                                    f"log {child.log_path}:\n{child.log_tail()}")

    def stop_all(self) -> None:
        """TERM every child's process group (newest first), then KILL what outlives the wait.

        It checks no stop signal: one arriving now (a second Ctrl-C) is recorded, for the lab
        to act on once every child is stopped.
        """
        for child in reversed(self.children):
            _signal_group(child, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for child in reversed(list(self.children)):
            self._stop(child, deadline)

    def _stop(self, child: Child, deadline: float | None = None) -> None:
        _signal_group(child, signal.SIGTERM)
        deadline = deadline or time.monotonic() + STOP_TIMEOUT_SECONDS
        try:
            child.popen.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            pass
        _signal_group(child, signal.SIGKILL)  # also ends grandchildren left behind
        child.popen.wait()
        self.children.remove(child)


def _signal_group(child: Child, signum: int) -> None:
    try:
        os.killpg(child.popen.pid, signum)
    except ProcessLookupError:
        pass
