"""GPU utilisation and power per step, from a real AIPerf 0.9.0 GPU telemetry export
(tests/fixtures/gpu-telemetry-0.9.0: AIPerf scraped a DCGM-exporter page served on 127.0.0.1
while it benchmarked a local Dynamo graph)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from statistics import fmean

import pytest

from jobs.exports import ExportError
from report import gpu_telemetry
from report.gpu_telemetry import GPU_TELEMETRY_EXPORT, parse_gpu_telemetry, per_node

ARCHIVE = Path(__file__).parent / "fixtures" / "gpu-telemetry-0.9.0" / "exports.tar.gz"
STEP = Path("agg") / "prefix_cache" / "hit0"


@pytest.fixture(scope="module")
def captured(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("gpu-telemetry")
    shutil.unpack_archive(ARCHIVE, target)
    return target


def _aiperf_summary(step_dir: Path) -> dict:
    """AIPerf's own per-GPU summary of the same scrapes (profile_export_aiperf.json)."""
    body = json.loads((step_dir / "profile_export_aiperf.json").read_text())
    (endpoint,) = body["telemetry_data"]["endpoints"].values()
    return endpoint["gpus"]


def test_the_parser_agrees_with_aiperfs_own_summary_of_the_profiling_window(captured):
    samples = parse_gpu_telemetry(captured / STEP / GPU_TELEMETRY_EXPORT)
    gpus = _aiperf_summary(captured / STEP)
    assert {s.gpu for s in samples} == {gpu["gpu_uuid"] for gpu in gpus.values()}
    # AIPerf's summary leaves out its baseline scrape, taken before the load starts
    baseline, first = sorted({s.time_s for s in samples})[:2]
    (node,) = per_node(samples, first, float("inf"))
    assert (node.node, node.model, node.gpus) == (
        {gpu["hostname"] for gpu in gpus.values()}.pop(), {gpu["gpu_name"] for gpu in gpus.values()}.pop(), 2)
    for mine, theirs in ((node.util_pct, "gpu_utilization"), (node.power_w, "gpu_power_usage")):
        assert mine == pytest.approx(fmean(gpu["metrics"][theirs]["avg"] for gpu in gpus.values()))
    assert per_node(samples, baseline - 10, baseline - 1) == []


def test_a_malformed_or_missing_export_is_named(tmp_path, captured):
    good = (captured / STEP / GPU_TELEMETRY_EXPORT).read_text().splitlines()
    broken = tmp_path / GPU_TELEMETRY_EXPORT
    broken.write_text(good[0] + "\n" + good[1].replace('"timestamp_ns"', '"time"') + "\n")
    with pytest.raises(ExportError, match="line 2: not an AIPerf GPU telemetry record"):
        parse_gpu_telemetry(broken)
    broken.write_text(good[0].replace('"gpu_utilization":', '"gpu_utilization":"busy","x":') + "\n")
    with pytest.raises(ExportError, match="line 1: .*'busy' is not a number"):
        parse_gpu_telemetry(broken)
    with pytest.raises(ExportError, match="missing"):  # named as the other exports name it
        parse_gpu_telemetry(tmp_path / "absent.jsonl")
    with pytest.raises(ExportError, match="unreadable"):
        parse_gpu_telemetry(tmp_path)  # a directory where the file should be


def _report_rows(captured: Path, tmp_path: Path, simulated: bool) -> list[dict]:
    from tests.test_report import add_run  # the same results layout the report tests use
    from report.render import build_report

    run = add_run(tmp_path / "results", "run-1", captured, "2026-11-30T02:00:00Z",
                  {"agg": simulated}, graphs=("agg",))
    report = build_report(run, tmp_path / "report")
    return json.loads((report.parent / "tables" / "server_evidence.json").read_text())["rows"]


def _records_window(step_dir: Path) -> tuple[float, float]:
    meta = [json.loads(line)["metadata"] for line in
            (step_dir / "profile_export.jsonl").read_text().splitlines()]
    return (min(m["request_start_ns"] for m in meta) / 1e9, max(m["request_end_ns"] for m in meta) / 1e9)


def test_a_cloud_step_shows_its_gpus_utilisation_power_and_energy_per_token(captured, tmp_path):
    (row,) = _report_rows(captured, tmp_path, simulated=False)
    (node,) = per_node(parse_gpu_telemetry(captured / STEP / GPU_TELEMETRY_EXPORT),
                       *_records_window(captured / STEP))
    assert (row["gpu_util_pct"], row["gpu_power_w"]) == (node.util_pct, node.power_w)
    assert row["gpus"] == f"{node.node}, 2x {node.model}: {node.util_pct:.0f} %, {node.power_w:.0f} W"
    summary = json.loads((captured / STEP / "profile_export_aiperf.json").read_text())
    assert row["gpu_energy_j_per_token"] == pytest.approx(
        2 * node.power_w * summary["benchmark_duration"]["avg"] / summary["total_output_tokens"]["avg"])
    assert "GPU utilisation" not in row["not_exposed"]


def test_a_simulated_step_says_there_is_no_gpu(captured, tmp_path):
    (row,) = _report_rows(captured, tmp_path, simulated=True)
    assert "GPU utilisation, power: not exposed by the mocker (simulated: no GPU)" in row["not_exposed"]
    assert row["gpus"] is None and row["gpu_power_w"] is None


def test_a_cloud_step_without_telemetry_says_why_and_a_broken_export_is_listed(captured, tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(captured, tree)
    (tree / STEP / GPU_TELEMETRY_EXPORT).unlink()
    (row,) = _report_rows(tree, tmp_path / "without", simulated=False)
    assert "GPU utilisation, power: not exposed (no DCGM exporter found" in row["not_exposed"]
    (tree / STEP / GPU_TELEMETRY_EXPORT).write_text("{not json\n")
    (row,) = _report_rows(tree, tmp_path / "broken", simulated=False)
    assert "GPU utilisation, power: export unreadable" in row["not_exposed"]
    assert row["gpu_util_pct"] is None
    markdown = (tmp_path / "broken" / "report" / "report.md")
    assert gpu_telemetry.GPU_TELEMETRY_EXPORT in markdown.read_text()  # the file is named
