"""ResultsExport: after the last benchmark, copy the run to the S3 bucket and push its summary
series to the Pushgateway (the Pareto dashboard reads them).

The Job's AWS identity is its own IAM role (IRSA), assumable only by this Job's service
account, allowed to list and put objects under the run prefixes of the results bucket:
nothing else, no delete. Its boto3 comes from the wheelhouse (components/wheelhouse.py): the pod
reaches S3 and STS through the VPC's endpoints and the Pushgateway, not the internet.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components import job_code
from jobs import runs
from jobs.deadlines import EXPORT_TIMEOUT_MINUTES
from components.base import PART_OF
from components.benchmark_jobs import PLAN_FILE, PLAN_MOUNT
from components.irsa import irsa_trust_policy
from components.model_store import RESULTS_MOUNT, RESULTS_PVC
from components.wheelhouse import WHEELHOUSE_PVC
from facts.wheel_locks import BOTO3

SERVICE_ACCOUNT = "results-export"
# Exit code 1: the run was exported but a mode had failed (jobs/export_to_s3.py). A
# retry cannot change that, so it fails the Job at once; other failures (S3, network) retry.
RUN_FAILED_EXIT_CODE = 1
EXPORT_BACKOFF_LIMIT = 3

# What the export Job's pod requests (stacks/pod_fit.py checks it fits a system node).
EXPORT_RESOURCES = {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}


def bucket_policy(bucket_arn: str) -> str:
    """List and put under the lab's run prefixes (`<run id>/...`) only. IAM matches `*` and `?`
    in resource ARNs and StringLike conditions:
    https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_elements_resource.html"""
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": bucket_arn,
         "Condition": {"StringLike": {"s3:prefix": [f"{runs.RUN_ID_GLOB}/"]}}},
        {"Effect": "Allow", "Action": ["s3:PutObject", "s3:AbortMultipartUpload"],
         "Resource": f"{bucket_arn}/{runs.RUN_ID_GLOB}/*"},
    ]})


@dataclass(frozen=True)
class ResultsExportArgs:
    namespace: str
    region: str
    bucket_name: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    oidc_provider_arn: pulumi.Input[str]
    oidc_provider_url: pulumi.Input[str]
    pushgateway_url: str
    image: str  # the client image (facts/images.py), by digest when the stack locks it
    plan_configmap: pulumi.Input[str]  # the benchmarks' run plan: which run to export
    config_hash: str
    cpu_node_selector: dict[str, str]
    depends_on: list[pulumi.Resource]  # the last benchmark Job, the wheelhouse Job (its boto3)


def export_job_spec(args: ResultsExportArgs, code_configmap: pulumi.Input[str], code_sha: str) -> dict:
    env = {"RESULTS_ROOT": RESULTS_MOUNT, "PLAN_FILE": f"{PLAN_MOUNT}/{PLAN_FILE}",
           "RESULTS_BUCKET": args.bucket_name, "PUSHGATEWAY_URL": args.pushgateway_url,
           "AWS_REGION": args.region}
    container = {
        "name": "export",
        "image": args.image,
        "command": job_code.run_module("export_to_s3"),
        "env": job_code.env_list(env),
        "resources": EXPORT_RESOURCES,
        # Read-write for one file: the export's marker (exported.json), which the GPU release waits for.
        "volumeMounts": [{"name": "results", "mountPath": RESULTS_MOUNT},
                         {"name": "plan", "mountPath": PLAN_MOUNT, "readOnly": True}],
    }
    return {
        "backoffLimit": EXPORT_BACKOFF_LIMIT,
        "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {
            "containerName": "export", "operator": "In", "values": [RUN_FAILED_EXIT_CODE]}}]},
        "activeDeadlineSeconds": EXPORT_TIMEOUT_MINUTES * 60,
        "template": job_code.job_template(
            container=container, lock=BOTO3,
            volumes=[{"name": "results", "persistentVolumeClaim": {"claimName": RESULTS_PVC}},
                     {"name": "plan", "configMap": {"name": args.plan_configmap}}],
            code_configmap=code_configmap, node_selector=args.cpu_node_selector,
            labels={"app.kubernetes.io/name": "results-export", **PART_OF},
            annotations={"benchlab.io/config-hash": args.config_hash,
                         job_code.DIGEST_ANNOTATION: code_sha},
            # AWS credentials come from IRSA's own projected token, not the API token.
            service_account=SERVICE_ACCOUNT, wheelhouse=WHEELHOUSE_PVC),
    }


class ResultsExport(pulumi.ComponentResource):
    role: aws.iam.Role
    job: k8s.batch.v1.Job

    def __init__(self, name: str, args: ResultsExportArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("benchlab:workloads:ResultsExport", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # The Kubernetes objects come after the benchmarks (so after the namespace).
        after_benchmarks = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)
        self.role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=irsa_trust_policy(args.oidc_provider_arn, args.oidc_provider_url,
                                                 args.namespace, SERVICE_ACCOUNT),
            description="benchlab results export: put the runs into the results bucket",
            opts=child)
        access = aws.iam.RolePolicy(
            f"{name}-bucket", role=self.role.id,
            policy=pulumi.Output.from_input(args.bucket_arn).apply(bucket_policy), opts=child)
        account = k8s.core.v1.ServiceAccount(
            f"{name}-account",
            metadata={"name": SERVICE_ACCOUNT, "namespace": args.namespace, "labels": PART_OF,
                      "annotations": {"eks.amazonaws.com/role-arn": self.role.arn}},
            opts=after_benchmarks)

        self.job = job_code.code_job(
            self, f"{name}-job", entry="export_to_s3", lock=BOTO3, configmap_name=f"{name}-code",
            namespace=args.namespace, app="results-export",
            spec=lambda code_map, code_sha: export_job_spec(args, code_map, code_sha),
            configmap_opts=after_benchmarks, depends_on=[*args.depends_on, access, account],
            timeout_minutes=EXPORT_TIMEOUT_MINUTES)
        self.register_outputs({"roleArn": self.role.arn, "job": self.job.metadata.name})
