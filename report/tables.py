"""The report's tables, one per figure family, built only from parsed exports and manifests.

Every row carries the graph label (simulated runs say so), the run id and a `simulated` flag;
a figure an export does not carry is None, shown as absent. The plots draw from these rows, so
what a plot shows is what the tables say.
"""
from __future__ import annotations

import re
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from report.cost_efficiency import PRICES_DATED, usd_per_hour, usd_per_million_tokens
from jobs.exports import TPS_PER_USER, ProfileExport, RequestRecord
from report.inputs import GraphRun, StepResult
from report.problems import Problem
from jobs.run_manifest import MANIFEST_FILE

TTFT = "time_to_first_token"
ITL = "inter_token_latency"
LATENCY = "request_latency"
OUTPUT_TPS = "output_token_throughput"
CACHE_READ_PCT = "overall_usage_prompt_cache_read_pct"
CACHE_READ_TOKENS = "usage_prompt_cache_read_tokens"
PROMPT_TOKENS = "usage_prompt_tokens"
_HIT_STEP = re.compile(r"^hit(\d+)$")


# A figure from fewer requests than its statistic needs is flagged, not a finding: the 99th (or
# 1st) percentile of fewer than 100 requests is the most extreme request, or interpolated
# towards it; under 10 requests no summary of them says much.
TAIL_MIN_REQUESTS = 100
MIN_REQUESTS = 10
FEW_REQUESTS = "few_requests"  # per row: the keys of its flagged figures


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    in_markdown: bool = True
    min_requests: int = 0  # the row's `requests` below this flags the figure


def figure(key: str, header: str, in_markdown: bool = True) -> Column:
    """A column summarising the row's requests, flagged when they are too few for it."""
    tail = any(part in ("p1", "p99") for part in key.split("_"))
    return Column(key, header, in_markdown, TAIL_MIN_REQUESTS if tail else MIN_REQUESTS)


@dataclass(frozen=True)
class Table:
    name: str  # file stem of its CSV/JSON
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]]

    def __post_init__(self) -> None:
        """Every row names its figures computed from too few requests (`requests` column)."""
        if not any(column.min_requests for column in self.columns):
            return
        self.columns.append(Column(FEW_REQUESTS, "figures from too few requests",
                                   in_markdown=False))
        for row in self.rows:
            count = row.get("requests")
            row[FEW_REQUESTS] = " ".join(
                column.key for column in self.columns
                if column.min_requests and row.get(column.key) is not None
                and (count is None or count < column.min_requests))


def _identity(run: GraphRun) -> dict[str, Any]:
    return {"graph": run.label, "run_id": run.manifest.run_id, "simulated": run.manifest.simulated}


IDENTITY = [Column("graph", "graph"), Column("run_id", "run", in_markdown=False),
            Column("simulated", "simulated", in_markdown=False)]
SOURCE = Column("source", "export", in_markdown=False)


def _results(runs: list[GraphRun], mode: str) -> Iterable[tuple[GraphRun, StepResult]]:
    for run in runs:
        for result in run.results.get(mode, []):
            yield run, result


def _source(run: GraphRun, export: ProfileExport) -> str:
    """The export's path from the results root, run id first."""
    return relative(export.path, run.directory.parent.parent)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def _gain_pct(value: float | None, base: float | None) -> float | None:
    """(value - base) / base, in percent."""
    if value is None or base is None:
        return None
    share = _ratio(value - base, base)
    return None if share is None else share * 100


def _reduction_pct(value: float | None, base: float | None) -> float | None:
    """(base - value) / base, in percent."""
    gain = _gain_pct(value, base)
    return None if gain is None else 0.0 - gain  # 0.0 - x: no "-0.00" for an unchanged value


