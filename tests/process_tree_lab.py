"""A stand-in lab for the fail-closed tests: the real isolation and process code, with `sleep`
for NATS, Dynamo and AIPerf. Run as `python -m tests.process_tree_lab TOKEN netns|host`.

It starts a child that forks a grandchild (as AIPerf forks its services), both `sleep`s whose
durations carry TOKEN so the test can find them in /proc, prints "ready" and waits; SIGTERM,
SIGHUP and Ctrl-C stop it the way the lab stops, exit code 130.
"""
from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from local_lab import isolation
from local_lab.processes import ProcessGroup


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(token: str, mode: str) -> int:
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    if mode == "netns" and not isolation.inside_namespace():
        return isolation.run_in_namespace(isolation.unshare_argv())
    processes = ProcessGroup(Path(tempfile.mkdtemp()))
    processes.start("tree", ["sh", "-c", f"sleep {token}1 & sleep {token}2; wait"],
                    dict(os.environ))
    print("ready", flush=True)
    try:
        while True:
            time.sleep(0.2)
    except KeyboardInterrupt:
        processes.stop_all()
        return 130


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
