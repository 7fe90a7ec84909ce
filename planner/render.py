"""plan.md (also what `benchlab plan` prints): per graph the recommendation, its predicted
figures and the config lines that apply it, then the predictions for the graph as configured."""
from __future__ import annotations

from planner.plan import Plan

ROLE_GROUP = {"agg": "prefill", "prefill": "prefill", "decode": "decode"}


def markdown(plan: Plan) -> str:
    inputs = plan.inputs
    perf_db = ", ".join(f"{key} {version}" for key, version in plan.perf_db.items()) or "unknown"
    out = [f"# Plan for stack `{plan.stack}`\n",
           f"AIConfigurator {plan.tool_version} (perf DB: {perf_db}), backend vllm, "
           f"model `{inputs.model}`, ISL {inputs.isl} / OSL {inputs.osl} (the concurrency sweep's), "
           f"SLO TTFT <= {inputs.slo.ttft_ms:g} ms and ITL (TPOT) <= {inputs.slo.itl_ms:g} ms "
           f"({inputs.slo.source}). Created {plan.created}. These are predictions, not measurements.\n"]
    if inputs.caveats:
        out += ["## What was modelled instead\n"] + [f"- {caveat}" for caveat in inputs.caveats] + [""]
    for graph, graph_plan in plan.graphs.items():
        out += [f"## {graph}: {_groups(plan, graph)}\n"]
        rec = graph_plan.recommendation
        if graph_plan.note:
            out.append(f"**{graph_plan.note}**\n")
        if rec is not None:
            out += ["| role | node group | system | TP | DP | EP | replicas |", "|---|---|---|---|---|---|---|"]
            out += [f"| {role} | {choice.group} | {inputs.groups[choice.group].system.name} | "
                    f"{choice.tp} | {choice.dp} | {choice.ep} | {choice.replicas} |"
                    for role, choice in rec.roles.items()]
            out += ["", f"Predicted at {rec.concurrency} requests in flight on {rec.gpus_used} GPUs: "
                    f"**{rec.tokens_per_s_per_gpu:,.0f} output tok/s/GPU**, "
                    f"{rec.tokens_per_s_per_user:,.1f} tok/s/user, TTFT {rec.ttft_ms:,.0f} ms, "
                    f"TPOT {rec.tpot_ms:,.1f} ms; SLO {'met' if rec.meets_slo else 'NOT met'}.\n",
                    "Apply:\n", "```", *plan.config_lines(graph), "```\n"]
        out += _predictions(plan, graph)
    if plan.failures:
        out += ["## Failed experiments\n"] + [f"- `{name}`: {why}" for name, why in plan.failures.items()] + [""]
    return "\n".join(out)


def _groups(plan: Plan, graph: str) -> str:
    groups = ["prefill"] if graph == "agg" else ["prefill", "decode"]
    return " + ".join(f"{g.nodes} x {g.instance_type} ({g.gpus} GPUs, {g.system.name})"
                      for g in (plan.inputs.groups[name] for name in groups))


def _predictions(plan: Plan, graph: str) -> list[str]:
    graph_plan = plan.graphs[graph]
    workers = ", ".join(f"{role} TP{tp} x {replicas}"
                        for role, (tp, replicas) in plan.inputs.serving[graph].items())
    out = [f"### As configured ({workers}): predicted at the sweep's concurrency levels\n"]
    if not graph_plan.predictions:
        return out + [f"No predictions: {graph_plan.predictions_note}\n"]
    out += ["| concurrency | output tok/s | tok/s/GPU | tok/s/user | TTFT (ms) | TPOT (ms) | basis |",
            "|---|---|---|---|---|---|---|"]
    out += [f"| {p.concurrency} | {p.output_tokens_per_s:,.0f} | {p.tokens_per_s_per_gpu:,.1f} | "
            f"{p.tokens_per_s_per_user:,.1f} | {p.ttft_ms:,.0f} | {p.tpot_ms:,.1f} | {p.basis} |"
            for p in graph_plan.predictions]
    return out + ["", "tok/s/GPU counts every GPU of the node groups the graph occupies, as the "
                      "report does; `extrapolated`: outside the batch sizes AIConfigurator modelled.\n"]
