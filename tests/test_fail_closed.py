"""The local lab fails closed: no silent fall-back to the host's network, nothing left running
after a kill or a hang-up, no process of the lab running as root. Real processes, no Dynamo."""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from tests.conftest import REPO

from local_lab import isolation, run_as
from stacks.config import StackConfig
from local_lab.processes import ProcessGroup

needs_namespaces = pytest.mark.skipif(isolation.unshare_argv() is None,
                                      reason="no network/PID namespaces on this machine")
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dropping root needs root")


def _with_token(token: str) -> list[int]:
    """PIDs (this namespace's) of the processes whose command line carries `token`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if token in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                state = (cmdline.parent / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def _start_lab(token: str, mode: str) -> subprocess.Popen:
    lab = subprocess.Popen([sys.executable, "-m", "tests.process_tree_lab", token, mode],
                           cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert lab.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 10
        while len(_with_token(f"sleep {token}")) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_with_token(f"sleep {token}")) == 3, "sh, and its two sleeps, should run"
    except BaseException:
        lab.kill()  # the namespace (or the parent-death signal) takes the rest
        raise
    return lab


def _gone(pattern: str, seconds: float = 10) -> bool:
    """True once no process's command line carries `pattern`, waiting up to `seconds`."""
    deadline = time.monotonic() + seconds
    while _with_token(pattern) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not _with_token(pattern)


@needs_namespaces
@pytest.mark.parametrize("signum, code", [(signal.SIGKILL, -signal.SIGKILL),
                                          (signal.SIGTERM, 130), (signal.SIGHUP, 130)])
def test_a_killed_or_hung_up_lab_leaves_nothing_running(signum, code):
    token = f"9{os.getpid() % 1000:03d}{signum:02d}"
    lab = _start_lab(token, "netns")
    try:
        lab.send_signal(signum)
        assert lab.wait(timeout=20) == code
        assert _gone(f"sleep {token}"), "the lab's processes outlived it"
    finally:
        lab.kill()


def test_host_mode_children_die_with_a_killed_lab():
    """Without the PID namespace the parent-death signal still ends the lab's own children
    (what they fork is the namespace's job: the reason host networking must be asked for)."""
    token = f"8{os.getpid() % 1000:03d}00"
    lab = _start_lab(token, "host")
    try:
        lab.kill()
        lab.wait(timeout=10)
        assert _gone(f"-c sleep {token}"), "the lab's child outlived it"
    finally:
        lab.kill()
        for pid in _with_token(f"sleep {token}"):
            os.kill(pid, signal.SIGKILL)


def test_no_namespace_means_no_lab_unless_host_is_asked_for(tmp_path):
    result = subprocess.run([sys.executable, "-m", "cli", "local", "--out", str(tmp_path / "out"),
                             "--work-dir", str(tmp_path / "work"), "--no-install"],
                            cwd=REPO, text=True, capture_output=True, timeout=60,
                            env={**os.environ, "PATH": str(tmp_path)})  # no unshare, no ip
    assert result.returncode == 2
    assert "cannot create the lab's private network and PID namespaces" in result.stderr
    assert "pass --isolation host" in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


def test_auto_isolation_is_gone():
    assert isolation.ISOLATIONS == ("netns", "host")


