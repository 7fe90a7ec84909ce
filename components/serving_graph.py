"""ServingGraph: one DynamoGraphDeployment (nvidia.com/v1alpha1), applied as it is given.

The manifest is built by the composition (`stacks/serving_spec.py`): this component only applies
it and is annotated so Pulumi waits for the operator's Ready condition.
"""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

FRONTEND_PORT = 8000  # the operator's Frontend Service port
# The operator's own PodMonitors scrape the frontend and the workers' system port; KVBM serves
# its metrics on a port of its own, declared under this name on the workers that run it.
WORKER_ROLE = {"nvidia.com/dynamo-component-type": "worker"}


def frontend_url(graph: str) -> str:
    """The in-cluster URL of a graph's Frontend Service (the operator names it <graph>-frontend)."""
    return f"http://{graph}-frontend:{FRONTEND_PORT}"


@dataclass(frozen=True)
class ServingGraphArgs:
    manifest: dict  # stacks.serving_spec.graph_manifest(cfg)
    namespace: pulumi.Input[str]
    ready_timeout_minutes: int
    # The model download, the Dynamo platform (its webhook must answer), the GPU Operator, the
    # EFA device plugin and the GPU node groups the graph runs on.
    depends_on: list[pulumi.Resource]
    kvbm_metrics_port: str | None = None  # container port name of KVBM's metrics, if any


class ServingGraph(pulumi.ComponentResource):
    graph: k8s.apiextensions.CustomResource

    def __init__(self, name: str, args: ServingGraphArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("benchlab:workloads:ServingGraph", name, None, opts)
        manifest = args.manifest
        timeout = f"{args.ready_timeout_minutes}m"
        self.graph = k8s.apiextensions.CustomResource(
            f"{name}-dgd",
            api_version=manifest["apiVersion"], kind=manifest["kind"],
            metadata={**manifest["metadata"], "namespace": args.namespace},
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=args.depends_on,
                # agg and disagg want the same GPUs: the old graph must be gone before the new
                # one can be scheduled, else the new one waits for GPUs until it times out.
                delete_before_replace=True,
                custom_timeouts=pulumi.CustomTimeouts(create=timeout, update=timeout)))
        if args.kvbm_metrics_port:
            # A PodMonitor needs kube-prometheus-stack's CRD: the graph waits for the Dynamo
            # platform, which waits for it.
            k8s.apiextensions.CustomResource(
                f"{name}-kvbm-metrics", api_version="monitoring.coreos.com/v1", kind="PodMonitor",
                metadata={"name": "kvbm-metrics", "namespace": args.namespace},
                spec={"selector": {"matchLabels": WORKER_ROLE},
                      "podMetricsEndpoints": [{"port": args.kvbm_metrics_port, "path": "/metrics"}]},
                opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on))
        self.register_outputs({"name": manifest["metadata"]["name"],
                               "frontendUrl": frontend_url(manifest["metadata"]["name"])})
