"""Where the serving graph's pods run: pod -> node -> instance type and node role; the
endpoints of its workers and of the DCGM exporters on their nodes.

Read from inside a Job through the Kubernetes API with the pod's service account (read-only
RBAC on pods in the namespace and on nodes, list on pods in the GPU Operator's namespace),
with the standard library only: the Job images carry no Kubernetes client. `placement()`,
`worker_endpoints()` and `dcgm_exporter_urls()` are pure, for tests.

No Pulumi import: runs inside the cluster Jobs.
"""
from __future__ import annotations

import urllib.parse
from typing import Any

from jobs import kube_api

INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
# How the Dynamo operator marks a worker pod and names its metrics port: the platform chart's
# PodMonitor selects this label and scrapes port `system`
# (ai-dynamo/dynamo@v0.9.x deploy/helm/charts/platform/components/operator/templates/prometheus.yaml).
COMPONENT_TYPE_LABEL, WORKER = "nvidia.com/dynamo-component-type", "worker"
SYSTEM_PORT_NAME = "system"
# The operator gives every component pod the platform's NATS address in this variable
# (ai-dynamo/dynamo deploy/cloud/operator dynamocomponentdeployment_controller.go, "NATS_SERVER").
NATS_ENV = "NATS_SERVER"
# The GPU Operator's DCGM exporter DaemonSet: its pods' label and listen port
# (NVIDIA/gpu-operator v24.9.0 assets/state-dcgm-exporter/0800_daemonset.yaml; chart values.yaml
# dcgmExporter.env DCGM_EXPORTER_LISTEN ":9400"); it serves Prometheus text on /metrics.
DCGM_EXPORTER_LABEL, DCGM_EXPORTER = "app", "nvidia-dcgm-exporter"
DCGM_EXPORTER_PORT = 9400


def placement(pods: list[dict[str, Any]], nodes: list[dict[str, Any]], graph: str,
              role_label: str) -> list[dict]:
    """One entry per scheduled pod of `graph` (pods the operator names `<graph>-...`); the
    role is the node's `role_label` (the label the lab's node groups carry)."""
    by_name = {node["metadata"]["name"]: node["metadata"].get("labels", {}) for node in nodes}
    entries = []
    for pod in pods:
        name = pod["metadata"]["name"]
        node = pod.get("spec", {}).get("nodeName")
        if not name.startswith(f"{graph}-") or not node:
            continue
        labels = by_name.get(node, {})
        entries.append({"pod": name, "node": node,
                        "instance_type": labels.get(INSTANCE_TYPE_LABEL, "unknown"),
                        "role": labels.get(role_label, "unknown")})
    return sorted(entries, key=lambda entry: entry["pod"])


def worker_endpoints(pods: list[dict[str, Any]], graph: str) -> tuple[list[str], str | None]:
    """The `/metrics` URL of every running worker pod of `graph` (its `system` port) and the
    NATS address the workers were given (None when no worker carries one)."""
    urls, nats = [], None
    for pod in pods:
        meta, spec = pod["metadata"], pod.get("spec", {})
        ip = pod.get("status", {}).get("podIP")
        if (not meta["name"].startswith(f"{graph}-") or not ip
                or meta.get("labels", {}).get(COMPONENT_TYPE_LABEL) != WORKER):
            continue
        for container in spec.get("containers", []):
            urls += [f"http://{ip}:{port['containerPort']}/metrics"
                     for port in container.get("ports", []) if port.get("name") == SYSTEM_PORT_NAME]
            nats = nats or next((env.get("value") for env in container.get("env", [])
                                 if env.get("name") == NATS_ENV and env.get("value")), None)
    return sorted(urls), nats


def dcgm_exporter_urls(exporter_pods: list[dict[str, Any]], graph_pods: list[dict[str, Any]],
                       graph: str) -> list[str]:
    """The `/metrics` URL of every running DCGM exporter pod on a node that runs a worker pod
    of `graph`: the GPUs the graph serves on, and no others."""
    nodes = {pod.get("spec", {}).get("nodeName") for pod in graph_pods
             if pod["metadata"]["name"].startswith(f"{graph}-")
             and pod["metadata"].get("labels", {}).get(COMPONENT_TYPE_LABEL) == WORKER}
    return sorted(f"http://{pod['status']['podIP']}:{DCGM_EXPORTER_PORT}/metrics"
                  for pod in exporter_pods
                  if pod["metadata"].get("labels", {}).get(DCGM_EXPORTER_LABEL) == DCGM_EXPORTER
                  and pod.get("status", {}).get("podIP")
                  and pod.get("spec", {}).get("nodeName") in nodes - {None})


def read_dcgm_exporter_urls(gpu_operator_namespace: str, namespace: str, graph: str) -> list[str]:
    """Listing pods in the GPU Operator's namespace is all the Job may do there (a Role)."""
    selector = urllib.parse.quote(f"{DCGM_EXPORTER_LABEL}={DCGM_EXPORTER}")
    exporters = kube_api.get(f"/api/v1/namespaces/{gpu_operator_namespace}/pods"
                             f"?labelSelector={selector}")["items"]
    graph_pods = kube_api.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
    return dcgm_exporter_urls(exporters, graph_pods, graph)


def read_worker_endpoints(namespace: str, graph: str) -> tuple[list[str], str | None]:
    return worker_endpoints(kube_api.get(f"/api/v1/namespaces/{namespace}/pods")["items"], graph)


def read_placement(namespace: str, graph: str, role_label: str) -> list[dict]:
    pods = kube_api.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
    nodes = kube_api.get("/api/v1/nodes")["items"]
    return placement(pods, nodes, graph, role_label)
