"""EfaDevicePlugin: the AWS EFA Kubernetes device plugin, so pods can request
`vpc.amazonaws.com/efa` (NIXL's KV-cache transfer between prefill and decode workers).

It needs no GPU node to install: it is a DaemonSet, scheduled on each EFA-capable node (the
chart's node affinity) as the GPU node groups bring them up, so it waits for the system
nodes only and is in place before the first GPU node joins.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pulumi

from components.helm import Chart, ChartRelease

CHART = "aws-efa-k8s-device-plugin"
REPO = "https://aws.github.io/eks-charts"
NAMESPACE = "kube-system"  # where EKS runs its node-level device plugins


@dataclass(frozen=True)
class EfaDevicePluginArgs:
    version: str
    depends_on: list[pulumi.Resource] = field(default_factory=list)


class EfaDevicePlugin(ChartRelease):
    def __init__(self, name: str, args: EfaDevicePluginArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("benchlab:platform:EfaDevicePlugin", name, Chart(CHART, REPO, args.version),
                         release_name=CHART, namespace=NAMESPACE, depends_on=args.depends_on,
                         timeout_minutes=10, opts=opts)
