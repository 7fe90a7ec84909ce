"""The wheels each client Job installs, hash-locked: one lock file per Job under facts/locks/.

A Job that holds a secret (the download Job's HF token, the export Job's AWS role) or writes
results (the benchmarks) runs only code whose every byte is pinned: its image by digest (the
image lock) and its Python packages by sha256 (`pip install --require-hashes`, every
dependency included: https://pip.pypa.io/en/stable/topics/secure-installs/). The locks are
made for the client image's interpreter and platform by `./benchlab lock-wheels`, which asks
PyPI what pip would install there and records each wheel's hash; they are never edited by hand.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from facts import versions

LOCK_DIR = Path(__file__).resolve().parent / "locks"
# The interpreter and platform of the client image (facts/images.py): CPython 3.11 on
# Debian bookworm (glibc 2.36), x86_64 like every system instance type in facts/instances.py.
PYTHON_VERSION = "3.11"
GLIBC_MINOR = 36
ARCH = "x86_64"
_LINE = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s\\]+)"
                   r"(?P<hashes>(\s+--hash=sha256:[0-9a-f]{64})+)")


class LockError(ValueError):
    """A lock file that pip could not install in hash-checking mode."""


@dataclass(frozen=True)
class WheelLock:
    name: str                        # the Job's lock, e.g. "aiperf"
    requirements: tuple[str, ...]    # what the Job needs; the lock adds every dependency

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


AIPERF = WheelLock("aiperf", (f"aiperf=={versions.AIPERF_VERSION}",))
BOTO3 = WheelLock("boto3", (f"boto3=={versions.BOTO3_VERSION}",))
HUGGINGFACE_HUB = WheelLock("huggingface_hub", (f"huggingface_hub=={versions.HUGGINGFACE_HUB_VERSION}",))
LOCKS = (AIPERF, BOTO3, HUGGINGFACE_HUB)


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
