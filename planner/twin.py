"""The local lab's twin of a stack's worker: its KV capacity from the GPU facts, and its timing
tables (prefill latency by ISL, decode step time by batch and context) from AIConfigurator, in
the format `dynamo.mocker --planner-profile-data` reads, cached by what determines them.

The tables cover what the workload reaches: a worker's whole KV capacity on the active-token
axis and contexts up to the longest request; a lookup beyond lands on the edge value, never zero.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from facts.models import ModelFacts, model_facts
from jobs.modes import BenchPlan
from planner import aiconfigurator
from planner.inputs import BACKEND, GroupInput, PlanInputError, Slo, plan_inputs
from stacks.config import StackConfig

GPU_MEMORY_UTILIZATION = 0.9  # vLLM's --gpu-memory-utilization default (docs.vllm.ai engine args)
# Activations, CUDA graphs, NCCL: AIConfigurator's own per-GPU allowance
# (aiconfigurator_core/systems/*.yaml misc.other_mem = 3758096384 bytes).
RUNTIME_RESERVE_GIB_PER_GPU = 3.5
MOCKER_BLOCK_SIZE = 64  # dynamo.mocker --block-size default (dynamo/mocker/README.md)
POINTS_FILE = "points.json"
TABLE_FILE = "perf_data.npz"  # what --planner-profile-data takes
KV_POINTS = 16  # the active-token axis, geometric from one shortest context to the capacity


@dataclass(frozen=True)
class KvCapacity:
    tokens: int
    blocks: int  # --num-gpu-blocks-override
    block_size: int
    arithmetic: str  # the computation, for the manifest

    def to_json(self) -> dict:
        return asdict(self)


def kv_capacity(gpu_memory_gib: float, tp: int, model: ModelFacts,
                block_size: int = MOCKER_BLOCK_SIZE) -> KvCapacity:
    """(GPU memory x TP x utilization - weights - runtime reserve x TP) / KV bytes per token."""
    free_gib = (gpu_memory_gib * tp * GPU_MEMORY_UTILIZATION - model.weights_gib
                - RUNTIME_RESERVE_GIB_PER_GPU * tp)
    tokens = max(0, int(free_gib * 2**30 // model.kv_bytes_per_token))
    return KvCapacity(tokens, tokens // block_size, block_size,
                      f"({gpu_memory_gib:g} GiB x TP{tp} x {GPU_MEMORY_UTILIZATION} - "
                      f"{model.weights_gib:.1f} GiB weights - {RUNTIME_RESERVE_GIB_PER_GPU} GiB x TP{tp} "
                      f"reserve) / {model.kv_bytes_per_token} B per token = {tokens} tokens "
                      f"= {tokens // block_size} blocks of {block_size}")


def isl_grid(longest_isl: int) -> list[int]:
    """Powers of two from 16 to the first at or above the longest ISL the workload sends."""
    grid = [16]
    while grid[-1] < longest_isl:
        grid.append(grid[-1] * 2)
    return grid


def decode_grid(longest_context: int, max_kv_tokens: int, max_num_seqs: int) -> list[tuple[int, int]]:
    """(batch, context) points: contexts x4 from 256 to the longest request, batches x4 from 1
    while they fit the KV capacity and the worker's batch limit."""
    contexts = [256]
    while contexts[-1] < longest_context:
        contexts.append(contexts[-1] * 4)
    points = []
    for context in contexts:
        batch = 1
        while batch <= max_num_seqs and batch * context <= max_kv_tokens:
            points.append((batch, context))
            batch *= 4
    return points


