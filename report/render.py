"""The benchmark report: `report.md`, one CSV + JSON file per table, and PNG plots.

Every figure comes from an AIPerf export (or from a manifest and the dated price table, for
cost); a figure no export carries is absent, and every export that could not be used is named.
"""
from __future__ import annotations

import csv
import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jobs import kv_transport
from facts.instances import stale_prices_warning
from jobs.run_manifest import GRAPH_RESTARTS, STAND_IN, RunManifest
from report import markdown_text
from report.cost_efficiency import PRICE_NOTE
from report.evidence import (EVIDENCE_NOTE, evidence_table, with_measured_hits,
                             with_turn_hits)
from report.findings_tables import (FINDINGS_NOTE, PREFIX_INTERVALS, SWEEP_INTERVALS,
                                    findings_tables, with_intervals)
from report.goodput import goodput_table, with_slo_marks
from report.inputs import GraphRun, ReportInputs, load_results, simulated_as
from report.plots import SIMULATED_NOTE, draw_plots
from report.artefacts import artefact_table
from report.predictions import comparison_table, sources_note
from report.twin_vs_real import twin_table
from report.tables import (FEW_REQUESTS, MIN_REQUESTS, TAIL_MIN_REQUESTS, Column, Table,
                           cost_table, multi_turn_tables, pareto_table, prefix_cache_table,
                           relative, sequence_distribution_table, status_table, sweep_table)

REPORT_FILE = "report.md"
TABLES_DIR = "tables"
ABSENT = "—"
FEW_MARK = "†"

DEFINITIONS = """\
- **TTFT**, **ITL**, **request latency**: AIPerf's per-request time to first token, inter-token
  latency and end-to-end latency; p50/p99 are AIPerf's own percentiles over the profiling phase.
- **output tok/s**: AIPerf's `output_token_throughput`, all output tokens over the benchmark
  duration.
- **tok/s/user**: AIPerf's `output_token_throughput_per_user`, the mean over requests of
  1 / ITL, i.e. the decode speed one user sees. Used for every per-user figure and the Pareto plot.
- **tok/s/GPU**: output tok/s divided by all GPUs of the manifest's nodes (prefill and decode).
- **$/h**: on-demand price of the manifest's nodes; **$/1M output tokens** =
  $/h / (output tok/s x 3600) x 1e6, at each concurrency level.
- **CV**: coefficient of variation, AIPerf's per-request std / avg; **p99/p50** the tail ratio.
  Together they are the spread of a sequence distribution.
- **TTFT p50 reduction vs 0 %**: (TTFT p50 at 0 % hit - TTFT p50) / TTFT p50 at 0 % hit, same graph.
- **conversation time**: first request start to last request end of each conversation, from
  `profile_export.jsonl`; **cache hit (%)** is the share of prompt tokens the server reported as
  cached (`prompt_tokens_details.cached_tokens`), absent where the serving side does not report it.
- **on the frontier (both graphs)**: no sweep level of either graph has at least as much
  tok/s/user and tok/s/GPU and more of one: the Pareto frontier of agg and disagg together.
  Better is up and to the right.
- **configured shared-prefix share**: the share of each prompt the benchmark makes a prefix
  shared by all requests (`bench.prefixCache.hitRatios`), what the prefix cache could hit;
  not a measured hit rate.
- **requests**: how many requests a row's figures summarise; figures marked † come from too
  few of them to be a finding.
"""


def build_report(results_dir: Path, out_dir: Path, plan: dict[str, Any] | None = None) -> Path:
    """`plan`: a plan.json to compare runs against that did not record one (cloud runs)."""
    inputs = load_results(results_dir)
    tables = _tables(inputs, plan)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / TABLES_DIR).mkdir(exist_ok=True)
    for table in tables.values():
        _write_table(table, out_dir / TABLES_DIR)
    plots = draw_plots(tables, out_dir)
    path = out_dir / REPORT_FILE
    path.write_text(_markdown(results_dir, inputs, tables, plots, out_dir,
                              sources_note(inputs.runs, plan)))
    return path


