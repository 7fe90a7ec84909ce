"""What a node of each instance type offers to pods: the instance store it brings, how many
pods it takes, and its allocatable CPU, memory and ephemeral storage after what the EKS AL2023
AMI (nodeadm) reserves for the kubelet, the container runtime and eviction.

Data at the bottom of the layers, beside facts/instances.py (same instance types; a test keeps
the two tables' keys equal).
"""
from __future__ import annotations

from dataclasses import dataclass

GB_PER_GIB = 1024 ** 3 / 1000 ** 3  # instance store sizes are sold in decimal GB


@dataclass(frozen=True)
class NodeLimits:
    enis: int  # network interfaces (defaultMaxENIs)
    ipv4_per_eni: int
    instance_store_gb: int = 0  # total NVMe instance store, decimal GB; 0: EBS only

    @property
    def max_pods(self) -> int:
        """nodeadm's default max pods: ENIs x (addresses per ENI - 1) + 2."""
        return self.enis * (self.ipv4_per_eni - 1) + 2


# ENIs and addresses: awslabs/amazon-eks-ami@81fec2e:nodeadm/internal/kubelet/instance-info.jsonl
# Instance store: https://docs.aws.amazon.com/ec2/latest/instancetypes/ac.html#ac_instance-store
NODE_LIMITS: dict[str, NodeLimits] = {
    "p4d.24xlarge": NodeLimits(15, 50, 8 * 1000),
    "p4de.24xlarge": NodeLimits(15, 50, 8 * 1000),
    "p5.48xlarge": NodeLimits(2, 50, 8 * 3840),
    "g6e.12xlarge": NodeLimits(10, 30, 2 * 1900),
    "g6e.24xlarge": NodeLimits(10, 50, 2 * 1900),
    "g6e.48xlarge": NodeLimits(10, 50, 4 * 1900),
    "g5.12xlarge": NodeLimits(15, 50, 1 * 3800),
    "g5.48xlarge": NodeLimits(7, 50, 2 * 3800),
    "m5.xlarge": NodeLimits(4, 15),
    "m5.2xlarge": NodeLimits(4, 15),
    "m6i.2xlarge": NodeLimits(4, 15),
    "m7i.2xlarge": NodeLimits(4, 15),
    "m7i.4xlarge": NodeLimits(8, 30),
}

# nodeadm's kubelet defaults (awslabs/amazon-eks-ami@81fec2e:nodeadm/internal/kubelet/config.go):
# kubeReserved cpu by ranges of the node's millicores, memory 11 MiB per pod + 255 MiB,
# ephemeral-storage 1Gi; evictionHard memory.available 100Mi, nodefs.available 10%.
CPU_RESERVE_RANGES = ((0, 1000, 600), (1000, 2000, 100), (2000, 4000, 50), (4000, None, 25))
KUBE_RESERVED_EPHEMERAL_GIB = 1.0
EVICTION_MEMORY_MIB = 100
EVICTION_NODEFS_FRACTION = 0.10
# The memory the OS sees is less than EC2 advertises; Karpenter's default estimate of the gap
# (aws/karpenter-provider-aws charts/karpenter: settings.vmMemoryOverheadPercent 0.075).
VM_MEMORY_OVERHEAD = 0.075


@dataclass(frozen=True)
class Allocatable:
    cpu_millis: int
    memory_mib: int
    ephemeral_gib: float  # on the disk that holds kubelet and containerd


def kube_reserved_cpu_millis(vcpus: int) -> int:
    total = vcpus * 1000
    reserved = 0
    for start, end, per_10000 in CPU_RESERVE_RANGES:
        if total > start:
            reserved += (min(total, end or total) - start) * per_10000 // 10000
    return reserved


def ephemeral_disk_gib(instance_type: str, root_disk_gib: int) -> float:
    """The disk kubelet and containerd use: the instance store in RAID0 when the type has one
    (see components/node_groups.py), else the root volume."""
    store_gb = NODE_LIMITS[instance_type].instance_store_gb
    return store_gb / GB_PER_GIB if store_gb else float(root_disk_gib)


def allocatable(instance_type: str, vcpus: int, memory_gib: int, root_disk_gib: int) -> Allocatable:
    limits = NODE_LIMITS[instance_type]
    memory_mib = int(memory_gib * 1024 * (1 - VM_MEMORY_OVERHEAD))
    disk = ephemeral_disk_gib(instance_type, root_disk_gib)
    return Allocatable(
        cpu_millis=vcpus * 1000 - kube_reserved_cpu_millis(vcpus),
        memory_mib=memory_mib - (11 * limits.max_pods + 255) - EVICTION_MEMORY_MIB,
        ephemeral_gib=disk * (1 - EVICTION_NODEFS_FRACTION) - KUBE_RESERVED_EPHEMERAL_GIB)
