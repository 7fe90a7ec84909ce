"""The cluster Jobs' code for real, with only Kubernetes missing (tests/jobs_e2e_driver.py):
the code as shipped in its ConfigMaps, the plan and environment the stack renders, the locked
wheels installed by the init container's own command (the export's from what the wheelhouse
Job's own command downloaded, as in the cluster), the benchmark Jobs against the local
lab's real Dynamo graph with the real pinned AIPerf, the export Job against moto's S3 server
and a Pushgateway stand-in, and the report built from what landed in S3."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from facts import images, wheel_locks
from jobs import names, run_manifest
from local_lab import isolation
from tests import lock_check
from tests.conftest import REPO

CACHE = REPO / ".lab-work" / "jobs-e2e"  # the client Python, locked installs per lock digest
TIMEOUT_SECONDS = 40 * 60  # a first run installs ~130 wheels on a shared 2-core machine


@pytest.fixture(scope="module")
def landed(tmp_path_factory):
    prefix = isolation.unshare_argv()
    if prefix is None:
        pytest.skip("needs a private network namespace (unshare and ip; user namespaces when "
                    "not root): Dynamo 0.9.1 also listens on the machine's primary address")
    out = tmp_path_factory.mktemp("jobs-e2e") / "out"
    # The init containers' installs need PyPI: made first, on the host's network, into the cache
    # the run inside the private namespace reuses.
    installed = subprocess.run([sys.executable, "-m", "tests.jobs_e2e_driver", str(out.parent / "install"),
                                str(CACHE), "--install-only"], cwd=REPO, capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=TIMEOUT_SECONDS)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-5000:]
    env = {**os.environ, isolation.INSIDE_MARKER: "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([*prefix, sys.executable, "-m", "tests.jobs_e2e_driver", str(out), str(CACHE)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    summary = json.loads((out / "summary.json").read_text())
    return out, summary


@pytest.mark.e2e
def test_every_job_exits_zero_with_the_locked_aiperf(landed):
    out, summary = landed
    for job, outcome in summary["jobs"].items():
        assert outcome["returncode"] == 0, f"{job}: {outcome['log_tail']}"
    assert set(summary["installs"]) == {"aiperf.lock.txt", "boto3.lock.txt"}
    for lock in (wheel_locks.AIPERF, wheel_locks.BOTO3):  # what the Jobs ran: the lock, no more
        install = summary["installs"][lock.file_name]
        assert install["pip"] == images.CLIENT_IMAGE_PIP
        assert lock_check.differences(Path(install["deps"]), lock.versions(), lock.requirements) == []
    # the export installed from what the wheelhouse Job downloaded: the lock's wheels, by their hashes
    locked = re.findall(r"--hash=sha256:([0-9a-f]{64})", wheel_locks.BOTO3.text())
    assert sorted(summary["wheelhouse"].values()) == sorted(locked)


@pytest.mark.e2e
def test_every_mode_ran_ok_in_the_cloud_sweep_style_into_one_run(landed):
    out, summary = landed
    (run_dir,) = [p for p in (out / "results").iterdir() if not p.name.startswith(".")]
    graph_dir = run_dir / summary["plan"]["graph"]
    manifest = run_manifest.read_manifest(graph_dir)
    assert (manifest.profile, manifest.extra["config_hash"]) == ("cloud", summary["plan"]["config_hash"])
    assert manifest.versions["aiperf"] == "0.9.0" and manifest.extra["placement"]
    for mode in names.MODES:
        status = run_manifest.read_status(graph_dir / mode)
        assert (status.status, status.error) == ("ok", None), summary["jobs"][mode]["log_tail"]
        for step in status.steps:
            assert list((graph_dir / mode / step).rglob("profile_export_aiperf.json")), f"{mode}/{step}"
    # Dynamo's frontend may stop answering (seen once in CI): then, as the README tells a user,
    # the driver restarted it and ran that Job again, at most once; anything else fails above.
    assert len(summary["graph_restarts"]) <= 1, summary["graph_restarts"]
    # one AIPerf call per concurrency level: what the cluster's Jobs run
    assert run_manifest.read_status(graph_dir / "concurrency_sweep").steps == ["c1", "c8", "c64"]


@pytest.mark.e2e
def test_the_export_put_the_whole_run_in_s3(landed):
    out, summary = landed
    (run_dir,) = [p for p in (out / "results").iterdir() if not p.name.startswith(".")]
    files = sorted(f"{run_dir.name}/{p.relative_to(run_dir).as_posix()}"
                   for p in run_dir.rglob("*") if p.is_file())
    assert summary["s3_keys"] == files and len(files) > 20


@pytest.mark.e2e
def test_the_pushed_text_is_valid_exposition_one_group_per_aiperf_run(landed):
    out, summary = landed
    (run_dir,) = [p for p in (out / "results").iterdir() if not p.name.startswith(".")]
    runs = list(run_dir.rglob("profile_export_aiperf.json"))
    assert len(summary["pushed"]) == len(runs)
    for path, body in summary["pushed"].items():
        assert path.startswith(f"/metrics/job/benchlab/run_id/{run_dir.name}/graph/agg/mode/")
        families = {family.name: family for family in text_string_to_metric_families(body)}
        assert {"benchlab_ttft_seconds", "benchlab_output_throughput_tokens_per_second",
                "benchlab_concurrency"} <= set(families)
        assert all(sample.value >= 0 for family in families.values() for sample in family.samples)


@pytest.mark.e2e
def test_the_report_is_built_from_what_landed_and_shows_the_exports_figures(landed):
    out, summary = landed
    pulled = Path(summary["pulled"])
    (run_id,) = [p.name for p in pulled.iterdir() if p.is_dir()]
    ttft_p50 = sorted(json.loads(p.read_text())["time_to_first_token"]["p50"]
                      for p in (pulled / run_id / "agg" / "concurrency_sweep").rglob("profile_export_aiperf.json"))
    report = Path(summary["report"])
    rows = json.loads((report.parent / "tables" / "concurrency_sweep.json").read_text())["rows"]
    assert sorted(row["ttft_p50_ms"] for row in rows if row["run_id"] == run_id) == ttft_p50
    assert len(ttft_p50) == 3
