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
    monkeypatch.setattr(leftovers, "clients", lambda region, profile: (tagging, iam, ec2))
    assert cli.main(["leftovers", "--stack", "dev"]) == 1
    out = capsys.readouterr().out
    assert f"LEFTOVER  arn:aws:ec2:us-east-1:123456789012:volume/{volume_id}" in out
    assert "kept      arn:aws:s3:::benchlab-dev-results-abc" in out and "2 leftover(s)" in out
    ec2.delete_volume(VolumeId=volume_id)
    iam.delete_role(RoleName="benchlab-dev-node-1a2b")
    assert cli.main(["leftovers", "--stack", "dev"]) == 0
    assert "nothing left besides what is kept by design" in capsys.readouterr().out


@pytest.fixture
def volumes():
    """Volumes of stack dev (by its tags, by the CSI driver's cluster tag, one in use), another
    stack's and an untagged one -> (ec2, {label: volume id})."""
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")

        def volume(tags: dict | None) -> str:
            extra = {"TagSpecifications": [{"ResourceType": "volume", "Tags": tag_list(tags)}]} if tags else {}
            return ec2.create_volume(AvailabilityZone="us-east-1a", Size=10, **extra)["VolumeId"]
        ids = {"stack tags": volume(TAGS), "cluster tag": volume({"kubernetes.io/cluster/benchlab-dev": "owned"}),
               "in use": volume(TAGS), "other stack": volume({**TAGS, "stack": "prod"}), "untagged": volume(None)}
        image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        instance = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, Placement={
            "AvailabilityZone": "us-east-1a"})["Instances"][0]["InstanceId"]
        ec2.attach_volume(VolumeId=ids["in use"], InstanceId=instance, Device="/dev/sdf")
        yield ec2, ids


def remaining(ec2) -> set[str]:
    return {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}


def test_delete_volumes_with_yes_deletes_only_the_stacks_available_volumes(volumes):
    ec2, ids = volumes
    deleted = leftovers.delete_volumes(ec2, "dev", yes=True)
    assert sorted(deleted) == sorted([ids["stack tags"], ids["cluster tag"]])
    assert {ids["in use"], ids["other stack"], ids["untagged"]} <= remaining(ec2)
    assert not {ids["stack tags"], ids["cluster tag"]} & remaining(ec2)


def test_nothing_is_deleted_without_a_confirmation(volumes, monkeypatch):
    ec2, ids = volumes
    before = remaining(ec2)
    monkeypatch.setattr(leftovers.sys.stdin, "isatty", lambda: True)
    assert leftovers.delete_volumes(ec2, "dev", yes=False, ask=lambda prompt: "n") == []
    monkeypatch.setattr(leftovers.sys.stdin, "isatty", lambda: False)  # a script, no --yes
    with pytest.raises(cli.CliError, match="confirm with --yes"):
        leftovers.delete_volumes(ec2, "dev", yes=False)
    assert remaining(ec2) == before
    monkeypatch.setattr(leftovers.sys.stdin, "isatty", lambda: True)
    asked = []
    leftovers.delete_volumes(ec2, "dev", yes=False, ask=lambda prompt: asked.append(prompt) or "yes")
    assert ids["stack tags"] in asked[0] and ids["cluster tag"] in asked[0] and ids["in use"] not in asked[0]
    assert remaining(ec2) == before - {ids["stack tags"], ids["cluster tag"]}


def test_cli_deletes_volumes_only_when_asked(volumes, monkeypatch, capsys):
    ec2, ids = volumes
    tagging = boto3.client("resourcegroupstaggingapi", region_name="us-east-1")
    iam = boto3.client("iam", region_name="us-east-1")
    monkeypatch.setattr(leftovers, "clients", lambda region, profile: (tagging, iam, ec2))
    before = remaining(ec2)
    cli.main(["leftovers", "--stack", "dev"])
    assert remaining(ec2) == before  # listing deletes nothing
    cli.main(["leftovers", "--stack", "dev", "--delete-volumes", "--yes"])
    assert "deleted 2 EBS volume(s)" in capsys.readouterr().out
    assert remaining(ec2) == before - {ids["stack tags"], ids["cluster tag"]}
