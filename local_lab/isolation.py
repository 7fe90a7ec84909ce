"""Run the lab in a private network namespace whose only interface is loopback.

Dynamo 0.9.1 binds the frontend's response-stream listener to the machine's primary
address, and no setting moves it (the DYN_*_HOST variables cover the other listeners).
In a namespace with only `lo` (and a default route through it) that address is 127.0.0.1:
nothing the lab starts is reachable from, or reaches, any other host. Ports cannot clash
with the machine's either. The lab re-executes itself inside the namespace, same PID.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

ISOLATIONS = ("auto", "netns", "host")
INSIDE_MARKER = "BENCHLAB_NETNS"  # set in the re-executed lab


class IsolationError(RuntimeError):
    pass


def inside_namespace() -> bool:
    return os.environ.get(INSIDE_MARKER) == "1"


def unshare_argv() -> list[str] | None:
    """The `unshare` prefix that works here, or None (checked by a trial run)."""
    unshare = shutil.which("unshare")
    ip = shutil.which("ip")
    if not unshare or not ip:
        return None
    # Without root, a user namespace (mapping us to root in it) grants the network one.
    argv = [unshare, "--net"] if os.geteuid() == 0 else [unshare, "--user", "--map-root-user",
                                                         "--net"]
    trial = subprocess.run([*argv, ip, "link", "set", "lo", "up"], capture_output=True)
    return argv if trial.returncode == 0 else None


def reexec_in_namespace(prefix: list[str]) -> None:
    """Replace this process with the same lab command inside a fresh network namespace."""
    os.environ[INSIDE_MARKER] = "1"
    os.execv(prefix[0], [*prefix, sys.executable, *sys.orig_argv[1:]])


def bring_up_loopback() -> None:
    """Inside the namespace: `lo` up, and a default route via it so Dynamo's primary-address
    lookup finds 127.0.0.1."""
    for args in (["link", "set", "lo", "up"], ["route", "add", "default", "dev", "lo"]):
        result = subprocess.run(["ip", *args], capture_output=True, text=True)
        if result.returncode != 0 and "File exists" not in result.stderr:
            raise IsolationError(f"ip {' '.join(args)} failed: {result.stderr.strip()}")
