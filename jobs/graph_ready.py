"""The serving graph's Ready wait, which fails within minutes while the GPUs bill.

`python -m jobs.graph_ready`, one Job beside the DynamoGraphDeployment (components/serving_graph.py):
what `pulumi up` waits for before the KV transport check and the benchmarks. It polls the graph
and its pods through the API and

- exits 0 once the graph's Ready condition is True;
- exits 1 as soon as one of the graph's pods has been stuck for its limit in a state that does
  not heal by itself: a container waiting in CrashLoopBackOff, or in ImagePullBackOff /
  ErrImagePull, or the pod Unschedulable; the report names the pod, the reason, the
  Kubernetes message and the container's last log lines;
- exits 1 when the graph is still not Ready after serving.readyTimeoutMinutes.

How long a pod has been stuck is counted on this Job's own clock, from the first poll that saw
it, until the container is ready or the pod is scheduled: a pod was Unschedulable while the GPU
nodes booted, and a crash-looping container is briefly running between restarts.

The report ends the Job's log, which becomes the container's termination message; a failed Job
ends `pulumi up` with it, and the GPU release follows after its grace (jobs/gpu_release.py).
Standard library only; no Pulumi import.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from jobs import kube_api
from jobs.kv_transport import GRAPH_LABEL

# status.containerStatuses[].state.waiting.reason values that need a change to heal
# (https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#container-state-waiting).
CRASH_LOOP = "CrashLoopBackOff"
IMAGE_PULL = ("ImagePullBackOff", "ErrImagePull")  # they alternate while a pull keeps failing
# status.conditions[type=PodScheduled].reason when the scheduler finds no node
# (https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-conditions).
UNSCHEDULABLE = "Unschedulable"
DGD_PATH = "/apis/nvidia.com/v1alpha1/namespaces/{namespace}/dynamographdeployments/{name}"
LOG_TAIL_LINES = 20
# The kubelet keeps the last 2048 bytes or 80 lines of a failed container's log as its
# termination message (FallbackToLogsOnError): the report's summary fits in it.
# https://kubernetes.io/docs/tasks/debug-application-cluster/determine-reason-pod-failure/
SUMMARY_BYTES = 1900
LINE_CHARS = 200


@dataclass(frozen=True)
class Stuck:
    pod: str
    container: str | None  # None: the pod itself (Unschedulable)
    kind: str  # "crash-loop" | "image-pull" | "unschedulable": what the clock counts
    reason: str  # Kubernetes' own reason
    message: str


def stuck_states(pod: dict[str, Any]) -> list[Stuck]:
    """What in one pod (a Pod object as the API returns it) is in a state that needs a fix."""
    name, status = pod["metadata"]["name"], pod.get("status") or {}
    found = []
    for condition in status.get("conditions") or []:
        if (condition.get("type") == "PodScheduled" and condition.get("status") == "False"
                and condition.get("reason") == UNSCHEDULABLE):
            found.append(Stuck(name, None, "unschedulable", UNSCHEDULABLE, condition.get("message", "")))
    for container in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        kind = "crash-loop" if reason == CRASH_LOOP else "image-pull" if reason in IMAGE_PULL else None
        if kind:
            found.append(Stuck(name, container["name"], kind, reason, waiting.get("message", "")))
    return found


def _unresolved(pod: dict[str, Any]) -> set[tuple[str, str | None, str]]:
    """The (pod, container, kind) keys whose clock keeps running: a container not ready yet
    (its crash loop or pull may be between attempts), a pod not scheduled yet."""
    name, status = pod["metadata"]["name"], pod.get("status") or {}
    keys = {(name, c["name"], kind)
            for c in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]
            if not c.get("ready") and not _completed(c)
            for kind in ("crash-loop", "image-pull")}
    scheduled = any(c.get("type") == "PodScheduled" and c.get("status") == "True"
                    for c in status.get("conditions") or [])
    return keys | (set() if scheduled else {(name, None, "unschedulable")})


def _completed(container: dict[str, Any]) -> bool:
    """An init container that finished its work (it is never ready)."""
    return ((container.get("state") or {}).get("terminated") or {}).get("exitCode") == 0


class StuckClock:
    """Since when each stuck state has been seen, on this Job's clock."""

    def __init__(self, limits: Mapping[str, float]):
        self.limits = limits  # kind -> seconds
        self.since: dict[tuple[str, str | None, str], float] = {}

    def observe(self, now: float, pods: list[dict[str, Any]]) -> tuple[Stuck, float] | None:
        """The first state stuck past its limit, with how long (None: nothing is)."""
        keep = set().union(*(_unresolved(p) for p in pods)) if pods else set()
        self.since = {key: t for key, t in self.since.items() if key in keep}
        for stuck in (s for pod in pods for s in stuck_states(pod)):
            key = (stuck.pod, stuck.container, stuck.kind)
            started = self.since.setdefault(key, now)
            if now - started >= self.limits[stuck.kind]:
                return stuck, now - started
        return None


