"""What `benchlab plan` asks the performance model, derived from the stack config.

Each GPU node group becomes an AIConfigurator system with a GPU budget and the TP sizes the lab
can deploy there; the model, ISL/OSL (the concurrency sweep's) and the SLO become the workload.
Where the stack cannot be modelled as configured, the substitution is made here and said once
(`caveats`); an instance type the tool has no data for is a PlanInputError naming the key.
"""
from __future__ import annotations

from dataclasses import dataclass

from facts.instances import facts, gpu_instance_types
from facts.models import model_facts
from stacks.config import TENSOR_PARALLEL_SIZES, StackConfig

BACKEND = "vllm"  # the lab serves with Dynamo's vllm-runtime


@dataclass(frozen=True)
class AicSystem:
    name: str
    gpu_memory_gib: float  # what its data assumes (gpu.mem_capacity)
    fp8: bool  # FP8 tensor cores (gpu.fp8_tc_flops defined)


# The lab's GPU models -> AIConfigurator 0.12.0 systems (aiconfigurator_core/systems/<name>.yaml:
# gpu.mem_capacity, gpu.fp8_tc_flops). A10G (g5) has no system there.
SYSTEM_BY_GPU = {
    "A100-SXM4-40GB": AicSystem("a100_sxm", 80, fp8=False),
    "A100-SXM4-80GB": AicSystem("a100_sxm", 80, fp8=False),
    "H100-SXM-80GB": AicSystem("h100_sxm", 80, fp8=True),
    "L40S": AicSystem("l40s", 44.99, fp8=True),  # 46068 MiB
}


class PlanInputError(ValueError):
    """The stack cannot be planned: every problem, each naming its key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("cannot plan this stack:\n  - " + "\n  - ".join(problems))


@dataclass(frozen=True)
class Slo:
    ttft_ms: float
    itl_ms: float
    source: str  # where the targets came from, for the plan's record


@dataclass(frozen=True)
class GroupInput:
    """One GPU node group as the model sees it."""
    group: str  # prefill | decode
    instance_type: str
    nodes: int
    gpus_per_node: int
    system: AicSystem
    gpu_memory_gib: float  # the instance's, from facts/instances.py
    # bfloat16 stands in for FP8 weights on a GPU without FP8 tensor cores (see caveats)
    quant_override: str | None

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def tp_sizes(self) -> tuple[int, ...]:
        """TP sizes the lab can deploy here (stacks/config.py: TP <= GPUs of a node)."""
        return tuple(tp for tp in TENSOR_PARALLEL_SIZES if tp <= self.gpus_per_node)


@dataclass(frozen=True)
class PlanInputs:
    model: str
    isl: int
    osl: int
    concurrency: tuple[int, ...]  # the sweep's levels: where predictions are made
    slo: Slo
    groups: dict[str, GroupInput]  # prefill, decode
    serving: dict[str, dict[str, tuple[int, int]]]  # graph -> role -> (tp, replicas) as configured
    caveats: tuple[str, ...]


def plan_inputs(cfg: StackConfig, slo: Slo) -> PlanInputs:
    problems: list[str] = []
    try:
        weights = model_facts(cfg.model.id).weights
    except KeyError as err:
        problems.append(f"benchlab:model.id: {err.args[0]} (add it to facts/models.py)")
        weights = ""
    groups, caveats = {}, []
    for name in ("prefill", "decode"):
        group = getattr(cfg.node_groups, name)
        instance = facts(group.instance_type)
        system = SYSTEM_BY_GPU.get(instance.gpu_model)
        if system is None:
            supported = sorted(t for t in gpu_instance_types() if facts(t).gpu_model in SYSTEM_BY_GPU)
            problems.append(
                f"benchlab:nodeGroups.{name}.instanceType={group.instance_type!r}: its GPU "
                f"({instance.gpu_model}) has no AIConfigurator data; supported: {', '.join(supported)}")
            continue
        override = None
        if weights == "fp8" and not system.fp8:
            override = "bfloat16"
            caveats.append(
                f"{name} ({group.instance_type}, {instance.gpu_model}): {cfg.model.id} has FP8 "
                f"weights but the GPU has no FP8 tensor cores (vLLM runs them weight-only, "
                f"computing in BF16); modelled as the BF16 variant (every quant mode bfloat16)")
        if abs(instance.gpu_memory_gib - system.gpu_memory_gib) > 0.1 * system.gpu_memory_gib:
            caveats.append(
                f"{name} ({group.instance_type}): AIConfigurator's {system.name} data assumes "
                f"{system.gpu_memory_gib:g} GiB per GPU, this instance has "
                f"{instance.gpu_memory_gib} GiB: KV capacity and the largest batch are "
                f"{'optimistic' if instance.gpu_memory_gib < system.gpu_memory_gib else 'pessimistic'}")
        groups[name] = GroupInput(name, group.instance_type, group.count, instance.gpus, system,
                                  instance.gpu_memory_gib, override)
    if problems:
        raise PlanInputError(problems)
    sweep = cfg.bench.concurrency_sweep
    serving = cfg.serving
    return PlanInputs(
        model=cfg.model.id, isl=sweep.isl, osl=sweep.osl, concurrency=sweep.concurrency, slo=slo,
        groups=groups,
        serving={"agg": {"agg": (serving.agg.tp, serving.agg.replicas)},
                 "disagg": {"prefill": (serving.prefill.tp, serving.prefill.replicas),
                            "decode": (serving.decode.tp, serving.decode.replicas)}},
        caveats=tuple(caveats))
