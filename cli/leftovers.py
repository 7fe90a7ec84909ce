"""`benchlab leftovers`: after `pulumi destroy`, what is left in the account for a stack.

Every AWS resource the lab creates carries the tags `project=benchlab` and `stack=<stack>` (the
provider's default tags; the EBS volumes the CSI driver creates get them from the gp3
StorageClass), so the Resource Groups Tagging API finds what a destroy left behind, for example
an EBS volume whose deletion raced the CSI driver's removal. IAM roles are looked up through IAM
too (by the lab's name prefix, then their tags). The results bucket is kept by design
(`results.retainBucketOnDestroy`) and listed as such. Read-only, except `--delete-volumes`: a
destroy that could not reach the cluster leaves the CSI driver's EBS volumes, which it deletes
once confirmed (only `available` ones, found by the stack's tags or the driver's cluster tag).
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from cli import stack_file
from cli.cli import CliError

HELP = "after `pulumi destroy`: list what is left in the account for a stack (tagging API)"
PROJECT = "benchlab"
# The CSI driver tags a volume `kubernetes.io/cluster/<id>` when given a cluster id; ours also
# carry the stack's tags from the gp3 StorageClass (kubernetes-sigs/aws-ebs-csi-driver docs/tagging.md).
CLUSTER_TAG = "kubernetes.io/cluster/{cluster}"


@dataclass(frozen=True)
class Leftover:
    arn: str
    kept: str = ""  # why it stays by design; empty: a leftover to delete

    @property
    def service(self) -> str:
        return self.arn.split(":")[2]


def find(tagging, iam, stack: str) -> list[Leftover]:
    """Every resource tagged project=benchlab, stack=`stack`, sorted by ARN."""
    arns = set()
    filters = [{"Key": "project", "Values": [PROJECT]}, {"Key": "stack", "Values": [stack]}]
    for page in tagging.get_paginator("get_resources").paginate(TagFilters=filters):
        arns.update(item["ResourceARN"] for item in page["ResourceTagMappingList"])
    for page in iam.get_paginator("list_roles").paginate():
        for role in page["Roles"]:
            if not role["RoleName"].startswith(f"{PROJECT}-{stack}-"):
                continue
            tags = {t["Key"]: t["Value"] for t in iam.list_role_tags(RoleName=role["RoleName"])["Tags"]}
            if tags.get("project") == PROJECT and tags.get("stack") == stack:
                arns.add(role["Arn"])
    return [Leftover(arn, _kept(arn)) for arn in sorted(arns)]


def _kept(arn: str) -> str:
    # The only bucket the lab creates is the results bucket.
    return "the results bucket, kept by design (results.retainBucketOnDestroy)" if arn.split(":")[2] == "s3" else ""


def render(stack: str, region: str, found: list[Leftover]) -> str:
    left = [f for f in found if not f.kept]
    lines = [f"stack {stack} in {region}: resources tagged project={PROJECT}, stack={stack}"]
    lines += [f"  kept      {f.arn}  ({f.kept})" for f in found if f.kept]
    lines += [f"  LEFTOVER  {f.arn}" for f in left]
    if left:
        lines.append(f"{len(left)} leftover(s): delete them (AWS console or CLI), or run `pulumi destroy` "
                     "again if the stack still lists them")
    else:
        lines.append("nothing left" + (" besides what is kept by design" if found else ""))
    return "\n".join(lines)


def leftover_volumes(ec2, stack: str) -> list[dict]:
    """The stack's EBS volumes not attached to anything (state `available`), by volume id."""
    tagged = [{"Name": "tag:project", "Values": [PROJECT]}, {"Name": "tag:stack", "Values": [stack]}]
    by_cluster = [{"Name": "tag-key", "Values": [CLUSTER_TAG.format(cluster=f"{PROJECT}-{stack}")]}]
    found = {}
    for filters in (tagged, by_cluster):
        pages = ec2.get_paginator("describe_volumes").paginate(
            Filters=[*filters, {"Name": "status", "Values": ["available"]}])
        found.update((v["VolumeId"], v) for page in pages for v in page["Volumes"])
    return [found[volume_id] for volume_id in sorted(found)]


def delete_volumes(ec2, stack: str, yes: bool, ask=input) -> list[str]:
    """Delete the stack's available volumes once confirmed (`yes`, or an interactive "yes")."""
    volumes = leftover_volumes(ec2, stack)
    if not volumes:
        return []
    listing = ", ".join(f"{v['VolumeId']} ({v['Size']} GiB)" for v in volumes)
    if not yes:
        if not sys.stdin.isatty():
            raise CliError(f"--delete-volumes would delete {listing}: confirm with --yes "
                           "(no terminal to ask on)")
        if ask(f"delete {len(volumes)} EBS volume(s) of stack {stack}: {listing}? type yes: ").strip() != "yes":
            return []
    for volume in volumes:
        ec2.delete_volume(VolumeId=volume["VolumeId"])
    return [v["VolumeId"] for v in volumes]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    stack_file.add_stack_argument(parser)
    parser.add_argument("--profile", help="AWS profile to use (default: the usual boto3 chain)")
    parser.add_argument("--delete-volumes", action="store_true",
                        help="delete the stack's EBS volumes left unattached (state available), after a confirmation")
    parser.add_argument("--yes", action="store_true", help="with --delete-volumes: do not ask (scripts)")


def clients(region: str, profile: str | None):
    import boto3

    session = boto3.Session(profile_name=profile, region_name=region)
    return session.client("resourcegroupstaggingapi"), session.client("iam"), session.client("ec2")


def run(args: argparse.Namespace) -> int:
    cfg = stack_file.load(args.stack).config()
    tagging, iam, ec2 = clients(cfg.region, args.profile)
    if args.yes and not args.delete_volumes:
        raise CliError("--yes confirms --delete-volumes; without it nothing is deleted")
    try:
        if args.delete_volumes:
            deleted = delete_volumes(ec2, args.stack, args.yes)
            print(f"deleted {len(deleted)} EBS volume(s): {', '.join(deleted)}" if deleted
                  else "no EBS volume deleted")
        found = find(tagging, iam, args.stack)
    except (BotoCoreError, ClientError) as err:
        raise CliError(f"listing the stack's resources: {err}") from None
    print(render(args.stack, cfg.region, found))
    return 1 if any(not f.kept for f in found) else 0
