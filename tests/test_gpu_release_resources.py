"""The GPU release as the program renders it: an in-cluster CronJob with its own IAM role
(IRSA) limited to the stack's two GPU node groups, created early, fed the current run's hash
and the configured grace and lease."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli import offline
from facts import wheel_locks
from components import gpu_release, job_code

DEV = offline.stack_config(str(Path(__file__).resolve().parent.parent / "Pulumi.dev.yaml"))
CRONJOB = "kubernetes:batch/v1:CronJob"


@pytest.fixture(scope="module")
def rec() -> offline.Recording:
    return offline.run_program({**DEV, "gpuRelease": {"graceMinutes": 15, "leaseHours": 7}})


def release_role(rec):
    return next(r for r in rec.of_type("aws:iam/role:Role") if r.name.endswith("-gpu-release-role"))


def env_of(cronjob) -> dict[str, str]:
    container = cronjob.plain_inputs()["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container["env"]}


def test_the_policy_allows_describe_and_update_on_exactly_the_two_gpu_node_groups(rec):
    role = release_role(rec)
    [policy] = [r for r in rec.of_type("aws:iam/rolePolicy:RolePolicy") if rec.waits_for(r, role)
                and r.name.endswith("-gpu-release-node-groups")]
    document = json.loads(policy.plain_inputs()["policy"])
    [statement] = document["Statement"]
    assert statement["Effect"] == "Allow"
    assert sorted(statement["Action"]) == ["eks:DescribeNodegroup", "eks:UpdateNodegroupConfig"]
    names = {r.inputs["nodeGroupName"]: r.name for r in rec.of_type("eks:index:ManagedNodeGroup")}
    gpu_names = sorted(n for n, resource in names.items() if not resource.endswith("-system"))
    assert len(gpu_names) == 2
    assert statement["Resource"] == [
        f"arn:aws:eks:us-east-1:123456789012:nodegroup/benchlab-dev/{name}/*" for name in gpu_names]
    # nothing else is attached to the role
    attached = [r for r in rec.resources.values() if r.type.startswith("aws:iam/")
                and r.type != "aws:iam/role:Role" and rec.waits_for(r, role)]
    assert [r.name for r in attached] == [policy.name]


def test_only_the_cronjob_service_account_may_assume_the_role(rec):
    trust = json.loads(release_role(rec).plain_inputs()["assumeRolePolicy"])
    [statement] = trust["Statement"]
    conditions = statement["Condition"]["StringEquals"]
    assert any(v == "system:serviceaccount:benchlab:gpu-release" for k, v in conditions.items()
               if k.endswith(":sub"))


def test_the_cronjob_gets_the_run_hash_grace_lease_and_the_names(rec):
    cronjob = rec.one(CRONJOB)
    env = env_of(cronjob)
    plan = json.loads(next(r for r in rec.of_type("kubernetes:core/v1:ConfigMap")
                           if r.name.endswith("-bench-plan")).plain_inputs()["data"]["plan.json"])
    assert env["CONFIG_HASH"] == plan["config_hash"] and env["GRAPH"] == "agg"
    assert (env["GRACE_MINUTES"], env["LEASE_HOURS"]) == ("15", "7")
    names = sorted(r.inputs["nodeGroupName"] for r in rec.of_type("eks:index:ManagedNodeGroup")
                   if not r.name.endswith("-system"))
    assert sorted(env["GPU_NODE_GROUPS"].split(",")) == names
    assert env["CLUSTER_NAME"] == "benchlab-dev"
    spec = cronjob.plain_inputs()["spec"]
    assert spec["concurrencyPolicy"] == "Forbid" and spec["schedule"] == gpu_release.SCHEDULE
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == gpu_release.NAME
    # it writes its record into the run's manifest: the results volume, read-write
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert not mounts["results"].get("readOnly")


def test_the_cronjob_runs_the_release_code_shipped_from_jobs(rec):
    code = next(r for r in rec.of_type("kubernetes:core/v1:ConfigMap")
                if r.name.endswith("-gpu-release-code")).plain_inputs()["data"]
    assert code == job_code.code_files("gpu_release", wheel_locks.BOTO3)
    assert {"gpu_release.py", "kube_api.py", "run_manifest.py", "runs.py"} <= set(code)


def test_its_kubernetes_identity_may_only_create_events_and_list_the_lab_s_jobs(rec):
    roles = [r for r in rec.of_type("kubernetes:rbac.authorization.k8s.io/v1:Role")
             if r.name.endswith("-gpu-release-events")]
    assert [r.plain_inputs()["rules"] for r in roles] == [
        [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
         {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list"]}]]


def test_it_is_created_early_and_needs_neither_gpus_nor_the_run(rec):
    cronjob = rec.one(CRONJOB)
    assert rec.waits_for(cronjob, rec.one("eks:index:ManagedNodeGroup", "benchlab-dev-system"))
    assert rec.waits_for(cronjob, next(r for r in rec.of_type("kubernetes:core/v1:PersistentVolumeClaim")
                                       if r.name.endswith("-bench-results")))
    later = [r for r in rec.of_type("kubernetes:batch/v1:Job") if "-bench-" in r.name or "-export" in r.name]
    gpu = [r for r in rec.of_type("eks:index:ManagedNodeGroup") if not r.name.endswith("-system")]
    assert later and gpu
    assert not any(rec.waits_for(cronjob, r) for r in later + gpu)



def test_the_release_waits_for_the_marker_the_export_writes(rec):
    """Release after export: the export Job writes its marker onto the results volume the
    CronJob reads, for the run (config hash) the CronJob watches."""
    export = next(r for r in rec.of_type("kubernetes:batch/v1:Job") if r.name.endswith("-export-job"))
    template = export.plain_inputs()["spec"]["template"]
    mounts = {m["name"]: m for m in template["spec"]["containers"][0]["volumeMounts"]}
    claims = {v["name"]: v["persistentVolumeClaim"] for v in template["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    assert not mounts["results"].get("readOnly") and not claims["results"].get("readOnly")
    cron_pod = rec.one(CRONJOB).plain_inputs()["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    cron_claims = {v["persistentVolumeClaim"]["claimName"] for v in cron_pod["volumes"]
                   if "persistentVolumeClaim" in v}
    assert cron_claims == {claims["results"]["claimName"], "wheelhouse"}  # and its install's wheels
    assert env_of(rec.one(CRONJOB))["CONFIG_HASH"] == template["metadata"]["annotations"]["benchlab.io/config-hash"]