def sweep_table(runs: list[GraphRun]) -> Table:
    rows = []
    for run, result in _results(runs, "concurrency_sweep"):
        export = result.export
        output_tps = export.stat(OUTPUT_TPS, "avg")
        rows.append({
            **_identity(run), "step": result.step, "concurrency": export.concurrency,
            "isl": export.isl, "osl": export.osl,
            "requests": export.stat("request_count", "avg"),
            "ttft_p50_ms": export.stat(TTFT, "p50"), "ttft_p99_ms": export.stat(TTFT, "p99"),
            "itl_p50_ms": export.stat(ITL, "p50"), "itl_p99_ms": export.stat(ITL, "p99"),
            "output_tokens_per_s": output_tps,
            "latency_p50_ms": export.stat(LATENCY, "p50"),
            "latency_p99_ms": export.stat(LATENCY, "p99"),
            "tokens_per_s_per_user": export.stat(TPS_PER_USER, "avg"),
            "tokens_per_s_per_gpu": _ratio(output_tps, run.manifest.total_gpus),
            "source": _source(run, export),
        })
    rows.sort(key=lambda row: (row["graph"], row["concurrency"] or 0, row["step"]))
    return Table("concurrency_sweep", "Concurrency sweep", [
        *IDENTITY, Column("concurrency", "concurrency"), Column("isl", "ISL"),
        Column("osl", "OSL"), Column("requests", "requests"),
        figure("ttft_p50_ms", "TTFT p50 (ms)"), figure("ttft_p99_ms", "TTFT p99 (ms)"),
        figure("itl_p50_ms", "ITL p50 (ms)"), figure("itl_p99_ms", "ITL p99 (ms)"),
        figure("output_tokens_per_s", "output tok/s"),
        figure("latency_p50_ms", "latency p50 (ms)"), figure("latency_p99_ms", "latency p99 (ms)"),
        figure("tokens_per_s_per_user", "tok/s/user"), figure("tokens_per_s_per_gpu", "tok/s/GPU"),
        Column("step", "step", in_markdown=False), SOURCE], rows)


def pareto_table(sweep: Table) -> Table:
    """Every sweep point, marked when no point of either graph beats it on both axes: the
    frontier of the two graphs together."""
    axes = ("tokens_per_s_per_user", "tokens_per_s_per_gpu")
    points = [{key: row[key] for key in ("graph", "run_id", "simulated", "concurrency",
                                         "requests", *axes)}
              for row in sweep.rows if None not in (row[axes[0]], row[axes[1]])]

    def dominates(one: dict[str, Any], other: dict[str, Any]) -> bool:
        return (all(one[axis] >= other[axis] for axis in axes)
                and any(one[axis] > other[axis] for axis in axes))

    rows = [point | {"pareto_optimal": not any(dominates(other, point) for other in points)}
            for point in points]
    return Table("pareto", "Pareto: tokens/s per GPU vs tokens/s per user", [
        *IDENTITY, Column("concurrency", "concurrency"), Column("requests", "requests"),
        figure("tokens_per_s_per_user", "tok/s/user"), figure("tokens_per_s_per_gpu", "tok/s/GPU"),
        Column("pareto_optimal", "on the frontier (both graphs)")], rows)


def cost_table(runs: list[GraphRun], sweep: Table, problems: list[Problem]) -> Table:
    priced = {}
    for run in runs:
        try:
            priced[run.label] = (run.manifest, usd_per_hour(run.manifest))
        except KeyError as err:
            problems.append(Problem(run.directory / MANIFEST_FILE,
                                    f"{err.args[0]}; cost figures of {run.graph} are absent"))
    rows = []
    for row in sweep.rows:
        if row["graph"] not in priced:
            continue
        manifest, hourly = priced[row["graph"]]
        rows.append({key: row[key] for key in ("graph", "run_id", "simulated", "concurrency",
                                                "requests")} | {
            "nodes": manifest.nodes_summary, "gpus": manifest.total_gpus, "usd_per_hour": hourly,
            "output_tokens_per_s": row["output_tokens_per_s"],
            "usd_per_million_output_tokens": usd_per_million_tokens(hourly,
                                                                    row["output_tokens_per_s"]),
        })
    return Table("cost_efficiency", f"Cost efficiency ({PRICES_DATED})", [
        *IDENTITY, Column("concurrency", "concurrency"), Column("requests", "requests"),
        Column("nodes", "nodes"), Column("gpus", "GPUs"), Column("usd_per_hour", "$/h"),
        figure("output_tokens_per_s", "output tok/s"),
        figure("usd_per_million_output_tokens", "$/1M output tokens")], rows)


