"""The AIPerf export parser, on real exports of AIPerf 0.9.0 and 0.13.0
(how they were made: tests/fixtures/aiperf-*/README.txt).

Expected figures are read from AIPerf's other outputs of the same run (its CSV, its per-request
records, its sweep aggregate, its directory names), never typed in.
"""
from __future__ import annotations

import csv
import json
import shutil
import statistics
from collections import defaultdict
from pathlib import Path

import pytest

from jobs import exports
from jobs.exports import ExportError
from tests.conftest import AIPERF_VERSIONS as VERSIONS, unpack_aiperf_exports

# Run-summary metric -> its row header in AIPerf's own profile_export_aiperf.csv
CSV_ROWS = {
    "time_to_first_token": "Time to First Token (ms)",
    "inter_token_latency": "Inter Token Latency (ms)",
    "request_latency": "Request Latency (ms)",
}


@pytest.fixture(scope="module", params=VERSIONS)
def version(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def tree(version, tmp_path_factory) -> Path:
    """The version's real exports, unpacked: <graph>/<mode>/<step>/<AIPerf files>."""
    target = tmp_path_factory.mktemp(f"aiperf-{version}")
    return unpack_aiperf_exports(version, target)


def summaries(tree: Path) -> list[Path]:
    found = sorted(tree.rglob(exports.PROFILE_EXPORT))
    assert found, f"no {exports.PROFILE_EXPORT} under {tree}"
    return found


def aiperf_csv(path: Path) -> dict[str, dict[str, float]]:
    """AIPerf's CSV summary: a per-request section (Metric,avg,...,p99,...) then Metric,Value."""
    values: dict[str, dict[str, float]] = {}
    header: list[str] = []
    for row in csv.reader(path.read_text().splitlines()):
        if not row:
            continue
        if row[0] == "Metric":
            header = row
            continue
        values[row[0]] = {stat: float(cell) for stat, cell in zip(header[1:], row[1:]) if cell}
    return values


def test_every_summary_parses_and_names_the_aiperf_that_wrote_it(tree, version):
    for path in summaries(tree):
        assert exports.parse_profile_export(path).aiperf_version == version


def test_summary_figures_equal_aiperfs_own_csv(tree):
    for path in summaries(tree):
        export = exports.parse_profile_export(path)
        table = aiperf_csv(path.with_suffix(".csv"))
        for metric, header in CSV_ROWS.items():
            for stat in ("avg", "p50", "p99"):
                assert export.stat(metric, stat) == pytest.approx(table[header][stat], abs=0.006), \
                    (path, metric, stat)
        assert export.stat("output_token_throughput", "avg") == pytest.approx(
            table["Output Token Throughput (tokens/sec)"]["Value"], abs=0.006)
        assert export.stat("request_count", "avg") == table["Request Count"]["Value"]


def test_concurrency_comes_from_the_runs_own_input_config_whatever_the_directory(tree, tmp_path):
    sweep_levels = sorted((tree / "agg/concurrency_sweep/sweep").glob("concurrency_*"))
    assert len(sweep_levels) == 3
    for level_dir in sweep_levels + sorted((tree / "disagg/concurrency_sweep").iterdir()):
        expected = exports.concurrency_from_dir_name(level_dir)
        moved = tmp_path / f"renamed-{level_dir.name}"
        shutil.copytree(level_dir, moved)
        assert exports.concurrency_from_dir_name(moved) is None
        assert exports.parse_profile_export(moved / exports.PROFILE_EXPORT).concurrency == expected


def test_configured_sequence_lengths_are_those_of_the_producing_command(tree):
    # README.txt: every call ran with --isl 96 --osl 24; --seq-dist replaces them.
    sweep = exports.parse_profile_export(
        tree / "agg/concurrency_sweep/sweep/concurrency_1" / exports.PROFILE_EXPORT)
    assert (sweep.isl, sweep.osl) == (96.0, 24.0)
    for step in ("uniform", "zipf"):
        mixed = exports.parse_profile_export(
            tree / "agg/sequence_distribution" / step / exports.PROFILE_EXPORT)
        assert (mixed.isl, mixed.osl) == (None, None)


def test_sweep_aggregate_levels_equal_the_per_level_summaries(tree):
    sweep_dir = tree / "agg/concurrency_sweep/sweep"
    levels = exports.parse_sweep_aggregate(sweep_dir / "sweep_aggregate" / exports.SWEEP_AGGREGATE)
    assert [level.concurrency for level in levels] == [1, 2, 4]
    for level in levels:
        run = exports.parse_profile_export(
            sweep_dir / f"concurrency_{level.concurrency}" / exports.PROFILE_EXPORT)
        for metric in ("time_to_first_token", "inter_token_latency", "request_latency"):
            for stat in ("avg", "p50", "p99"):
                assert level.stat(metric, stat) == pytest.approx(run.stat(metric, stat))
        # the aggregate's std/min/max describe trials, not requests: not carried over
        assert level.stat("time_to_first_token", "std") is None


def test_multi_turn_records_hold_every_turn_of_every_conversation(tree):
    run_dir = tree / "agg/multi_turn/turns5"
    summary = exports.parse_profile_export(run_dir / exports.PROFILE_EXPORT)
    records = exports.parse_request_records(run_dir / exports.REQUEST_RECORDS)
    config = json.loads((run_dir / exports.PROFILE_EXPORT).read_text())["input_config"]
    turns = defaultdict(list)
    for record in records:
        assert record.error is None and record.end_ns > record.start_ns
        turns[record.conversation_id].append(record.turn_index)
    assert len(records) == summary.stat("request_count", "avg")
    assert len(turns) == config["phases"][0]["sessions"]
    expected_turns = list(range(int(config["datasets"][0]["turns"]["mean"])))
    assert all(sorted(indexes) == expected_turns for indexes in turns.values())
    assert statistics.mean(record.metrics["time_to_first_token"] for record in records) == \
        pytest.approx(summary.stat("time_to_first_token", "avg"))


def test_a_list_style_sweep_step_holds_one_run_per_level(tree):
    runs = exports.find_run_dirs(tree / "agg/concurrency_sweep/sweep")
    assert [run.name for run in runs] == ["concurrency_1", "concurrency_2", "concurrency_4"]
    assert exports.find_run_dirs(tree / "disagg/concurrency_sweep/c1") == \
        [tree / "disagg/concurrency_sweep/c1"]


def test_missing_step_or_export_is_a_named_problem(tree, tmp_path):
    with pytest.raises(ExportError, match="step directory missing") as missing:
        exports.find_run_dirs(tmp_path / "hit75")
    assert missing.value.path == tmp_path / "hit75"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportError, match="no AIPerf export found"):
        exports.find_run_dirs(tmp_path / "empty")
    # AIPerf writes no summary when every request failed: the run is still found, and named
    level = tmp_path / "c8"
    level.mkdir()
    shutil.copy(tree / "disagg/concurrency_sweep/c1" / exports.REQUEST_RECORDS, level)
    assert exports.find_run_dirs(level) == [level]
    with pytest.raises(ExportError, match="missing") as no_summary:
        exports.parse_profile_export(level / exports.PROFILE_EXPORT)
    assert no_summary.value.path == level / exports.PROFILE_EXPORT


