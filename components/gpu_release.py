"""GpuRelease: GPUs bill only while they measure.

An in-cluster CronJob (code: jobs/gpu_release.py) scales this stack's two GPU node groups to
zero once the run's results export has finished or one of the run's Jobs has failed for good,
and a grace period is over, and past the GPU lease whatever runs. It is created early, beside the results volume and before any GPU node is
needed, so the lease also guards a `pulumi up` that never reaches the export; the release after
the run waits for the export's marker on the results volume, not for the export Job.

Its AWS identity is its own IAM role (IRSA, trusted by this CronJob's service account only),
allowed eks:DescribeNodegroup and eks:UpdateNodegroupConfig on exactly the stack's two GPU node
groups. Its Kubernetes identity may create Events in the lab namespace (the record) and list its
Jobs (a failed one releases the GPUs too), nothing else. Its boto3 comes from the wheelhouse
(components/wheelhouse.py), so its pod reaches the API server and the STS and EKS endpoints only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components import job_code
from components.base import PART_OF
from components.irsa import irsa_trust_policy
from components.model_store import RESULTS_MOUNT, RESULTS_PVC
from components.wheelhouse import WHEELHOUSE_PVC
from facts.wheel_locks import BOTO3

NAME = "gpu-release"  # the CronJob and its service account; the Event names the CronJob
SCHEDULE = "*/5 * * * *"  # a release lands at most 5 minutes after the grace or the lease
RUN_DEADLINE_SECONDS = 240  # one check (install from the wheelhouse, two describes, maybe two updates) < the period
ACTIONS = ("eks:DescribeNodegroup", "eks:UpdateNodegroupConfig")
RELEASE_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}


def node_group_arn(partition: str, region: str, account: str, cluster: str, group: str) -> str:
    # arn:${Partition}:eks:${Region}:${Account}:nodegroup/${ClusterName}/${NodegroupName}/${UUID}: https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelastickubernetesservice.html
    return f"arn:{partition}:eks:{region}:{account}:nodegroup/{cluster}/{group}/*"


def release_policy(node_group_arns: list[str]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": list(ACTIONS), "Resource": sorted(node_group_arns)}]})


@dataclass(frozen=True)
class GpuReleaseArgs:
    namespace: str
    region: str
    cluster_name: str
    node_groups: tuple[str, ...]  # the EKS names of the stack's GPU node groups
    grace_minutes: int
    lease_hours: int
    config_hash: str  # the current run's: which export to wait for
    graph: str  # serving mode of the current run
    oidc_provider_arn: pulumi.Input[str]
    oidc_provider_url: pulumi.Input[str]
    image: str  # the client image; boto3 comes from its hash-locked wheels
    cpu_node_selector: dict[str, str]
    depends_on: list[pulumi.Resource]  # the lab namespace, the results volume, the system nodes, the wheelhouse Job


def cronjob_spec(args: GpuReleaseArgs, code_configmap: pulumi.Input[str], code_sha: str) -> dict:
    env = {"CLUSTER_NAME": args.cluster_name, "GPU_NODE_GROUPS": ",".join(args.node_groups),
           "AWS_REGION": args.region, "GRACE_MINUTES": str(args.grace_minutes),
           "LEASE_HOURS": str(args.lease_hours), "RESULTS_ROOT": RESULTS_MOUNT,
           "CONFIG_HASH": args.config_hash, "GRAPH": args.graph, "CRONJOB_NAME": NAME}
    container = {
        "name": "release",
        "image": args.image,
        "command": job_code.run_module("gpu_release"),
        "env": [*job_code.env_list(env),
                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
        "resources": RELEASE_RESOURCES,
        # Read-write: the release adds its record to the run's manifest.
        "volumeMounts": [{"name": "results", "mountPath": RESULTS_MOUNT}],
    }
    template = job_code.job_template(
        container=container, lock=BOTO3,
        volumes=[{"name": "results", "persistentVolumeClaim": {"claimName": RESULTS_PVC}}],
        code_configmap=code_configmap, node_selector=args.cpu_node_selector,
        labels={"app.kubernetes.io/name": NAME, **PART_OF},
        annotations={job_code.DIGEST_ANNOTATION: code_sha},
        # IRSA for EKS; the API token for the Event it records.
        service_account=NAME, api_token=True, wheelhouse=WHEELHOUSE_PVC)
    return {
        "schedule": SCHEDULE,
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": RUN_DEADLINE_SECONDS,
        "successfulJobsHistoryLimit": 1,
        "failedJobsHistoryLimit": 3,
        # A failed check is retried by the next schedule, not by the Job.
        "jobTemplate": {"spec": {"backoffLimit": 0, "activeDeadlineSeconds": RUN_DEADLINE_SECONDS,
                                 "template": template}},
    }


class GpuRelease(pulumi.ComponentResource):
    role: aws.iam.Role
    policy: aws.iam.RolePolicy
    cronjob: k8s.batch.v1.CronJob

    def __init__(self, name: str, args: GpuReleaseArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("benchlab:workloads:GpuRelease", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        after_inputs = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)
        invoke = pulumi.InvokeOutputOptions(parent=self)
        partition = aws.get_partition_output(opts=invoke).partition
        account = aws.get_caller_identity_output(opts=invoke).account_id
        arns = pulumi.Output.all(partition, account).apply(lambda pa: [
            node_group_arn(pa[0], args.region, pa[1], args.cluster_name, group)
            for group in args.node_groups])

        self.role = aws.iam.Role(
            f"{name}-role",
            assume_role_policy=irsa_trust_policy(args.oidc_provider_arn, args.oidc_provider_url,
                                                 args.namespace, NAME),
            description="benchlab GPU release: scale this stack's GPU node groups to zero",
            opts=child)
        self.policy = aws.iam.RolePolicy(f"{name}-node-groups", role=self.role.id,
                                         policy=arns.apply(release_policy), opts=child)
        account_sa = k8s.core.v1.ServiceAccount(
            f"{name}-account",
            metadata={"name": NAME, "namespace": args.namespace, "labels": PART_OF,
                      "annotations": {"eks.amazonaws.com/role-arn": self.role.arn}},
            opts=after_inputs)
        events = k8s.rbac.v1.Role(
            f"{name}-events", metadata={"namespace": args.namespace, "labels": PART_OF},
            rules=[{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
                   # a run's failed Jobs: the release after a failure
                   {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list"]}],
            opts=after_inputs)
        binding = k8s.rbac.v1.RoleBinding(
            f"{name}-events", metadata={"namespace": args.namespace, "labels": PART_OF},
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                      "name": events.metadata.name},
            subjects=[{"kind": "ServiceAccount", "name": NAME, "namespace": args.namespace}],
            opts=after_inputs)

        code = job_code.code_files("gpu_release", BOTO3)
        code_map = job_code.immutable_config_map(f"{name}-code", args.namespace, code, after_inputs)
        self.cronjob = k8s.batch.v1.CronJob(
            f"{name}-cronjob",
            metadata={"name": NAME, "namespace": args.namespace,
                      "labels": {"app.kubernetes.io/name": NAME, **PART_OF}},
            spec=cronjob_spec(args, code_map.metadata.name, job_code.digest(code)),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[
                *args.depends_on, self.policy, account_sa, binding]))
        self.register_outputs({"roleArn": self.role.arn, "cronJob": NAME})