def is_ready(graph: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (graph.get("status") or {}).get("conditions") or [])


def report(graph: str, headline: str, log_tail: list[str]) -> str:
    """The failure as the Job's last output, cut to what the termination message keeps."""
    lines = [f"serving graph {graph} cannot get Ready: {headline[:600]}"]
    if log_tail:
        lines.append("last log lines:")
    budget = SUMMARY_BYTES - len(lines[0].encode()) - 20
    kept: list[str] = []
    for line in reversed(log_tail):
        line = "  " + line[:LINE_CHARS]
        if budget - len(line.encode()) - 1 < 0:
            break
        budget -= len(line.encode()) + 1
        kept.insert(0, line)
    return "\n".join(lines + kept)


def describe(stuck: Stuck, seconds: float) -> str:
    where = f"pod {stuck.pod}" + (f" container {stuck.container}" if stuck.container else "")
    return (f"{where} {stuck.reason} for {seconds / 60:.0f} min"
            + (f": {stuck.message}" if stuck.message else ""))


def log_tail(namespace: str, stuck: Stuck, get_text: Callable[[str], str]) -> list[str]:
    """The container's last log lines (of the run that crashed, for a crash loop)."""
    if stuck.kind != "crash-loop":
        return []  # never started: Kubernetes' message is all there is
    try:
        return get_text(f"/api/v1/namespaces/{namespace}/pods/{stuck.pod}/log?container="
                        f"{stuck.container}&tailLines={LOG_TAIL_LINES}&previous=true").splitlines()
    except OSError as err:
        return [f"(log not readable: {err})"]


def not_ready_summary(pods: list[dict[str, Any]]) -> str:
    states = []
    for pod in pods:
        status = pod.get("status") or {}
        unready = [c["name"] for c in status.get("containerStatuses") or [] if not c.get("ready")]
        states.append(f"{pod['metadata']['name']} {status.get('phase', '?')}"
                      + (f" (not ready: {', '.join(unready)})" if unready else ""))
    return "; ".join(states) or "no pod"


def main(env: Mapping[str, str] = os.environ, get: Callable[[str], dict] = kube_api.get,
         get_text: Callable[[str], str] = kube_api.get_text,
         clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> int:
    namespace, graph = env["POD_NAMESPACE"], env["GRAPH_NAME"]
    timeout = float(env["READY_TIMEOUT_SECONDS"])
    poll = float(env.get("POLL_SECONDS", "15"))
    stuck_clock = StuckClock({"crash-loop": float(env["STUCK_SECONDS"]),
                              "image-pull": float(env["STUCK_SECONDS"]),
                              "unschedulable": float(env["UNSCHEDULABLE_SECONDS"])})
    started, pods = clock(), []
    while clock() - started < timeout:
        try:
            if is_ready(get(DGD_PATH.format(namespace=namespace, name=graph))):
                print(f"serving graph {graph} is Ready", flush=True)
                return 0
            pods = get(f"/api/v1/namespaces/{namespace}/pods?labelSelector={GRAPH_LABEL}%3D{graph}")["items"]
        except OSError as err:  # a slow API server: the next poll
            print(f"API: {err}", flush=True)
        else:
            found = stuck_clock.observe(clock(), pods)
            if found:
                stuck, seconds = found
                print(report(graph, describe(stuck, seconds), log_tail(namespace, stuck, get_text)),
                      flush=True)
                return 1
        sleep(poll)
    print(report(graph, f"not Ready after {timeout / 60:.0f} min (serving.readyTimeoutMinutes); "
                        f"pods: {not_ready_summary(pods)}", []), flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(main())
