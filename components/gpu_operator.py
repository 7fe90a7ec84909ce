"""GpuOperator: the NVIDIA GPU Operator (device plugin, GPU feature discovery, DCGM exporter;
the driver and the container toolkit come with the EKS AL2023 NVIDIA AMI).

It needs no GPU node to install: the chart installs the operator (on a system node), and the
operator creates its DaemonSets, which schedule on each GPU node as it joins. So it waits for
the system nodes, and for kube-prometheus-stack, whose ServiceMonitor CRD the DCGM exporter's
ServiceMonitor needs; not for the GPU node groups.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from components.helm import Chart, ChartRelease

CHART = "gpu-operator"
REPO = "https://helm.ngc.nvidia.com/nvidia"


@dataclass(frozen=True)
class GpuOperatorArgs:
    version: str
    namespace: pulumi.Input[str]
    depends_on: list[pulumi.Resource] = field(default_factory=list)


class GpuOperator(ChartRelease):
    def __init__(self, name: str, args: GpuOperatorArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("benchlab:platform:GpuOperator", name, Chart(CHART, REPO, args.version),
                         release_name=CHART, namespace=args.namespace, depends_on=args.depends_on,
                         timeout_minutes=15, opts=opts)
