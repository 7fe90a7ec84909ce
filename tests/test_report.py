"""The report, built from results trees made of real AIPerf exports (tests/fixtures/*/README.txt)
laid out as the local lab and the cloud Jobs write them, with manifests written by run_manifest."""
from __future__ import annotations

import csv
import json
import re
import shutil
import statistics
from datetime import date, timedelta
from pathlib import Path

import pytest
from PIL import Image
from tests.conftest import AIPERF_VERSIONS as VERSIONS, unpack_aiperf_exports

from jobs import exports
from report.inputs import load_results
from report.render import ABSENT, REPORT_FILE, TABLES_DIR, build_report
from report.plots import SIMULATED_NOTE
from jobs.run_manifest import (ManifestError, ModeStatus, NodeGroup, RunManifest, WorkerSpec,
                                     read_manifest, write_manifest, write_status)
from cli.cli import main as lab_main
from facts.instances import PRICES_AS_OF, facts, stale_prices_warning
from local_lab import cloud_shape
from stacks.config import StackConfig

NODES = {
    "agg": [NodeGroup("prefill", "p4d.24xlarge", 1, 8)],
    "disagg": [NodeGroup("prefill", "p4d.24xlarge", 1, 8),
               NodeGroup("decode", "g6e.12xlarge", 2, 4)],
}
WORKERS = {"agg": {"decode": WorkerSpec(1, 8)},
           "disagg": {"prefill": WorkerSpec(1, 8), "decode": WorkerSpec(2, 4)}}


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    """Each version's real exports, unpacked once: <graph>/<mode>/<step>/<AIPerf files>."""
    unpacked = {}
    for version in VERSIONS:
        unpacked[version] = tmp_path_factory.mktemp(f"aiperf-{version}")
        unpack_aiperf_exports(version, unpacked[version])
    return unpacked


def manifest(run_id: str, graph: str, created: str, simulated: bool, **changes) -> RunManifest:
    fields = dict(run_id=run_id, graph=graph, simulated=simulated, profile="smoke", created=created,
                  versions={"dynamo": "0.9.1", "aiperf": "0.9.0"}, model="tiny-bpe",
                  nodes=NODES[graph], workers=WORKERS[graph])
    return RunManifest(**(fields | changes))


def add_run(root: Path, run_id: str, tree: Path, created: str, simulated: dict[str, bool],
            graphs=("agg", "disagg")) -> Path:
    """<root>/<run_id>/<graph>/{manifest.json, <mode>/status.json, <mode>/<step>/...}."""
    for graph in graphs:
        graph_dir = root / run_id / graph
        shutil.copytree(tree / graph, graph_dir)
        write_manifest(graph_dir, manifest(run_id, graph, created, simulated[graph]))
        for mode_dir in sorted(path for path in graph_dir.iterdir() if path.is_dir()):
            steps = sorted(path.name for path in mode_dir.iterdir() if path.is_dir())
            write_status(mode_dir, ModeStatus("ok", None, created, created, 60, steps))
    return root / run_id


def table(report: Path, name: str) -> list[dict]:
    return json.loads((report.parent / TABLES_DIR / f"{name}.json").read_text())["rows"]


def export_of(root: Path, row: dict) -> exports.ProfileExport:
    return exports.parse_profile_export(root / row["source"])


@pytest.fixture(scope="module", params=VERSIONS)
def one_run(request, trees, tmp_path_factory) -> tuple[Path, Path]:
    """A single real run (agg simulated, disagg not) and the report built from it (read-only)."""
    root = tmp_path_factory.mktemp(f"one-run-{request.param}")
    run = add_run(root / "results", "run-1", trees[request.param], "2026-11-22T10:00:00Z",
                  {"agg": True, "disagg": False})
    return run, build_report(run, root / "report")


