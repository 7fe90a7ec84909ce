"""Where the serving graph's pods run: pod -> node -> instance type and node role.

Read from inside a Job through the Kubernetes API with the pod's service account (read-only
RBAC on pods in the namespace and on nodes), with the standard library only: the Job images
carry no Kubernetes client. `placement()` is pure, for tests.

No Pulumi import: runs inside the cluster Jobs.
"""
from __future__ import annotations

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


def read_worker_endpoints(namespace: str, graph: str) -> tuple[list[str], str | None]:
    return worker_endpoints(kube_api.get(f"/api/v1/namespaces/{namespace}/pods")["items"], graph)


def read_placement(namespace: str, graph: str, role_label: str) -> list[dict]:
    pods = kube_api.get(f"/api/v1/namespaces/{namespace}/pods")["items"]
    nodes = kube_api.get("/api/v1/nodes")["items"]
    return placement(pods, nodes, graph, role_label)
