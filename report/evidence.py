"""Server-side evidence per step and graph: what the serving side measured while AIPerf ran.

Per AIPerf run (a step, or a sweep level): the KV-cache hit rate the router measured next to
the prefix ratio that was asked for, KV-cache usage, blocks stored and evicted (Dynamo's NATS
event plane, recorded by jobs/event_plane.py, cut to the run's window: first request start to
last request end), and the request count the workers' `/metrics` gave AIPerf's server-metrics
scrape, and the GPUs' utilisation and power from the DCGM exporters AIPerf scraped on the
workers' nodes (cloud runs; report/gpu_telemetry.py), cut to the same window. A series the
serving side does not expose reads "not exposed by <component>", never an estimate.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs import event_plane, exports
from jobs.event_plane import RECORDING, EventPlaneError
from jobs.names import MODES
from jobs.exports import ExportError
from report.inputs import GraphRun, StepResult
from report.problems import Problem
from report import gpu_telemetry
from report.server_metrics import SERVER_METRICS_EXPORT, ServerMetrics, parse_server_metrics
from report.tables import IDENTITY, Column, Table, relative


TOTAL_KV_BLOCKS = "dynamo_frontend_model_total_kv_blocks"  # per worker, frontend /metrics
WORKER_REQUESTS = "dynamo_component_requests"
# Optional series, by the metric AIPerf scraped and the component that would expose it.
OPTIONAL = {
    "kvbm_offload_blocks": (("kvbm_offload_blocks_d2h", "total"), "KVBM"),
    "kvbm_onboard_blocks": (("kvbm_onboard_blocks_h2d", "total"), "KVBM"),
}
_HIT_STEP = re.compile(r"^hit(\d+)$")
EVIDENCE_NOTE = (
    "What the serving side measured during each AIPerf run. **measured KV hit**: the router's "
    "overlap blocks / prompt blocks (NATS `kv-hit-rate`, workers that publish KV events); "
    "with the prompt cut into KV blocks (64 tokens on the mocker) and the chat template in "
    "front, it sits a little below the requested share. At 0 % it is the test that no step reuses another's "
    "cache. **KV usage**: the busiest worker's active blocks (`kv_metrics`) / its total KV blocks "
    "(frontend `/metrics`); **evicted blocks**: KV `removed` events; **worker requests**: "
    "the workers' request counters over the run (AIPerf's scrape of their `/metrics`); "
    "**GPUs**: per node and GPU model, mean utilisation and mean power per GPU over the run "
    "(the DCGM exporters on the workers' nodes, AIPerf's GPU telemetry); **energy per output "
    "token**: those GPUs' mean power x the run's duration / its output tokens.\n")


@dataclass
class _Recording:
    messages: list[event_plane.Message]
    workers: set[int]


def evidence_table(runs: list[GraphRun], problems: list[Problem]) -> Table:
    rows = []
    for run in runs:
        recordings: dict[Path, _Recording | None] = {}
        for mode, results in run.results.items():
            for result in results:
                rows.append(_row(run, mode, result, recordings, problems))
    rows.sort(key=lambda row: (row["graph"], MODES.index(row["mode"]),
                               row["requested_hit_pct"] or 0, row["concurrency"] or 0, row["step"]))
    return Table("server_evidence", "Server-side evidence per step", [
        *IDENTITY, Column("mode", "mode"), Column("step", "step"),
        Column("concurrency", "concurrency"),
        Column("requested_hit_pct", "requested prefix (%)"),
        Column("measured_hit_pct", "measured KV hit (%)"),
        Column("routed", "routing decisions", in_markdown=False),
        Column("kv_usage_peak_pct", "KV usage peak (%)"),
        Column("kv_usage_mean_pct", "KV usage mean (%)"),
        Column("blocks_stored", "blocks stored"), Column("evicted_blocks", "evicted blocks"),
        Column("worker_requests", "worker requests"),
        Column("gpus", "GPUs: mean util, power per GPU"),
        Column("gpu_util_pct", "GPU util mean (%)", in_markdown=False),
        Column("gpu_power_w", "GPU power mean (W per GPU)", in_markdown=False),
        Column("gpu_energy_j_per_token", "GPU energy per output token (J)"),
        *[Column(key, key.replace("_", " "), in_markdown=False) for key in OPTIONAL],
        Column("nixl_series", "NIXL series scraped", in_markdown=False),
        Column("not_exposed", "not exposed"), Column("source", "export", in_markdown=False)],
        rows)


def _row(run: GraphRun, mode: str, result: StepResult,
         recordings: dict[Path, _Recording | None], problems: list[Problem]) -> dict[str, Any]:
    run_dirs = result.run_dirs  # one, or every trial of a repeated step
    scraped = [m for m in (_server_metrics(d, problems) for d in run_dirs) if m is not None]
    metrics = scraped[0] if scraped else None
    window = _window(run_dirs, result, problems)
    recording = _recording(run, run_dirs[0], recordings, problems)
    evidence = (event_plane.step_evidence(recording.messages, *window, recording.workers)
                if recording and window else None)
    total_blocks = metrics.first(TOTAL_KV_BLOCKS, "avg") if metrics else None
    match = _HIT_STEP.match(result.step)
    row = {"graph": run.label, "run_id": run.manifest.run_id,
           "simulated": run.manifest.simulated, "mode": mode, "step": result.step,
           "concurrency": result.export.concurrency,
           "requested_hit_pct": int(match.group(1)) if match and mode == "prefix_cache" else None,
           "measured_hit_pct": evidence.hit_rate_pct if evidence else None,
           "routed": evidence.routed if evidence else None,
           "kv_usage_peak_pct": _pct(evidence and evidence.kv_active_blocks_peak, total_blocks),
           "kv_usage_mean_pct": _pct(evidence and evidence.kv_active_blocks_mean, total_blocks),
           "blocks_stored": evidence.blocks_stored if evidence else None,
           "evicted_blocks": evidence.blocks_removed if evidence else None,
           "worker_requests": _sum(m.total(WORKER_REQUESTS, "total") for m in scraped),
           "source": relative(run_dirs[0], run.directory.parent.parent)}
    absent: dict[str, list[str]] = {}  # component -> the series it would expose
    for key, ((metric, stat), component) in OPTIONAL.items():
        row[key] = metrics.total(metric, stat) if metrics else None
        if row[key] is None:
            absent.setdefault(component, []).append(key.replace("_", " "))
    notes = [f"{', '.join(keys)}: not exposed by {_component(run, component)}"
             for component, keys in absent.items()]
    # NIXL transfer time and bytes: no series name is pinned for Dynamo 0.9.1, so any scraped
    # series naming NIXL is listed, and its absence said.
    nixl = sorted({name for m in scraped for name in m.metrics if "nixl" in name.lower()})
    row["nixl_series"] = ", ".join(nixl) or None
    if not nixl:
        notes.append(f"NIXL transfer time, bytes: not exposed by {_component(run, 'NIXL')}")
    gpus, gpu_note = gpu_telemetry.step_figures(run.manifest.simulated, result, window, problems)
    row |= gpus
    if gpu_note:
        notes.append(gpu_note)
    if evidence is None or evidence.hit_rate_pct is None:
        notes.append(_hit_rate_absence(recording, window))
    row["not_exposed"] = "; ".join(notes)
    return row


def _component(run: GraphRun, component: str) -> str:
    """Who would expose it: in a simulated run, the mocker stands in for the GPU engine."""
    return f"the mocker (simulated: no {component})" if run.manifest.simulated \
        else f"the scraped endpoints (no {component} metrics)"


def _hit_rate_absence(recording: _Recording | None, window: tuple[float, float] | None) -> str:
    if recording is None:
        return "KV hit rate: no event-plane recording"
    if not recording.workers:
        return "KV hit rate: not exposed by the workers (no KV events published)"
    if window is None:
        return "KV hit rate: no request records to place the step in time"
    return "KV hit rate: not exposed by the router (no kv-hit-rate events: router mode not kv?)"


def _pct(value: float | None, total: float | None) -> float | None:
    return value * 100 / total if value is not None and total else None


def _sum(values) -> float | None:
    found = [value for value in values if value is not None]
    return sum(found) if found else None


def _server_metrics(run_dir: Path, problems: list[Problem]) -> ServerMetrics | None:
    path = run_dir / SERVER_METRICS_EXPORT
    if not path.exists():
        return None  # a run made with --no-server-metrics: nothing to name
    try:
        return parse_server_metrics(path)
    except ExportError as err:
        problems.append(Problem(err.path, f"{err.problem}; server-side figures of this run "
                                          "are absent"))
        return None


def _window(run_dirs: tuple[Path, ...], result: StepResult,
            problems: list[Problem]) -> tuple[float, float] | None:
    """First request start to last request end of the run (of all its trials), epoch s."""
    records = result.records
    if records is None:
        try:
            records = [record for run_dir in run_dirs for record in
                       exports.parse_request_records(run_dir / exports.REQUEST_RECORDS)]
        except ExportError as err:
            problems.append(Problem(err.path, f"{err.problem}; event-plane figures of this "
                                              "run are absent"))
            return None
    return (min(r.start_ns for r in records) / 1e9, max(r.end_ns for r in records) / 1e9)


def _recording(run: GraphRun, run_dir: Path, cache: dict[Path, _Recording | None],
               problems: list[Problem]) -> _Recording | None:
    """The recording nearest above the run: its mode's (cloud) or its graph's (local lab)."""
    for directory in run_dir.parents:
        path = directory / RECORDING
        if path.exists():
            if path not in cache:
                cache[path] = _read_recording(path, problems)
            return cache[path]
        if directory == run.directory:
            break
    return None


def _read_recording(path: Path, problems: list[Problem]) -> _Recording | None:
    try:
        messages = event_plane.read_recording(path)
    except EventPlaneError as err:
        problems.append(Problem(err.path, f"{err.problem}; event-plane figures are absent"))
        return None
    return _Recording(messages, event_plane.cache_workers(messages))


def with_measured_hits(prefix: Table, evidence: Table) -> Table:
    """The prefix-cache table with the hit rate the router measured beside the asked ratio."""
    measured = {(row["graph"], row["step"]): row["measured_hit_pct"] for row in evidence.rows
                if row["mode"] == "prefix_cache"}
    rows = [row | {"measured_hit_pct": measured.get((row["graph"], f"hit{row['hit_ratio_pct']}"))}
            for row in prefix.rows]
    columns = list(prefix.columns)
    at = next(i for i, column in enumerate(columns) if column.key == "hit_ratio_pct") + 1
    columns.insert(at, Column("measured_hit_pct", "measured KV hit (%)"))
    return Table(prefix.name, prefix.title, columns, rows)


BLOCK_SIZE = "dynamo_frontend_model_kv_cache_block_size"
PROMPT_TOKENS, FIRST_TOKEN_MS = "usage_prompt_tokens", "time_to_first_token"


def with_turn_hits(per_turn: Table, runs: list[GraphRun]) -> Table:
    """The multi-turn per-turn table with the KV hit rate the router measured for each turn
    (each request matched to its routing decision: jobs/event_plane.request_hits). Files that
    cannot be read are named once, by evidence_table."""
    measured: dict[tuple[str, str, int], float] = {}
    for run in runs:
        recordings: dict[Path, _Recording | None] = {}
        for result in run.results.get("multi_turn", []):
            measured |= {(run.label, result.step, turn): pct for turn, pct in
                         _turn_hits(run, result, recordings).items()}
    rows = [row | {"measured_hit_pct": measured.get((row["graph"], row["step"], row["turn"]))}
            for row in per_turn.rows]
    return Table(per_turn.name, per_turn.title,
                 [*per_turn.columns, Column("measured_hit_pct", "measured KV hit (%)")], rows)


def _turn_hits(run: GraphRun, result: StepResult, recordings: dict) -> dict[int, float]:
    records = [r for r in result.records or [] if r.error is None and r.turn_index is not None
               and PROMPT_TOKENS in r.metrics and FIRST_TOKEN_MS in r.metrics]
    scraped = [m for m in (_server_metrics(d, []) for d in result.run_dirs) if m is not None]
    block_size = scraped[0].first(BLOCK_SIZE, "avg") if scraped else None
    recording = _recording(run, result.run_dirs[0], recordings, [])
    if not records or not block_size or recording is None:
        return {}
    records.sort(key=lambda r: r.start_ns)
    requests = [event_plane.Request(start=r.start_ns / 1e9,
                                    first_token=r.start_ns / 1e9 + r.metrics[FIRST_TOKEN_MS] / 1e3,
                                    prompt_tokens=int(r.metrics[PROMPT_TOKENS])) for r in records]
    totals: dict[int, list[int]] = {}
    for record, hit in zip(records, event_plane.request_hits(
            recording.messages, recording.workers, requests, int(block_size))):
        if hit is not None:
            isl, overlap = totals.setdefault(record.turn_index + 1, [0, 0])
            totals[record.turn_index + 1] = [isl + hit[0], overlap + hit[1]]
    return {turn: overlap * 100 / isl for turn, (isl, overlap) in totals.items() if isl}
