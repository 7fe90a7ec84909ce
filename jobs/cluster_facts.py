"""Where the serving graph's pods run: pod -> node -> instance type and node role.

Read from inside a Job through the Kubernetes API with the pod's service account (read-only
RBAC on pods in the namespace and on nodes), with the standard library only: the Job images
carry no Kubernetes client. `placement()` is pure, for tests.

No Pulumi import: runs inside the cluster Jobs.
"""
from __future__ import annotations

import json
import os
import ssl
import urllib.request
from pathlib import Path
from typing import Any

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"


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


def get_text(path: str) -> str:
    """GET `path` from the Kubernetes API with the pod's service account."""
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    token = (SERVICE_ACCOUNT_DIR / "token").read_text().strip()
    request = urllib.request.Request(f"https://{host}:{port}{path}",
                                     headers={"Authorization": f"Bearer {token}"})
    context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT_DIR / "ca.crt"))
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        return response.read().decode("utf-8", "replace")


def get_json(path: str) -> dict[str, Any]:
    return json.loads(get_text(path))


def read_placement(namespace: str, graph: str, role_label: str) -> list[dict]:
    pods = get_json(f"/api/v1/namespaces/{namespace}/pods")["items"]
    nodes = get_json("/api/v1/nodes")["items"]
    return placement(pods, nodes, graph, role_label)