def prefix_cache_table(runs: list[GraphRun], problems: list[Problem]) -> Table:
    rows = []
    for run, result in _results(runs, "prefix_cache"):
        match = _HIT_STEP.match(result.step)
        if not match:
            problems.append(Problem(result.export.path.parent,
                                    f"step {result.step!r} is not named hit<percent>; skipped"))
            continue
        export = result.export
        rows.append({**_identity(run), "hit_ratio_pct": int(match.group(1)),
                     "concurrency": export.concurrency,
                     "requests": export.stat("request_count", "avg"),
                     "ttft_p50_ms": export.stat(TTFT, "p50"),
                     "ttft_avg_ms": export.stat(TTFT, "avg"),
                     "output_tokens_per_s": export.stat(OUTPUT_TPS, "avg"),
                     "source": _source(run, export)})
    rows.sort(key=lambda row: (row["graph"], row["hit_ratio_pct"]))
    no_cache = {row["graph"]: row for row in rows if row["hit_ratio_pct"] == 0}
    for row in rows:
        base = no_cache.get(row["graph"], {})
        row["ttft_p50_reduction_pct"] = _reduction_pct(row["ttft_p50_ms"], base.get("ttft_p50_ms"))
        row["throughput_gain_pct"] = _gain_pct(row["output_tokens_per_s"],
                                               base.get("output_tokens_per_s"))
    return Table("prefix_cache", "Prefix-cache effect", [
        *IDENTITY, Column("hit_ratio_pct", "configured shared-prefix share (%)"),
        Column("concurrency", "concurrency"), Column("requests", "requests"),
        figure("ttft_p50_ms", "TTFT p50 (ms)"), figure("ttft_avg_ms", "TTFT avg (ms)"),
        figure("ttft_p50_reduction_pct", "TTFT p50 reduction vs 0 % (%)"),
        figure("output_tokens_per_s", "output tok/s"),
        figure("throughput_gain_pct", "throughput gain vs 0 % (%)"), SOURCE], rows)


def sequence_distribution_table(runs: list[GraphRun]) -> Table:
    rows = []
    for run, result in _results(runs, "sequence_distribution"):
        export = result.export
        rows.append({
            **_identity(run), "distribution": result.step,
            "requests": export.stat("request_count", "avg"),
            "isl_avg": export.stat("input_sequence_length", "avg"),
            "isl_p99": export.stat("input_sequence_length", "p99"),
            "osl_avg": export.stat("output_sequence_length", "avg"),
            **_spread(export, TTFT, "ttft", "ms"),
            **_spread(export, TPS_PER_USER, "tps_user", ""),
            "output_tokens_per_s": export.stat(OUTPUT_TPS, "avg"),
            "source": _source(run, export),
        })
    rows.sort(key=lambda row: (row["graph"], row["distribution"]))
    return Table("sequence_distribution", "Sequence-distribution stability", [
        *IDENTITY, Column("distribution", "distribution"), Column("requests", "requests"),
        Column("isl_avg", "ISL avg"), Column("isl_p99", "ISL p99"), Column("osl_avg", "OSL avg"),
        figure("ttft_p50_ms", "TTFT p50 (ms)"), figure("ttft_p99_ms", "TTFT p99 (ms)"),
        figure("ttft_cv", "TTFT CV"), figure("ttft_p99_over_p50", "TTFT p99/p50"),
        figure("tps_user_p50", "tok/s/user p50"), figure("tps_user_p99", "tok/s/user p99"),
        figure("tps_user_cv", "tok/s/user CV"), figure("output_tokens_per_s", "output tok/s"),
        *[figure(key, key, in_markdown=False) for key in
          ("ttft_p25_ms", "ttft_p75_ms", "ttft_p1_ms", "ttft_std_ms", "ttft_avg_ms",
           "tps_user_p1", "tps_user_p25", "tps_user_p75", "tps_user_std", "tps_user_avg",
           "tps_user_p99_over_p50")],
        SOURCE], rows)


def _spread(export: ProfileExport, metric: str, prefix: str, unit: str) -> dict[str, float | None]:
    """Percentiles, std and the two spread figures (CV = std/avg, p99/p50) of one metric."""
    suffix = f"_{unit}" if unit else ""
    figures = {f"{prefix}_{stat}{suffix}": export.stat(metric, stat)
               for stat in ("p1", "p25", "p50", "p75", "p99", "std", "avg")}
    figures[f"{prefix}_cv"] = _ratio(export.stat(metric, "std"), export.stat(metric, "avg"))
    figures[f"{prefix}_p99_over_p50"] = _ratio(export.stat(metric, "p99"),
                                               export.stat(metric, "p50"))
    return figures