def _tables(inputs: ReportInputs, plan: dict[str, Any] | None) -> dict[str, Table]:
    runs, problems = inputs.runs, inputs.problems
    sweep = with_intervals(sweep_table(runs), runs, "concurrency_sweep", SWEEP_INTERVALS)
    per_turn, conversations = multi_turn_tables(runs)
    per_turn = with_turn_hits(per_turn, runs)
    evidence = evidence_table(runs, problems)
    prefix = with_measured_hits(with_intervals(prefix_cache_table(runs, problems), runs,
                                               "prefix_cache", PREFIX_INTERVALS), evidence)
    goodput = goodput_table(runs)
    tables = [sweep, with_slo_marks(pareto_table(sweep), goodput),
              comparison_table(runs, sweep, plan), cost_table(runs, sweep, problems), prefix,
              sequence_distribution_table(runs), conversations, per_turn, status_table(runs),
              evidence, goodput, artefact_table(sweep, prefix), twin_table(inputs.twins)]
    by_name = {table.name: table for table in tables}
    return by_name | findings_tables(by_name, any(run.manifest.simulated for run in runs))


def _write_table(table: Table, directory: Path) -> None:
    keys = [column.key for column in table.columns]
    with open(directory / f"{table.name}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows({key: markdown_text.csv_cell(row.get(key)) for key in keys} for row in table.rows)
    (directory / f"{table.name}.json").write_text(json.dumps(
        {"title": table.title, "rows": [{key: row.get(key) for key in keys} for row in table.rows]},
        indent=2) + "\n")


def _cell(value: Any) -> str:
    if value is None:
        return ABSENT
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.2f}"
    return markdown_text.text(value)


def _markdown_table(table: Table) -> str:
    if not table.rows:
        return "No data: no usable export for this mode.\n"
    columns = [column for column in table.columns if column.in_markdown]

    def cell(row: dict[str, Any], column: Column) -> str:
        few = column.key in row.get(FEW_REQUESTS, "").split()
        return _cell(row.get(column.key)) + (f" {FEW_MARK}" if few else "")

    lines = ["| " + " | ".join(column.header for column in columns) + " |",
             "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row, column) for column in columns) + " |"
              for row in table.rows]
    if any(row.get(FEW_REQUESTS) for row in table.rows):
        lines += ["", f"{FEW_MARK} from too few requests to be a finding (the `requests` column): "
                  f"p99 and p1 need {TAIL_MIN_REQUESTS}, other figures {MIN_REQUESTS}; "
                  "measure longer before reading them."]
    return "\n".join(lines) + "\n"


def _markdown(results_dir: Path, inputs: ReportInputs, tables: dict[str, Table],
              plots: dict[str, Path], out_dir: Path, prediction_note: str) -> str:
    def section(title: str, names: list[str], note: str = "") -> list[str]:
        parts = [f"## {title}\n"] + ([note] if note else [])
        for name in names:
            if len(names) > 1:
                parts.append(f"### {tables[name].title}\n")
            parts.append(_markdown_table(tables[name]))
            parts.append(f"Tables: `{TABLES_DIR}/{name}.csv`, `{TABLES_DIR}/{name}.json`\n")
            if name in plots:
                parts.append(f"![{tables[name].title}]({relative(plots[name], out_dir)})\n")
        return parts

    simulated = [run for run in inputs.runs if run.manifest.simulated]
    parts = [
        "# Benchmark report: Dynamo aggregated vs disaggregated serving\n",
        f"Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} "
        f"from `{results_dir}`.\n",
    ]
    if simulated:
        parts.append(f"> **{SIMULATED_NOTE}.** Rows and plot series labelled \"(simulated: ...)\" "
                     f"({', '.join(run.graph for run in simulated)}) ran against the local lab's "
                     "mocker. Their costs are those of the configuration they stand for and are "
                     "illustrative only, not measured GPU performance. Their TTFT leaves the "
                     "simulated prefill out: the mocker streams a request's first token at once "
                     "and charges the prefill before the second.\n")
    parts += _warnings(inputs)
    parts += section("Findings: Report 5's validation points", ["findings", "recommendations"],
                     FINDINGS_NOTE)
    parts += _sources(inputs)
    parts += _simulated(simulated)
    parts += _problems(inputs, results_dir)
    if tables["simulator_artefacts"].rows:
        parts += section("Simulator artefacts", ["simulator_artefacts"],
                         "Simulated levels no GPU could produce (more load, faster tokens or more "
                         "throughput per request; more cache hits, less throughput: a change beyond "
                         "10 %): the timing model outside its range, not a finding.\n")
    parts += section("Concurrency sweep: agg vs disagg", ["concurrency_sweep"])
    parts += section("Goodput at the SLO", ["goodput"])
    parts += section("Pareto: tokens/s per GPU vs tokens/s per user", ["pareto"])
    parts += section("Prediction vs measurement", ["prediction_vs_measurement"], prediction_note)
    if tables["twin_vs_real"].rows:
        parts += section("Twin vs real", ["twin_vs_real"],
                         "The local twin's newest run of a graph next to the newest cloud run of "
                         "the same shape (profile, model, workers, node groups), level by level; "
                         "error = (twin - real) / real. The twin's TTFT leaves its simulated "
                         "prefill out (see the note at the top).\n")
    parts += section("Cost efficiency", ["cost_efficiency"],
                     f"{PRICE_NOTE}" + (" Costs of simulated runs are illustrative of the "
                                        "configuration they stand for, not measured GPU "
                                        "performance." if simulated else "") + "\n")
    parts += section("Prefix-cache effect", ["prefix_cache"])
    parts += section("Sequence-distribution stability", ["sequence_distribution"])
    parts += section("Multi-turn", ["multi_turn", "multi_turn_per_turn"])
    parts += section("Server-side evidence", ["server_evidence"], EVIDENCE_NOTE)
    parts += section("Mode status", ["mode_status"])
    parts += ["## Definitions\n", DEFINITIONS]
    return "\n".join(parts)


