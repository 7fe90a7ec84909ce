"""Findings: Report 5's four validation points and its recommendation table, answered from this
run's tables, each with the numbers it rests on, or "not answerable from this run: <reason>".

Every agg-vs-disagg difference says whether it exceeds the 95 % confidence intervals (repeats
> 1: the intervals do not overlap) or that its significance is unknown (one repeat). Findings
drawn from simulated runs say so. Pure functions of table rows, so crafted tables test them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

GAIN, LOSS, NOISE, UNANSWERABLE = "gain", "loss", "within noise", "not answerable"
LINEAR, NOT_LINEAR = "linear", "not linear"
HIGH_CONCURRENCY = 32  # Report 5: "especially at concurrency >= 32"
LINEAR_R2 = 0.9  # a straight line explains at least 90 % of the variance
SIMULATED = "Simulated (mocker timings, no GPU): "
# Measured here (tests/test_twin_e2e.py): Dynamo 0.9.1's mocker streams a request's first token
# at once and charges its simulated prefill before the second, so its TTFT is the frontend's path.
MOCKER_TTFT = ("not answerable from a simulated run: the mocker sends a request's first token "
               "before it charges the simulated prefill, so TTFT here leaves the prefill out")
Row = dict[str, Any]


@dataclass(frozen=True)
class Finding:
    question: str
    verdict: str
    evidence: str  # the numbers it rests on, or why it cannot be answered


@dataclass(frozen=True)
class Comparison:
    verdict: str  # GAIN (disagg better), LOSS, NOISE, UNANSWERABLE
    text: str


def compare(agg: Row | None, disagg: Row | None, key: str, unit: str,
            lower_is_better: bool) -> Comparison:
    """disagg vs agg on `key` (rows may carry `<key>_ci_low/_ci_high`)."""
    if agg is None or disagg is None or agg.get(key) is None or disagg.get(key) is None:
        return Comparison(UNANSWERABLE, f"no {key} for both graphs")
    a, d = agg[key], disagg[key]
    change = (a - d) / a * 100 if lower_is_better and a else (d - a) / a * 100 if a else None
    better = d < a if lower_is_better else d > a
    figures = (f"agg {a:,.2f} {unit}{_ci(agg, key)}, disagg {d:,.2f} {unit}{_ci(disagg, key)}"
               + (f" ({change:+.1f} % for disagg)" if change is not None else ""))
    intervals = [_interval(row, key) for row in (agg, disagg)]
    if None in intervals:
        return Comparison(GAIN if better else LOSS,
                          f"{figures}; significance unknown (one repeat, no interval)")
    (a_low, a_high), (d_low, d_high) = intervals
    if a_low <= d_high and d_low <= a_high:
        return Comparison(NOISE, f"{figures}; the 95 % intervals overlap")
    return Comparison(GAIN if better else LOSS, f"{figures}; exceeds the 95 % intervals")


def findings(sweep: list[Row], prefix: list[Row], distributions: list[Row],
             evidence: list[Row], simulated: bool) -> list[Finding]:
    found = [_disagg_ttft(sweep, simulated), _offload(evidence, simulated),
             _prefix_linearity(prefix, simulated),
             _nixl_short_sequences(distributions, evidence, simulated)]
    return [_marked(finding, simulated) for finding in found]


def recommendations(sweep: list[Row], goodput: list[Row], prefix: list[Row],
                    distributions: list[Row], multi_turn: list[Row],
                    simulated: bool) -> list[Row]:
    """Report 5's recommendation table: scenario -> mode -> the figure behind it."""
    low = _common_levels(sweep)[:1]
    high = [level for level in _common_levels(sweep) if level >= HIGH_CONCURRENCY][-1:]
    top_ratio = max((row["hit_ratio_pct"] for row in prefix), default=None)
    shortest = _shortest_distribution(distributions)
    scenarios = [  # (scenario, figure, agg/disagg rows, key, unit, lower is better, where)
        ("interactive, low concurrency", "TTFT p50", _at(sweep, "concurrency", low),
         "ttft_p50_ms", "ms", True, f"at concurrency {low[0]}" if low else None,
         "no concurrency level ran on both graphs"),
        (f"high concurrency (>= {HIGH_CONCURRENCY})", "goodput",
         _at(goodput, "concurrency", high), "goodput_rps", "req/s", False,
         f"at concurrency {high[0]}" if high else None,
         f"no concurrency >= {HIGH_CONCURRENCY} ran on both graphs"),
        ("long shared prefixes", "TTFT p50", _at(prefix, "hit_ratio_pct", [top_ratio]),
         "ttft_p50_ms", "ms", True,
         f"at {top_ratio} % prefix" if top_ratio is not None else None, "no prefix-cache step ran"),
        ("short, variable sequences", "TTFT p50",
         _at(distributions, "distribution", [shortest]), "ttft_p50_ms", "ms", True,
         f"on the {shortest} distribution" if shortest else None, "no sequence distribution ran"),
        ("multi-turn chat", "TTFT p50", _by_graph(multi_turn), "ttft_p50_ms", "ms", True,
         "over all turns", "no multi-turn step ran"),
    ]
    rows = []
    for scenario, figure, pair, key, unit, lower, where, missing in scenarios:
        result = compare(pair.get("agg"), pair.get("disagg"), key, unit, lower)
        mode = {GAIN: "disagg", LOSS: "agg", NOISE: "either (no difference beyond the "
                                                    "intervals)"}.get(result.verdict)
        if simulated and key == "ttft_p50_ms":
            mode, basis = None, MOCKER_TTFT
        else:
            basis = (f"{figure} {where}: {result.text}" if mode else
                     f"not answerable from this run: {missing if where is None else result.text}")
        rows.append({"scenario": scenario, "recommended": mode or "—",
                     "figure": (SIMULATED if simulated else "") + basis})
    return rows


