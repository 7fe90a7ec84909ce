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
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys

ISOLATIONS = ("netns", "host")
INSIDE_MARKER = "BENCHLAB_NETNS"  # set in the lab running inside the namespaces
RELAYED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class IsolationError(RuntimeError):
    pass


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


def run_in_namespace(prefix: list[str], env: dict[str, str] | None = None) -> int:
    """Run this same lab command inside fresh namespaces; returns the lab's exit code.

    `unshare --fork` ignores SIGINT and SIGTERM while it waits, so this process relays them
    (and SIGHUP) to the lab's process group, where the lab stops what it started; if this
    process is killed outright, unshare dies with it (parent-death signal) and takes the lab's
    namespace with it.
    """
    child = subprocess.Popen([*prefix, sys.executable, *sys.orig_argv[1:]],
                             env={**os.environ, **(env or {}), INSIDE_MARKER: "1"},
                             start_new_session=True, preexec_fn=die_with_parent)

    def relay(signum, frame):
        try:  # unshare ignores INT and TERM but dies of HUP: the lab gets TERM for a hang-up
            os.killpg(child.pid, signal.SIGTERM if signum == signal.SIGHUP else signum)
        except ProcessLookupError:
            pass

    for signum in RELAYED_SIGNALS:
        signal.signal(signum, relay)
    return child.wait()


def bring_up_loopback() -> None:
    """Inside the namespace: `lo` up, and a default route via it so Dynamo's primary-address
    lookup finds 127.0.0.1."""
    for args in (["link", "set", "lo", "up"], ["route", "add", "default", "dev", "lo"]):
        result = subprocess.run(["ip", *args], capture_output=True, text=True)
        if result.returncode != 0 and "File exists" not in result.stderr:
            raise IsolationError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
