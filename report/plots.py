"""PNG plots of the report, drawn from the report's tables (so a plot never shows a figure the
tables do not). A plot with no data is not drawn; simulated series say so in legend and title.

None exaggerates: value axes start at zero, a log axis says so, p50 and p99 differ in marker
and fill as well as line style (legible in grey print), box plots say what their parts are."""
from __future__ import annotations

import textwrap
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

import matplotlib

matplotlib.use("Agg")  # files only: no display on the lab machine or in a Job
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
from matplotlib.ticker import NullLocator  # noqa: E402

from report.tables import Table  # noqa: E402

SIMULATED_NOTE = "SIMULATED: mocker timings, not GPU measurements"
Row = dict[str, Any]
# How each statistic is drawn: line style, marker and fill all differ.
STAT_STYLES = {
    "p50": dict(linestyle="-", marker="o"),
    "p99": dict(linestyle="--", marker="^", markerfacecolor="white", markersize=7),
    "avg": dict(linestyle=":", marker="s", markerfacecolor="white"),
    "": dict(linestyle="-", marker="o"),
}
BOX_LEGEND = "box p25-p75, line p50, whiskers p1-p99 (AIPerf's percentiles; no outliers drawn)"


def draw_plots(tables: dict[str, Table], out_dir: Path) -> dict[str, Path]:
    """Every plot that has data, by table name; returns where each was written."""
    drawers: dict[str, Callable[[list[Row], Any], bool]] = {
        "concurrency_sweep": _concurrency_sweep, "prefix_cache": _prefix_cache,
        "sequence_distribution": _sequence_distribution, "multi_turn_per_turn": _per_turn,
        "pareto": _pareto, "cost_efficiency": _cost,
    }
    drawn = {}
    for name, draw in drawers.items():
        rows = tables[name].rows
        if not rows:
            continue
        figure = plt.figure(figsize=(11, 7) if name == "concurrency_sweep" else (10, 4.5))
        try:
            if draw(rows, figure):
                title = tables[name].title
                simulated = sorted({row["graph"] for row in rows if row["simulated"]})
                if simulated:  # legends carry short names; what each simulated, here
                    title += f"\n{SIMULATED_NOTE}\n" + "\n".join(
                        textwrap.shorten(label, 150) for label in simulated)
                figure.suptitle(title)
                figure.tight_layout()
                path = out_dir / f"{name}.png"
                figure.savefig(path, dpi=110, metadata={"Title": title})
                drawn[name] = path
        finally:
            plt.close(figure)
    return drawn


def _short(label: str) -> str:
    """A graph's label without what it simulated (the figure's title says that)."""
    graph, simulated, _ = label.partition(" (simulated: ")
    return f"{graph} (simulated)" if simulated else label


def _by_graph(rows: list[Row], x: str, *ys: str) -> dict[str, list[tuple]]:
    """Points (x, *ys) per graph label, sorted by x, dropping any with an absent figure."""
    series = defaultdict(list)
    for row in rows:
        point = (row[x], *(row[y] for y in ys))
        if None not in point:
            series[_short(row["graph"])].append(point)
    return {graph: sorted(points) for graph, points in series.items()}


def _lines(axes, rows: list[Row], x: str, ys: list[tuple[str, str]], ylabel: str) -> bool:
    """One line per graph (a colour each) and (column, statistic) (a style each); y from 0."""
    colours = {graph: f"C{index}" for index, graph in enumerate(sorted({_short(r["graph"]) for r in rows}))}
    drawn = False
    for y, stat in ys:
        for graph, points in _by_graph(rows, x, y).items():
            axes.plot([p[0] for p in points], [p[1] for p in points], color=colours[graph],
                      label=f"{graph} {stat}".strip(), **STAT_STYLES[stat])
            drawn = True
    axes.set_ylabel(ylabel)
    axes.set_ylim(bottom=0)
    if drawn:
        axes.legend(fontsize=8)
    return drawn


def _concurrency_sweep(rows: list[Row], figure) -> bool:
    panels = [
        ([("ttft_p50_ms", "p50"), ("ttft_p99_ms", "p99")], "TTFT (ms)"),
        ([("itl_p50_ms", "p50"), ("itl_p99_ms", "p99")], "ITL (ms)"),
        ([("output_tokens_per_s", "")], "output tokens/s"),
        ([("latency_p50_ms", "p50"), ("latency_p99_ms", "p99")], "request latency (ms)"),
    ]
    drawn = False
    for index, (ys, label) in enumerate(panels, start=1):
        axes = figure.add_subplot(2, 2, index)
        drawn |= _lines(axes, rows, "concurrency", ys, label)
        _levels_axis(axes, rows, "concurrency", "concurrency", log2=True)
    return drawn


