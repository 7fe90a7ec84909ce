"""The lab's customer-managed KMS key: envelope encryption of the cluster's Kubernetes Secrets
and of its CloudWatch log groups (control plane, VPC flow logs, the GPU restore Lambda). Rotated yearly by KMS.

The key policy is KMS's default (the account's IAM policies decide who in the account may use
the key) plus CloudWatch Logs, which may use it only for the lab's own log groups.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass(frozen=True)
class LabKeyArgs:
    region: str
    log_groups: tuple[str, ...]  # names of the log groups CloudWatch Logs may encrypt with it


def key_policy(partition: str, account: str, region: str, log_groups: tuple[str, ...]) -> str:
    log_group_arns = [f"arn:{partition}:logs:{region}:{account}:log-group:{group}" for group in log_groups]
    return json.dumps({"Version": "2012-10-17", "Statement": [
        # KMS's default key policy: IAM policies of the account govern the key's use.
        # https://docs.aws.amazon.com/kms/latest/developerguide/key-policy-default.html
        {"Sid": "AccountIam", "Effect": "Allow", "Principal": {"AWS": f"arn:{partition}:iam::{account}:root"},
         "Action": "kms:*", "Resource": "*"},
        # CloudWatch Logs' regional principal, limited by the log group ARN in the encryption
        # context: https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/encrypt-log-data-kms.html
        {"Sid": "CloudWatchLogsForLabLogGroups", "Effect": "Allow",
         "Principal": {"Service": f"logs.{region}.amazonaws.com"},
         "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"],
         "Resource": "*",
         "Condition": {"ArnEquals": {"kms:EncryptionContext:aws:logs:arn": log_group_arns}}},
    ]})


class LabKey(pulumi.ComponentResource):
    key: aws.kms.Key

    def __init__(self, name: str, args: LabKeyArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("benchlab:aws:LabKey", name, None, opts)
        invoke = pulumi.InvokeOutputOptions(parent=self)
        partition = aws.get_partition_output(opts=invoke).partition
        account = aws.get_caller_identity_output(opts=invoke).account_id
        self.key = aws.kms.Key(
            f"{name}-key", description=f"{name}: EKS Secrets and the lab's log groups",
            enable_key_rotation=True, deletion_window_in_days=7,
            policy=pulumi.Output.all(partition, account).apply(
                lambda a: key_policy(a[0], a[1], args.region, args.log_groups)),
            opts=pulumi.ResourceOptions(parent=self))
        self.register_outputs({"keyArn": self.key.arn})
