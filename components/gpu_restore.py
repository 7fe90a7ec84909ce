"""GpuRestore: a new run brings its released GPU node groups back, on a plain `pulumi up`.

The GPU release (components/gpu_release.py) scales a group to zero outside Pulumi; Pulumi's
state keeps the configured size, so an `up` without `--refresh` sees no change and a new run
would wait for nodes that never come. A Lambda function (code: jobs/gpu_restore.py) is invoked
once per GPU node group whenever the run's key (its config hash) or the group's sizes change and
sets the group to its configured scaling. Keyed by the run, not every `up`: re-applying a config
whose run is done brings back no GPU that nothing would use (the release is once per run).
Its role may only describe and update this stack's GPU node groups and write its own logs, which
the lab's KMS key encrypts (components/lab_key.py) like the lab's other log groups.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws

from components.gpu_release import node_group_arn, release_policy

CODE = Path(__file__).resolve().parent.parent / "jobs" / "gpu_restore.py"
RUNTIME = "python3.12"  # includes boto3: https://docs.aws.amazon.com/lambda/latest/dg/lambda-python.html
TIMEOUT_SECONDS = 60  # one describe and one update
LOG_RETENTION_DAYS = 30


def function_name(cluster_name: str) -> str:
    return f"{cluster_name}-gpu-restore"


def log_group_name(cluster_name: str) -> str:
    """Where Lambda writes the function's logs: /aws/lambda/<function>
    (https://docs.aws.amazon.com/lambda/latest/dg/monitoring-cloudwatchlogs.html)."""
    return f"/aws/lambda/{function_name(cluster_name)}"


@dataclass(frozen=True)
class GpuGroupSize:
    node_group: str  # its EKS name
    min_size: int
    desired_size: int
    max_size: int
    resource: pulumi.Resource  # the node group: restored only once Pulumi has applied it


@dataclass(frozen=True)
class GpuRestoreArgs:
    region: str
    cluster_name: str
    run_key: str  # the run's config hash: a new run restores
    groups: dict[str, GpuGroupSize]  # role -> its configured scaling
    log_key_arn: pulumi.Input[str]  # the lab's KMS key, whose policy names log_group_name()


def restore_event(cluster_name: str, group: GpuGroupSize) -> str:
    return json.dumps({"cluster": cluster_name, "nodegroup": group.node_group, "minSize": group.min_size,
                       "desiredSize": group.desired_size, "maxSize": group.max_size}, sort_keys=True)


class GpuRestore(pulumi.ComponentResource):
    function: aws.lambda_.Function
    invocations: dict[str, aws.lambda_.Invocation]  # role -> its restore

    def __init__(self, name: str, args: GpuRestoreArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("benchlab:aws:GpuRestore", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        invoke = pulumi.InvokeOutputOptions(parent=self)
        partition = aws.get_partition_output(opts=invoke).partition
        account = aws.get_caller_identity_output(opts=invoke).account_id
        # Made first, with a retention and the lab's key: CloudWatch Logs encrypts with a key whose
        # policy lets it for this group's ARN (https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/encrypt-log-data-kms.html).
        logs = aws.cloudwatch.LogGroup(f"{name}-logs", name=log_group_name(args.cluster_name),
                                       retention_in_days=LOG_RETENTION_DAYS, kms_key_id=args.log_key_arn,
                                       opts=child)
        role = aws.iam.Role(f"{name}-role", opts=child, description="benchlab GPU restore",
                            assume_role_policy=json.dumps({"Version": "2012-10-17", "Statement": [{
                                "Effect": "Allow", "Action": "sts:AssumeRole",
                                "Principal": {"Service": "lambda.amazonaws.com"}}]}))
        node_groups = aws.iam.RolePolicy(
            f"{name}-node-groups", role=role.id, opts=child,
            policy=pulumi.Output.all(partition, account).apply(lambda pa: release_policy([
                node_group_arn(pa[0], args.region, pa[1], args.cluster_name, group.node_group)
                for group in args.groups.values()])))
        log_writes = aws.iam.RolePolicy(
            f"{name}-logs", role=role.id, opts=child,
            policy=logs.arn.apply(lambda arn: json.dumps({"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": f"{arn}:*"}]})))
        self.function = aws.lambda_.Function(
            f"{name}-function", name=function_name(args.cluster_name), role=role.arn, runtime=RUNTIME,
            handler=f"{CODE.stem}.handler", timeout=TIMEOUT_SECONDS,
            code=pulumi.AssetArchive({CODE.name: pulumi.FileAsset(str(CODE))}),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[logs, node_groups, log_writes]))
        # CREATE_ONLY (the default): invoked on creation or replacement, which a changed input or
        # trigger forces; a delete invokes nothing (pulumi-aws 7.51.1 lambda_.Invocation docs). A
        # function error fails the invocation, and `up` with it (terraform-provider-aws
        # internal/service/lambda/invocation.go).
        self.invocations = {role_name: aws.lambda_.Invocation(
            f"{name}-{role_name}", function_name=self.function.name,
            input=restore_event(args.cluster_name, group), triggers={"run": args.run_key},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[group.resource]))
            for role_name, group in args.groups.items()}
        self.register_outputs({"function": self.function.name})
