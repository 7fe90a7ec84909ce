"""The volume guard: on `pulumi destroy`, the lab's EBS volumes go before the EBS CSI driver.

`python -m jobs.volume_guard`, the one container of a small Deployment in kube-system. It idles
until it is told to stop (SIGTERM: Pulumi deletes the Deployment after the monitoring and Dynamo
platform releases, before the gp3 StorageClass and the EBS CSI add-on). If its Deployment is
being deleted (not rolled out, not evicted), it deletes every
claim of the StorageClass left behind in the namespaces it guards (StatefulSets leave theirs: Prometheus, etcd, NATS) and
waits until no PersistentVolume of that class is left, i.e. until the CSI driver has deleted the
EBS volumes, which it does asynchronously. Pulumi deletes the Deployment in the foreground, so it
waits for this pod to end before it removes the add-on.

No Pulumi import: runs inside the cluster.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
import urllib.error
from pathlib import Path
from typing import Any, Callable, Mapping

from jobs import kube_api

POLL_SECONDS = 5


def leftover_claims(claims: list[dict[str, Any]], storage_class: str) -> list[str]:
    """API paths of the claims of `storage_class` that are not already being deleted."""
    return [f"/api/v1/namespaces/{c['metadata']['namespace']}/persistentvolumeclaims/{c['metadata']['name']}"
            for c in claims if c["spec"].get("storageClassName") == storage_class
            and not c["metadata"].get("deletionTimestamp")]


def volumes_left(volumes: list[dict[str, Any]], storage_class: str) -> list[str]:
    return sorted(v["metadata"]["name"] for v in volumes if v["spec"].get("storageClassName") == storage_class)


def drain(storage_class: str, namespaces: list[str], deadline: float, get: Callable = kube_api.get,
          delete: Callable = kube_api.delete, clock: Callable[[], float] = time.monotonic,
          sleep: Callable[[float], None] = time.sleep) -> list[str]:
    """Delete the class's claims in `namespaces` (its Roles allow no other), wait for the
    class's volumes to go; return the volumes still left at `deadline` (empty: all gone)."""
    claims = [c for ns in namespaces for c in get(f"/api/v1/namespaces/{ns}/persistentvolumeclaims")["items"]]
    for path in leftover_claims(claims, storage_class):
        print(f"deleting {path}", flush=True)
        delete(path)
    while True:
        left = volumes_left(get("/api/v1/persistentvolumes")["items"], storage_class)
        if not left or clock() >= deadline:
            return left
        print(f"waiting for {len(left)} volume(s) of {storage_class}: {', '.join(left)}", flush=True)
        sleep(POLL_SECONDS)


def destroying(deployment: dict[str, Any] | None) -> bool:
    """Is the guard's Deployment being deleted (destroy), rather than rolled or evicted? Foreground
    deletion marks it with a deletionTimestamp until its pods are gone; None: already gone."""
    return deployment is None or bool(deployment["metadata"].get("deletionTimestamp"))


def own_deployment(env: Mapping[str, str], get: Callable = kube_api.get) -> dict[str, Any] | None:
    try:
        return get(f"/apis/apps/v1/namespaces/{env['POD_NAMESPACE']}/deployments/{env['DEPLOYMENT']}")
    except urllib.error.HTTPError as err:
        if err.code == 404:
            return None
        raise


def main(env: Mapping[str, str] = os.environ) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # Ready once it has shown it can read what it must drain (the API and its RBAC work).
    volumes_left(kube_api.get("/api/v1/persistentvolumes")["items"], env["STORAGE_CLASS"])
    Path(env["READY_FILE"]).write_text("ready\n")
    print("idle until the lab is destroyed", flush=True)
    stop.wait()
    if not destroying(own_deployment(env)):
        print("stopped by a rollout or an eviction, not a destroy: the volumes stay", flush=True)
        return 0
    # Keep a margin inside the pod's grace period, so the answer is logged before a SIGKILL.
    deadline = time.monotonic() + int(env["DRAIN_SECONDS"])
    left = drain(env["STORAGE_CLASS"], env["GUARDED_NAMESPACES"].split(","), deadline)
    if left:
        print(f"volumes still there: {', '.join(left)}; `benchlab leftovers` lists their EBS volumes", flush=True)
        return 1
    print(f"every {env['STORAGE_CLASS']} volume is deleted", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
