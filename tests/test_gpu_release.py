"""The GPU release's decision and its EKS calls: against moto's EKS (the happy path, the
record) and botocore's Stubber (API errors: retried, then a clear failure, nodes unchanged)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from jobs import gpu_release, run_manifest, runs
from jobs.gpu_release import GroupState, RunState

CLUSTER = "benchlab-dev"
GROUPS = ["benchlab-dev-prefill-us-east-1a", "benchlab-dev-decode-us-east-1a"]
HASH = "c0ffee" * 10
T0 = dt.datetime(2026, 11, 29, 20, 0, tzinfo=dt.timezone.utc)
GRACE = dt.timedelta(minutes=10)
LEASE = dt.timedelta(hours=6)


def group(name: str = GROUPS[0], desired: int = 2, changed_at: dt.datetime = T0,
          status: str = "ACTIVE") -> GroupState:
    return GroupState(name, status, desired, desired, max(desired, 4), changed_at)


def run_state(exported_at: dt.datetime | None = None, released: bool = False) -> RunState:
    return RunState("20261129T200000Z-c0ffeec0", None, exported_at, released)


# --- the decision ------------------------------------------------------------------------
def test_export_not_finished_releases_nothing():
    decision = gpu_release.decide(T0 + dt.timedelta(hours=2), [group()], run_state(None), GRACE, LEASE)
    assert decision.release == () and "export not finished" in decision.reason


def test_grace_not_over_releases_nothing():
    exported = T0 + dt.timedelta(hours=2)
    decision = gpu_release.decide(exported + dt.timedelta(minutes=9), [group()], run_state(exported),
                                  GRACE, LEASE)
    assert decision.release == () and "grace not over (1 min left)" in decision.reason


def test_grace_over_releases_every_gpu_group_that_is_up():
    exported = T0 + dt.timedelta(hours=2)
    groups = [group(GROUPS[0], 2), group(GROUPS[1], 0)]
    decision = gpu_release.decide(exported + GRACE, groups, run_state(exported), GRACE, LEASE)
    assert decision.release == (GROUPS[0],) and decision.cause == "run"


def test_a_run_is_released_once_a_restored_lab_stays_up_until_its_lease():
    exported = T0 + dt.timedelta(hours=2)
    restored = group(changed_at=exported + dt.timedelta(hours=1))
    later = exported + dt.timedelta(hours=3)
    assert gpu_release.decide(later, [restored], run_state(exported, released=True),
                              GRACE, LEASE).release == ()
    assert gpu_release.decide(restored.changed_at + LEASE, [restored],
                              run_state(exported, released=True), GRACE, LEASE).cause == "lease"


def test_lease_exceeded_releases_even_while_the_run_is_going():
    decision = gpu_release.decide(T0 + LEASE, [group(GROUPS[0]), group(GROUPS[1], changed_at=T0 + dt.timedelta(hours=1))],
                                  run_state(None), GRACE, LEASE)
    assert decision.release == (GROUPS[0],) and decision.cause == "lease"
    assert "lease of 6 h over" in decision.reason


def test_grace_zero_disables_the_release_after_the_run_but_not_the_lease():
    exported = T0 + dt.timedelta(hours=2)
    off = dt.timedelta(0)
    assert gpu_release.decide(exported + dt.timedelta(hours=1), [group()], run_state(exported),
                              off, LEASE).release == ()
    assert gpu_release.decide(T0 + LEASE, [group()], run_state(exported), off, LEASE).cause == "lease"


def test_a_group_eks_is_updating_is_left_alone():
    decision = gpu_release.decide(T0 + LEASE * 2, [group(status="UPDATING")], run_state(T0), GRACE, LEASE)
    assert decision.release == () and "busy" in decision.reason


# --- the Job against EKS -------------------------------------------------------------------
def results_tree(root: Path, exported_at: dt.datetime | None) -> Path:
    """A run as the benchmark Jobs leave it: pointer, manifest, and (when given) the export's marker."""
    run_id = runs.allocate(root, HASH, job_uid="job-1", now=T0.timestamp())
    graph_dir = root / run_id / "agg"
    run_manifest.write_manifest(graph_dir, run_manifest.RunManifest(
        run_id=run_id, graph="agg", simulated=False, profile="cloud", created="2026-11-29T20:00:00Z",
        versions={"dynamo": "0.9.1"}, model="Qwen/Qwen3-30B-A3B-FP8",
        nodes=[run_manifest.NodeGroup("prefill", "p4d.24xlarge", 2, 8)],
        workers={"agg": run_manifest.WorkerSpec(4, 4)}))
    if exported_at is not None:
        run_manifest.write_exported(graph_dir, exported_at, "results")
    return graph_dir