def test_root_runs_its_processes_as_the_sudo_user_else_nobody(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert run_as.unprivileged_user({"SUDO_UID": "1234", "SUDO_GID": "99",
                                     "SUDO_USER": "ada"}) == run_as.RunAs(1234, 99, "ada")
    assert run_as.unprivileged_user({}).name == "nobody"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert run_as.unprivileged_user({}) is None
    user = run_as.RunAs(65534, 65534, "nobody")
    assert run_as.from_env(user.to_env()) == user and run_as.from_env({}) is None


@pytest.fixture
def open_tmp():
    """A temporary directory other users can traverse (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="benchlab-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@needs_root
def test_as_root_the_children_run_unprivileged_with_only_their_directories(open_tmp):
    tmp_path = open_tmp
    user = run_as.unprivileged_user({})
    processes = ProcessGroup(tmp_path / "logs", user)
    store = processes.writable(tmp_path / "store")
    code = processes.run_to_end("who", ["sh", "-c", f"id -u; id -G; touch {store}/ok; "
                                                    f"touch {tmp_path}/not-ok"],
                                dict(os.environ), timeout=30)
    uid, groups = (tmp_path / "logs" / "who.log").read_text().splitlines()[:2]
    assert (int(uid), groups.split()) == (user.uid, [str(user.gid)])
    assert (store / "ok").exists() and not (tmp_path / "not-ok").exists()
    assert code != 0  # the write outside its directories was refused


@needs_root
def test_as_root_a_tool_the_user_cannot_run_stops_the_lab_before_it_starts(open_tmp):
    tmp_path = open_tmp
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    tool = private / "tool"
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o755)
    run_as.check_runnable(run_as.unprivileged_user({}), {"sh": ["sh", "-c", "exit 0"]})
    with pytest.raises(run_as.RunAsError, match=r"as nobody .* cannot run AIPerf"):
        run_as.check_runnable(run_as.unprivileged_user({}), {"AIPerf": [str(tool)]})


def _lab_args(root: Path) -> argparse.Namespace:
    from cli import local_command
    parser = argparse.ArgumentParser()
    local_command.add_arguments(parser)
    return parser.parse_args(["--tools-dir", str(root / "tools"), "--out", str(root / "out"),
                              "--work-dir", str(root / "work"), "--no-install", "--no-twin"])


@needs_root
def test_where_nobody_may_not_enter_the_tools_the_lab_shows_it_a_view_and_never_runs_them_as_root(
        open_tmp, monkeypatch):
    """A project under a directory only root may enter (/root, a 0700 temporary directory): in
    its namespaces the lab covers that directory for nobody (local_lab/fs_view.py); on the
    host's network it refuses, naming the fix. No process of the lab runs as root."""
    from cli import local_command
    from cli.cli import CliError
    private = open_tmp / "private"
    private.mkdir(mode=0o700)
    args = _lab_args(private)
    monkeypatch.setattr(local_command.tool_venvs, "ensure_tools", lambda *a, **k: None)
    monkeypatch.setattr(local_command, "_twin", lambda *a, **k: None)
    nobody = run_as.unprivileged_user({})
    shown = local_command._prepare(args, StackConfig(), nobody, namespace=["unshare"])
    assert shown == run_as.RunAs(nobody.uid, nobody.gid, "nobody", view=True)
    assert run_as.from_env(shown.to_env()) == shown  # handed to the lab inside
    with pytest.raises(CliError, match=r"as nobody .* cannot run .*leave out --isolation host"):
        local_command._prepare(args, StackConfig(), nobody, namespace=None)


class _RecordingGroup:
    """A ProcessGroup stand-in that records what the graph hands over and starts."""

    def __init__(self):
        self.handed_over: list[Path] = []
        self.started: list[tuple[list[str], dict[str, str]]] = []
        self.children = []

    def writable(self, path: Path) -> Path:
        self.handed_over.append(path)
        return path

    def start(self, name, argv, env):
        self.started.append((argv, env))


def test_every_path_a_graph_process_writes_is_handed_to_the_labs_user(tmp_path, monkeypatch):
    """As root the lab's processes run as another user: a store, log or recording outside the
    directories handed to that user is a PermissionError at start (seen in CI: the recorder)."""
    from local_lab.graph import Graph, GraphConfig
    group = _RecordingGroup()
    for graph in ("agg", "disagg"):
        config = GraphConfig(name=graph, dynamo_python=Path("/py"), nats_server=Path("/nats"),
                             model_dir=tmp_path / "model", work_dir=tmp_path / "work" / graph,
                             frontend_port=8000, nats_port=4222, router_mode="round-robin",
                             recording=tmp_path / "out" / graph / "event_plane.jsonl")
        lab = Graph(config, group)
        monkeypatch.setattr(lab, "_wait", lambda what, ready: None)
        lab.start(say=lambda line: None)
    written = [Path(argv[i + 1]) for argv, _ in group.started
               for i, flag in enumerate(argv[:-1]) if flag in ("--out", "--store_dir")]
    written += [Path(env["DYN_FILE_KV"]) for _, env in group.started]
    assert len(written) >= 3 * 2 + 2
    unreachable = [p for p in written if not any(p.is_relative_to(d) for d in group.handed_over)]
    assert unreachable == []
