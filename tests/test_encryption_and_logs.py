"""Encryption and logs of the AWS layer, as the mocked program registers them: the lab's KMS key
(rotated) encrypts the cluster's Secrets and its log groups, CloudWatch Logs may use it for those
groups only, EFS refuses clients without TLS, every VPC flow is logged with the configured
retention, and the VPC's default security group has no rule."""
from __future__ import annotations

import json

import pytest

from cli import offline
from stacks.config import ConfigError
from tests.conftest import REPO

PREFIX = "benchlab-dev"
KEY = f"arn:aws:kms:us-east-1:123456789012:{PREFIX}-key"  # the mocked key's ARN


def run(**overrides) -> offline.Recording:
    return offline.run_program({**offline.stack_config(str(REPO / "Pulumi.dev.yaml")), **overrides})


@pytest.fixture(scope="module")
def rec() -> offline.Recording:
    return run()


def test_the_lab_key_rotates_and_cloudwatch_logs_may_use_it_for_the_lab_s_groups_only(rec):
    key = rec.one("aws:kms/key:Key").plain_inputs()
    assert key["enableKeyRotation"] is True
    statements = json.loads(key["policy"])["Statement"]
    (logs,) = [s for s in statements if s["Principal"].get("Service") == "logs.us-east-1.amazonaws.com"]
    assert logs["Condition"]["ArnEquals"]["kms:EncryptionContext:aws:logs:arn"] == [
        f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/eks/{PREFIX}/cluster",
        f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/vpc/{PREFIX}/flow-logs",
        f"arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/{PREFIX}-gpu-restore"]
    assert [s["Principal"] for s in statements if s is not logs] == [{"AWS": "arn:aws:iam::123456789012:root"}]


def test_secrets_and_every_log_group_are_encrypted_with_the_lab_key(rec):
    assert rec.one("eks:index:Cluster", PREFIX).plain_inputs()["encryptionConfigKeyArn"] == KEY
    groups = {g.plain_inputs()["name"]: g.plain_inputs() for g in rec.of_type("aws:cloudwatch/logGroup:LogGroup")}
    assert set(groups) == {f"/aws/eks/{PREFIX}/cluster", f"/aws/vpc/{PREFIX}/flow-logs",
                           f"/aws/lambda/{PREFIX}-gpu-restore"}  # the GPU restore's Lambda
    for name, group in groups.items():
        assert group["kmsKeyId"] == KEY, name


def test_every_flow_of_the_vpc_is_logged_with_the_configured_retention():
    rec = run(flowLogs={"retentionDays": 90})
    flow = rec.one("aws:ec2/flowLog:FlowLog").plain_inputs()
    assert flow["vpcId"] == f"vpc-{PREFIX}-vpc" and flow["trafficType"] == "ALL"
    assert flow["logDestinationType"] == "cloud-watch-logs"
    group = rec.one("aws:cloudwatch/logGroup:LogGroup", f"{PREFIX}-flow-logs").plain_inputs()
    assert group["retentionInDays"] == 90
    role = rec.one("aws:iam/role:Role", f"{PREFIX}-flow-logs").plain_inputs()
    [trust] = json.loads(role["assumeRolePolicy"])["Statement"]
    assert trust["Principal"] == {"Service": "vpc-flow-logs.amazonaws.com"}


def test_a_flow_log_retention_cloudwatch_does_not_offer_is_refused_before_any_resource():
    with pytest.raises(ConfigError, match=r"flowLogs\.retentionDays: 45 is not a CloudWatch retention; allowed: 1, 3"):
        run(flowLogs={"retentionDays": 45})


def test_the_default_security_group_has_no_rule(rec):
    group = rec.one("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup").plain_inputs()
    assert group["vpcId"] == f"vpc-{PREFIX}-vpc"
    assert not group.get("ingress") and not group.get("egress")


def test_efs_refuses_clients_without_tls_and_the_storage_class_mounts_with_tls(rec):
    policy = json.loads(rec.one("aws:efs/fileSystemPolicy:FileSystemPolicy").plain_inputs()["policy"])
    (deny,) = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} and deny["Action"] == "*"
    efs = next(r for r in rec.of_type("kubernetes:storage.k8s.io/v1:StorageClass")
               if r.plain_inputs()["metadata"]["name"] == "efs")
    assert efs.plain_inputs()["parameters"]["encryptInTransit"] == "true"


def test_the_credential_holders_aws_apis_have_endpoints_in_the_vpc(rec):
    endpoints = {e.plain_inputs()["serviceName"]: e.plain_inputs()
                 for e in rec.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")}
    assert set(endpoints) == {"com.amazonaws.us-east-1.s3", "com.amazonaws.us-east-1.sts",
                              "com.amazonaws.us-east-1.eks"}
    assert endpoints["com.amazonaws.us-east-1.s3"]["vpcEndpointType"] == "Gateway"
    assert endpoints["com.amazonaws.us-east-1.s3"]["routeTableIds"] == [f"{PREFIX}-private-id"]
    for service in ("sts", "eks"):
        interface = endpoints[f"com.amazonaws.us-east-1.{service}"]
        assert interface["vpcEndpointType"] == "Interface" and interface["privateDnsEnabled"] is True
        assert sorted(interface["subnetIds"]) == [f"subnet-{PREFIX}-endpoints-us-east-1a",
                                                  f"subnet-{PREFIX}-endpoints-us-east-1b"]