def no_jobs(path: str) -> dict:
    return {"kind": "JobList", "items": []}


def env(root: Path) -> dict[str, str]:
    return {"CLUSTER_NAME": CLUSTER, "GPU_NODE_GROUPS": ",".join(GROUPS), "AWS_REGION": "us-east-1",
            "GRACE_MINUTES": "10", "LEASE_HOURS": "6", "RESULTS_ROOT": str(root),
            "CONFIG_HASH": HASH, "GRAPH": "agg", "POD_NAMESPACE": "benchlab",
            "CRONJOB_NAME": "gpu-release"}


@pytest.fixture
def eks():
    with mock_aws():
        client = boto3.client("eks", region_name="us-east-1")
        client.create_cluster(name=CLUSTER, roleArn="arn:aws:iam::123456789012:role/eks",
                              resourcesVpcConfig={"subnetIds": ["subnet-1", "subnet-2"]})
        for name, size in zip(GROUPS, (2, 0)):
            client.create_nodegroup(clusterName=CLUSTER, nodegroupName=name, subnets=["subnet-1"],
                                    nodeRole="arn:aws:iam::123456789012:role/node",
                                    scalingConfig={"minSize": size, "desiredSize": size, "maxSize": 4})
        yield client


def scaling(eks, name: str) -> dict:
    return eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName=name)["nodegroup"]["scalingConfig"]


def test_after_the_export_and_the_grace_the_gpu_groups_go_to_zero_with_a_record(eks, tmp_path):
    created = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName=GROUPS[0])["nodegroup"]["createdAt"]
    exported = created + dt.timedelta(minutes=30)
    graph_dir = results_tree(tmp_path, exported)
    events = []
    code = gpu_release.main(env(tmp_path), get=no_jobs, eks=eks, now=exported + GRACE,
                            post=lambda path, body: events.append((path, body)))
    assert code == 0
    assert scaling(eks, GROUPS[0]) == {"minSize": 0, "desiredSize": 0, "maxSize": 4}
    record = run_manifest.read_manifest(graph_dir).extra[gpu_release.RELEASE_KEY]
    assert record["cause"] == "run" and record["node_groups"] == {GROUPS[0]: 2}
    [(path, body)] = events
    assert path == "/api/v1/namespaces/benchlab/events"
    assert body["reason"] == "GpuNodesReleased" and "pulumi up --refresh" in body["message"]
    assert body["involvedObject"]["kind"] == "CronJob"


def test_before_the_export_finished_nothing_changes(eks, tmp_path):
    created = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName=GROUPS[0])["nodegroup"]["createdAt"]
    graph_dir = results_tree(tmp_path, exported_at=None)
    code = gpu_release.main(env(tmp_path), get=no_jobs, eks=eks, now=created + dt.timedelta(hours=2),
                            post=lambda *a: pytest.fail("no release, no event"))
    assert code == 0 and scaling(eks, GROUPS[0])["desiredSize"] == 2
    assert gpu_release.RELEASE_KEY not in run_manifest.read_manifest(graph_dir).extra


def test_past_the_lease_the_groups_go_even_without_a_run(eks, tmp_path):
    created = eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName=GROUPS[0])["nodegroup"]["createdAt"]
    events = []
    code = gpu_release.main(env(tmp_path), get=no_jobs, eks=eks, now=created + LEASE + dt.timedelta(minutes=1),
                            post=lambda path, body: events.append(body))
    assert code == 0 and scaling(eks, GROUPS[0])["desiredSize"] == 0
    assert "lease of 6 h over" in events[0]["message"]


def _describe(name: str, desired: int) -> dict:
    return {"nodegroup": {"nodegroupName": name, "clusterName": CLUSTER, "status": "ACTIVE",
                          "createdAt": T0, "modifiedAt": T0,
                          "scalingConfig": {"minSize": desired, "desiredSize": desired, "maxSize": 4}}}


