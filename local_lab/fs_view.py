"""What the lab's unprivileged user may reach, when root started the lab from directories only
root may enter (a checkout under /root, or a Python under /root/.pyenv).

Inside the lab's private mount namespace, each such directory is covered by an empty tmpfs that
anyone may search, into which only the paths the lab needs are bound back (bind mounts keep
every file's own owner and mode). Nothing else of the covered directory is visible there, to
the lab's processes or to the lab itself, and the view ends with the namespace. Outside, and
on the host's own mounts, nothing changes: util-linux unshare makes a new mount namespace's
propagation private by default (unshare(1), --propagation).
"""
from __future__ import annotations

import stat
import subprocess
import tempfile
from pathlib import Path

MAX_COVERS = 16  # each cover makes one directory searchable; a deeper tree means a mistake


class ViewError(RuntimeError):
    pass


def can_search(directory: Path, uid: int, gid: int) -> bool:
    """Whether `uid` (primary group `gid`, no others) may search `directory`, by its mode bits
    (path_resolution(7): owner, then group, then other)."""
    info = directory.stat()
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IXUSR)
    if info.st_gid == gid:
        return bool(info.st_mode & stat.S_IXGRP)
    return bool(info.st_mode & stat.S_IXOTH)


def first_blocked(path: Path, uid: int, gid: int) -> Path | None:
    """The first directory on the way to `path` (itself included, if a directory) that the user
    may not search, or None."""
    chain = [*reversed(path.parents), *([path] if path.is_dir() else [])]
    return next((directory for directory in chain if not can_search(directory, uid, gid)), None)


def plan(needed: list[Path], uid: int, gid: int) -> dict[Path, set[str]]:
    """The blocked directories nearest the root, each with the names below it that lead to a
    needed path: what one round of covers must bind back."""
    covers: dict[Path, set[str]] = {}
    for path in needed:
        blocked = first_blocked(path, uid, gid)
        if blocked is not None and blocked != path:
            covers.setdefault(blocked, set()).add(path.relative_to(blocked).parts[0])
    return {directory: names for directory, names in covers.items()
            if not any(other in directory.parents for other in covers)}


def make_reachable(needed: list[Path], uid: int, gid: int, mount=None) -> list[Path]:
    """Cover each blocked directory on the way to `needed` (see the module's docstring), round by
    round, until every needed path is reachable; returns the covered directories. Call it only
    inside the lab's own mount namespace."""
    mount = mount or _mount
    needed = [path.resolve() for path in needed]
    covered: list[Path] = []
    while covers := plan(needed, uid, gid):
        for directory, names in sorted(covers.items()):
            if len(covered) == MAX_COVERS:
                raise ViewError(f"more than {MAX_COVERS} directories to cover on the way to "
                                f"{', '.join(map(str, needed))}")
            _cover(directory, sorted(names), mount)
            covered.append(directory)
    unreachable = [str(path) for path in needed if first_blocked(path, uid, gid) is not None]
    if unreachable:
        raise ViewError(f"still unreachable after covering {', '.join(map(str, covered))}: "
                        f"{', '.join(unreachable)}")
    return covered


def _cover(directory: Path, names: list[str], mount) -> None:
    """An empty, searchable tmpfs over `directory`, with `names` (its entries) bound back."""
    staging = Path(tempfile.mkdtemp(prefix="benchlab-view-"))
    try:
        for name in names:
            _placeholder(staging / name, directory / name)
            mount("--bind", str(directory / name), str(staging / name))
        mount("-t", "tmpfs", "-o", "mode=0755,size=64m", "benchlab-view", str(directory))
        for name in names:
            _placeholder(directory / name, staging / name)
            mount("--move", str(staging / name), str(directory / name))
    finally:  # the placeholders are no mount points once moved
        for name in names:
            entry = staging / name
            if entry.is_dir():
                entry.rmdir()
            else:
                entry.unlink(missing_ok=True)
        staging.rmdir()


def _placeholder(path: Path, like: Path) -> None:
    """A mount point for `like`: a directory for a directory, an empty file for a file."""
    if like.is_dir():
        path.mkdir()
    else:
        path.touch()


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise ViewError(f"mount {' '.join(args)} failed: {result.stderr.strip()}")


def venv_paths(python: Path) -> list[Path]:
    """What a venv's interpreter needs: the venv itself and the Python it was made from (its
    pyvenv.cfg `home`, https://docs.python.org/3/library/venv.html)."""
    venv = python.parent.parent
    paths = [venv, python.resolve()]
    config = venv / "pyvenv.cfg"
    if config.is_file():
        for line in config.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                paths.append(Path(value.strip()).resolve().parent)
    return paths

