"""Who runs the lab's processes: never root.

Nothing the local lab starts (NATS, the Dynamo frontend and mocker, AIPerf) needs a privilege.
Started without root, the lab's processes are the user's own (inside a user namespace that maps
only that user). Started as root, they run as the user who ran sudo, else `nobody`: they get
only the directories they write (stores, AIPerf artifacts, a home) and must be able to run the
tool venvs, which is tried before anything starts. Where that user cannot (the project or the
Python the venvs were made from lies under a directory only root may enter, such as /root or
a 0700 temporary directory), the lab shows that user, inside its own mount namespace, only the
paths it needs out of those directories (local_lab/fs_view.py) and tries again there; it never
runs them as root.
"""
from __future__ import annotations

import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path

ENV = "BENCHLAB_RUN_AS"  # "uid:gid:name[:view]", handed to the lab inside the namespaces
TRIAL_TIMEOUT_SECONDS = 120


class RunAsError(RuntimeError):
    pass


@dataclass(frozen=True)
class RunAs:
    uid: int
    gid: int
    name: str
    view: bool = False  # the lab inside shows this user what it needs first (fs_view)

    def popen_args(self) -> dict:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def hand_over(self, path: Path) -> Path:
        """`path` created if needed and given to this user (the lab's own working directories)."""
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, self.uid, self.gid)
        return path

    def to_env(self) -> dict[str, str]:
        return {ENV: f"{self.uid}:{self.gid}:{self.name}" + (":view" if self.view else "")}


def unprivileged_user(environ=os.environ) -> RunAs | None:
    """None when not root (the processes are already the user's); else whom to run them as."""
    if os.geteuid() != 0:
        return None
    sudo_uid = environ.get("SUDO_UID", "")
    if sudo_uid.isdigit() and int(sudo_uid) != 0:
        return RunAs(int(sudo_uid), int(environ.get("SUDO_GID", sudo_uid)),
                     environ.get("SUDO_USER", sudo_uid))
    nobody = pwd.getpwnam("nobody")
    return RunAs(nobody.pw_uid, nobody.pw_gid, "nobody")


def from_env(environ=os.environ) -> RunAs | None:
    """The user the outer lab chose (inside the namespaces everyone looks like root)."""
    if ENV not in environ:
        return None
    uid, gid, name, *view = environ[ENV].split(":")
    return RunAs(int(uid), int(gid), name, view == ["view"])


def check_runnable(run_as: RunAs, trials: dict[str, list[str]]) -> None:
    """Run each tool's trial command as `run_as`; RunAsError names the first that fails."""
    for tool, argv in trials.items():
        try:
            result = subprocess.run(argv, capture_output=True, text=True, cwd="/",
                                    env={"PATH": os.environ.get("PATH", ""), "HOME": "/"},
                                    timeout=TRIAL_TIMEOUT_SECONDS, **run_as.popen_args())
            failed = result.returncode != 0
            detail = (result.stderr.strip().splitlines() or [f"exit {result.returncode}"])[-1]
        except (OSError, subprocess.TimeoutExpired) as err:
            failed, detail = True, str(err)
        if failed:
            raise RunAsError(
                f"started as root, the lab runs its processes as {run_as.name} (uid {run_as.uid}), "
                f"who cannot run {tool} ({' '.join(argv)}: {detail}); make the tool venvs and "
                "the Python they were made from readable and executable by that user, or run "
                "the lab as a non-root user")
