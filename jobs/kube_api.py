"""The Kubernetes API from inside a Job, with the standard library only (the Job images carry
no Kubernetes client): the pod's projected service-account token and the cluster's CA.

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


def _request(method: str, path: str, body: dict[str, Any] | None = None) -> str:
    host = os.environ["KUBERNETES_SERVICE_HOST"]
    port = os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    token = (SERVICE_ACCOUNT_DIR / "token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(f"https://{host}:{port}{path}", data=data, headers=headers,
                                     method=method)
    context = ssl.create_default_context(cafile=str(SERVICE_ACCOUNT_DIR / "ca.crt"))
    with urllib.request.urlopen(request, context=context, timeout=30) as response:
        return response.read().decode("utf-8", "replace")


def get(path: str) -> dict[str, Any]:
    return json.loads(_request("GET", path))


def get_text(path: str) -> str:
    """A text resource, e.g. a pod's log."""
    return _request("GET", path)


def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
    return json.loads(_request("POST", path, body))


def delete(path: str) -> dict[str, Any]:
    return _request("DELETE", path)