def multi_turn_tables(runs: list[GraphRun]) -> tuple[Table, Table]:
    per_turn, summary = [], []
    for run, result in _results(runs, "multi_turn"):
        export, records = result.export, result.records or []
        conversation_seconds = _conversation_seconds(records)
        summary.append({
            **_identity(run), "step": result.step, "concurrency": export.concurrency,
            "conversations": len(conversation_seconds) or None,
            "requests": export.stat("request_count", "avg"),
            "ttft_p50_ms": export.stat(TTFT, "p50"),
            "conversation_time_avg_s": _stat(statistics.mean, conversation_seconds),
            "conversation_time_p50_s": _stat(statistics.median, conversation_seconds),
            "conversation_time_max_s": _stat(max, conversation_seconds),
            "cache_hit_pct": export.stat(CACHE_READ_PCT, "avg"),
            "source": _source(run, export),
        })
        for turn, turn_records in sorted(_by_turn(records).items()):
            ttfts = [record.metrics[TTFT] for record in turn_records if TTFT in record.metrics]
            per_turn.append({**_identity(run), "step": result.step, "turn": turn + 1,
                             "requests": len(turn_records),
                             "ttft_avg_ms": _stat(statistics.mean, ttfts),
                             "ttft_p50_ms": _stat(statistics.median, ttfts),
                             "cache_hit_pct": _cache_hit_pct(turn_records)})
    return (
        Table("multi_turn_per_turn", "Multi-turn: TTFT per turn", [
            *IDENTITY, Column("step", "step"), Column("turn", "turn"),
            Column("requests", "requests"),
            figure("ttft_avg_ms", "TTFT avg (ms)"), figure("ttft_p50_ms", "TTFT p50 (ms)"),
            Column("cache_hit_pct", "cache hit (%)")], per_turn),
        Table("multi_turn", "Multi-turn conversations", [
            *IDENTITY, Column("step", "step"), Column("concurrency", "concurrency"),
            Column("conversations", "conversations"), Column("requests", "requests"),
            figure("ttft_p50_ms", "TTFT p50 (ms)"),
            Column("conversation_time_avg_s", "conversation time avg (s)"),
            Column("conversation_time_p50_s", "conversation time p50 (s)"),
            Column("conversation_time_max_s", "conversation time max (s)"),
            Column("cache_hit_pct", "cache hit (%)"), SOURCE], summary),
    )


def _stat(function: Callable[[list[float]], float], values: list[float]) -> float | None:
    return function(values) if values else None


def _by_turn(records: list[RequestRecord]) -> dict[int, list[RequestRecord]]:
    turns = defaultdict(list)
    for record in records:
        if record.error is None and record.turn_index is not None:
            turns[record.turn_index].append(record)
    return turns


def _conversation_seconds(records: list[RequestRecord]) -> list[float]:
    """First request start to last request end of each conversation (inter-turn delays included)."""
    spans: dict[str, tuple[int, int]] = {}
    for record in records:
        if record.conversation_id is None:
            continue
        start, end = spans.get(record.conversation_id, (record.start_ns, record.end_ns))
        spans[record.conversation_id] = (min(start, record.start_ns), max(end, record.end_ns))
    return [(end - start) / 1e9 for start, end in spans.values()]


def _cache_hit_pct(records: list[RequestRecord]) -> float | None:
    """Share of prompt tokens the server reported as served from its cache, when it reports it."""
    reporting = [record for record in records if CACHE_READ_TOKENS in record.metrics]
    prompt_tokens = sum(record.metrics.get(PROMPT_TOKENS, 0) for record in reporting)
    cached = sum(record.metrics[CACHE_READ_TOKENS] for record in reporting)
    return _ratio(cached * 100, prompt_tokens) if reporting else None


def status_table(runs: list[GraphRun]) -> Table:
    rows = [{**_identity(run), "mode": mode, "status": status.status, "error": status.error,
             "started": status.started, "finished": status.finished,
             "planned_seconds": status.planned_seconds, "steps": " ".join(status.steps)}
            for run in runs for mode, status in run.statuses.items()]
    return Table("mode_status", "Mode status", [
        *IDENTITY, Column("mode", "mode"), Column("status", "status"), Column("error", "error"),
        Column("started", "started"), Column("finished", "finished"),
        Column("planned_seconds", "planned (s)"), Column("steps", "steps")], rows)


def relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