def timing_tables(group: GroupInput, tp: int, max_num_seqs: int, model_id: str, capacity: KvCapacity,
                  longest_isl: int, longest_context: int, cache_dir: Path, tools_dir: Path) -> Path:
    """The mocker's timing table for one worker (system, TP, model, quant, capacity), made once."""
    worker = {"model_path": model_id, "system_name": group.system.name, "backend_name": BACKEND,
              "tp_size": tp, "moe_tp_size": tp}
    if group.quant_override:
        worker.update({f"{kind}_quant_mode": group.quant_override for kind in aiconfigurator.QUANT_KEYS})
        worker["comm_quant_mode"] = "half"
    spec = {"worker": worker, "isl": isl_grid(longest_isl),
            "decode": decode_grid(longest_context, capacity.tokens, max_num_seqs),
            "max_kv_tokens": capacity.tokens,
            "kv_points": KV_POINTS,
            "tool": " ".join(aiconfigurator.TOOL.requirements())}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    out = cache_dir / f"{group.system.name}-tp{tp}-{key}"
    if not (out / POINTS_FILE).is_file():
        points = aiconfigurator.estimate_tables({**spec, "out": str(out)}, tools_dir)
        (out / POINTS_FILE).write_text(json.dumps({**spec, "points": points}, indent=1) + "\n")
    return out / TABLE_FILE



@dataclass(frozen=True)
class LabTwin:
    worker_args: dict[str, dict[str, tuple[str, ...]]]  # graph -> mocker role -> flags
    records: dict[str, dict]  # graph -> what it simulates, for the manifest


def lab_twin(cfg: StackConfig, bench: BenchPlan, graphs: tuple[str, ...], cache_dir: Path,
             tools_dir: Path) -> LabTwin:
    """Each graph's workers as the stack configures them: the node group's system and TP, the
    replicas as one mocker process's workers (--num-workers), its batch limits, its KV blocks
    and timing table."""
    inputs = plan_inputs(cfg, Slo(0, 0, "unused: the twin has no SLO"))  # PlanInputError: no data
    model = model_facts(cfg.model.id)
    longest = longest_context(bench)
    roles = {"agg": (("worker", "prefill", cfg.serving.agg),),
             "disagg": (("prefill", "prefill", cfg.serving.prefill),
                        ("decode", "decode", cfg.serving.decode))}
    worker_args, records = {}, {}
    for graph in graphs:
        worker_args[graph], described = {}, {}
        for role, group_name, workers in roles[graph]:
            group = inputs.groups[group_name]
            capacity = kv_capacity(group.gpu_memory_gib, workers.tp, model)
            if not capacity.blocks:
                raise PlanInputError([f"benchlab:serving: {cfg.model.id} does not fit a TP{workers.tp} "
                                      f"worker on {group.instance_type} ({capacity.arithmetic})"])
            table = timing_tables(group, workers.tp, workers.max_num_seqs, cfg.model.id, capacity,
                                  longest, longest, cache_dir, tools_dir)
            points = json.loads((table.parent / POINTS_FILE).read_text())["points"]
            worker_args[graph][role] = ("--planner-profile-data", str(table),
                                        "--num-gpu-blocks-override", str(capacity.blocks),
                                        "--block-size", str(capacity.block_size),
                                        "--num-workers", str(workers.replicas),
                                        # the cloud worker's own limits (serving_spec passes them to vLLM)
                                        "--max-num-seqs", str(workers.max_num_seqs),
                                        "--max-num-batched-tokens", str(workers.max_num_batched_tokens))
            described[role] = {
                "system": group.system.name, "instance_type": group.instance_type, "tp": workers.tp,
                "replicas": workers.replicas, "kv_blocks": capacity.blocks,
                "max_num_seqs": workers.max_num_seqs,
                "max_num_batched_tokens": workers.max_num_batched_tokens,
                "kv_capacity": capacity.arithmetic, "table": str(table),
                "perf_db": points.get("perf_db")}
        records[graph] = {
            "timing": f"{' '.join(aiconfigurator.TOOL.requirements())} static estimates",
            "roles": described,
            "modelled_instead": [c for c in inputs.caveats
                                 if any(c.startswith(g) for g in {r[1] for r in roles[graph]})],
            "summary": " + ".join(f"{d['replicas']} x {d['system']} TP{d['tp']} ({role})"
                                  for role, d in described.items())}
    return LabTwin(worker_args, records)


def longest_context(bench: BenchPlan) -> int:
    """The longest prompt + output any mode sends (a multi-turn conversation grows by turn)."""
    sweep, seq = bench.concurrency_sweep, bench.sequence_distribution
    prefix, multi = bench.prefix_cache, bench.multi_turn
    return max(sweep.isl + sweep.osl, seq.isl_max + seq.osl_max, prefix.isl + prefix.osl,
               multi.turns * (multi.isl + multi.osl))
