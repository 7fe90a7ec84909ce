"""The Findings section's two tables, built from the report's other tables."""
from __future__ import annotations

from report.findings import findings, recommendations
from report.tables import ITL, OUTPUT_TPS, TTFT, Column, Table

# The figures whose 95 % interval the tables show when steps ran more than once.
SWEEP_INTERVALS = {"ttft_p50_ms": (TTFT, "p50"), "itl_p50_ms": (ITL, "p50"),
                   "output_tokens_per_s": (OUTPUT_TPS, "avg")}
PREFIX_INTERVALS = {"ttft_p50_ms": (TTFT, "p50")}
FINDINGS_NOTE = ("Each answer rests on this run's tables below; a difference between agg and "
                 "disagg counts only when it exceeds both 95 % confidence intervals "
                 "(`bench.repeats` > 1), otherwise its significance is unknown. "
                 "Verdicts: gain / loss (for disagg), within noise, linear / not linear, "
                 "not answerable.\n")


def findings_tables(tables: dict[str, Table], simulated: bool) -> dict[str, Table]:
    rows = {name: tables[name].rows for name in tables}
    answered = findings(rows["concurrency_sweep"], rows["prefix_cache"],
                        rows["sequence_distribution"], rows["server_evidence"], simulated)
    recommended = recommendations(rows["concurrency_sweep"], rows["goodput"],
                                  rows["prefix_cache"], rows["sequence_distribution"],
                                  rows["multi_turn"], simulated)
    return {
        "findings": Table("findings", "Report 5's four validation points", [
            Column("question", "question"), Column("verdict", "verdict"),
            Column("evidence", "from this run")],
            [{"question": f.question, "verdict": f.verdict, "evidence": f.evidence}
             for f in answered]),
        "recommendations": Table("recommendations", "Recommendation: scenario -> mode", [
            Column("scenario", "scenario"), Column("recommended", "recommended mode"),
            Column("figure", "the figure behind it")], recommended),
    }
