"""From AIConfigurator's rows to the lab's terms: TP and replicas per role that fit the node
groups, whether the SLO is met, and predictions at the sweep's concurrency levels.

AIConfigurator's figures are per replica (agg: one worker; disagg: the xPyD unit); its
tokens/s/gpu counts the replica's GPUs. The predictions made here count every GPU of the node
groups the graph occupies, as the report does for measured runs.
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import Any

from planner.inputs import GroupInput, Slo


@dataclass(frozen=True)
class RoleChoice:
    role: str  # agg | prefill | decode
    group: str  # node group it runs on
    tp: int
    dp: int
    ep: int
    replicas: int
    perf_db: str  # AIConfigurator's perf-DB version for its system/backend


@dataclass(frozen=True)
class Recommendation:
    roles: dict[str, RoleChoice]
    tokens_per_s_per_gpu: float  # over the GPUs the recommendation uses
    tokens_per_s_per_user: float
    ttft_ms: float
    tpot_ms: float
    concurrency: int  # requests in flight across all replicas at this operating point
    gpus_used: int
    meets_slo: bool


@dataclass(frozen=True)
class Prediction:
    concurrency: int
    output_tokens_per_s: float
    tokens_per_s_per_gpu: float
    tokens_per_s_per_user: float
    ttft_ms: float
    tpot_ms: float
    basis: str  # exact | interpolated | extrapolated (outside the batch sizes it modelled)


def meets(row: dict[str, Any], slo: Slo) -> bool:
    return row["ttft"] <= slo.ttft_ms and row["tpot"] <= slo.itl_ms


def recommend_agg(rows: list[dict[str, Any]], group: GroupInput, slo: Slo) -> Recommendation | None:
    """AIConfigurator's best agg row meeting the SLO (its ranking: tokens/s/gpu), else its closest."""
    for row in _meeting_first(rows, slo):
        gpus_per_worker = int(row["tp"] * row["pp"] * row["dp"])
        replicas = group.gpus // gpus_per_worker
        if replicas:
            return Recommendation(
                {"agg": RoleChoice("agg", group.group, int(row["tp"]), int(row["dp"]),
                                   int(row["moe_ep"]), replicas, str(row["version"]))},
                row["tokens/s/gpu"], row["tokens/s/user"], row["ttft"], row["tpot"],
                int(row["concurrency"]) * replicas, replicas * gpus_per_worker, meets(row, slo))
    return None


def recommend_disagg(rows: list[dict[str, Any]], prefill: GroupInput, decode: GroupInput,
                     slo: Slo) -> Recommendation | None:
    """The best disagg row meeting the SLO whose unit fits both node groups, repeated as often
    as both allow; else the closest that fits."""
    for row in _meeting_first(rows, slo):
        p_gpus = int(row["(p)tp"] * row["(p)pp"] * row["(p)dp"])
        d_gpus = int(row["(d)tp"] * row["(d)pp"] * row["(d)dp"])
        p_workers, d_workers = int(row["(p)workers"]), int(row["(d)workers"])
        units = min(prefill.gpus // (p_workers * p_gpus), decode.gpus // (d_workers * d_gpus))
        if not units:
            continue
        roles = {
            "prefill": RoleChoice("prefill", "prefill", int(row["(p)tp"]), int(row["(p)dp"]),
                                  int(row["(p)moe_ep"]), units * p_workers, str(row["(p)version"])),
            "decode": RoleChoice("decode", "decode", int(row["(d)tp"]), int(row["(d)dp"]),
                                 int(row["(d)moe_ep"]), units * d_workers, str(row["(d)version"]))}
        return Recommendation(roles, row["tokens/s/gpu"], row["tokens/s/user"], row["ttft"],
                              row["tpot"], int(row["concurrency"]) * units,
                              units * (p_workers * p_gpus + d_workers * d_gpus), meets(row, slo))
    return None


def _meeting_first(rows: list[dict[str, Any]], slo: Slo) -> list[dict[str, Any]]:
    """Rows meeting the SLO in AIConfigurator's ranking (the sort is stable), then the others by
    how far they miss it. It returns rows that miss when none meets: checked, not assumed."""
    def miss(row: dict[str, Any]) -> float:
        return 0.0 if meets(row, slo) else max(row["ttft"] / slo.ttft_ms, row["tpot"] / slo.itl_ms)
    return sorted(rows, key=miss)


def predictions(pareto: list[dict[str, Any]], replicas: int, graph_gpus: int,
                levels: tuple[int, ...]) -> list[Prediction]:
    """The configured graph at each concurrency level, from its per-replica batch curve: the
    router spreads c requests over `replicas`, so min(c, replicas) replicas each hold c/active."""
    curve = _curve(pareto)
    out = []
    for level in levels:
        active = min(level, replicas)
        point, basis = _at(curve, level / active)
        output = active * point["tokens/s"]
        out.append(Prediction(level, output, output / graph_gpus, point["tokens/s/user"],
                              point["ttft"], point["tpot"], basis))
    return out


def _curve(pareto: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One point per per-replica concurrency: its highest-throughput row (AIConfigurator lists a
    batch size once per context-token budget it tried)."""
    best: dict[float, dict[str, Any]] = {}
    for row in pareto:
        if row["concurrency"] not in best or row["tokens/s"] > best[row["concurrency"]]["tokens/s"]:
            best[row["concurrency"]] = row
    return [best[key] for key in sorted(best)]


METRICS = ("tokens/s", "tokens/s/user", "ttft", "tpot")


def _at(curve: list[dict[str, Any]], per_replica: float) -> tuple[dict[str, float], str]:
    xs = [row["concurrency"] for row in curve]
    index = bisect_left(xs, per_replica)
    if index < len(xs) and xs[index] == per_replica:
        return {m: curve[index][m] for m in METRICS}, "exact"
    if index == 0:  # below the smallest batch modelled: latencies held, throughput scaled
        edge = curve[0]
        return ({**{m: edge[m] for m in METRICS},
                 "tokens/s": edge["tokens/s"] * per_replica / edge["concurrency"]}, "extrapolated")
    if index == len(xs):  # beyond the largest: requests would queue; the edge holds
        return {m: curve[-1][m] for m in METRICS}, "extrapolated"
    low, high = curve[index - 1], curve[index]
    share = (per_replica - low["concurrency"]) / (high["concurrency"] - low["concurrency"])
    return {m: low[m] + share * (high[m] - low[m]) for m in METRICS}, "interpolated"