def test_sweep_figures_in_tables_and_markdown_equal_the_export_values(one_run):
    run, report = one_run
    markdown = report.read_text()
    rows = table(report, "concurrency_sweep")
    with open(report.parent / TABLES_DIR / "concurrency_sweep.csv") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert len(rows) == len(csv_rows) == len(list((run / "agg/concurrency_sweep/sweep")
                                                  .glob("concurrency_*"))) + 2
    for row, csv_row in zip(rows, csv_rows):
        export = export_of(run.parent, row)
        figures = {"ttft_p50_ms": ("time_to_first_token", "p50"),
                   "ttft_p99_ms": ("time_to_first_token", "p99"),
                   "itl_p50_ms": ("inter_token_latency", "p50"),
                   "itl_p99_ms": ("inter_token_latency", "p99"),
                   "latency_p50_ms": ("request_latency", "p50"),
                   "latency_p99_ms": ("request_latency", "p99"),
                   "output_tokens_per_s": ("output_token_throughput", "avg"),
                   "tokens_per_s_per_user": ("output_token_throughput_per_user", "avg")}
        for column, (metric, stat) in figures.items():
            assert row[column] == export.stat(metric, stat), column
            assert float(csv_row[column]) == export.stat(metric, stat), column
        assert row["concurrency"] == export.concurrency
        gpus = read_manifest(run / row["graph"].split()[0]).total_gpus
        assert row["tokens_per_s_per_gpu"] == export.stat("output_token_throughput", "avg") / gpus
        assert f"{export.stat('time_to_first_token', 'p50'):,.2f}" in markdown


def test_prefix_cache_reduction_is_relative_to_the_zero_hit_run(one_run):
    run, report = one_run
    rows = {row["hit_ratio_pct"]: row for row in table(report, "prefix_cache")}
    assert sorted(rows) == [0, 50, 100]
    base = export_of(run.parent, rows[0])
    assert rows[0]["ttft_p50_reduction_pct"] == 0 and rows[0]["throughput_gain_pct"] == 0
    for hit in (50, 100):
        export = export_of(run.parent, rows[hit])
        base_ttft = base.stat("time_to_first_token", "p50")
        ttft = export.stat("time_to_first_token", "p50")
        assert rows[hit]["ttft_p50_reduction_pct"] == \
            pytest.approx((base_ttft - ttft) / base_ttft * 100)
        assert rows[hit]["output_tokens_per_s"] == export.stat("output_token_throughput", "avg")


def test_sequence_distribution_spread_comes_from_the_export(one_run):
    run, report = one_run
    rows = table(report, "sequence_distribution")
    assert [row["distribution"] for row in rows] == ["uniform", "zipf"]
    for row in rows:
        export = export_of(run.parent, row)
        for metric, prefix in (("time_to_first_token", "ttft"),
                               ("output_token_throughput_per_user", "tps_user")):
            assert row[f"{prefix}_cv"] == export.stat(metric, "std") / export.stat(metric, "avg")
            assert row[f"{prefix}_p99_over_p50"] == \
                export.stat(metric, "p99") / export.stat(metric, "p50")


def test_multi_turn_figures_come_from_the_per_request_records(one_run):
    run, report = one_run
    [conversations] = table(report, "multi_turn")
    records = exports.parse_request_records(
        run.parent / Path(conversations["source"]).parent / exports.REQUEST_RECORDS)
    turns = table(report, "multi_turn_per_turn")
    assert [row["turn"] for row in turns] == [1, 2, 3]
    for row in turns:
        ttfts = [record.metrics["time_to_first_token"] for record in records
                 if record.turn_index == row["turn"] - 1]
        assert row["ttft_avg_ms"] == pytest.approx(statistics.mean(ttfts))
        assert row["cache_hit_pct"] is None  # the mocker reports no cached tokens: absent, not 0
    spans = {}
    for record in records:
        start, end = spans.get(record.conversation_id, (record.start_ns, record.end_ns))
        spans[record.conversation_id] = (min(start, record.start_ns), max(end, record.end_ns))
    assert conversations["conversations"] == len(spans)
    assert conversations["conversation_time_max_s"] == pytest.approx(
        max(end - start for start, end in spans.values()) / 1e9)
    assert conversations["cache_hit_pct"] is None
    assert f"| {ABSENT} |" in report.read_text()


