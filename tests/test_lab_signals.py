"""A stop signal (Ctrl-C, `kill`, a hang-up) is never lost, whatever the lab is doing: it is
recorded, held until the lab inside its namespaces catches it, acted on where the lab checks,
and deferred by clean-up. Real signals and processes; the e2e probes are in test_local_lab.py."""
from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from cli import local_command
from local_lab import isolation, processes, runner
from local_lab.processes import ProcessGroup
from local_lab.progress import Progress
from tests.conftest import REPO
from tests.test_serving_stopped import StandInGraph, _setup

needs_namespaces = pytest.mark.skipif(isolation.unshare_argv() is None,
                                      reason="no network/PID namespaces on this machine")


@pytest.fixture
def stop_signals(monkeypatch):
    """This process handles the stop signals as the lab does; undone after the test."""
    monkeypatch.setattr(isolation, "_stops", [])
    saved = {signum: signal.getsignal(signum) for signum in isolation.STOP_SIGNALS}
    isolation.catch_stop_signals()
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def _signal_me_in(seconds: float, signum: int = signal.SIGINT) -> None:
    threading.Timer(seconds, os.kill, (os.getpid(), signum)).start()


# A lab that ignores its stop signals for its first second (as `benchlab local` does while
# Python imports it), as PID 1 of its namespace, and reports the first it then receives.
LAB = """
import signal, sys, time
from local_lab import isolation
if isolation.inside_namespace():
    print("lab: starting", flush=True)
    time.sleep(1)
    isolation.catch_stop_signals()
    while True:
        try:
            isolation.check_stop()
        except isolation.Interrupted as stop:
            print("lab: stopped by", stop, flush=True)
            sys.exit(130)
        time.sleep(0.01)
isolation.catch_stop_signals()
print("outside: catching", flush=True)
time.sleep(0.5)
sys.exit(isolation.run_in_namespace(isolation.unshare_argv(), ignore_at_start=True))
"""


@needs_namespaces
@pytest.mark.parametrize("when, signum", [
    pytest.param("outside: catching", signal.SIGINT, id="INT before the lab exists"),
    # the lab, PID 1, has no handler yet: the kernel would drop what reached it
    pytest.param("lab: starting", signal.SIGINT, id="INT as the lab starts"),
    pytest.param("lab: starting", signal.SIGTERM, id="TERM as the lab starts"),
    pytest.param("lab: starting", signal.SIGHUP, id="HUP as the lab starts"),
])
def test_a_stop_signal_waits_until_the_lab_inside_catches_it(when, signum):
    lab = subprocess.Popen([sys.executable, "-c", LAB], cwd=REPO, stdout=subprocess.PIPE,
                           text=True)
    try:
        for line in lab.stdout:
            if line.strip() == when:
                break
        lab.send_signal(signum)
        output = lab.communicate(timeout=15)[0]
    finally:
        lab.kill()
    assert lab.returncode == 130
    assert output.strip().endswith(f"lab: stopped by {signal.Signals(signum).name}")


