"""Run ids on the results volume: one per deployed configuration, never reused.

The Pulumi program is deterministic: it names a configuration by a hash (serving graph, bench
plan, versions, code), and a changed hash replaces the benchmark Jobs. The run id itself is
made in the cluster, by the first benchmark Job, from the time it starts and that hash:
`<UTC time>-<hash[:8]>`. The later Jobs of the same `pulumi up` find it through a pointer file
`<root>/.runs/<hash>.json`, which also records which Job allocated it:

- a retried pod of that same Job gets the same run id back (its partial work is set aside by
  the entrypoint, not overwritten);
- a new Job for the same configuration (the Jobs were replaced, e.g. `pulumi up --replace`)
  allocates a fresh run id, so a second run lands beside the first;
- the run directory is created exclusively: an existing one is never written into.

No Pulumi import: runs inside the cluster Jobs.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

POINTER_DIR = ".runs"
HASH_CHARS = 8


class RunError(RuntimeError):
    """The run id a Job needs cannot be had."""


# Every run id, with or without a "-<n>" suffix, in IAM's wildcards (the export role's S3 scope).
RUN_ID_GLOB = "????????T??????Z-*"


def new_run_id(config_hash: str, now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{config_hash[:HASH_CHARS]}"


def _pointer(root: Path, config_hash: str) -> Path:
    return root / POINTER_DIR / f"{config_hash}.json"


def allocate(root: Path, config_hash: str, job_uid: str, now: float | None = None) -> str:
    """The run id of this configuration's run, made by the Job `job_uid` (idempotent for it)."""
    pointer = _pointer(root, config_hash)
    if pointer.exists():
        recorded = json.loads(pointer.read_text())
        if recorded.get("job_uid") == job_uid:
            return recorded["run_id"]
    run_id = new_run_id(config_hash, now)
    for suffix in range(100):
        candidate = run_id if suffix == 0 else f"{run_id}-{suffix}"
        try:
            (root / candidate).mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            continue
        pointer.parent.mkdir(parents=True, exist_ok=True)
        partial = pointer.with_suffix(".tmp")
        partial.write_text(json.dumps({"run_id": candidate, "job_uid": job_uid,
                                       "config_hash": config_hash}) + "\n")
        partial.replace(pointer)
        return candidate
    raise RunError(f"no free run directory for {run_id} under {root}")


def current(root: Path, config_hash: str) -> str:
    """The run id the first benchmark Job allocated for this configuration."""
    pointer = _pointer(root, config_hash)
    try:
        run_id = json.loads(pointer.read_text())["run_id"]
    except FileNotFoundError:
        raise RunError(f"{pointer}: no run allocated for configuration {config_hash[:HASH_CHARS]}; "
                       "the first benchmark Job allocates it") from None
    if not (root / run_id).is_dir():
        raise RunError(f"{pointer}: names run {run_id}, whose directory is missing")
    return run_id
