"""Facts about the EC2 instance types the lab knows, and their dated prices, in one place.

Data at the bottom of the layers (no project import): config validation (GPUs per node, EFA
interfaces), the composition (node groups), `benchlab cost` and `benchlab preflight`, and the
report ($/h of a configuration) all read it. The in-cluster Jobs do not.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from facts.lookup import entry

# On-demand Linux list prices, us-east-1, USD per hour. Dated: prices move (AWS cut P4/P5
# on-demand prices in June 2025); `benchlab cost --live` asks the AWS Pricing API instead.
PRICES_AS_OF = "2025-06-15"
PRICE_REGION = "us-east-1"
PRICES_STALE_AFTER_DAYS = 183  # six months: older list prices are called out wherever shown


def stale_prices_warning(today: date) -> str | None:
    """A sentence saying the price table is older than six months, or None while it is not."""
    age = (today - date.fromisoformat(PRICES_AS_OF)).days
    if age <= PRICES_STALE_AFTER_DAYS:
        return None
    return (f"the price table is dated {PRICES_AS_OF}, {age // 30} months ago: on-demand prices "
            "may have moved since (`benchlab cost --live` asks the AWS Pricing API)")


@dataclass(frozen=True)
class InstanceFacts:
    vcpus: int
    memory_gib: int
    gpus: int = 0
    gpu_model: str = ""
    gpu_memory_gib: int = 0
    efa_interfaces: int = 0  # network cards that can carry an EFA interface
    on_demand_usd_per_hour: float = 0.0

INSTANCE_FACTS: dict[str, InstanceFacts] = {
    # GPU: prefill / aggregated workers
    "p4d.24xlarge": InstanceFacts(96, 1152, 8, "A100-SXM4-40GB", 40, 4, 21.96),
    "p4de.24xlarge": InstanceFacts(96, 1152, 8, "A100-SXM4-80GB", 80, 4, 27.45),
    "p5.48xlarge": InstanceFacts(192, 2048, 8, "H100-SXM-80GB", 80, 32, 55.04),
    # GPU: decode workers
    "g6e.12xlarge": InstanceFacts(48, 384, 4, "L40S", 48, 1, 10.49),
    "g6e.24xlarge": InstanceFacts(96, 768, 4, "L40S", 48, 2, 15.07),
    "g6e.48xlarge": InstanceFacts(192, 1536, 8, "L40S", 48, 4, 30.13),
    "g5.12xlarge": InstanceFacts(48, 192, 4, "A10G", 24, 1, 5.67),
    "g5.48xlarge": InstanceFacts(192, 768, 8, "A10G", 24, 1, 16.29),
    # CPU: system node group
    "m5.xlarge": InstanceFacts(4, 16, on_demand_usd_per_hour=0.192),
    "m5.2xlarge": InstanceFacts(8, 32, on_demand_usd_per_hour=0.384),
    "m6i.2xlarge": InstanceFacts(8, 32, on_demand_usd_per_hour=0.384),
    "m7i.2xlarge": InstanceFacts(8, 32, on_demand_usd_per_hour=0.4032),
    "m7i.4xlarge": InstanceFacts(16, 64, on_demand_usd_per_hour=0.8064),
}

# Fixed hourly costs of the stack besides nodes (us-east-1, same date); the EKS control plane's
# price depends on its version's support phase: facts/eks.py.
NAT_GATEWAY_USD_PER_HOUR = 0.045


def facts(instance_type: str) -> InstanceFacts:
    """The facts of one instance type; KeyError names the known ones."""
    return entry(INSTANCE_FACTS, instance_type, "instance type")


def workers_per_node(node: InstanceFacts, tp: int, one_efa_each: bool) -> int:
    """How many TP-`tp` workers one node holds: all its GPUs' worth, or, when every worker must
    have an EFA interface of its own, no more than the node has interfaces."""
    per_gpu = node.gpus // tp
    return min(per_gpu, node.efa_interfaces) if one_efa_each else per_gpu


def quota_family(instance_type: str) -> str:
    """The on-demand vCPU quota an instance type counts against: P, G, or Standard."""
    head = instance_type[:1]
    return {"p": "P", "g": "G"}.get(head, "Standard")


def gpu_instance_types() -> list[str]:
    return sorted(t for t, f in INSTANCE_FACTS.items() if f.gpus)
