"""Simulated figures no GPU could produce, caught before they are read as findings.

A serving engine under more load cannot give each token faster (ITL falls) or each request more
throughput, and more prefix-cache hits cannot cost throughput. A simulated level that does so
is the timing model outside its range (Report 5's local lab: agg ITL 34 ms at c=16, 2.4 ms at
c=32); it is listed as a simulator artefact. Measured runs are left alone: there it would be a
finding, with its own explanation. TOLERANCE keeps run-to-run noise out.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from report.tables import Column, Table, _ratio

TOLERANCE = 0.10  # a change smaller than 10 % is noise, not physics


def artefact_table(sweep: Table, prefix: Table) -> Table:
    rows = []
    for graph, levels in _by_graph(sweep.rows, "concurrency").items():
        for before, after in zip(levels, levels[1:]):
            rows += _sweep_artefacts(graph, before, after)
    for graph, ratios in _by_graph(prefix.rows, "hit_ratio_pct").items():
        for before, after in zip(ratios, ratios[1:]):
            if _less(after["output_tokens_per_s"], before["output_tokens_per_s"]):
                rows.append({"graph": graph, "mode": "prefix_cache",
                             "where": f"hit {before['hit_ratio_pct']} % -> {after['hit_ratio_pct']} %",
                             "what": f"output tok/s fell {before['output_tokens_per_s']:,.0f} -> "
                                     f"{after['output_tokens_per_s']:,.0f} with more cache hits"})
    return Table("simulator_artefacts", "Simulator artefacts", [
        Column("graph", "graph"), Column("mode", "mode"), Column("where", "where"),
        Column("what", "what")], rows)


def _sweep_artefacts(graph: str, before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    where = f"concurrency {before['concurrency']} -> {after['concurrency']}"
    found = []
    if _less(after["itl_p50_ms"], before["itl_p50_ms"]):
        found.append(f"ITL p50 fell {before['itl_p50_ms']:,.2f} -> {after['itl_p50_ms']:,.2f} ms")
    per_request = [_ratio(row["output_tokens_per_s"], row["concurrency"]) for row in (before, after)]
    if _less(per_request[0], per_request[1]):
        found.append(f"output tok/s per request rose {per_request[0]:,.1f} -> {per_request[1]:,.1f}")
    return [{"graph": graph, "mode": "concurrency_sweep", "where": where, "what": what} for what in found]


def _by_graph(rows: list[dict[str, Any]], key: str) -> dict[str, list[dict[str, Any]]]:
    """Simulated rows per graph, ordered by `key`."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["simulated"] and row[key] is not None:
            out[row["graph"]].append(row)
    return {graph: sorted(found, key=lambda row: row[key]) for graph, found in out.items()}


def _less(value: float | None, than: float | None) -> bool:
    """value is below `than` by more than the tolerance (False when either is absent)."""
    return value is not None and than is not None and value < than * (1 - TOLERANCE)
