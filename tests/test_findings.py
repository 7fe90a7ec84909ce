"""The findings logic on crafted tables: each verdict, and why a question cannot be answered."""
from __future__ import annotations

import pytest

from report import findings
from report.findings import GAIN, LINEAR, LOSS, NOISE, NOT_LINEAR, UNANSWERABLE


def sweep_row(graph, concurrency, ttft, ci=None):
    row = {"graph": graph, "concurrency": concurrency, "ttft_p50_ms": ttft}
    if ci:
        row |= {"ttft_p50_ms_ci_low": ci[0], "ttft_p50_ms_ci_high": ci[1]}
    return row


def prefix_row(graph, ratio, measured, reduction, ttft=100.0):
    return {"graph": graph, "hit_ratio_pct": ratio, "measured_hit_pct": measured,
            "ttft_p50_reduction_pct": reduction, "ttft_p50_ms": ttft}


@pytest.mark.parametrize("agg, disagg, verdict, says", [
    (sweep_row("agg", 64, 200.0, (190, 210)), sweep_row("disagg", 64, 120.0, (110, 130)),
     GAIN, "exceeds the 95 % intervals"),
    (sweep_row("agg", 64, 120.0, (110, 130)), sweep_row("disagg", 64, 200.0, (190, 210)),
     LOSS, "exceeds the 95 % intervals"),
    (sweep_row("agg", 64, 200.0, (150, 250)), sweep_row("disagg", 64, 180.0, (140, 220)),
     NOISE, "intervals overlap"),
    (sweep_row("agg", 64, 200.0), sweep_row("disagg", 64, 180.0), GAIN, "significance unknown"),
    (sweep_row("agg", 64, None), sweep_row("disagg", 64, 180.0), UNANSWERABLE, "no ttft_p50_ms"),
])
def test_disagg_ttft_verdicts(agg, disagg, verdict, says):
    (finding, *_) = findings.findings([agg, disagg], [], [], [], simulated=False)
    assert finding.verdict == verdict
    assert says in finding.evidence
    if verdict != UNANSWERABLE:
        assert f"agg {agg['ttft_p50_ms']:,.2f} ms" in finding.evidence  # the numbers behind it


def test_disagg_ttft_needs_a_level_of_at_least_32_on_both_graphs():
    rows = [sweep_row("agg", 8, 50.0), sweep_row("disagg", 8, 40.0), sweep_row("agg", 64, 90.0)]
    (finding, *_) = findings.findings(rows, [], [], [], simulated=False)
    assert finding.verdict == UNANSWERABLE
    assert "no concurrency >= 32 ran on both graphs (levels 8)" in finding.evidence


def test_prefix_linearity_fits_the_measured_hit_rate():
    straight = [prefix_row("agg", r, m, 0.8 * m) for r, m in ((0, 0), (50, 40), (100, 78))]
    curved = [prefix_row("disagg", r, m, red) for r, m, red in
              ((0, 0, 0), (25, 20, 60), (50, 40, 2), (100, 80, 70))]
    (_, _, linear, _) = findings.findings([], straight, [], [], simulated=False)
    assert linear.verdict == LINEAR and "R² 1.00" in linear.evidence
    (_, _, bent, _) = findings.findings([], straight + curved, [], [], simulated=False)
    assert bent.verdict == NOT_LINEAR


def test_prefix_linearity_without_measured_hits_is_not_answerable():
    rows = [prefix_row("agg", r, None, 10.0) for r in (0, 50, 100)]
    (_, _, finding, _) = findings.findings([], rows, [], [], simulated=False)
    assert finding.verdict == UNANSWERABLE
    assert finding.evidence.startswith("not answerable from this run: agg: fewer than 3")


def test_simulated_runs_say_so_in_every_finding_and_leave_offload_and_nixl_open():
    answered = findings.findings([sweep_row("agg (simulated: the mocker's built-in timing)", 64, 9.0),
                                  sweep_row("disagg (simulated: the mocker's built-in timing)", 64, 8.0)], [], [], [],
                                 simulated=True)
    assert all(f.evidence.startswith(findings.SIMULATED) for f in answered)
    assert [f.verdict for f in answered] == [UNANSWERABLE] * 4
    # the mocker's TTFT leaves its simulated prefill out: no TTFT verdict from it
    assert findings.MOCKER_TTFT in answered[0].evidence and findings.MOCKER_TTFT in answered[2].evidence
    assert "mocker has no KVBM" in answered[1].evidence
    assert "moves no KV cache over NIXL" in answered[3].evidence
    rows = findings.recommendations([sweep_row("agg (simulated: the mocker's built-in timing)", 1, 9.0),
                                     sweep_row("disagg (simulated: the mocker's built-in timing)", 1, 8.0)], [], [], [], [],
                                    simulated=True)
    interactive = next(row for row in rows if row["scenario"].startswith("interactive"))
    assert interactive["recommended"] == "—" and findings.MOCKER_TTFT in interactive["figure"]


def test_nixl_on_short_sequences_compares_the_shortest_distribution():
    dists = [{"graph": g, "distribution": d, "isl_avg": isl, "ttft_p50_ms": t}
             for g, d, isl, t in (("agg", "zipf", 300, 20.0), ("disagg", "zipf", 300, 35.0),
                                  ("agg", "uniform", 2000, 80.0), ("disagg", "uniform", 2000, 60.0))]
    (*_, nixl) = findings.findings([], [], dists, [], simulated=False)
    assert nixl.verdict == LOSS and "zipf" in nixl.evidence and nixl.evidence.startswith("yes")


def test_recommendations_name_a_mode_per_scenario_or_why_not():
    sweep = [sweep_row("agg", 1, 10.0), sweep_row("disagg", 1, 12.0)]
    goodput = [{"graph": "agg", "concurrency": 64, "goodput_rps": 5.0},
               {"graph": "disagg", "concurrency": 64, "goodput_rps": 9.0}]
    rows = findings.recommendations(sweep, goodput, [], [], [], simulated=False)
    by_scenario = {row["scenario"]: row for row in rows}
    assert by_scenario["interactive, low concurrency"]["recommended"] == "agg"
    assert by_scenario["high concurrency (>= 32)"]["recommended"] == "—"  # c64 not in the sweep
    assert "not answerable from this run: no concurrency >= 32" in (
        by_scenario["high concurrency (>= 32)"]["figure"])
    sweep += [sweep_row("agg", 64, 90.0), sweep_row("disagg", 64, 70.0)]
    rows = findings.recommendations(sweep, goodput, [], [], [], simulated=False)
    high = next(row for row in rows if row["scenario"].startswith("high"))
    assert high["recommended"] == "disagg" and "goodput at concurrency 64" in high["figure"]


def test_fit_line_recovers_a_known_line():
    slope, intercept, r2 = findings.fit_line([(0, 1), (1, 3), (2, 5)])
    assert (round(slope, 6), round(intercept, 6), round(r2, 6)) == (2, 1, 1)