def stubbed(update_errors: int):
    client = boto3.client("eks", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="x")
    stub = Stubber(client)
    for name, size in zip(GROUPS, (2, 0)):
        stub.add_response("describe_nodegroup", _describe(name, size),
                          {"clusterName": CLUSTER, "nodegroupName": name})
    expected = {"clusterName": CLUSTER, "nodegroupName": GROUPS[0],
                "scalingConfig": {"minSize": 0, "desiredSize": 0, "maxSize": 4}}
    for _ in range(update_errors):
        stub.add_client_error("update_nodegroup_config", "ServerException", "EKS is having a moment",
                              http_status_code=500, expected_params=expected)
    if update_errors < gpu_release.ATTEMPTS:
        stub.add_response("update_nodegroup_config", {"update": {"id": "u-1", "status": "InProgress"}},
                          expected)
    return client, stub


def test_an_api_error_is_retried(tmp_path):
    results_tree(tmp_path, T0)
    client, stub = stubbed(update_errors=2)
    waits = []
    with stub:
        code = gpu_release.main(env(tmp_path), get=no_jobs, eks=client, now=T0 + GRACE, sleep=waits.append,
                                post=lambda *a: None)
        stub.assert_no_pending_responses()
    assert code == 0 and len(waits) == 2


def test_a_persistent_api_error_fails_clearly_and_leaves_the_nodes_as_they_were(tmp_path, capsys):
    graph_dir = results_tree(tmp_path, T0)
    client, stub = stubbed(update_errors=gpu_release.ATTEMPTS)
    with stub:
        code = gpu_release.main(env(tmp_path), get=no_jobs, eks=client, now=T0 + GRACE, sleep=lambda s: None,
                                post=lambda *a: pytest.fail("no event for a release that failed"))
        stub.assert_no_pending_responses()  # three attempts, and no other call
    assert code == 1
    out = capsys.readouterr().out
    assert f"UpdateNodegroupConfig {GROUPS[0]} failed 3 times" in out
    assert f"node group {GROUPS[0]} is unchanged (2 nodes)" in out
    assert gpu_release.RELEASE_KEY not in run_manifest.read_manifest(graph_dir).extra


def test_an_unreadable_export_marker_is_not_a_finished_export(tmp_path):
    graph_dir = results_tree(tmp_path, exported_at=None)
    (graph_dir / run_manifest.EXPORTED_FILE).write_text("{not json")
    assert gpu_release.read_run(tmp_path, HASH, "agg").exported_at is None


# --- every way a run ends: the GPU node groups at 0 within grace + one CronJob period ---------
PERIOD = dt.timedelta(minutes=5)  # components/gpu_release.py SCHEDULE: */5


def failed_job(name: str, reason: str, at: dt.datetime, message: str = "") -> dict:
    """A Job as the API lists it once the Job controller gave up on it (batch/v1 JobStatus)."""
    return {"metadata": {"name": name, "namespace": "benchlab",
                         "labels": {"app.kubernetes.io/part-of": "benchlab"}},
            "status": {"failed": 1, "startTime": "2026-11-29T20:00:00Z", "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": reason,
                 "lastTransitionTime": at.strftime("%Y-%m-%dT%H:%M:%SZ")},
                {"type": "Failed", "status": "True", "reason": reason, "message": message,
                 "lastProbeTime": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "lastTransitionTime": at.strftime("%Y-%m-%dT%H:%M:%SZ")}]}}


def jobs_api(*jobs: dict):
    def get(path: str) -> dict:
        assert path == "/apis/batch/v1/namespaces/benchlab/jobs?labelSelector=app.kubernetes.io%2Fpart-of%3Dbenchlab"
        return {"kind": "JobList", "items": list(jobs)}
    return get


def first_release(eks, root: Path, start: dt.datetime, get, until: dt.timedelta = dt.timedelta(hours=8)):
    """Run the CronJob every PERIOD from `start`; when did the first release happen, with what Event."""
    events: list = []
    now = start
    while now < start + until:
        assert gpu_release.main(env(root), eks=eks, now=now, get=get,
                                post=lambda path, body: events.append(body)) == 0
        if events:
            return now, events[0]
        now += PERIOD
    return None, None


