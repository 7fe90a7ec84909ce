"""The results-export Job: copy the run to S3, push its summary, then say how the run went.

`python -m jobs.export_to_s3`, after the last benchmark Job. Uploads
`<root>/<run_id>/` to `s3://<bucket>/<run_id>/` (the same layout `benchlab results pull` reads);
objects already there with the same size are skipped, so a retried export resumes. The AWS
credentials come from the Job's service account (IRSA: a role limited to the bucket).

Once the upload is complete it writes the export's marker (`exported.json`, also uploaded) into
the run's graph directory: the GPU release (jobs/gpu_release.py) waits for it.

Exit code: 0 when the run is exported and every mode finished ok; 1 otherwise, after the
upload, so `pulumi up` ends in an error that names the failed modes while their data is safe.

No Pulumi import.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any, Mapping

from jobs import names, push_summary, run_manifest, runs


def upload_run(root: Path, run_id: str, bucket: str, s3: Any) -> tuple[int, int]:
    """Upload one run directory; return (uploaded, skipped) file counts."""
    prefix = f"{run_id}/"
    existing = {item["Key"]: item["Size"]
                for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                for item in page.get("Contents", [])}
    uploaded = skipped = 0
    run_dir = root / run_id
    for path in regular_files(run_dir):
        key = prefix + path.relative_to(run_dir).as_posix()
        try:  # O_NOFOLLOW: a file swapped for a link since the walk is refused, not followed
            body = os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb")
        except OSError as err:
            print(f"export: {key} not uploaded: {err}", file=sys.stderr)
            continue
        with body:
            if existing.get(key) == os.fstat(body.fileno()).st_size:
                skipped += 1
                continue
            s3.upload_fileobj(body, bucket, key)
        uploaded += 1
    return uploaded, skipped


def regular_files(run_dir: Path) -> list[Path]:
    """Every regular file below `run_dir`, never through a symbolic link: a link planted on the
    results volume could point at the pod's own token. Each link passed over is named."""
    found = []
    for parent, dirs, files in os.walk(run_dir):  # followlinks=False: a linked directory is not entered
        for name in [*dirs, *files]:
            path = Path(parent, name)
            mode = path.lstat().st_mode
            if stat.S_ISREG(mode):
                found.append(path)
            elif not stat.S_ISDIR(mode):
                print(f"export: {path.relative_to(run_dir)} is not a regular file; not uploaded",
                      file=sys.stderr)
    return sorted(found)


def unfinished_modes(graph_dir: Path, expected: list[str]) -> list[str]:
    """The expected modes that did not finish ok, each with why."""
    found = []
    for mode in expected:
        try:
            status = run_manifest.read_status(graph_dir / mode)
        except run_manifest.ManifestError as err:
            found.append(f"{mode}: {err}")
            continue
        if status.status != "ok":
            found.append(f"{mode}: {status.status}" + (f" ({status.error})" if status.error else ""))
    return found


def main(env: Mapping[str, str] = os.environ, s3: Any = None, now: dt.datetime | None = None) -> int:
    plan = json.loads(Path(env["PLAN_FILE"]).read_text())
    root = Path(env["RESULTS_ROOT"])
    run_id = runs.current(root, plan["config_hash"])
    graph_dir = root / run_id / plan["graph"]
    if s3 is None:
        import boto3  # installed by the Job at start
        s3 = boto3.client("s3")
    uploaded, skipped = upload_run(root, run_id, env["RESULTS_BUCKET"], s3)
    print(f"run {run_id}: {uploaded} files uploaded to s3://{env['RESULTS_BUCKET']}/{run_id}/, "
          f"{skipped} already there", flush=True)
    # Only now is the run safe in S3: the marker says so, to the GPU release and in the bucket.
    marker = run_manifest.write_exported(graph_dir, now or dt.datetime.now(dt.timezone.utc),
                                         env["RESULTS_BUCKET"])
    s3.upload_file(str(marker), env["RESULTS_BUCKET"], f"{run_id}/{plan['graph']}/{marker.name}")

    problems = push_summary.push_run(env["PUSHGATEWAY_URL"], run_id, graph_dir)
    problems += unfinished_modes(graph_dir, list(names.MODES))
    for problem in problems:
        print(f"problem: {problem}", flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
