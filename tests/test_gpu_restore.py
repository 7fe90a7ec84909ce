"""The GPU restore: the Lambda's code against moto's EKS (a released group comes back to its
configured scaling, a group already there is left alone), and the mocked program (one
invocation per GPU node group, keyed by the run, after its node group, with a role scoped to
this stack's GPU node groups)."""
from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from jobs import gpu_restore
from cli import offline
from tests.conftest import REPO, serving_mode

INVOCATION = "aws:lambda/invocation:Invocation"
MNG = "eks:index:ManagedNodeGroup"


@pytest.fixture
def eks():
    with mock_aws():
        client = boto3.client("eks", region_name="us-east-1")
        client.create_cluster(name="lab", roleArn="arn:aws:iam::123456789012:role/eks",
                              resourcesVpcConfig={"subnetIds": ["subnet-1"]})
        client.create_nodegroup(clusterName="lab", nodegroupName="prefill", subnets=["subnet-1"],
                                nodeRole="arn:aws:iam::123456789012:role/node",
                                scalingConfig={"minSize": 2, "desiredSize": 2, "maxSize": 2})
        yield client


def scaling(eks) -> dict:
    return eks.describe_nodegroup(clusterName="lab", nodegroupName="prefill")["nodegroup"]["scalingConfig"]


EVENT = {"cluster": "lab", "nodegroup": "prefill", "minSize": 2, "desiredSize": 2, "maxSize": 2}


def test_a_released_group_comes_back_to_its_configured_scaling(eks):
    # what the GPU release does (jobs/gpu_release.py): min and desired to 0, the maximum kept
    eks.update_nodegroup_config(clusterName="lab", nodegroupName="prefill",
                                scalingConfig={"minSize": 0, "desiredSize": 0, "maxSize": 2})
    result = gpu_restore.restore(eks, EVENT)
    assert result["changed"] and result["before"] == {"minSize": 0, "desiredSize": 0, "maxSize": 2}
    assert scaling(eks) == {"minSize": 2, "desiredSize": 2, "maxSize": 2}


def test_a_group_at_its_scaling_is_left_alone(eks):
    class NoUpdate:
        def describe_nodegroup(self, **kwargs):
            return eks.describe_nodegroup(**kwargs)

        def update_nodegroup_config(self, **kwargs):
            raise AssertionError(f"updated a group already at its scaling: {kwargs}")

    assert gpu_restore.restore(NoUpdate(), EVENT)["changed"] is False


DEV = offline.stack_config(str(REPO / "Pulumi.dev.yaml"))


@pytest.fixture(scope="module")
def runs():
    def run(mode: str):
        return offline.run_program({**DEV, "serving": {**DEV["serving"], **serving_mode(mode)}})
    return {"agg": run("agg"), "agg again": run("agg"), "disagg": run("disagg")}


def invocations(rec) -> dict:
    return {r.name.rsplit("-", 1)[-1]: r for r in rec.of_type(INVOCATION)}


def test_each_gpu_group_is_restored_to_its_configured_scaling_after_pulumi_applies_it(runs):
    for mode in ("agg", "disagg"):
        rec = runs[mode]
        found = invocations(rec)
        assert sorted(found) == ["decode", "prefill"]  # never the system nodes: no release touches them
        for role, invocation in found.items():
            group = rec.one(MNG, f"benchlab-dev-{role}")
            configured = group.plain_inputs()["scalingConfig"]
            event = json.loads(invocation.plain_inputs()["input"])
            assert event == {"cluster": "benchlab-dev", "nodegroup": group.plain_inputs()["nodeGroupName"],
                             "minSize": configured["minSize"], "desiredSize": configured["desiredSize"],
                             "maxSize": configured["maxSize"]}
            assert rec.waits_for(invocation, group)
    # agg keeps decode at 0 (serving.scaleUnusedGpuGroupToZero); disagg wants the configured count
    decode = DEV["nodeGroups"]["decode"]["count"]
    assert json.loads(invocations(runs["disagg"])["decode"].plain_inputs()["input"])["desiredSize"] == decode


def test_a_new_run_re_invokes_and_the_same_run_does_not(runs):
    def trigger(rec, role):
        return invocations(rec)[role].plain_inputs()["triggers"]

    # the agg -> disagg switch: prefill's configured size is unchanged, its trigger is not
    assert trigger(runs["agg"], "prefill") != trigger(runs["disagg"], "prefill")
    assert trigger(runs["agg"], "prefill") == trigger(runs["agg again"], "prefill")
    # the run's key, as the benchmark Jobs and the GPU release know it
    assert trigger(runs["agg"], "prefill") == {"run": runs["agg"].stack_outputs["benchConfigHash"]}


def test_the_restore_may_touch_only_this_stacks_gpu_node_groups(runs):
    rec = runs["disagg"]
    policies = [json.loads(r.plain_inputs()["policy"]) for r in rec.of_type("aws:iam/rolePolicy:RolePolicy")
                if r.name == "benchlab-dev-node-groups"]
    assert len(policies) == 1
    (statement,) = policies[0]["Statement"]
    names = sorted(rec.one(MNG, f"benchlab-dev-{role}").plain_inputs()["nodeGroupName"]
                   for role in ("prefill", "decode"))
    assert statement["Action"] == ["eks:DescribeNodegroup", "eks:UpdateNodegroupConfig"]
    assert statement["Resource"] == [
        f"arn:aws:eks:us-east-1:123456789012:nodegroup/benchlab-dev/{name}/*" for name in names]