# ---- the four validation points -----------------------------------------------------------

def _disagg_ttft(sweep: list[Row], simulated: bool) -> Finding:
    question = f"Does disagg cut TTFT, especially at concurrency >= {HIGH_CONCURRENCY}?"
    if simulated:
        return Finding(question, UNANSWERABLE, MOCKER_TTFT)
    levels = _common_levels(sweep)
    if not levels:
        return Finding(question, UNANSWERABLE, "not answerable from this run: no concurrency "
                                               "level ran on both graphs")
    parts, verdict = [], None
    for level in levels:
        pair = _at(sweep, "concurrency", [level])
        result = compare(pair.get("agg"), pair.get("disagg"), "ttft_p50_ms", "ms", True)
        parts.append(f"c{level}: {result.verdict}, TTFT p50 {result.text}")
        if level >= HIGH_CONCURRENCY:
            verdict = result.verdict  # the highest level >= 32 decides
    if verdict is None:
        return Finding(question, UNANSWERABLE,
                       f"not answerable from this run: no concurrency >= {HIGH_CONCURRENCY} "
                       f"ran on both graphs (levels {', '.join(map(str, levels))}); "
                       + "; ".join(parts))
    return Finding(question, verdict, "; ".join(parts))


def _offload(evidence: list[Row], simulated: bool) -> Finding:
    question = "Does KV offload (KVBM) pay for itself on L40S decode?"
    offloaded = [row for row in evidence if row.get("kvbm_offload_blocks")]
    if simulated:
        reason = "the mocker has no KVBM, and no run with and one without offload was compared"
    elif not offloaded:
        reason = ("no KVBM offload counters were scraped (kvbm_offload_blocks_d2h), and no run "
                  "without offload was compared")
    else:
        total = sum(row["kvbm_offload_blocks"] for row in offloaded)
        reason = (f"offload was measured ({total:,.0f} blocks d2h) but this run has no run "
                  "without offload to compare against")
    return Finding(question, UNANSWERABLE, f"not answerable from this run: {reason}")


