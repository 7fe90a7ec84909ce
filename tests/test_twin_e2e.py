"""The twin end to end: a quick local run of the agg graph with the twin on, whose TTFT at
concurrency 1 is the timing table's prefill latency for the sweep's ISL (proof the mocker used
it), and whose manifest and report name what was simulated."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import modes, run_manifest
from tests.conftest import REPO
from tests.test_plan import aic_or_skip

LAB_TIMEOUT_SECONDS = 20 * 60
# What the table cannot know: the frontend's and AIPerf's own share of a TTFT on loopback, and
# the decode step the mocker adds to the first token in an agg worker (its two tables summed).
TTFT_SLACK_MS = 25.0


@pytest.mark.e2e
def test_quick_agg_run_with_the_twin_takes_its_timing_from_the_table(tmp_path):
    tools = aic_or_skip()
    result = subprocess.run(
        [sys.executable, "-m", "cli", "local", "--profile", "quick", "--graphs", "agg", "--twin",
         "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work"),
         "--tools-dir", str(tools)],
        cwd=REPO, text=True, capture_output=True, timeout=LAB_TIMEOUT_SECONDS)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (run_dir,) = (tmp_path / "out").iterdir()
    twin = run_manifest.read_manifest(run_dir / "agg").extra["twin"]
    assert twin["summary"] == "4 x a100_sxm TP4 (worker)"
    worker = twin["roles"]["worker"]
    assert (worker["kv_blocks"], worker["perf_db"]) == (17338, "0.14.0")
    table = json.loads((Path(worker["table"]).parent / "points.json").read_text())
    isl = modes.scaled(modes.BenchPlan(), "quick").concurrency_sweep.isl
    predicted = dict(table["points"]["prefill"])[isl]
    export = next(run_dir.glob("agg/concurrency_sweep/sweep/concurrency_1/profile_export_aiperf.json"))
    measured = json.loads(export.read_text())["time_to_first_token"]["p50"]
    assert predicted <= measured <= predicted + TTFT_SLACK_MS, (predicted, measured)
    report = (run_dir / "report" / "report.md").read_text()
    assert "agg (simulated): simulated: 4 x a100_sxm TP4 (worker) from aiconfigurator==0.12.0" in report
