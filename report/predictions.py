"""Prediction vs measurement: a `benchlab plan` (plan.json) against the runs it predicted.

A run is predicted by a plan when the plan's graph "as configured" has the run's workers (TP and
replicas per role) on the run's node groups (instance type and count). A local run keeps the
matching prediction in its manifest (`prediction`); a cloud run is matched to a plan given to
`benchlab report --plan`. Errors are (measured - predicted) / predicted at the same concurrency.
"""
from __future__ import annotations

from typing import Any

from jobs.run_manifest import RunManifest
from report.inputs import GraphRun
from report.tables import Column, Table, _gain_pct

MANIFEST_KEY = "prediction"


def prediction_for(plan: dict[str, Any], manifest: RunManifest) -> dict[str, Any] | None:
    """The plan's predictions for this run's graph and shape, or None when it has none."""
    configured = (plan.get("graphs", {}).get(manifest.graph) or {}).get("as_configured")
    if not configured or not configured.get("predictions"):
        return None
    workers = {role: {"tp": spec.tp, "replicas": spec.replicas}
               for role, spec in manifest.workers.items()}
    nodes = {group.role: {"instance_type": group.instance_type, "count": group.count}
             for group in manifest.nodes}
    if configured["workers"] != workers or configured["nodes"] != nodes:
        return None
    tool = plan["tool"]
    return {"source": f"{tool['name']} {tool['version']} (perf DB "
                      + ", ".join(f"{k} {v}" for k, v in tool["perf_db"].items()) + ")",
            "stack": plan["stack"], "created": plan["created"], "model": plan["model"],
            "slo": plan["slo"], "caveats": plan["caveats"],
            "predictions": configured["predictions"]}


def comparison_table(runs: list[GraphRun], sweep: Table, plan: dict[str, Any] | None) -> Table:
    rows = []
    for run in runs:
        record = run.manifest.extra.get(MANIFEST_KEY) or (plan and prediction_for(plan, run.manifest))
        if not record:
            continue
        predicted = {p["concurrency"]: p for p in record["predictions"]}
        kind = "simulation vs prediction" if run.manifest.simulated else "measurement vs prediction"
        for measured in sweep.rows:
            expected = predicted.get(measured["concurrency"])
            if measured["run_id"] != run.manifest.run_id or measured["graph"] != run.label or not expected:
                continue
            rows.append({
                "graph": run.label, "run_id": run.manifest.run_id, "kind": kind,
                "concurrency": measured["concurrency"],
                "tps_gpu_predicted": expected["tokens_per_s_per_gpu"],
                "tps_gpu_measured": measured["tokens_per_s_per_gpu"],
                "tps_gpu_error_pct": _gain_pct(measured["tokens_per_s_per_gpu"], expected["tokens_per_s_per_gpu"]),
                "ttft_predicted_ms": expected["ttft_ms"], "ttft_p50_ms": measured["ttft_p50_ms"],
                "ttft_error_pct": _gain_pct(measured["ttft_p50_ms"], expected["ttft_ms"]),
                "tpot_predicted_ms": expected["tpot_ms"], "itl_p50_ms": measured["itl_p50_ms"],
                "tpot_error_pct": _gain_pct(measured["itl_p50_ms"], expected["tpot_ms"]),
                "basis": expected["basis"], "source": record["source"]})
    return Table("prediction_vs_measurement", "Prediction vs measurement", [
        Column("graph", "graph"), Column("run_id", "run", in_markdown=False), Column("kind", "kind"),
        Column("concurrency", "concurrency"),
        Column("tps_gpu_predicted", "tok/s/GPU predicted"), Column("tps_gpu_measured", "tok/s/GPU measured"),
        Column("tps_gpu_error_pct", "error (%)"),
        Column("ttft_predicted_ms", "TTFT predicted (ms)"), Column("ttft_p50_ms", "TTFT p50 (ms)"),
        Column("ttft_error_pct", "error (%)"),
        Column("tpot_predicted_ms", "TPOT predicted (ms)"), Column("itl_p50_ms", "ITL p50 (ms)"),
        Column("tpot_error_pct", "error (%)"),
        Column("basis", "prediction basis"), Column("source", "predicted by", in_markdown=False)], rows)


def sources_note(runs: list[GraphRun], plan: dict[str, Any] | None) -> str:
    """Which plan predicted which run (and its caveats), for the report's section."""
    lines = []
    for run in runs:
        record = run.manifest.extra.get(MANIFEST_KEY) or (plan and prediction_for(plan, run.manifest))
        if record:
            lines.append(f"- {run.label}: {record['source']}, `benchlab plan --stack {record['stack']}` "
                         f"of {record['created']}"
                         + "".join(f"; modelled instead: {caveat}" for caveat in record["caveats"]))
    if not lines:
        return ("No run matches a plan: run `./benchlab plan --stack <stack>` before the run "
                "(local runs record it), or pass `--plan plan-out/<stack>/plan.json` here.\n")
    return ("Predicted by AIConfigurator for the graph as configured; measured at the same "
            "concurrency (TTFT and ITL: AIPerf's p50; TPOT is AIConfigurator's inter-token "
            "latency). Simulated runs are compared as a simulation against a prediction, not "
            "as a measurement.\n\n" + "\n".join(lines) + "\n")