def test_cost_uses_the_dated_price_table_and_the_manifest_nodes(one_run):
    run, report = one_run
    rows = table(report, "cost_efficiency")
    assert {row["graph"] for row in rows} == {"agg (simulated: the mocker's built-in timing)", "disagg"}
    for row in rows:
        nodes = NODES[row["graph"].split()[0]]
        usd_per_hour = sum(g.count * facts(g.instance_type).on_demand_usd_per_hour for g in nodes)
        assert row["usd_per_hour"] == pytest.approx(usd_per_hour)
        assert row["usd_per_million_output_tokens"] == pytest.approx(
            usd_per_hour / (row["output_tokens_per_s"] * 3600) * 1e6)
    markdown = report.read_text()
    assert PRICES_AS_OF in markdown and "illustrative" in markdown


def test_simulated_results_are_labelled_everywhere(one_run):
    _, report = one_run
    for path in (report.parent / TABLES_DIR).glob("*.json"):
        for row in json.loads(path.read_text())["rows"]:
            if path.stem in ("findings", "recommendations"):  # across graphs: the text says it
                assert " ".join(map(str, row.values())).count("Simulated") == 1, row
                continue
            assert row["simulated"] == row["graph"].startswith("agg")
            assert row["graph"] in ("agg (simulated: the mocker's built-in timing)", "disagg")
    markdown = report.read_text()
    assert SIMULATED_NOTE in markdown
    plots = sorted(report.parent.glob("*.png"))
    assert {path.stem for path in plots} == {"concurrency_sweep", "pareto", "cost_efficiency",
                                             "prefix_cache", "sequence_distribution",
                                             "multi_turn_per_turn"}
    for path in plots:
        assert f"]({path.name})" in markdown
        with Image.open(path) as image:
            assert image.format == "PNG"
            assert SIMULATED_NOTE in image.text["Title"]  # every plot here has agg rows


def test_pareto_marks_the_frontier_of_both_graphs_together(one_run):
    _, report = one_run
    rows = table(report, "pareto")
    assert len(rows) == len(table(report, "concurrency_sweep"))
    assert len({row["graph"] for row in rows}) == 2
    for row in rows:
        beaten = any(other is not row
                     and other["tokens_per_s_per_user"] >= row["tokens_per_s_per_user"]
                     and other["tokens_per_s_per_gpu"] >= row["tokens_per_s_per_gpu"]
                     and (other["tokens_per_s_per_user"], other["tokens_per_s_per_gpu"])
                     != (row["tokens_per_s_per_user"], row["tokens_per_s_per_gpu"])
                     for other in rows)
        assert row["pareto_optimal"] == (not beaten)
        assert row["requests"] is not None
    assert any(row["pareto_optimal"] for row in rows)


def test_every_figure_table_row_carries_its_request_count_and_flags_too_few(one_run):
    _, report = one_run
    markdown = report.read_text()
    for name in ("concurrency_sweep", "pareto", "cost_efficiency", "prefix_cache",
                 "sequence_distribution", "multi_turn", "multi_turn_per_turn"):
        rows = table(report, name)
        assert rows and all(row["requests"] for row in rows), name
        for row in rows:
            flagged = set(row["few_requests"].split())
            if "ttft_p99_ms" in row:  # a p99 needs 100 requests, a p50 ten
                assert ("ttft_p99_ms" in flagged) == (row["requests"] < 100), name
            if "ttft_p50_ms" in row:
                assert ("ttft_p50_ms" in flagged) == (row["requests"] < 10), name
    # the fixtures' runs are short: their p99s are flagged where shown, with the reason
    sweep = markdown.split("## Concurrency sweep")[1].split("\n## ")[0]
    assert " †" in sweep and "† from too few requests to be a finding" in sweep


