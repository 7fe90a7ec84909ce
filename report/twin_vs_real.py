"""Twin vs real: the local lab's simulation of a stack's graph next to the cloud run of the same
shape (graph, profile, model, workers, node groups), sweep level by sweep level, with the twin's
error in % of the real figure. Only where both ran; the report leaves the section out otherwise.
"""
from __future__ import annotations

from report.inputs import GraphRun
from report.tables import Column, Table, sweep_table

FIGURES = (("ttft_p50_ms", "TTFT p50 (ms)"), ("itl_p50_ms", "ITL p50 (ms)"),
           ("output_tokens_per_s", "output tok/s"))


def twin_table(pairs: list[tuple[GraphRun, GraphRun]]) -> Table:
    rows = []
    for twin, real in pairs:
        simulated = {row["concurrency"]: row for row in sweep_table([twin]).rows}
        for measured in sweep_table([real]).rows:
            level = measured["concurrency"]
            if level not in simulated:
                continue
            for key, name in FIGURES:
                value, truth = simulated[level].get(key), measured.get(key)
                error = (value - truth) / truth * 100 if value is not None and truth else None
                rows.append({"graph": real.graph, "concurrency": level, "figure": name,
                             "twin": value, "real": truth, "error_pct": error,
                             "twin_run": twin.manifest.run_id, "real_run": real.manifest.run_id})
    return Table("twin_vs_real", "Twin vs real", [
        Column("graph", "graph"), Column("concurrency", "concurrency"), Column("figure", "figure"),
        Column("twin", "twin"), Column("real", "real"), Column("error_pct", "twin error (%)"),
        Column("twin_run", "twin run"), Column("real_run", "real run")], rows)