def _levels_axis(axes, rows: list[Row], key: str, label: str, log2: bool = False) -> None:
    """An x axis ticked at exactly the levels that ran (concurrency, hit ratio, turn)."""
    levels = sorted({row[key] for row in rows if row[key] is not None})
    axes.set_xlabel(f"{label} (log scale, levels that ran)" if log2 else label)
    if log2:
        axes.set_xscale("log", base=2)
    axes.set_xticks(levels, [str(level) for level in levels])
    axes.xaxis.set_minor_locator(NullLocator())


def _prefix_cache(rows: list[Row], figure) -> bool:
    drawn = False
    for index, (y, label) in enumerate([("ttft_p50_ms", "TTFT p50 (ms)"),
                                        ("output_tokens_per_s", "output tokens/s")], start=1):
        axes = figure.add_subplot(1, 2, index)
        drawn |= _lines(axes, rows, "hit_ratio_pct", [(y, "p50" if "p50" in y else "")], label)
        _levels_axis(axes, rows, "hit_ratio_pct", "configured shared-prefix share (%)")
    return drawn


def _sequence_distribution(rows: list[Row], figure) -> bool:
    """Box p25-p75, line p50, whiskers p1-p99, per graph and distribution."""
    drawn = False
    for index, (prefix, unit, label) in enumerate([("ttft", "_ms", "TTFT (ms)"),
                                                   ("tps_user", "", "tokens/s per user")], start=1):
        axes = figure.add_subplot(1, 2, index)
        boxes, names = [], []
        for row in rows:
            stats = [row[f"{prefix}_{stat}{unit}"] for stat in ("p1", "p25", "p50", "p75", "p99")]
            if None in stats:
                continue
            boxes.append(dict(zip(("whislo", "q1", "med", "q3", "whishi"), stats), fliers=[]))
            names.append(f"{row['distribution']}\n{_short(row['graph'])}")
        if boxes:
            axes.bxp(boxes, showfliers=False)
            axes.set_xticks(range(1, len(names) + 1), names, fontsize=8)
            axes.set_ylim(bottom=0)
            drawn = True
        axes.set_ylabel(label)
    if drawn:
        figure.supxlabel(BOX_LEGEND, fontsize=8)
    return drawn


def _per_turn(rows: list[Row], figure) -> bool:
    axes = figure.add_subplot(1, 1, 1)
    drawn = _lines(axes, rows, "turn", [("ttft_avg_ms", "avg"), ("ttft_p50_ms", "p50")],
                   "TTFT (ms)")
    _levels_axis(axes, rows, "turn", "turn")
    return drawn


def _pareto(rows: list[Row], figure) -> bool:
    """Each graph's points, and one frontier across both graphs; better is up and right."""
    axes = figure.add_subplot(1, 1, 1)
    series = _by_graph(rows, "tokens_per_s_per_user", "tokens_per_s_per_gpu", "pareto_optimal",
                       "concurrency")
    for index, (graph, points) in enumerate(sorted(series.items())):
        axes.scatter([p[0] for p in points], [p[1] for p in points], label=graph,
                     color=f"C{index}", marker="os"[index % 2], zorder=3)
        for x, y, _, concurrency in points:
            axes.annotate(f"c{concurrency}", (x, y), fontsize=7, textcoords="offset points",
                          xytext=(3, 3))
    frontier = sorted((p[0], p[1]) for points in series.values() for p in points if p[2])
    if frontier:
        axes.plot([p[0] for p in frontier], [p[1] for p in frontier], color="black",
                  linewidth=1, zorder=2, label="frontier (both graphs)")
        axes.annotate("better", xy=(0.97, 0.95), xytext=(0.80, 0.78), xycoords="axes fraction",
                      textcoords="axes fraction", fontsize=9, ha="center",
                      arrowprops=dict(arrowstyle="->"))
    _mark_slo(axes, rows)
    axes.set_xlabel("tokens/s per user")
    axes.set_ylabel("tokens/s per GPU")
    axes.set_xlim(left=0)
    axes.set_ylim(bottom=0)
    if series:
        axes.legend(fontsize=8, loc="lower left")
    return bool(series)


def _mark_slo(axes, rows: list[Row]) -> None:
    """Each graph's highest concurrency meeting the goodput SLO, starred and named."""
    for row in rows:
        if row.get("highest_meeting_slo") and None not in (row["tokens_per_s_per_user"],
                                                           row["tokens_per_s_per_gpu"]):
            point = (row["tokens_per_s_per_user"], row["tokens_per_s_per_gpu"])
            axes.scatter(*point, marker="*", s=220, color="gold", edgecolors="black", zorder=3)
            axes.annotate(f"{_short(row['graph'])}: highest c meeting SLO = c{row['concurrency']}",
                          point, fontsize=7, textcoords="offset points", xytext=(6, -12))


def _cost(rows: list[Row], figure) -> bool:
    axes = figure.add_subplot(1, 1, 1)
    drawn = _lines(axes, rows, "concurrency", [("usd_per_million_output_tokens", "")],
                   "$ per 1M output tokens")
    _levels_axis(axes, rows, "concurrency", "concurrency", log2=True)
    return drawn
