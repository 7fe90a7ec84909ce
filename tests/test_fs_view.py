"""The view the lab's unprivileged user gets of directories only root may enter: planned from the
mode bits, made of tmpfs covers and bind mounts inside a private mount namespace, and gone with it."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from local_lab import fs_view
from tests.conftest import REPO

NOBODY = pwd.getpwnam("nobody")


def tree(root: Path) -> dict[str, Path]:
    """root/blocked (0700) holding keep/tool.py (what the lab needs) and secret (what it must not see)."""
    blocked = root / "blocked"
    (blocked / "keep").mkdir(parents=True)
    (blocked / "keep" / "tool.py").write_text("print('ran')\n")
    (blocked / "secret").write_text("root's own")
    blocked.chmod(0o700)
    root.chmod(0o755)
    return {"blocked": blocked, "tool": blocked / "keep" / "tool.py", "secret": blocked / "secret"}


def test_the_plan_covers_the_nearest_blocked_directory_and_binds_back_only_what_leads_to_a_need(tmp_path):
    root = tmp_path.resolve()
    paths = tree(root)
    found = fs_view.plan([paths["tool"]], NOBODY.pw_uid, NOBODY.pw_gid)
    blocked_above = fs_view.first_blocked(root, NOBODY.pw_uid, NOBODY.pw_gid)
    if blocked_above is not None:  # pytest's own 0700 temporary directories come first
        assert found == {blocked_above: {root.relative_to(blocked_above).parts[0]}}
    else:
        assert found == {paths["blocked"]: {"keep"}}
    assert fs_view.plan([Path("/usr/bin/env")], NOBODY.pw_uid, NOBODY.pw_gid) == {}


def test_search_permission_follows_owner_group_other(tmp_path):
    directory = tmp_path / "d"
    directory.mkdir()
    directory.chmod(0o710)
    os.chown(directory, 0, NOBODY.pw_gid)
    assert fs_view.can_search(directory, NOBODY.pw_uid, NOBODY.pw_gid)  # by group
    assert not fs_view.can_search(directory, NOBODY.pw_uid, 12345)
    os.chown(directory, NOBODY.pw_uid, 0)
    directory.chmod(0o070)
    assert not fs_view.can_search(directory, NOBODY.pw_uid, 0)  # the owner's bits decide


VIEW_SCRIPT = """
import json, subprocess, sys
from pathlib import Path
from local_lab import fs_view
tool, secret, uid, gid = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
covered = fs_view.make_reachable([tool, *fs_view.venv_paths(Path(sys.executable))], uid, gid)
as_nobody = subprocess.run([sys.executable, "-S", "-I", str(tool)], user=uid, group=gid,
                           extra_groups=[], capture_output=True, text=True, cwd="/")
print(json.dumps({"covered": [str(c) for c in covered], "ran": as_nobody.stdout.strip(),
                  "error": as_nobody.stderr.strip()[-300:], "secret_seen": secret.exists()}))
"""


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")
def test_inside_a_mount_namespace_the_user_reaches_the_need_and_nothing_else_and_the_host_is_unchanged(tmp_path):
    view_root = Path("/tmp") / f"benchlab-view-test-{os.getpid()}"  # outside pytest's own 0700 dirs
    paths = tree(view_root)
    try:
        script = tmp_path / "view.py"
        script.write_text(VIEW_SCRIPT)  # as nobody it runs this interpreter, wherever it lies
        result = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable,
                                 str(script), str(paths["tool"]), str(paths["secret"]),
                                 str(NOBODY.pw_uid), str(NOBODY.pw_gid)],
                                cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        seen = json.loads(result.stdout.splitlines()[-1])
        assert str(paths["blocked"]) in seen["covered"]
        assert (seen["ran"], seen["secret_seen"]) == ("ran", False), seen["error"]
        # the host: the directory as it was, no view left mounted
        assert paths["secret"].read_text() == "root's own" and oct(paths["blocked"].stat().st_mode)[-3:] == "700"
        assert "benchlab-view" not in Path("/proc/self/mountinfo").read_text()
    finally:
        paths["blocked"].chmod(0o755)
        shutil.rmtree(view_root, ignore_errors=True)
