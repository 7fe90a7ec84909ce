"""Facts about the EC2 instance types the lab knows, and their dated prices, in one place.

Data at the bottom of the layers (no project import): config validation (GPUs per node, EFA
interfaces), the composition (node groups), `benchlab cost` and `benchlab preflight`, and the
report ($/h of a configuration) all read it. The in-cluster Jobs do not.
"""
from __future__ import annotations

from dataclasses import dataclass

from facts.lookup import entry

# On-demand Linux list prices, us-east-1, USD per hour. Dated: prices move (AWS cut P4/P5
# on-demand prices in June 2025); `benchlab cost --live` asks the AWS Pricing API instead.
PRICES_AS_OF = "2025-06-15"
PRICE_REGION = "us-east-1"


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

# Fixed hourly costs of the stack besides nodes (us-east-1, same date).
EKS_CONTROL_PLANE_USD_PER_HOUR = 0.10
NAT_GATEWAY_USD_PER_HOUR = 0.045


def facts(instance_type: str) -> InstanceFacts:
    """The facts of one instance type; KeyError names the known ones."""
    return entry(INSTANCE_FACTS, instance_type, "instance type")


def quota_family(instance_type: str) -> str:
    """The on-demand vCPU quota an instance type counts against: P, G, or Standard."""
    head = instance_type[:1]
    return {"p": "P", "g": "G"}.get(head, "Standard")


def gpu_instance_types() -> list[str]:
    return sorted(t for t, f in INSTANCE_FACTS.items() if f.gpus)
