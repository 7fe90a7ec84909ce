"""The serving graph's Ready wait (jobs/graph_ready.py) against fake API responses in the shapes
the API server returns (core/v1 PodStatus: containerStatuses[].state.waiting.reason, the
PodScheduled condition's reason; the DGD's status.conditions), on a fake clock."""
from __future__ import annotations

from pathlib import Path

import pytest

from cli import offline
from jobs import graph_ready

NS, GRAPH = "benchlab", "benchlab-agg"
ENV = {"POD_NAMESPACE": NS, "GRAPH_NAME": GRAPH, "READY_TIMEOUT_SECONDS": "3600",
       "STUCK_SECONDS": "300", "UNSCHEDULABLE_SECONDS": "1200", "POLL_SECONDS": "15"}
PODS_PATH = f"/api/v1/namespaces/{NS}/pods?labelSelector=nvidia.com/dynamo-graph-deployment-name%3D{GRAPH}"
DGD_PATH = f"/apis/nvidia.com/v1alpha1/namespaces/{NS}/dynamographdeployments/{GRAPH}"
CRASH_LOG = "\n".join([f"INFO loading shard {i}" for i in range(30)]
                      + ["torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"])


def pod(name: str, *, waiting: str | None = None, message: str = "", ready: bool = False,
        unschedulable: bool = False, restarts: int = 0) -> dict:
    if unschedulable:
        return {"metadata": {"name": name, "namespace": NS}, "status": {
            "phase": "Pending", "conditions": [{
                "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu. preemption: 0/3 "
                           "nodes are available: 3 No preemption victims found for incoming pod.",
                "lastTransitionTime": "2026-11-29T20:00:00Z"}]}}
    state = ({"waiting": {"reason": waiting, "message": message}} if waiting
             else {"running": {"startedAt": "2026-11-29T20:05:00Z"}})
    return {"metadata": {"name": name, "namespace": NS}, "status": {
        "phase": "Running" if not waiting or waiting == "CrashLoopBackOff" else "Pending",
        "conditions": [{"type": "PodScheduled", "status": "True"},
                       {"type": "Ready", "status": "True" if ready else "False"}],
        "containerStatuses": [{"name": "main", "ready": ready, "restartCount": restarts,
                               "image": "nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.9.1", "state": state}]}}


def dgd(ready: bool) -> dict:
    return {"apiVersion": "nvidia.com/v1alpha1", "kind": "DynamoGraphDeployment",
            "metadata": {"name": GRAPH}, "status": {"state": "successful" if ready else "pending",
                                                    "conditions": [{"type": "Ready", "status": str(ready)}]}}


class Cluster:
    """The API over time: `timeline(t)` -> (graph ready?, pods) at t seconds."""

    def __init__(self, timeline):
        self.t, self.timeline, self.log_paths = 0.0, timeline, []

    def get(self, path: str) -> dict:
        ready, pods = self.timeline(self.t)
        if path == DGD_PATH:
            return dgd(ready)
        assert path == PODS_PATH
        return {"kind": "PodList", "items": pods}

    def get_text(self, path: str) -> str:
        self.log_paths.append(path)
        return CRASH_LOG

    def run(self, env=ENV) -> int:
        def sleep(seconds: float) -> None:
            self.t += seconds
        return graph_ready.main(env, get=self.get, get_text=self.get_text, clock=lambda: self.t, sleep=sleep)


def test_a_graph_that_gets_ready_ends_the_wait(capsys):
    cluster = Cluster(lambda t: (t >= 900, [pod("w0", ready=t >= 900)]))
    assert cluster.run() == 0 and 900 <= cluster.t < 930
    assert "is Ready" in capsys.readouterr().out