def _warnings(inputs: ReportInputs) -> list[str]:
    """What makes the comparison less than like for like, before any figure is read."""
    found = inputs.selection.warnings + [
        warning for warning in [stale_prices_warning(datetime.now(timezone.utc).date())] if warning]
    return [f"> **Warning: {markdown_text.text(warning)}.**\n" for warning in found]


def _sources(inputs: ReportInputs) -> list[str]:
    lines = ["## Sources\n",
             "The newest agg/disagg pair that belongs together (same run, or same profile, "
             "versions and model), complete runs first; the KV path is what the KV transport check "
             "measured before the benchmarks:\n",
             "| graph | run id | created | profile | model | Dynamo | AIPerf | nodes | GPUs | KV path |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for run in inputs.runs:
        manifest = run.manifest
        aiperf = sorted({result.export.aiperf_version for results in run.results.values()
                         for result in results} - {"unknown"})
        lines.append("| " + " | ".join(_cell(value) for value in (
            run.label, manifest.run_id, manifest.created, manifest.profile, _model(manifest),
            manifest.versions.get("dynamo"),
            ", ".join(aiperf) or manifest.versions.get("aiperf"),
            manifest.nodes_summary, manifest.total_gpus,
            kv_transport.describe(manifest.extra.get("kv_transport", {})))) + " |")
    restarts = [f"- {_cell(run.label)}: the graph stopped answering during {_cell(restart['mode'])} "
                f"and was restarted; {_cell(restart['mode'])} ran again on the new graph (the failed "
                f"attempt is kept in {markdown_text.code(restart['failed_attempt'])}: "
                f"{_cell(restart['reason'])})"
                for run in inputs.runs
                for restart in run.manifest.extra.get(GRAPH_RESTARTS, [])]
    return (["\n".join(lines) + "\n"] + [f"{note}\n" for note in inputs.selection.notes]
            + (["\n".join(restarts) + "\n"] if restarts else []))


def _model(manifest: RunManifest) -> str:
    """The model the run represents, and what stood in for it when something did."""
    stand_in = manifest.extra.get(STAND_IN)
    return f"{manifest.model}, stood in for by {stand_in}" if stand_in else manifest.model


def _simulated(runs: list[GraphRun]) -> list[str]:
    """What each simulated graph simulated (the manifest's `twin`, written by the local lab)."""
    lines = []
    for run in runs:
        twin = run.manifest.extra.get("twin") or {}
        what = simulated_as(run.manifest) + ("" if twin else ", not the stack's hardware")
        lines.append(f"- {run.graph}: simulated: {markdown_text.text(what)}"
                     + "".join(f"; modelled instead: {markdown_text.text(c)}"
                               for c in twin.get("modelled_instead", [])))
    return ["What was simulated:\n", "\n".join(lines) + "\n"] if lines else []


def _problems(inputs: ReportInputs, results_dir: Path) -> list[str]:
    if not inputs.problems:
        return ["## Problems\n", "None: every export found was used.\n"]
    return ["## Problems\n",
            "These files could not be used; everything else still counts.\n",
            "\n".join(f"- {markdown_text.code(relative(problem.path, results_dir))}: "
                      f"{markdown_text.text(problem.problem)}"
                      for problem in inputs.problems) + "\n"]
