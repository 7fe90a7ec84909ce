"""Wheel-lock checks shared by the lock tests and the Jobs e2e driver: stand-in wheels made here
(PEP 427), what an install left in a directory, and whether that is exactly a lock, closed under
its wheels' own dependencies."""
from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from facts import wheel_locks


def make_wheel(directory: Path, name: str, version: str, requires: tuple[str, ...] = (),
               extras: tuple[str, ...] = ()) -> Path:
    """A minimal, valid pure-Python wheel declaring `requires` (Requires-Dist lines)."""
    module = name.replace("-", "_").replace(".", "_")
    dist_info = f"{module}-{version}.dist-info"
    metadata = "".join([f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
                        *(f"Provides-Extra: {extra}\n" for extra in extras),
                        *(f"Requires-Dist: {line}\n" for line in requires)])
    files = {f"{module}/__init__.py": "VALUE = 1\n", f"{dist_info}/METADATA": metadata,
             f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                   "Tag: py3-none-any\n"}
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).decode().rstrip('=')},"
              f"{len(text.encode())}" for path, text in files.items()]
    files[f"{dist_info}/RECORD"] = "\n".join(record + [f"{dist_info}/RECORD,,"]) + "\n"
    wheel = directory / f"{module}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def metadata(site: Path) -> dict[str, dict]:
    """normalized name -> the METADATA headers of each distribution installed in `site`."""
    found = {}
    for path in site.glob("*.dist-info/METADATA"):
        headers = Parser().parsestr(path.read_text(encoding="utf-8", errors="replace"), headersonly=True)
        found[wheel_locks.normalize(headers["Name"])] = {
            "version": headers["Version"], "requires": headers.get_all("Requires-Dist") or []}
    return found


def simple_index(wheels: Path, root: Path) -> str:
    """A PEP 503 index of the wheels in `wheels`, under `root`: pip reads one project's page per
    requirement there (a --find-links directory makes it scan every file for each)."""
    projects: dict[str, list[str]] = {}
    for wheel in sorted(wheels.glob("*.whl")):
        projects.setdefault(wheel_locks.normalize(wheel.name.split("-")[0]), []).append(wheel.name)
    for project, files in projects.items():
        (root / project).mkdir(parents=True)
        links = "".join(f'<a href="{(wheels / name).as_uri()}">{name}</a>\n' for name in files)
        (root / project / "index.html").write_text(f"<!DOCTYPE html><html><body>\n{links}</body></html>\n")
    return root.as_uri()


def install_from(wheels: Path, lock: Path, target: Path, python: str, flags: tuple[str, ...]):
    """pip install `flags -r lock` into `target` from an index of `wheels` alone."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PIP_")},
           "PIP_CONFIG_FILE": os.devnull}
    index = simple_index(wheels, target.parent / f"{target.name}-index")
    return subprocess.run([python, "-m", "pip", "install", "--disable-pip-version-check",
                           "--index-url", index, "--target", str(target),
                           *flags, "-r", str(lock)], env=env, capture_output=True, text=True,
                          timeout=600)


def differences(site: Path, locked: dict[str, str], top_level: tuple[str, ...]) -> list[str]:
    """How what `site` holds differs from the lock (missing, extra, other versions), and each
    dependency of an installed wheel that the installed set leaves unmet."""
    installed = metadata(site)
    problems = [f"{name}: installed {have['version'] if have else 'nothing'}, locked {want or 'nothing'}"
                for name in sorted(set(installed) | set(locked))
                for have, want in [(installed.get(name), locked.get(name))]
                if (have and have["version"]) != want]
    todo = [(Requirement(line), "") for line in top_level]
    seen = set()
    while todo:
        requirement, extra = todo.pop()
        key = (str(requirement), extra)
        if key in seen or (requirement.marker and not requirement.marker.evaluate({"extra": extra})):
            continue
        seen.add(key)
        name = canonicalize_name(requirement.name)
        have = installed.get(name)
        if have is None or not requirement.specifier.contains(have["version"], prereleases=True):
            problems.append(f"unmet: {requirement} (installed: {have['version'] if have else 'nothing'})")
            continue
        for wanted in ("", *requirement.extras):
            todo += [(Requirement(line), wanted) for line in have["requires"]]
    return problems