def _broken_copy(tree: Path, tmp_path: Path, edit) -> Path:
    path = tmp_path / exports.PROFILE_EXPORT
    path.write_text(edit((tree / "agg/prefix_cache/hit0" / exports.PROFILE_EXPORT).read_text()))
    return path


def test_truncated_summary_is_named(tree, tmp_path):
    path = _broken_copy(tree, tmp_path, lambda text: text[: len(text) // 2])
    with pytest.raises(ExportError, match="not valid JSON") as err:
        exports.parse_profile_export(path)
    assert err.value.path == path and str(path) in str(err.value)


def test_summary_without_a_required_metric_is_named(tree, tmp_path):
    def drop_ttft(text: str) -> str:
        body = json.loads(text)
        del body["time_to_first_token"]
        return json.dumps(body)

    with pytest.raises(ExportError, match="missing metric time_to_first_token"):
        exports.parse_profile_export(_broken_copy(tree, tmp_path, drop_ttft))


def test_summary_with_a_non_numeric_required_figure_is_named(tree, tmp_path):
    def corrupt_p99(text: str) -> str:
        body = json.loads(text)
        body["inter_token_latency"]["p99"] = "n/a"
        return json.dumps(body)

    with pytest.raises(ExportError, match="inter_token_latency: p99 missing or not a number"):
        exports.parse_profile_export(_broken_copy(tree, tmp_path, corrupt_p99))


def test_cancelled_run_is_named(tree, tmp_path):
    def cancel(text: str) -> str:
        return json.dumps(json.loads(text) | {"was_cancelled": True})

    with pytest.raises(ExportError, match="cancelled or incomplete"):
        exports.parse_profile_export(_broken_copy(tree, tmp_path, cancel))


def test_corrupt_request_record_names_its_line(tree, tmp_path):
    lines = (tree / "agg/multi_turn/turns5" / exports.REQUEST_RECORDS).read_text().splitlines()
    path = tmp_path / exports.REQUEST_RECORDS
    path.write_text("\n".join(lines[:4] + [lines[4][:100]] + lines[5:]) + "\n")
    with pytest.raises(ExportError, match="line 5: not an AIPerf request record"):
        exports.parse_request_records(path)
