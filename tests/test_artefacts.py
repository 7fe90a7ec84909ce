"""Simulated figures no GPU could produce are listed as simulator artefacts, measured ones never.
The numbers are Report 5's local lab's (issue 15): agg ITL 34 ms at c=16 and 2.4 ms at c=32,
output throughput x19 for twice the load; a 0 % shared prefix giving 5x the throughput of 25 %."""
from __future__ import annotations

from report.artefacts import artefact_table
from report.tables import Table


def sweep(simulated: bool, *levels: tuple[int, float, float]) -> Table:
    return Table("concurrency_sweep", "", [], [
        {"graph": "agg", "simulated": simulated, "concurrency": c, "itl_p50_ms": itl,
         "output_tokens_per_s": tps} for c, itl, tps in levels])


def prefix(simulated: bool, *ratios: tuple[int, float]) -> Table:
    return Table("prefix_cache", "", [], [
        {"graph": "agg", "simulated": simulated, "hit_ratio_pct": hit, "output_tokens_per_s": tps}
        for hit, tps in ratios])


def test_the_regime_flip_of_report_5_is_an_artefact():
    rows = artefact_table(sweep(True, (8, 30.0, 250.0), (16, 34.0, 400.0), (32, 2.4, 7600.0)),
                          prefix(True, (0, 5000.0), (25, 1000.0), (100, 1000.0))).rows
    assert [(r["mode"], r["where"]) for r in rows] == [
        ("concurrency_sweep", "concurrency 16 -> 32"), ("concurrency_sweep", "concurrency 16 -> 32"),
        ("prefix_cache", "hit 0 % -> 25 %")]
    assert rows[0]["what"] == "ITL p50 fell 34.00 -> 2.40 ms"
    assert rows[1]["what"] == "output tok/s per request rose 25.0 -> 237.5"


def test_measured_runs_and_noise_are_not_flagged():
    flip = ((16, 34.0, 400.0), (32, 2.4, 7600.0))
    assert artefact_table(sweep(False, *flip), prefix(False, (0, 5000.0), (25, 1000.0))).rows == []
    noise = artefact_table(sweep(True, (16, 34.0, 400.0), (32, 32.0, 780.0)),
                           prefix(True, (0, 1000.0), (25, 950.0))).rows
    assert noise == []