def test_a_stop_signal_raised_as_keyboardinterrupt_in_an_at_fork_hook_is_lost_a_recorded_one_is_not():
    """The lost Ctrl-C: Python runs the handler in an os.register_at_fork hook (logging has one)
    when the signal lands as the lab forks, and drops what that hook raises."""
    script = """
import os, signal, subprocess, sys, tempfile
from pathlib import Path
from local_lab import isolation
from local_lab.processes import ProcessGroup
os.register_at_fork(after_in_parent=lambda: signal.raise_signal(signal.SIGINT))
try:
    subprocess.Popen(["true"], preexec_fn=lambda: None).wait()
    print("KeyboardInterrupt dropped")
except KeyboardInterrupt:
    print("KeyboardInterrupt raised")
isolation.catch_stop_signals()
ProcessGroup(Path(tempfile.mkdtemp())).start("true", ["true"], dict(os.environ)).popen.wait()
print("stop recorded" if isolation.stop_requested() else "stop lost")
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.split("\n")[:2] == ["KeyboardInterrupt dropped", "stop recorded"], result
    assert "Exception ignored" in result.stderr


def test_after_a_stop_signal_a_running_step_ends_and_nothing_new_starts(tmp_path, stop_signals):
    group = ProcessGroup(tmp_path / "logs")
    _signal_me_in(0.3)
    started = time.monotonic()
    with pytest.raises(isolation.Interrupted):
        group.run_to_end("step", ["sleep", "30"], dict(os.environ), timeout=60)
    assert time.monotonic() - started < 5 and group.children == []
    with pytest.raises(isolation.Interrupted):
        group.start("next", ["sleep", "30"], dict(os.environ))
    with pytest.raises(isolation.Interrupted):
        group.check_alive()  # the graph's start-up waits on it
    assert group.children == []


def test_clean_up_defers_a_second_signal_rather_than_dropping_it(tmp_path, stop_signals,
                                                                 monkeypatch):
    monkeypatch.setattr(processes, "STOP_TIMEOUT_SECONDS", 1.0)
    group = ProcessGroup(tmp_path / "logs")
    stubborn = group.start("stubborn", ["sh", "-c", "trap '' TERM; exec sleep 30"],
                           dict(os.environ))
    time.sleep(0.2)  # its trap is set
    _signal_me_in(0.3)  # while stop_all waits for it to end
    group.stop_all()
    assert group.children == [] and stubborn.popen.returncode == -signal.SIGKILL
    assert isolation.stop_requested()


def test_the_runner_keeps_finished_modes_and_skips_the_rest_after_a_stop(tmp_path, stop_signals,
                                                                         monkeypatch):
    monkeypatch.setattr(runner, "Graph", StandInGraph)
    setup = _setup(tmp_path, tmp_path / "unused")
    setup.aiperf.write_text(f"#!{sys.executable}\nimport os, signal, sys, time\n"
                            "if '--conversation-turn-mean' in sys.argv:\n"
                            "    os.kill(os.getppid(), signal.SIGINT); time.sleep(30)\n")
    run = runner.run_lab(setup, Progress(60, stream=io.StringIO()))
    assert run.interrupted and run.statuses["agg"] == {
        "concurrency_sweep": "ok", "multi_turn": "failed", "sequence_distribution": "skipped",
        "prefix_cache": "skipped"}
    status = runner.run_manifest.read_status(run.run_dir / "agg" / "multi_turn")
    assert status.error == "interrupted"


def test_the_lab_inside_catches_its_stop_signals_before_anything_else(monkeypatch, stop_signals):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited from a shell's background job
    monkeypatch.setenv(isolation.INSIDE_MARKER, "1")
    seen = {}
    monkeypatch.setattr(isolation, "bring_up_loopback", lambda: seen.update(
        {signum: signal.getsignal(signum) for signum in isolation.STOP_SIGNALS}))
    monkeypatch.setattr(local_command, "_run_inside", lambda args, user: 0)
    assert local_command.run(argparse.Namespace()) == 0
    assert seen == {signum: isolation.record_stop for signum in isolation.STOP_SIGNALS}


@pytest.mark.parametrize("swallowed", [False, True])
def test_a_stop_during_set_up_ends_the_lab_even_if_its_keyboardinterrupt_is_swallowed(
        monkeypatch, stop_signals, swallowed):
    def prepare(args, stack, user, namespace):
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            signal.raise_signal(signal.SIGTERM)  # a second one only adds to the record
            if not swallowed:
                raise

    monkeypatch.delenv(isolation.INSIDE_MARKER, raising=False)
    monkeypatch.setattr(local_command, "_namespace_prefix", lambda choice: ["unshare"])
    monkeypatch.setattr(local_command, "_prepare", prepare)
    monkeypatch.setattr(isolation, "run_in_namespace", lambda *a, **k: pytest.fail("lab started"))
    assert local_command.run(argparse.Namespace(stack=None, isolation="netns")) == 130
    assert isolation._stops == [signal.SIGINT, signal.SIGTERM]
