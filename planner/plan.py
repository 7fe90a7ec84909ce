"""`benchlab plan`'s result: per graph, AIConfigurator's recommendation for the node groups and
its predictions for the graph as configured, with what it could not model said alongside.

`to_json()` is plan.json; report/predictions.py reads it (and the copy a run's manifest keeps).
"""
from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from planner import aiconfigurator, recommend
from planner.inputs import PlanInputs

SCHEMA_VERSION = 1
GRAPH_EXPERIMENTS = {"agg": ("agg", "agg_as_configured"),
                     "disagg": ("disagg", "disagg_as_configured")}


@dataclass(frozen=True)
class GraphPlan:
    graph: str
    recommendation: recommend.Recommendation | None
    note: str  # why there is no recommendation, or that it misses the SLO
    predictions: list[recommend.Prediction]  # the graph as configured, at the sweep's levels
    predictions_note: str


@dataclass(frozen=True)
class Plan:
    stack: str
    created: str
    inputs: PlanInputs
    tool_version: str
    perf_db: dict[str, str]  # "<system>/<backend>" -> perf-DB version
    graphs: dict[str, GraphPlan]
    failures: dict[str, str]  # experiment -> why it produced nothing

    def config_lines(self, graph: str) -> list[str]:
        rec = self.graphs[graph].recommendation
        if rec is None:
            return []
        return [f"pulumi config set --stack {self.stack} --path serving.{role}.{key} {value}"
                for role, choice in rec.roles.items()
                for key, value in (("tp", choice.tp), ("replicas", choice.replicas))]

    def to_json(self) -> dict[str, Any]:
        inputs = self.inputs
        return {
            "schema": SCHEMA_VERSION, "stack": self.stack, "created": self.created,
            "tool": {"name": "aiconfigurator", "version": self.tool_version, "perf_db": self.perf_db},
            "model": inputs.model,
            "workload": {"isl": inputs.isl, "osl": inputs.osl, "concurrency": list(inputs.concurrency)},
            "slo": asdict(inputs.slo),
            "caveats": list(inputs.caveats),
            "failures": self.failures,
            "graphs": {graph: self._graph_json(graph) for graph in self.graphs},
        }

    def _graph_json(self, graph: str) -> dict[str, Any]:
        plan = self.graphs[graph]
        rec = plan.recommendation
        roles = self.inputs.serving[graph]
        groups = sorted({"agg": "prefill"}.get(role, role) for role in roles)
        return {
            "recommended": None if rec is None else {
                **{key: value for key, value in asdict(rec).items() if key != "roles"},
                "roles": {role: asdict(choice) for role, choice in rec.roles.items()},
                "config_lines": self.config_lines(graph)},
            "note": plan.note,
            "as_configured": {
                "workers": {role: {"tp": tp, "replicas": replicas}
                            for role, (tp, replicas) in roles.items()},
                "nodes": {group: {"instance_type": self.inputs.groups[group].instance_type,
                                  "count": self.inputs.groups[group].nodes} for group in groups},
                "predictions": [asdict(p) for p in plan.predictions],
                "note": plan.predictions_note},
        }


def make_plan(inputs: PlanInputs, stack: str, tools_dir: Path) -> Plan:
    with tempfile.TemporaryDirectory(prefix="benchlab-plan-") as work:
        outcome = aiconfigurator.run([aiconfigurator.search_experiments(inputs),
                                      aiconfigurator.configured_experiments(inputs)],
                                     Path(work), tools_dir)
    if outcome.version is None and outcome.failures:
        raise aiconfigurator.AicError("aiconfigurator produced nothing: "
                                      + "; ".join(f"{k}: {v}" for k, v in outcome.failures.items()))
    graphs = {graph: _graph_plan(graph, inputs, outcome) for graph in GRAPH_EXPERIMENTS}
    return Plan(stack, datetime.now(timezone.utc).isoformat(timespec="seconds"), inputs,
                outcome.version or "unknown", _perf_db(outcome), graphs, dict(outcome.failures))


def _graph_plan(graph: str, inputs: PlanInputs, outcome: aiconfigurator.Outcome) -> GraphPlan:
    search, configured = GRAPH_EXPERIMENTS[graph]
    prefill, decode = inputs.groups["prefill"], inputs.groups["decode"]
    rec, note = None, ""
    if search in outcome.failures:
        note = f"AIConfigurator failed: {outcome.failures[search]}"
    else:
        # its best rows first (its ranking), then its Pareto front: more to fit the node groups
        rows = outcome.best[search] + outcome.pareto[search]
        rec = (recommend.recommend_agg(rows, prefill, inputs.slo) if graph == "agg" else
               recommend.recommend_disagg(rows, prefill, decode, inputs.slo))
        if rec is None:
            note = "no configuration AIConfigurator returned fits the node groups"
        elif not rec.meets_slo:
            note = (f"no configuration meets the SLO (TTFT <= {inputs.slo.ttft_ms:g} ms, "
                    f"ITL <= {inputs.slo.itl_ms:g} ms); shown: the one that misses it least of "
                    f"those AIConfigurator returned")
    if configured in outcome.failures:
        return GraphPlan(graph, rec, note, [], f"AIConfigurator failed: {outcome.failures[configured]}")
    roles = inputs.serving[graph]
    if graph == "agg":
        replicas, graph_gpus = roles["agg"][1], prefill.gpus
    else:
        replicas = roles["prefill"][1] // aiconfigurator.disagg_unit(roles["prefill"][1],
                                                                     roles["decode"][1])[0]
        graph_gpus = prefill.gpus + decode.gpus
    curve = outcome.pareto[configured]
    if not curve:
        return GraphPlan(graph, rec, note, [], "AIConfigurator returned no point for it")
    return GraphPlan(graph, rec, note,
                     recommend.predictions(curve, replicas, graph_gpus, inputs.concurrency), "")


def _perf_db(outcome: aiconfigurator.Outcome) -> dict[str, str]:
    found = {}
    for rows in outcome.best.values():
        for row in rows:
            for prefix in ("", "(p)", "(d)"):
                if f"{prefix}system" in row:
                    found[f"{row[prefix + 'system']}/{row[prefix + 'backend']}"] = str(row[prefix + "version"])
    return dict(sorted(found.items()))