def test_malformed_and_missing_exports_are_named_and_the_rest_still_count(trees, tmp_path):
    run = add_run(tmp_path, "run-1", trees["0.13.0"], "2026-11-22T10:00:00Z",
                  {"agg": True, "disagg": True})
    truncated = run / "agg/concurrency_sweep/sweep/concurrency_2" / exports.PROFILE_EXPORT
    truncated.write_text(truncated.read_text()[:500])
    no_ttft = run / "agg/prefix_cache/hit50" / exports.PROFILE_EXPORT
    body = json.loads(no_ttft.read_text())
    del body["time_to_first_token"]
    no_ttft.write_text(json.dumps(body))
    missing = run / "disagg/concurrency_sweep/c1" / exports.PROFILE_EXPORT
    missing.unlink()

    report = build_report(run, tmp_path / "report")
    problems = report.read_text().split("## Problems")[1].split("\n## ")[0]
    truncated_entry = "`agg/concurrency_sweep/sweep/concurrency_2/profile_export_aiperf.json`: " \
                      "not valid JSON"
    assert truncated_entry in problems and "taken from the sweep aggregate" in problems
    assert "`agg/prefix_cache/hit50/profile_export_aiperf.json`: missing metric " \
           "time_to_first_token; skipped" in problems
    assert "`disagg/concurrency_sweep/c1/profile_export_aiperf.json`: missing; skipped" in problems

    sweep = {(row["graph"], row["concurrency"]): row for row in table(report, "concurrency_sweep")}
    assert sorted(sweep) == [("agg (simulated: the mocker's built-in timing)", 1), ("agg (simulated: the mocker's built-in timing)", 2),
                             ("agg (simulated: the mocker's built-in timing)", 4), ("disagg (simulated: the mocker's built-in timing)", 2)]
    stand_in = sweep[("agg (simulated: the mocker's built-in timing)", 2)]
    assert stand_in["source"].endswith(exports.SWEEP_AGGREGATE)
    [level] = [level for level in exports.parse_sweep_aggregate(tmp_path / stand_in["source"])
               if level.concurrency == 2]
    assert stand_in["ttft_p50_ms"] == level.stat("time_to_first_token", "p50")
    assert [row["hit_ratio_pct"] for row in table(report, "prefix_cache")] == [0, 100]


def test_a_root_of_single_graph_runs_pairs_the_newest_of_each_and_says_so(trees, tmp_path):
    """The cloud campaign: one `pulumi up` per graph, so every pair spans two runs."""
    add_run(tmp_path, "run-agg-old", trees["0.9.0"], "2026-11-19T08:00:00Z",
            {"agg": False}, graphs=("agg",))
    add_run(tmp_path, "run-disagg", trees["0.9.0"], "2026-11-20T08:00:00Z",
            {"disagg": False}, graphs=("disagg",))
    add_run(tmp_path, "run-agg-new", trees["0.13.0"], "2026-11-21T08:00:00Z",
            {"agg": False}, graphs=("agg",))
    report = build_report(tmp_path, tmp_path / "report")
    runs = {row["graph"]: row["run_id"] for row in table(report, "concurrency_sweep")}
    assert runs == {"agg": "run-agg-new", "disagg": "run-disagg"}
    sources = report.read_text().split("## Sources")[1].split("\n## ")[0]
    assert "| agg | run-agg-new |" in sources and "| disagg | run-disagg |" in sources
    assert "0.13.0" in sources and "0.9.0" in sources  # the AIPerf that wrote each run's exports
    assert SIMULATED_NOTE not in report.read_text()
    assert any("the graphs come from different runs: agg of run run-agg-new" in warning
               for warning in warnings_of(report))