def test_a_crash_loop_fails_within_minutes_with_its_reason_and_last_log_lines(capsys):
    # Between restarts the container runs for a while: the clock counts from the first sighting.
    def timeline(t):
        crashing = t >= 120 and int(t // 45) % 2 == 0
        return False, [pod("w0", ready=True), pod("w1", waiting="CrashLoopBackOff" if crashing else None,
                                                 message="back-off 40s restarting failed container=main",
                                                 restarts=int(t // 90))]
    cluster = Cluster(timeline)
    assert cluster.run() == 1
    assert 120 + 300 <= cluster.t < 120 + 300 + 60  # not the 60 min of readyTimeoutMinutes
    out = capsys.readouterr().out
    assert "pod w1 container main CrashLoopBackOff" in out
    assert "torch.OutOfMemoryError: CUDA out of memory" in out
    assert cluster.log_paths == [f"/api/v1/namespaces/{NS}/pods/w1/log?container=main&tailLines=20&previous=true"]


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImagePull"])
def test_an_image_that_cannot_be_pulled_fails_with_kubernetes_message(capsys, reason):
    message = ('Back-off pulling image "nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.9.1-efa": '
               "not found")
    cluster = Cluster(lambda t: (False, [pod("w0", waiting=reason, message=message)]))
    assert cluster.run() == 1 and 300 <= cluster.t < 330
    out = capsys.readouterr().out
    assert f"pod w0 container main {reason}" in out and "0.9.1-efa" in out and not cluster.log_paths


def test_a_failing_pull_alternating_between_its_reasons_is_one_stuck_state():
    cluster = Cluster(lambda t: (False, [pod("w0", waiting="ErrImagePull" if int(t // 30) % 2 else
                                                 "ImagePullBackOff")]))
    assert cluster.run() == 1 and 300 <= cluster.t < 330


def test_unschedulable_waits_the_longer_limit_for_gpu_nodes_to_boot(capsys):
    # Unschedulable while the GPU nodes boot and their device plugin starts (12 min): no failure.
    healed = Cluster(lambda t: (t >= 1500, [pod("w0", unschedulable=t < 720, ready=t >= 1500)]))
    assert healed.run() == 0
    stuck = Cluster(lambda t: (False, [pod("w0", unschedulable=True)]))
    assert stuck.run() == 1 and 1200 <= stuck.t < 1230
    assert "pod w0 Unschedulable for 20 min: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu" in \
        capsys.readouterr().out


def test_a_graph_never_ready_without_a_stuck_pod_fails_at_the_ready_timeout(capsys):
    cluster = Cluster(lambda t: (False, [pod("w0")]))  # running, never ready
    assert cluster.run() == 1 and cluster.t >= 3600
    assert "not Ready after 60 min" in capsys.readouterr().out


def test_the_report_fits_the_termination_message_the_kubelet_keeps():
    long_log = ["x" * 500] * 40 + ["the last line says why"]
    text = graph_ready.report(GRAPH, "pod w1 container main CrashLoopBackOff for 5 min: " + "m" * 1000, long_log)
    assert len(text.encode()) <= 2048 and len(text.splitlines()) <= 80  # what FallbackToLogsOnError keeps
    assert text.startswith(f"serving graph {GRAPH} cannot get Ready: pod w1") and "the last line says why" in text


def test_an_init_container_that_finished_is_not_stuck():
    finished = pod("w0", waiting="CrashLoopBackOff")
    finished["status"]["initContainerStatuses"] = [
        {"name": "init", "ready": False, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]
    assert [s.container for s in graph_ready.stuck_states(finished)] == ["main"]


# --- as the program renders it ----------------------------------------------------------------
DEV = offline.stack_config(str(Path(__file__).resolve().parent.parent / "Pulumi.dev.yaml"))
JOB, DGD = "kubernetes:batch/v1:Job", "kubernetes:apiextensions.k8s.io:DynamoGraphDeployment"


@pytest.fixture(scope="module")
def rec() -> offline.Recording:
    return offline.run_program({**DEV, "serving": {**DEV.get("serving", {}), "readyTimeoutMinutes": 45}})


def ready_job(rec):
    [job] = [r for r in rec.of_type(JOB) if r.name.endswith("-serving-ready")]
    return job


def test_pulumi_does_not_wait_on_the_graph_but_on_its_ready_job(rec):
    dgd = next(r for r in rec.resources.values() if r.type.endswith(":DynamoGraphDeployment"))
    assert dgd.plain_inputs()["metadata"]["annotations"] == {"pulumi.com/skipAwait": "true"}
    job = ready_job(rec)
    assert rec.waits_for(job, dgd)
    # the KV check and every benchmark start only once the wait has succeeded
    later = [r for r in rec.of_type(JOB) if r.name.endswith("-kv-check-job") or "-bench-" in r.name]
    assert len(later) == 5 and all(rec.waits_for(r, job) for r in later)
    # nothing waits for the GPU node groups (destroy deletes them first): the wait does not either
    gpu = [r for r in rec.of_type("eks:index:ManagedNodeGroup") if not r.name.endswith("-system")]
    assert len(gpu) == 2 and not any(rec.waits_for(job, g) for g in gpu)


def test_the_ready_job_stops_where_the_ready_timeout_says_and_reports_through_its_log(rec):
    spec = ready_job(rec).plain_inputs()["spec"]
    env = {e["name"]: e["value"] for e in spec["template"]["spec"]["containers"][0]["env"] if "value" in e}
    assert env["READY_TIMEOUT_SECONDS"] == str(45 * 60) and env["GRAPH_NAME"] == "benchlab-agg"
    assert int(env["STUCK_SECONDS"]) <= 300 and int(env["UNSCHEDULABLE_SECONDS"]) <= 1200
    assert spec["backoffLimit"] == 0 and 45 * 60 < spec["activeDeadlineSeconds"] <= 50 * 60
    container = spec["template"]["spec"]["containers"][0]
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert container["command"] == ["python", "-m", "jobs.graph_ready"]


def test_the_ready_job_may_read_the_graph_its_pods_and_their_logs_only(rec):
    [role] = [r for r in rec.of_type("kubernetes:rbac.authorization.k8s.io/v1:Role")
              if r.name.endswith("-serving-ready-read")]
    assert role.plain_inputs()["rules"] == [
        {"apiGroups": ["nvidia.com"], "resources": ["dynamographdeployments"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}]
