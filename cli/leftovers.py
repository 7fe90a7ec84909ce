"""`benchlab leftovers`: after `pulumi destroy`, what is left in the account for a stack.

Every AWS resource the lab creates carries the tags `project=benchlab` and `stack=<stack>` (the
provider's default tags; the EBS volumes the CSI driver creates get them from the gp3
StorageClass), so the Resource Groups Tagging API finds what a destroy left behind, for example
an EBS volume whose deletion raced the CSI driver's removal. IAM roles are looked up through IAM
too (by the lab's name prefix, then their tags). The results bucket is kept by design
(`results.retainBucketOnDestroy`) and listed as such. Read-only.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from cli import stack_file
from cli.cli import CliError

HELP = "after `pulumi destroy`: list what is left in the account for a stack (tagging API)"
PROJECT = "benchlab"


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    stack_file.add_stack_argument(parser)
    parser.add_argument("--profile", help="AWS profile to use (default: the usual boto3 chain)")


def clients(region: str, profile: str | None):
    import boto3

    session = boto3.Session(profile_name=profile, region_name=region)
    return session.client("resourcegroupstaggingapi"), session.client("iam")


def run(args: argparse.Namespace) -> int:
    cfg = stack_file.load(args.stack).config()
    tagging, iam = clients(cfg.region, args.profile)
    try:
        found = find(tagging, iam, args.stack)
    except (BotoCoreError, ClientError) as err:
        raise CliError(f"listing the stack's resources: {err}") from None
    print(render(args.stack, cfg.region, found))
    return 1 if any(not f.kept for f in found) else 0
