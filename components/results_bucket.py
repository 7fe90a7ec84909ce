"""The S3 bucket the benchmark results are exported to: encrypted, private, TLS only, versioned
(old versions and unfinished uploads expire), and kept by `pulumi destroy` unless config says
otherwise (results outlive the lab)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

BUCKET_PREFIX_MAX = 37  # S3 appends a 26-character unique suffix to a bucket_prefix


@dataclass(frozen=True)
class ResultsBucketArgs:
    name_prefix: str  # e.g. benchlab-<stack>: the bucket is findable by it
    retain_on_destroy: bool


def bucket_prefix(name_prefix: str) -> str:
    """A valid S3 bucket name prefix (lowercase letters, digits, hyphens) from `name_prefix`."""
    suffix = "-results-"
    base = re.sub(r"[^a-z0-9-]+", "-", name_prefix.lower()).strip("-")
    return base[:BUCKET_PREFIX_MAX - len(suffix)] + suffix


NONCURRENT_VERSION_DAYS = 30
UNFINISHED_UPLOAD_DAYS = 7


def tls_only_policy(bucket_arn: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
        "Resource": [bucket_arn, f"{bucket_arn}/*"],
        "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]})


def lifecycle_rules() -> list[dict]:
    every_object = {"prefix": ""}
    return [
        {"id": "expire-old-versions", "status": "Enabled", "filter": every_object,
         "noncurrent_version_expiration": {"noncurrent_days": NONCURRENT_VERSION_DAYS}},
        {"id": "abort-unfinished-uploads", "status": "Enabled", "filter": every_object,
         "abort_incomplete_multipart_upload": {"days_after_initiation": UNFINISHED_UPLOAD_DAYS}},
    ]


class ResultsBucket(pulumi.ComponentResource):
    bucket: aws.s3.Bucket
    bucket_name: pulumi.Output[str]

    def __init__(self, name: str, args: ResultsBucketArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("benchlab:aws:ResultsBucket", name, None, opts)
        # A kept bucket keeps its settings too: deleting the public access block or the
        # encryption configuration on destroy would loosen a bucket that stays behind.
        child = pulumi.ResourceOptions(parent=self, retain_on_delete=args.retain_on_destroy)

        # A unique name (prefix + suffix): a bucket kept by an earlier destroy does not block
        # the next `pulumi up`.
        self.bucket = aws.s3.Bucket(
            f"{name}-results", bucket_prefix=bucket_prefix(args.name_prefix),
            force_destroy=not args.retain_on_destroy, opts=child)
        bucket_id = self.bucket.id
        aws.s3.BucketOwnershipControls(
            f"{name}-results", bucket=bucket_id, rule={"object_ownership": "BucketOwnerEnforced"},
            opts=child)
        aws.s3.BucketPublicAccessBlock(
            f"{name}-results", bucket=bucket_id, block_public_acls=True, block_public_policy=True,
            ignore_public_acls=True, restrict_public_buckets=True, opts=child)
        aws.s3.BucketServerSideEncryptionConfiguration(
            f"{name}-results", bucket=bucket_id, opts=child,
            # SSE-S3: encrypted at rest with no KMS key policy for the export Job to satisfy.
            rules=[{"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}}])
        versioning = aws.s3.BucketVersioning(
            f"{name}-results", bucket=bucket_id,
            versioning_configuration={"status": "Enabled"}, opts=child)
        # Requests without TLS are refused, whoever makes them:
        # https://repost.aws/knowledge-center/s3-bucket-policy-for-config-rule
        aws.s3.BucketPolicy(f"{name}-results-tls-only", bucket=bucket_id,
                            policy=self.bucket.arn.apply(tls_only_policy), opts=child)
        # Overwritten objects (a retried export) keep old versions, and an interrupted upload
        # keeps its parts: both bill until removed. After versioning, as S3 applies it to a
        # versioned bucket: https://docs.aws.amazon.com/AmazonS3/latest/API/API_LifecycleRule.html
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-results", bucket=bucket_id, rules=lifecycle_rules(),
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=args.retain_on_destroy,
                                        depends_on=[versioning]))

        self.bucket_name = self.bucket.bucket
        self.register_outputs({"bucket": self.bucket_name})
