"""The Findings section's two tables, built from the report's other tables, and the 95 %
intervals the tables show beside their figures for repeated steps."""
from __future__ import annotations

from report.findings import findings, recommendations
from report.inputs import GraphRun
from report.tables import ITL, OUTPUT_TPS, TTFT, Column, Table, relative

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


def with_intervals(table: Table, runs: list[GraphRun], mode: str,
                   figures: dict[str, tuple[str, str]]) -> Table:
    """`table` with a 95 % interval beside each of `figures` (row key -> metric, stat) for
    rows of repeated steps (`<key>_ci_low/_ci_high`, shown as one column); rows are matched to
    their step through the export path in `source`."""
    by_source = {relative(result.export.path, run.directory.parent.parent): result
                 for run in runs for result in run.results.get(mode, [])}
    rows = []
    for row in table.rows:
        result = by_source.get(row.get("source"))
        added = {}
        for key, (metric, stat) in figures.items():
            interval = result.confidence.get(metric, stat) if result and result.confidence else None
            added |= {f"{key}_ci_low": interval.low if interval else None,
                      f"{key}_ci_high": interval.high if interval else None,
                      f"{key}_ci": f"{interval.low:,.2f}-{interval.high:,.2f}" if interval
                      else None}
        rows.append(row | added)
    columns = list(table.columns)
    for key in figures:
        at = next(i for i, column in enumerate(columns) if column.key == key) + 1
        header = next(column.header for column in columns if column.key == key)
        columns[at:at] = [Column(f"{key}_ci", f"{header} 95 % CI"),
                          Column(f"{key}_ci_low", f"{key}_ci_low", in_markdown=False),
                          Column(f"{key}_ci_high", f"{key}_ci_high", in_markdown=False)]
    return Table(table.name, table.title, columns, rows)
