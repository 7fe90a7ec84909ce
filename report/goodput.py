"""Goodput at the SLO per sweep level, and per graph the highest concurrency that meets it.

AIPerf counts a request as good when it meets every `--goodput` threshold (here TTFT and ITL,
from `bench.slo`) and reports `goodput` (good requests/s) and `good_request_fraction`. A level
meets the SLO when at least ATTAINMENT of its requests are good.
"""
from __future__ import annotations

from typing import Any

from report.inputs import GraphRun
from report.tables import IDENTITY, Column, Table

# DistServe's attainment convention, which AIPerf's goodput recipe also defaults to:
# aiperf 0.9.0 `profile --help`, --slo-attainment-fraction ("Default 0.95 matches DistServe").
ATTAINMENT = 0.95
GOODPUT, GOOD_FRACTION = "goodput", "good_request_fraction"


def goodput_table(runs: list[GraphRun]) -> Table:
    """One row per sweep level of each graph."""
    rows = []
    for run in runs:
        for result in run.results.get("concurrency_sweep", []):
            export = result.export
            fraction = export.stat(GOOD_FRACTION, "avg")
            rows.append({"graph": run.label, "run_id": run.manifest.run_id,
                         "simulated": run.manifest.simulated, "concurrency": export.concurrency,
                         "slo": _slo_text(export.slos),
                         "goodput_rps": export.stat(GOODPUT, "avg"),
                         "good_pct": fraction * 100 if fraction is not None else None,
                         "meets_slo": fraction >= ATTAINMENT if fraction is not None else None})
    rows.sort(key=lambda row: (row["graph"], row["concurrency"] or 0))
    best = highest_meeting_slo(rows)
    for row in rows:
        row["highest_meeting_slo"] = best.get(row["graph"]) == row["concurrency"]
    return Table("goodput", f"Goodput at the SLO (a level meets it when >= "
                            f"{ATTAINMENT:.0%} of requests are good)", [
        *IDENTITY, Column("concurrency", "concurrency"), Column("slo", "SLO"),
        Column("goodput_rps", "goodput (req/s)"), Column("good_pct", "good requests (%)"),
        Column("meets_slo", "meets SLO"),
        Column("highest_meeting_slo", "highest concurrency meeting SLO")], rows)


def highest_meeting_slo(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Per graph, the highest concurrency whose level meets the SLO (graphs with none absent)."""
    best: dict[str, int] = {}
    for row in rows:
        if row["meets_slo"] and row["concurrency"] is not None:
            best[row["graph"]] = max(best.get(row["graph"], 0), row["concurrency"])
    return best


def _slo_text(slos: dict[str, float]) -> str | None:
    names = {"time_to_first_token": "TTFT", "inter_token_latency": "ITL"}
    return ", ".join(f"{names.get(key, key)} <= {value:g} ms" for key, value in
                     sorted(slos.items())) or None


def with_slo_marks(pareto: Table, goodput: Table) -> Table:
    """The Pareto table with each graph's highest concurrency meeting the SLO marked, so the
    plot can name it."""
    best = {row["graph"]: row["concurrency"] for row in goodput.rows if row["highest_meeting_slo"]}
    rows = [row | {"highest_meeting_slo": best.get(row["graph"]) == row["concurrency"]}
            for row in pareto.rows]
    return Table(pareto.name, pareto.title,
                 [*pareto.columns, Column("highest_meeting_slo", "highest meeting SLO")], rows)
