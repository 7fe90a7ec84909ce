"""`benchlab leftovers` against moto: it finds what a destroy left for the stack (tagged EBS
volume, IAM role), not other stacks' or untagged resources, and lists the results bucket as
kept by design."""
from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from cli import cli, leftovers

TAGS = {"project": "benchlab", "stack": "dev", "owner": "me"}


def tag_list(tags: dict) -> list[dict]:
    return [{"Key": k, "Value": v} for k, v in tags.items()]


@pytest.fixture
def account():
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        s3 = boto3.client("s3", region_name="us-east-1")
        iam = boto3.client("iam", region_name="us-east-1")
        s3.create_bucket(Bucket="benchlab-dev-results-abc")
        s3.put_bucket_tagging(Bucket="benchlab-dev-results-abc", Tagging={"TagSet": tag_list(TAGS)})

        def volume(tags: dict | None) -> str:
            extra = {"TagSpecifications": [{"ResourceType": "volume", "Tags": tag_list(tags)}]} if tags else {}
            return ec2.create_volume(AvailabilityZone="us-east-1a", Size=10, **extra)["VolumeId"]
        left = volume(TAGS)  # a Prometheus volume whose deletion raced the CSI driver's removal
        volume({**TAGS, "stack": "prod"})
        volume(None)
        trust = '{"Version": "2012-10-17", "Statement": []}'
        iam.create_role(RoleName="benchlab-dev-node-1a2b", AssumeRolePolicyDocument=trust, Tags=tag_list(TAGS))
        iam.create_role(RoleName="benchlab-dev-other", AssumeRolePolicyDocument=trust)  # not tagged
        iam.create_role(RoleName="benchlab-prod-node", AssumeRolePolicyDocument=trust,
                        Tags=tag_list({**TAGS, "stack": "prod"}))
        yield (boto3.client("resourcegroupstaggingapi", region_name="us-east-1"), iam, ec2, left)


def test_finds_the_stacks_leftovers_and_keeps_the_results_bucket(account):
    tagging, iam, _, volume_id = account
    found = leftovers.find(tagging, iam, "dev")
    left = sorted(f.arn for f in found if not f.kept)
    assert left == sorted([f"arn:aws:ec2:us-east-1:123456789012:volume/{volume_id}",
                           "arn:aws:iam::123456789012:role/benchlab-dev-node-1a2b"])
    assert [f.arn for f in found if f.kept] == ["arn:aws:s3:::benchlab-dev-results-abc"]


def test_cli_fails_while_something_is_left_and_passes_once_it_is_gone(account, monkeypatch, capsys):
    tagging, iam, ec2, volume_id = account
    monkeypatch.setattr(leftovers, "clients", lambda region, profile: (tagging, iam))
    assert cli.main(["leftovers", "--stack", "dev"]) == 1
    out = capsys.readouterr().out
    assert f"LEFTOVER  arn:aws:ec2:us-east-1:123456789012:volume/{volume_id}" in out
    assert "kept      arn:aws:s3:::benchlab-dev-results-abc" in out and "2 leftover(s)" in out
    ec2.delete_volume(VolumeId=volume_id)
    iam.delete_role(RoleName="benchlab-dev-node-1a2b")
    assert cli.main(["leftovers", "--stack", "dev"]) == 0
    assert "nothing left besides what is kept by design" in capsys.readouterr().out