def _prefix_linearity(prefix: list[Row], simulated: bool) -> Finding:
    question = "Is the TTFT improvement linear in the prefix hit rate (fit, R²)?"
    if simulated:
        return Finding(question, UNANSWERABLE, MOCKER_TTFT)
    parts, verdicts = [], []
    for graph, rows in _group(prefix).items():
        points = [(row["measured_hit_pct"], row["ttft_p50_reduction_pct"]) for row in rows
                  if row.get("measured_hit_pct") is not None
                  and row.get("ttft_p50_reduction_pct") is not None]
        if len({x for x, _ in points}) < 3:
            parts.append(f"{graph}: fewer than 3 steps with a measured hit rate")
            continue
        slope, intercept, r2 = fit_line(points)
        verdicts.append(LINEAR if r2 >= LINEAR_R2 else NOT_LINEAR)
        parts.append(f"{graph}: TTFT p50 reduction = {slope:.2f} x hit % {intercept:+.1f}, "
                     f"R² {r2:.2f} over {len(points)} steps (measured hit "
                     + ", ".join(f"{x:.0f}" for x, _ in sorted(points)) + " %)")
    if not verdicts:
        return Finding(question, UNANSWERABLE,
                       "not answerable from this run: " + ("; ".join(parts) or
                                                           "no prefix-cache step ran"))
    verdict = LINEAR if all(v == LINEAR for v in verdicts) else NOT_LINEAR
    return Finding(question, verdict, f"R² >= {LINEAR_R2} counts as linear; " + "; ".join(parts))


def _nixl_short_sequences(distributions: list[Row], evidence: list[Row],
                          simulated: bool) -> Finding:
    question = "Does NIXL transfer overhead negate disaggregation for short sequences?"
    if simulated:
        return Finding(question, UNANSWERABLE, "not answerable from this run: the mocker moves "
                                               "no KV cache over NIXL")
    shortest = _shortest_distribution(distributions)
    pair = _at(distributions, "distribution", [shortest])
    result = compare(pair.get("agg"), pair.get("disagg"), "ttft_p50_ms", "ms", True)
    if result.verdict == UNANSWERABLE:
        return Finding(question, UNANSWERABLE, f"not answerable from this run: {result.text}")
    answer = {GAIN: "no: disagg still cuts TTFT", LOSS: "yes: disagg is slower to first token",
              NOISE: "no measurable effect"}[result.verdict]
    return Finding(question, result.verdict,
                   f"{answer} on the {shortest} distribution; TTFT p50 {result.text} "
                   "(NIXL transfer time itself: not exposed by the scraped endpoints)")


# ---- helpers ------------------------------------------------------------------------------

def fit_line(points: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Least-squares y = slope x + intercept, and R²."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    sxx = sum((x - mean_x) ** 2 for x, _ in points)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in points)
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    total = sum((y - mean_y) ** 2 for _, y in points)
    residual = sum((y - (slope * x + intercept)) ** 2 for x, y in points)
    return slope, intercept, 1 - residual / total if total else 1.0


def _marked(finding: Finding, simulated: bool) -> Finding:
    return Finding(finding.question, finding.verdict,
                   (SIMULATED if simulated else "") + finding.evidence)


def _graph(row: Row) -> str:
    return str(row["graph"]).split(" ")[0]  # "agg (simulated)" -> "agg"


def _group(rows: Iterable[Row]) -> dict[str, list[Row]]:
    grouped: dict[str, list[Row]] = {}
    for row in rows:
        grouped.setdefault(_graph(row), []).append(row)
    return grouped


def _at(rows: list[Row], key: str, values: list) -> dict[str, Row]:
    return {_graph(row): row for row in rows if values and row.get(key) == values[0]}


def _by_graph(rows: list[Row]) -> dict[str, Row]:
    return {_graph(row): row for row in rows}


def _common_levels(sweep: list[Row]) -> list[int]:
    by_graph = {graph: {row["concurrency"] for row in rows if row["concurrency"] is not None}
                for graph, rows in _group(sweep).items()}
    if not {"agg", "disagg"} <= set(by_graph):
        return []
    return sorted(by_graph["agg"] & by_graph["disagg"])


def _shortest_distribution(rows: list[Row]) -> str | None:
    measured = [row for row in rows if row.get("isl_avg") is not None]
    return min(measured, key=lambda row: row["isl_avg"])["distribution"] if measured else None


def _interval(row: Row, key: str) -> tuple[float, float] | None:
    low, high = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    return None if low is None or high is None else (low, high)


def _ci(row: Row, key: str) -> str:
    interval = _interval(row, key)
    return f" [95 % CI {interval[0]:,.2f}-{interval[1]:,.2f}]" if interval else ""