def created_at(eks) -> dt.datetime:
    return eks.describe_nodegroup(clusterName=CLUSTER, nodegroupName=GROUPS[0])["nodegroup"]["createdAt"]


ENDINGS = {  # stage -> the Job that failed for good and how
    "model download out of retries": ("benchlab-models-download-1a2b3c4d", "BackoffLimitExceeded"),
    "graph never Ready (stuck pod, or its timeout)": ("benchlab-serving-ready-1a2b3c4d", "BackoffLimitExceeded"),
    "KV transport check failed": ("benchlab-kv-check-job-1a2b3c4d", "BackoffLimitExceeded"),
    "benchmark past its deadline": ("benchlab-bench-multi-turn-1a2b3c4d", "DeadlineExceeded"),
    "export failed before its marker": ("benchlab-export-job-1a2b3c4d", "BackoffLimitExceeded"),
}


@pytest.mark.parametrize("ending", ENDINGS)
def test_a_failed_run_releases_its_gpus_within_the_grace_and_one_period(eks, tmp_path, ending):
    job, reason = ENDINGS[ending]
    failed_at = created_at(eks) + dt.timedelta(minutes=47)
    graph_dir = results_tree(tmp_path, exported_at=None)
    get = jobs_api(failed_job(job, reason, failed_at, "Job has reached the specified backoff limit"))
    released_at, event = first_release(eks, tmp_path, created_at(eks), get)
    assert released_at is not None, "still up after 8 h"
    assert failed_at + GRACE <= released_at < failed_at + GRACE + PERIOD
    assert scaling(eks, GROUPS[0])["desiredSize"] == 0
    record = run_manifest.read_manifest(graph_dir).extra[gpu_release.RELEASE_KEY]
    assert record["cause"] == "failure" and record["node_groups"] == {GROUPS[0]: 2}
    assert f"Job {job} failed" in record["reason"] and reason in record["reason"]
    assert f"Job {job} failed" in event["message"] and "pulumi up --refresh" in event["message"]


def test_a_run_that_exported_releases_within_the_grace_and_one_period(eks, tmp_path):
    exported = created_at(eks) + dt.timedelta(minutes=131)
    results_tree(tmp_path, exported)
    released_at, event = first_release(eks, tmp_path, created_at(eks), no_jobs)
    assert exported + GRACE <= released_at < exported + GRACE + PERIOD and "exported" in event["message"]


def test_a_run_that_hangs_is_released_at_its_lease(eks, tmp_path):
    results_tree(tmp_path, exported_at=None)  # a benchmark that never ends, no Job failed yet
    released_at, event = first_release(eks, tmp_path, created_at(eks), no_jobs)
    assert created_at(eks) + LEASE <= released_at < created_at(eks) + LEASE + PERIOD
    assert "lease of 6 h over" in event["message"]


def test_a_failure_before_the_run_has_a_manifest_still_releases(eks, tmp_path):
    failed_at = created_at(eks) + dt.timedelta(minutes=20)
    get = jobs_api(failed_job("benchlab-serving-ready-1a2b3c4d", "BackoffLimitExceeded", failed_at))
    released_at, event = first_release(eks, tmp_path, created_at(eks), get)  # no run allocated
    assert failed_at + GRACE <= released_at < failed_at + GRACE + PERIOD
    assert event["reason"] == "GpuNodesReleased" and "run failed" in event["message"]


def test_a_group_brought_back_after_the_failure_stays_up_until_its_lease():
    failed_at = T0 + dt.timedelta(hours=1)
    failure = gpu_release.Failure("benchlab-kv-check-job-1", "BackoffLimitExceeded", "", failed_at)
    restored = group(changed_at=failed_at + dt.timedelta(minutes=30))
    run = RunState(None, None, None, False, failure)
    assert gpu_release.decide(failed_at + dt.timedelta(hours=2), [restored], run, GRACE, LEASE).release == ()
    assert gpu_release.decide(restored.changed_at + LEASE, [restored], run, GRACE, LEASE).cause == "lease"


def test_the_release_cronjob_s_own_failed_checks_are_not_a_failed_run():
    own = failed_job("gpu-release-29000000", "BackoffLimitExceeded", T0)
    own["metadata"]["ownerReferences"] = [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "gpu-release"}]
    assert gpu_release.read_failures(jobs_api(own), "benchlab") == []
