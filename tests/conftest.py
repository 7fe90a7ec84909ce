"""Shared fixtures: the reference material beside the repo, and the offline Pulumi run."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cli import offline

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
AIPERF_VERSIONS = ("0.9.0", "0.13.0")
# A serving image with the EFA user space: disagg over EFA refuses the stock one (stacks/config.py).
EFA_IMAGE = "registry.example.com/lab/vllm-runtime:0.9.1-efa"


def serving_mode(mode: str) -> dict:
    """`benchlab:serving` keys for `mode`, with the image disagg over EFA needs."""
    return {"mode": mode, **({"image": EFA_IMAGE} if mode == "disagg" else {})}


def unpack_aiperf_exports(version: str, target: Path) -> Path:
    """Real AIPerf exports of `version` (tests/fixtures/aiperf-<version>/README.txt says how
    they were made), unpacked into `target`: <graph>/<mode>/<step>/<AIPerf files>."""
    shutil.unpack_archive(REPO / "tests" / "fixtures" / f"aiperf-{version}" / "exports.tar.gz", target)
    return target


@pytest.fixture
def shared():
    """Path of a file under ../shared/reference, or skip when the reference is absent."""
    def resolve(relative: str) -> Path:
        path = SHARED / "reference" / relative
        if not path.exists():
            pytest.skip(f"reference material {path} is absent (../shared beside the repo); "
                        "this check compares against the pinned upstream files")
        return path
    return resolve


@pytest.fixture
def dev_config() -> dict:
    return offline.stack_config(str(REPO / "Pulumi.dev.yaml"))


@pytest.fixture
def run_lab(dev_config):
    """Run the whole program offline: run_lab(overrides={...}, secrets={...}, stack=...)."""
    def run(overrides: dict | None = None, secrets: dict | None = None, stack: str = "dev",
            base: dict | None = None) -> offline.Recording:
        config = {**(dev_config if base is None else base), **(overrides or {})}
        return offline.run_program(config, secrets, stack=stack)
    return run