def test_a_graph_without_manifest_is_named_and_left_out(trees, tmp_path):
    run = add_run(tmp_path, "run-1", trees["0.9.0"], "2026-11-22T10:00:00Z",
                  {"agg": False, "disagg": False})
    (run / "disagg/manifest.json").unlink()
    report = build_report(run, tmp_path / "report")
    assert {row["graph"] for row in table(report, "concurrency_sweep")} == {"agg"}
    assert "`disagg/manifest.json`: missing; this graph's results are skipped" in report.read_text()


def test_a_price_table_gap_leaves_that_graphs_cost_absent(trees, tmp_path):
    run = add_run(tmp_path, "run-1", trees["0.9.0"], "2026-11-22T10:00:00Z",
                  {"agg": False, "disagg": False})
    write_manifest(run / "disagg", manifest("run-1", "disagg", "2026-11-22T10:00:00Z", False,
                                            nodes=[NodeGroup("decode", "x9.mystery", 1, 4)]))
    report = build_report(run, tmp_path / "report")
    assert {row["graph"] for row in table(report, "cost_efficiency")} == {"agg"}
    assert "no facts for instance type 'x9.mystery'" in report.read_text()


def test_a_failed_mode_is_reported_with_its_error(trees, tmp_path):
    run = add_run(tmp_path, "run-1", trees["0.9.0"], "2026-11-22T10:00:00Z",
                  {"agg": False, "disagg": False})
    shutil.rmtree(run / "disagg/concurrency_sweep/c2")
    write_status(run / "disagg/concurrency_sweep",
                 ModeStatus("failed", "c2: frontend returned 503", "t0", "t1", 60, ["c1", "c2"]))
    report = build_report(run, tmp_path / "report")
    [status] = [row for row in table(report, "mode_status") if row["graph"] == "disagg"]
    assert (status["status"], status["error"]) == ("failed", "c2: frontend returned 503")
    markdown = report.read_text()
    assert "`disagg/concurrency_sweep/c2`: step directory missing" in markdown
    assert [row["concurrency"] for row in table(report, "concurrency_sweep")
            if row["graph"] == "disagg"] == [1]


def test_manifest_round_trip_keeps_the_keys_cloud_jobs_add(tmp_path):
    written = manifest("run-1", "disagg", "2026-11-22T10:00:00Z", False,
                       extra={"config_hash": "abc123", "placement": {"prefill": "us-east-1a"}})
    write_manifest(tmp_path, written)
    assert read_manifest(tmp_path) == written
    assert written.total_gpus == 16


def test_manifest_errors_name_the_file_and_key(tmp_path):
    write_manifest(tmp_path, manifest("run-1", "agg", "2026-11-22T10:00:00Z", False))
    body = json.loads((tmp_path / "manifest.json").read_text())
    body["nodes"][0]["role"] = "gpu"
    (tmp_path / "manifest.json").write_text(json.dumps(body))
    with pytest.raises(ManifestError, match=r"key 'nodes\[0\].role' must be one of") as err:
        read_manifest(tmp_path)
    assert err.value.path == tmp_path / "manifest.json"


