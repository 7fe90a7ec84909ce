"""Monitoring: kube-prometheus-stack (Prometheus, Grafana), the Prometheus Pushgateway and the
lab's dashboards.

Order: kube-prometheus-stack installs the monitoring.coreos.com CRDs, so it comes before
everything that creates a ServiceMonitor or PodMonitor (the Pushgateway here; the GPU
Operator and the Dynamo platform in the platform layer). It runs on the CPU nodes and its
volumes are gp3: the caller makes it wait for the system nodes and the gp3 StorageClass,
never for a GPU node group, so it installs while the GPU nodes boot.

Dashboards: the lab's own (components/dashboards.py, and the benchmark Pareto in
helm_values/dashboards/benchmark-pareto.json), each a labelled ConfigMap that Grafana's sidecar
loads from this namespace only. Nothing is downloaded when Grafana starts, and the ConfigMaps
are not part of the Helm release: a dashboard can neither block nor roll back the release.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random

from components.dashboards import DASHBOARDS, render
from components.helm import HELM_VALUES_DIR, Chart, chart_values, release

REPO = "https://prometheus-community.github.io/helm-charts"
KUBE_PROMETHEUS_STACK = "kube-prometheus-stack"
PUSHGATEWAY = "prometheus-pushgateway"
PARETO_DASHBOARD = HELM_VALUES_DIR / "dashboards" / "benchmark-pareto.json"

# Grafana reads its admin login from this Secret (the chart's default keys), so the password
# never appears in the release's values.
GRAFANA_ADMIN_SECRET = "grafana-admin"
GRAFANA_ADMIN_USER = "admin"


@dataclass(frozen=True)
class MonitoringArgs:
    namespace: str
    kube_prometheus_stack_version: str
    pushgateway_version: str
    retention: str
    prometheus_storage_gib: int
    grafana_storage_gib: int
    storage_class: pulumi.Input[str]  # gp3
    admin_password: pulumi.Input[str] | None  # a Pulumi secret; None: generate one
    depends_on: list[pulumi.Resource] = field(default_factory=list)


def prometheus_url(namespace: str) -> str:
    fullname = chart_values(KUBE_PROMETHEUS_STACK)["fullnameOverride"]
    return f"http://{fullname}-prometheus.{namespace}.svc.cluster.local:9090"


def pushgateway_url(namespace: str) -> str:
    fullname = chart_values(PUSHGATEWAY)["fullnameOverride"]
    port = 9091  # the chart's service.port
    return f"http://{fullname}.{namespace}.svc.cluster.local:{port}"


def kube_prometheus_stack_values(args: MonitoringArgs) -> dict[str, Any]:
    """The chart's values: the values file plus what config decides."""
    volume = {"storageClassName": args.storage_class,
              "resources": {"requests": {"storage": f"{args.prometheus_storage_gib}Gi"}}}
    return chart_values(KUBE_PROMETHEUS_STACK, {
        "prometheus": {"prometheusSpec": {
            "retention": args.retention,
            "storageSpec": {"volumeClaimTemplate": {"spec": volume}}}},
        "grafana": {
            "persistence": {"storageClassName": args.storage_class,
                            "size": f"{args.grafana_storage_gib}Gi"},
            "admin": {"existingSecret": GRAFANA_ADMIN_SECRET},
            # Only this namespace's ConfigMaps: with grafana.rbac.namespaced (values file) the
            # sidecar holds a Role here, not a ClusterRole reading every Secret of the cluster.
            # grafana chart: templates/_pod.tpl (searchNamespace -> the sidecar's NAMESPACE)
            "sidecar": {"dashboards": {"searchNamespace": args.namespace}},
        },
    })


def pushgateway_values(args: MonitoringArgs) -> dict[str, Any]:
    return chart_values(PUSHGATEWAY, {"serviceMonitor": {"namespace": args.namespace}})


def dashboard_label() -> dict[str, str]:
    """The label Grafana's sidecar loads dashboard ConfigMaps by."""
    sidecar = chart_values(KUBE_PROMETHEUS_STACK)["grafana"]["sidecar"]["dashboards"]
    return {sidecar["label"]: sidecar["labelValue"]}


def dashboard_files() -> dict[str, str]:
    """Dashboard key -> Grafana JSON: the builder's dashboards and the Pareto one."""
    files = {d.key: json.dumps(render(d), indent=1) for d in DASHBOARDS}
    return {**files, "pareto": PARETO_DASHBOARD.read_text(encoding="utf-8")}


class Monitoring(pulumi.ComponentResource):
    stack: k8s.helm.v3.Release  # kube-prometheus-stack: before any ServiceMonitor/PodMonitor
    pushgateway: k8s.helm.v3.Release
    prometheus_url: str
    pushgateway_url: str
    grafana_service: str  # <namespace>/<service>, for `kubectl port-forward`
    admin_password: pulumi.Output[str]  # secret

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("benchlab:platform:Monitoring", name, None, opts)
        self.prometheus_url = prometheus_url(args.namespace)
        self.pushgateway_url = pushgateway_url(args.namespace)
        self.grafana_service = f"{args.namespace}/{KUBE_PROMETHEUS_STACK}-grafana"
        self.admin_password = self._admin_password(name, args.admin_password)

        admin_secret = k8s.core.v1.Secret(
            f"{name}-grafana-admin",
            metadata={"name": GRAFANA_ADMIN_SECRET, "namespace": args.namespace},
            type="Opaque",
            string_data={"admin-user": GRAFANA_ADMIN_USER, "admin-password": self.admin_password},
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on))
        self.stack = release(
            f"{name}-kube-prometheus-stack",
            Chart(KUBE_PROMETHEUS_STACK, REPO, args.kube_prometheus_stack_version),
            release_name=KUBE_PROMETHEUS_STACK, namespace=args.namespace,
            values=kube_prometheus_stack_values(args), timeout_minutes=15,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*args.depends_on, admin_secret]))
        # Its ServiceMonitor needs the CRD kube-prometheus-stack installs.
        self.pushgateway = release(
            f"{name}-pushgateway", Chart(PUSHGATEWAY, REPO, args.pushgateway_version),
            release_name="pushgateway", namespace=args.namespace,
            values=pushgateway_values(args), timeout_minutes=10,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.stack]))
        for key, text in dashboard_files().items():
            k8s.core.v1.ConfigMap(
                f"{name}-{key}-dashboard",
                metadata={"name": f"benchlab-{key}-dashboard", "namespace": args.namespace,
                          "labels": dashboard_label()},
                data={f"benchlab-{key}.json": text},
                opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on))
        self.register_outputs({"prometheusUrl": self.prometheus_url,
                               "pushgatewayUrl": self.pushgateway_url,
                               "grafanaService": self.grafana_service})

    def _admin_password(self, name: str, configured: pulumi.Input[str] | None) -> pulumi.Output[str]:
        if configured is not None:
            return pulumi.Output.secret(configured)
        # Generated once and kept in the stack's state (encrypted), so it is stable across
        # `pulumi up`s; `result` is a secret output.
        generated = random.RandomPassword(f"{name}-grafana-admin-password", length=24, special=False,
                                          opts=pulumi.ResourceOptions(parent=self))
        return generated.result
