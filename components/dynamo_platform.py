"""DynamoPlatform: the Dynamo CRDs (NGC chart `dynamo-crds`), then the Dynamo platform (chart
`dynamo-platform`: the operator with its admission webhook, etcd, NATS).

Readiness: `dynamo-platform` is a real Helm release that Pulumi waits for (`skip_await`
off): Helm's hooks create the webhook's certificate, and the release is done only when the
operator's Deployment is ready, so its admission webhook answers before any
DynamoGraphDeployment (which depends on `release`) is applied. The operator creates
PodMonitors, so the caller also makes it wait for kube-prometheus-stack; it needs no GPU
node and waits for none.

CRDs and `pulumi destroy`: `dynamo-crds` is installed with Pulumi's Helm Chart (v4), which
manages each CRD as a Pulumi resource and honours the chart's `helm.sh/resource-policy: keep`
by retaining those CRDs on delete, as `helm uninstall` would. By default destroy therefore
leaves the Dynamo CRDs in the cluster (harmless when the cluster goes too, and what one wants
when the platform is removed from a cluster that keeps serving). With `destroy.removeDynamoCrds`
a post-renderer drops the keep annotation, so the CRDs are ordinary Pulumi resources and
destroy deletes them, last, after the DynamoGraphDeployment and the platform release (their
dependents) are gone, so no custom resource is left behind either. The choice is recorded at
`pulumi up`: set the key, run `pulumi up`, then `pulumi destroy`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.helm import Chart, chart_values, release

REPO = "https://helm.ngc.nvidia.com/nvidia/ai-dynamo"
CRDS_CHART = "dynamo-crds"
PLATFORM_CHART = "dynamo-platform"
# Post-renderer: drop the chart's `helm.sh/resource-policy` annotation (sed: on every host
# that runs Pulumi; Helm runs it with the rendered manifests on stdin).
DROP_RESOURCE_POLICY = ("sed", ("-e", r"/^[[:space:]]*helm\.sh\/resource-policy:/d"))


@dataclass(frozen=True)
class DynamoPlatformArgs:
    version: str
    namespace: str
    watched_namespace: str  # the only namespace the operator reconciles (namespaceRestriction)
    prometheus_url: str  # the operator injects it into the pods it manages
    storage_class: pulumi.Input[str]  # gp3, for etcd and NATS JetStream
    remove_crds_on_destroy: bool
    depends_on: list[pulumi.Resource] = field(default_factory=list)


def platform_values(args: DynamoPlatformArgs) -> dict[str, Any]:
    """The chart's values: the values file plus what config decides."""
    return chart_values(PLATFORM_CHART, {
        "dynamo-operator": {
            # The operator at the platform's version (the chart's default follows its operator
            # subchart's appVersion, which has lagged behind the platform release).
            "controllerManager": {"manager": {"image": {"tag": args.version}}},
            "namespaceRestriction": {"targetNamespace": args.watched_namespace},
            "dynamo": {"metrics": {"prometheusEndpoint": args.prometheus_url}},
        },
        "etcd": {"persistence": {"storageClass": args.storage_class}},
        "nats": {"config": {"jetstream": {"fileStore": {"pvc": {
            "storageClassName": args.storage_class}}}}},
    })


def crds_post_renderer(remove_on_destroy: bool) -> k8s.helm.v4.PostRendererArgs | None:
    if not remove_on_destroy:
        return None
    command, arguments = DROP_RESOURCE_POLICY
    return k8s.helm.v4.PostRendererArgs(command=command, args=list(arguments))


class DynamoPlatform(pulumi.ComponentResource):
    crds: k8s.helm.v4.Chart
    release: k8s.helm.v3.Release  # operator + webhook ready: before any DGD

    def __init__(self, name: str, args: DynamoPlatformArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("benchlab:platform:DynamoPlatform", name, None, opts)
        # Cluster-scoped objects only: no namespace, no node needed.
        self.crds = k8s.helm.v4.Chart(
            f"{name}-dynamo-crds",
            chart=CRDS_CHART,
            version=args.version,
            repository_opts=k8s.helm.v4.RepositoryOptsArgs(repo=REPO),
            post_renderer=crds_post_renderer(args.remove_crds_on_destroy),
            opts=pulumi.ResourceOptions(parent=self))
        self.release = release(
            f"{name}-dynamo-platform", Chart(PLATFORM_CHART, REPO, args.version),
            release_name=PLATFORM_CHART, namespace=args.namespace,
            values=platform_values(args), timeout_minutes=20,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*args.depends_on, self.crds]))
        self.register_outputs({"release": self.release.name, "version": args.version})