def test_cli_builds_the_report_and_rejects_a_missing_directory(trees, tmp_path, capsys):
    run = add_run(tmp_path, "run-1", trees["0.9.0"], "2026-11-22T10:00:00Z",
                  {"agg": False, "disagg": False})
    assert lab_main(["report", str(run)]) == 0
    assert (run / "report" / REPORT_FILE).is_file()
    assert lab_main(["report", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def interrupted_run(root: Path, run_id: str, tree: Path, created: str) -> Path:
    """What an interrupted `benchlab local` leaves: agg only, its last two modes not ok."""
    run = add_run(root, run_id, tree, created, {"agg": True}, graphs=("agg",))
    write_status(run / "agg/sequence_distribution",
                 ModeStatus("failed", "interrupted", created, created, 60, ["uniform"]))
    shutil.rmtree(run / "agg/prefix_cache")
    write_status(run / "agg/prefix_cache",
                 ModeStatus("skipped", "interrupted before this mode", created, created, 60, []))
    return run


def complete_tree(tree: Path, target: Path) -> Path:
    """Real exports of all four modes for both graphs (disagg's recorded ones are the sweep
    only, so disagg's other modes reuse agg's exports)."""
    shutil.copytree(tree / "agg", target / "agg")
    shutil.copytree(tree / "agg", target / "disagg")
    shutil.rmtree(target / "disagg/concurrency_sweep")
    shutil.copytree(tree / "disagg/concurrency_sweep", target / "disagg/concurrency_sweep")
    return target


def warnings_of(report: Path) -> list[str]:
    head = report.read_text().split("## Sources")[0]
    return [line for line in head.splitlines() if line.startswith("> **Warning:")]


def test_an_interrupted_newer_run_does_not_mix_into_a_complete_older_pair(trees, tmp_path):
    root = tmp_path / "results"
    add_run(root, "run-old", complete_tree(trees["0.9.0"], tmp_path / "tree"),
            "2026-11-20T08:00:00Z", {"agg": True, "disagg": True})
    interrupted_run(root, "run-new", trees["0.9.0"], "2026-11-21T08:00:00Z")
    inputs = load_results(root)
    assert [(run.graph, run.manifest.run_id) for run in inputs.runs] == \
        [("agg", "run-old"), ("disagg", "run-old")]
    assert inputs.selection.warnings == []
    assert inputs.selection.notes == [
        "Newer agg of run run-new (created 2026-11-21T08:00:00Z) not used: partial: "
        "sequence_distribution (failed), prefix_cache (skipped)."]


def test_the_interrupted_run_alone_is_reported_with_a_partial_warning(trees, tmp_path):
    run = interrupted_run(tmp_path, "run-new", trees["0.9.0"], "2026-11-21T08:00:00Z")
    write_manifest(run / "agg", cloud_shape.manifest("run-new", "agg", "quick", "/lab/model",
                                                     "2026-11-21T08:00:00Z"))
    report = build_report(run, tmp_path / "report")
    [partial] = [w for w in warnings_of(report) if "partial" in w]
    assert "agg of run run-new is partial: sequence_distribution (failed), " \
           "prefix_cache (skipped) did not finish" in partial
    assert "No disagg run found" in report.read_text()
    # the model the run stands for, and what served in its place
    assert f"| {StackConfig().model.id}, stood in for by a generated tokenizer (/lab/model) " \
           "served by Dynamo's mocker" in report.read_text()
    assert [w for w in warnings_of(report) if f"price table is dated {PRICES_AS_OF}" in w]


def test_a_price_table_is_stale_after_six_months():
    dated = date.fromisoformat(PRICES_AS_OF)
    assert stale_prices_warning(dated + timedelta(days=180)) is None
    assert "months ago" in stale_prices_warning(dated + timedelta(days=200))


def test_graphs_from_runs_of_different_profiles_are_a_warning(trees, tmp_path):
    add_run(tmp_path, "run-quick", trees["0.9.0"], "2026-11-20T08:00:00Z",
            {"disagg": True}, graphs=("disagg",))
    run = add_run(tmp_path, "run-full", trees["0.9.0"], "2026-11-21T08:00:00Z",
                  {"agg": True}, graphs=("agg",))
    write_manifest(run / "agg", manifest("run-full", "agg", "2026-11-21T08:00:00Z", True,
                                         profile="full"))
    warnings = load_results(tmp_path).selection.warnings
    assert any("different runs: agg of run run-full" in w for w in warnings)
    assert "the graphs differ in profile: agg full, disagg smoke" in warnings


def test_a_pair_that_belongs_together_wins_over_a_newer_mismatched_graph(trees, tmp_path):
    add_run(tmp_path, "run-1", trees["0.9.0"], "2026-11-20T08:00:00Z",
            {"agg": True, "disagg": True})
    run = add_run(tmp_path, "run-2", trees["0.9.0"], "2026-11-21T08:00:00Z",
                  {"agg": True}, graphs=("agg",))
    write_manifest(run / "agg", manifest("run-2", "agg", "2026-11-21T08:00:00Z", True,
                                         versions={"dynamo": "1.0.0", "aiperf": "0.9.0"}))
    inputs = load_results(tmp_path)
    assert {run.manifest.run_id for run in inputs.runs} == {"run-1"}
    assert "does not belong with disagg of run run-1" in inputs.selection.notes[0]


@pytest.mark.parametrize("where, hint", [
    ("", "expected <run id>/<agg|disagg>/manifest.json"),
    ("run-1/agg", "this looks like a graph directory (<run>/<graph>); pass its parent"),
    ("run-1/agg/concurrency_sweep", "this looks like a mode directory"),
])
def test_no_runs_is_an_error_with_a_hint(trees, tmp_path, capsys, where, hint):
    root = tmp_path / "results"
    root.mkdir()
    if where:
        add_run(root, "run-1", trees["0.9.0"], "2026-11-22T10:00:00Z", {"agg": True, "disagg": True})
    assert lab_main(["report", str(root / where)]) == 2
    err = capsys.readouterr().err
    assert f"benchlab report: error: no runs in {root / where}" in err and hint in err
    assert not (root / where / "report").exists()


def test_plots_start_at_zero_tell_p50_from_p99_and_say_what_they_show(one_run):
    """Drawn from the report's own rows, then read back from the matplotlib figures."""
    import matplotlib.pyplot as plt
    from report import plots

    _, report = one_run
    figures = {}
    for name, draw in (("concurrency_sweep", plots._concurrency_sweep),
                       ("prefix_cache", plots._prefix_cache),
                       ("sequence_distribution", plots._sequence_distribution),
                       ("pareto", plots._pareto)):
        figures[name] = plt.figure()
        assert draw(table(report, name), figures[name]), name
    try:
        for name, fig in figures.items():
            for axes in fig.axes:
                assert axes.get_ylim()[0] == 0, name
        for axes in figures["concurrency_sweep"].axes:
            assert axes.get_xscale() == "log" and "log scale" in axes.get_xlabel()
            styles = {line.get_label().rsplit(" ", 1)[-1]: (line.get_marker(), line.get_linestyle())
                      for line in axes.get_lines()}
            if "p99" in styles:
                assert styles["p50"][0] != styles["p99"][0] and styles["p50"][1] != styles["p99"][1]
        assert all("configured shared-prefix share" in axes.get_xlabel()
                   for axes in figures["prefix_cache"].axes)
        assert "whiskers p1-p99" in figures["sequence_distribution"]._supxlabel.get_text()
        [pareto] = figures["pareto"].axes
        assert pareto.get_xlim()[0] == 0
        assert "frontier (both graphs)" in [line.get_label() for line in pareto.get_lines()]
        assert "better" in [text.get_text() for text in pareto.texts]
    finally:
        for fig in figures.values():
            plt.close(fig)


def test_a_simulated_label_names_what_was_simulated(tmp_path):
    from jobs.run_manifest import RunManifest
    from report.inputs import GraphRun
    twin = {"summary": "4 x a100_sxm TP4 (prefill) + 4 x l40s TP2 (decode)",
            "timing": "aiconfigurator==0.12.0 static estimates"}
    manifest = RunManifest("r1", "disagg", True, "quick", "2026-11-30T00:00:00+00:00", {}, "m", [], {},
                           extra={"twin": twin})
    assert GraphRun(manifest, tmp_path).label == (
        "disagg (simulated: 4 x a100_sxm TP4 (prefill) + 4 x l40s TP2 (decode) from "
        "aiconfigurator==0.12.0 static estimates)")
    real = RunManifest("r2", "disagg", False, "full", "2026-11-30T00:00:00+00:00", {}, "m", [], {})
    assert GraphRun(real, tmp_path).label == "disagg"


def test_twin_and_real_runs_of_the_same_shape_stand_side_by_side(trees, tmp_path):
    """A results root with a cloud run and a later local twin run of the same graphs and shape."""
    tree, twin_tree = trees[VERSIONS[0]], trees[VERSIONS[-1]]  # two real exports, other figures
    root = tmp_path / "results"
    add_run(root, "cloud", tree, "2026-11-20T10:00:00Z", {"agg": False, "disagg": False})
    add_run(root, "twin", twin_tree, "2026-11-21T10:00:00Z", {"agg": True, "disagg": True})
    report = build_report(root, tmp_path / "report")
    rows = table(report, "twin_vs_real")
    sweep = {(r["run_id"], r["graph"].split(" ")[0], r["concurrency"]): r
             for run in ("cloud", "twin")
             for r in table(build_report(root / run, tmp_path / f"{run}-report"), "concurrency_sweep")}
    assert {row["graph"] for row in rows} == {"agg", "disagg"}
    for row in rows:
        key = {"TTFT p50 (ms)": "ttft_p50_ms", "ITL p50 (ms)": "itl_p50_ms",
               "output tok/s": "output_tokens_per_s"}[row["figure"]]
        real, twin = (sweep[(run, row["graph"], row["concurrency"])][key] for run in ("cloud", "twin"))
        assert (row["real"], row["twin"]) == (real, twin)
        assert (row["twin_run"], row["real_run"]) == ("twin", "cloud")
        assert row["error_pct"] == pytest.approx((twin - real) / real * 100)
    assert any(abs(row["error_pct"]) > 1 for row in rows)
    assert "## Twin vs real" in report.read_text()
    # a twin of another shape is no twin: the section is left out
    other = tmp_path / "other"
    add_run(other, "cloud", tree, "2026-11-20T10:00:00Z", {"agg": False, "disagg": False})
    twin_dir = add_run(other, "twin", tree, "2026-11-21T10:00:00Z", {"agg": True, "disagg": True})
    for graph in ("agg", "disagg"):
        write_manifest(twin_dir / graph, manifest("twin", graph, "2026-11-21T10:00:00Z", True,
                                                  profile="full"))
    assert "## Twin vs real" not in build_report(other, tmp_path / "other-report").read_text()


HOSTILE = "<img src=x onerror=alert(1)> [click](javascript:alert(1)) `x` | cell\n## heading"


def test_text_from_the_results_is_inert_in_the_markdown_and_the_csvs(trees, tmp_path):
    run = add_run(tmp_path, "run-1", trees["0.9.0"], "2026-11-22T10:00:00Z",
                  {"agg": False, "disagg": False})
    write_status(run / "disagg/concurrency_sweep",
                 ModeStatus("failed", "=HYPERLINK(\"http://x\") " + HOSTILE, "t0", "t1", 60, ["c1"]))
    write_manifest(run / "agg", manifest("run-1", "agg", "2026-11-22T10:00:00Z", False, extra={
        "graph_restarts": [{"mode": "multi_turn", "at": "t", "reason": HOSTILE,
                            "failed_attempt": "multi_turn/.attempts/`1`"}]}))
    (run / "agg/prefix_cache/hit0/profile_export_aiperf.json").write_text("{ not json " + HOSTILE)
    markdown = build_report(run, tmp_path / "report").read_text()
    assert not re.search(r"(?<!\\)<img|(?<!\\)\]\(javascript", markdown)  # only escaped
    assert "\n## heading" not in markdown  # no line of its own
    assert "\\<img src=x onerror=alert(1)\\> \\[click\\](javascript:alert(1)) \\`x\\` \\| cell ## heading" in markdown
    assert "`` multi_turn/.attempts/`1` ``" in markdown  # a code span nothing inside can close
    with open(tmp_path / "report" / TABLES_DIR / "mode_status.csv", newline="") as handle:
        [failed] = [row for row in csv.DictReader(handle) if row["status"] == "failed"]
    assert failed["error"].startswith("'=HYPERLINK(")  # a spreadsheet shows it as text
