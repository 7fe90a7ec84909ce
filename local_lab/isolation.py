"""Run the lab in private namespaces: a network with only loopback, and a PID space that dies
with the lab.

Dynamo 0.9.1 binds the frontend's response-stream listener to the machine's primary
address, and no setting moves it (the DYN_*_HOST variables cover the other listeners).
In a namespace with only `lo` (and a default route through it) that address is 127.0.0.1:
nothing the lab starts is reachable from, or reaches, any other host. Ports cannot clash
with the machine's either. Without such a namespace the lab refuses to run unless the user
asks for the host's network (`--isolation host`): it never falls back silently.

The lab runs itself again inside the namespaces, as PID 1 of the new PID namespace: when it
ends, however it ends, the kernel kills every process left in that namespace (NATS, Dynamo,
AIPerf and whatever they forked). The process the user started stays outside, relays
Ctrl-C, `kill` and hang-up to the lab inside (which stops its processes and keeps what
finished), and takes the lab's namespace down with it if it is killed outright.

A stop signal (Ctrl-C, `kill`, a hang-up) is recorded, never raised where it lands: the lab
acts on it where it checks (`check_stop`: before it starts a process, in every wait, between
steps), and clean-up never sees it. The process outside passes each one on to the lab once the
lab catches it.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ISOLATIONS = ("netns", "host")
INSIDE_MARKER = "BENCHLAB_NETNS"  # set in the lab running inside the namespaces
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
RELAY_POLL_SECONDS = 0.1  # how soon a stop signal reaches the lab inside

_stops: list[int] = []  # the stop signals this process received, in order


class IsolationError(RuntimeError):
    pass


class Interrupted(KeyboardInterrupt):
    """A stop signal was received: raised by `check_stop`, where the lab can act on it."""


def record_stop(signum, frame) -> None:
    """The stop signals' handler: records the signal and raises nothing. Python runs a handler
    between two bytecodes of whatever the main thread runs, and what it raises inside an
    os.register_at_fork hook or a `__del__` is only printed (CPython: PyErr_WriteUnraisable): a
    Ctrl-C raised as KeyboardInterrupt was lost this way, landing as the lab forked AIPerf
    ("Exception ignored in: <function _releaseLock>", logging's at-fork hook)."""
    _stops.append(signum)


def catch_stop_signals(handler=record_stop) -> None:
    for signum in STOP_SIGNALS:
        signal.signal(signum, handler)


def stop_requested() -> bool:
    return bool(_stops)


def check_stop() -> None:
    if _stops:
        raise Interrupted(signal.Signals(_stops[0]).name)


def inside_namespace() -> bool:
    return os.environ.get(INSIDE_MARKER) == "1"


def die_with_parent() -> None:
    """preexec_fn: SIGKILL this child when the thread that started it ends, whatever ends it."""
    # PR_SET_PDEATHSIG survives execve and is cleared by a uid change, so it is set after the
    # one Popen(user=...) makes: https://man7.org/linux/man-pages/man2/PR_SET_PDEATHSIG.2const.html
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(126)  # cannot promise to die with the lab: do not run at all


def unshare_argv() -> list[str] | None:
    """The `unshare` prefix that works here, or None (checked by a trial run)."""
    unshare = shutil.which("unshare")
    ip = shutil.which("ip")
    if not unshare or not ip:
        return None
    # Without root, a user namespace (mapping us to root in it) grants the other ones.
    argv = [unshare] if os.geteuid() == 0 else [unshare, "--user", "--map-root-user"]
    # --fork: the lab becomes PID 1 of the new PID namespace; when PID 1 ends, the kernel kills
    # every process in it (https://man7.org/linux/man-pages/man7/pid_namespaces.7.html).
    # --kill-child: unshare killed, the lab is SIGKILLed, and with it the whole namespace.
    # --mount-proc: /proc shows the namespace's PIDs, which the tools see as their own.
    argv += ["--net", "--pid", "--fork", "--kill-child", "--mount-proc"]
    trial = subprocess.run([*argv, ip, "link", "set", "lo", "up"], capture_output=True)
    return argv if trial.returncode == 0 else None


def run_in_namespace(prefix: list[str], env: dict[str, str] | None = None,
                     ignore_at_start: bool = False) -> int:
    """Run this same lab command inside fresh namespaces; returns the lab's exit code.

    Each stop signal this process receives goes on to the lab once the lab catches it: the
    kernel drops a signal sent to a namespace's init that has no handler for it
    (pid_namespaces(7)), and one sent before unshare has forked the lab would reach only unshare.
    With `ignore_at_start` the lab starts with the stop signals ignored, for a lab that catches
    them itself once it can act on them (Python would raise KeyboardInterrupt in whatever module
    it is importing). If this process is killed outright, unshare dies with it (parent-death
    signal) and takes the lab's namespace with it.
    """
    catch_stop_signals()  # before the lab exists: from now on a stop signal waits for it
    child = subprocess.Popen([*prefix, sys.executable, *sys.orig_argv[1:]],
                             env={**os.environ, **(env or {}), INSIDE_MARKER: "1"},
                             start_new_session=True,
                             preexec_fn=_ignoring_stops if ignore_at_start else die_with_parent)
    relayed = 0
    while True:
        try:
            return child.wait(timeout=RELAY_POLL_SECONDS)
        except subprocess.TimeoutExpired:
            relayed = _relay(child.pid, relayed)


def _ignoring_stops() -> None:
    """preexec_fn: ignored signals stay ignored across execve (signal(7)), into the lab."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    die_with_parent()


def _relay(unshare_pid: int, relayed: int) -> int:
    """Send the lab the stop signals after the first `relayed`, as far as it catches them;
    returns how many are relayed by now."""
    while relayed < len(_stops):
        lab = _child_of(unshare_pid)
        if lab is None or not _catches(lab, _stops[relayed]):
            break
        try:
            os.kill(lab, _stops[relayed])
        except ProcessLookupError:
            break  # the lab has just ended: unshare follows
        relayed += 1
    return relayed


def _child_of(pid: int) -> int | None:
    """`unshare --fork`'s one child, the lab (proc(5): /proc/PID/task/TID/children)."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def _catches(pid: int, signum: int) -> bool:
    """Whether `pid` has a handler for `signum`: its bit in SigCgt, /proc/PID/status (proc(5))."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught, 16) >> (signum - 1) & 1)


def bring_up_loopback() -> None:
    """Inside the namespace: `lo` up, and a default route via it so Dynamo's primary-address
    lookup finds 127.0.0.1."""
    for args in (["link", "set", "lo", "up"], ["route", "add", "default", "dev", "lo"]):
        result = subprocess.run(["ip", *args], capture_output=True, text=True)
        if result.returncode != 0 and "File exists" not in result.stderr:
            raise IsolationError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
