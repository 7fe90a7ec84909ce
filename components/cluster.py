"""The EKS control plane and the Kubernetes provider every later resource uses: API
authentication with access entries for the configured admins, control-plane audit logs with
their retention, and the VPC CNI add-on with its own IAM role.

The node groups live in components/node_groups.py; the node labels and the GPU taint are
defined here because they are the contract with the layers that schedule pods.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_eks as eks
import pulumi_kubernetes as k8s

from components.irsa import irsa_trust_policy

# Node labels every node group carries; the platform and workload layers select nodes by them.
ROLE_LABEL = "benchlab.io/role"  # "system" | "prefill" | "decode"
NODE_GROUP_LABEL = "benchlab.io/node-group"  # the EKS node group's name
# GPU nodes are tainted so that only pods tolerating it (GPU workers, GPU DaemonSets) land there.
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_TAINT_VALUE = "true"
GPU_TAINT_EFFECT = "NoSchedule"  # Kubernetes spelling; EKS's API spells it NO_SCHEDULE
# The audit trail: who called the API, what it did, which IAM identity authenticated.
CONTROL_PLANE_LOG_TYPES = ("api", "audit", "authenticator")
# https://docs.aws.amazon.com/eks/latest/userguide/access-policy-permissions.html
CLUSTER_ADMIN_POLICY = "arn:{partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"


# The VPC CNI's own IAM role (IRSA on kube-system/aws-node) instead of the node role's:
# https://docs.aws.amazon.com/eks/latest/userguide/cni-iam-role.html
VPC_CNI_ADDON = "vpc-cni"
VPC_CNI_SERVICE_ACCOUNT = "aws-node"
VPC_CNI_POLICY = "AmazonEKS_CNI_Policy"


def control_plane_log_group(cluster_name: str) -> str:
    """EKS writes control-plane logs to this group; made first, it keeps our retention:
    https://docs.aws.amazon.com/eks/latest/userguide/control-plane-logs.html"""
    return f"/aws/eks/{cluster_name}/cluster"


@dataclass(frozen=True)
class ClusterArgs:
    cluster_name: str
    kubernetes_version: str
    vpc_id: pulumi.Input[str]
    # Where EKS puts its network interfaces: small subnets of their own (components/network.py).
    control_plane_subnet_ids: list[pulumi.Input[str]]
    public_access_cidrs: tuple[str, ...]
    admin_principal_arns: tuple[str, ...]  # IAM roles/users given cluster-admin access entries
    log_retention_days: int  # of the control-plane logs
    key_arn: pulumi.Input[str]  # the lab's KMS key: Secrets envelope encryption, the log group
    tags: dict[str, str]


class EksCluster(pulumi.ComponentResource):
    cluster: eks.Cluster
    cluster_name: pulumi.Output[str]
    kubeconfig: pulumi.Output
    security_group_id: pulumi.Output[str]  # EKS's cluster security group, on every node
    oidc_provider_arn: pulumi.Output[str]
    oidc_provider_url: pulumi.Output[str]  # without the https:// scheme, as IAM conditions want
    k8s_provider: k8s.Provider
    vpc_cni: aws.eks.Addon  # nodes join only after it: their pod networking uses its role

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("benchlab:aws:EksCluster", name, None, opts)
        logs = aws.cloudwatch.LogGroup(
            f"{name}-control-plane", name=control_plane_log_group(args.cluster_name),
            retention_in_days=args.log_retention_days, kms_key_id=args.key_arn,
            opts=pulumi.ResourceOptions(parent=self))
        partition = aws.get_partition_output(opts=pulumi.InvokeOutputOptions(parent=self)).partition
        self.cluster = eks.Cluster(
            name,
            name=args.cluster_name,  # a known string: exports and IAM conditions use it
            version=args.kubernetes_version,
            vpc_id=args.vpc_id,
            # The cluster's subnets (pulumi/pulumi-eks nodejs/eks/cluster.ts createCore: subnetIds
            # become the cluster's vpcConfig); the node groups name their own.
            subnet_ids=args.control_plane_subnet_ids,
            # Secrets envelope-encrypted with our key (createCore: encryptionConfig, resources
            # ["secrets"]): https://docs.aws.amazon.com/eks/latest/userguide/enable-kms.html
            encryption_config_key_arn=args.key_arn,
            skip_default_node_group=True,
            # Managed node groups only: EKS's own cluster security group covers node <-> control
            # plane traffic; pulumi-eks's extra groups are for self-managed nodes.
            skip_default_security_groups=True,
            create_oidc_provider=True,
            authentication_mode=eks.AuthenticationMode.API,
            # With API authentication only the creating identity is admin; these may run the
            # next `pulumi up` or `destroy` too.
            # Keyed by the ARN, so reordering the list replaces nothing.
            access_entries={f"admin-{hashlib.sha256(arn.encode()).hexdigest()[:10]}": {
                "principal_arn": arn,
                "access_policies": {"cluster-admin": {
                    "policy_arn": partition.apply(lambda p: CLUSTER_ADMIN_POLICY.format(partition=p)),
                    "access_scope": {"type": "cluster"}}}}
                for arn in args.admin_principal_arns},
            enabled_cluster_log_types=list(CONTROL_PLANE_LOG_TYPES),
            endpoint_private_access=True,
            endpoint_public_access=True,
            public_access_cidrs=list(args.public_access_cidrs),
            # The vpc-cni add-on is ours (`_vpc_cni`: IRSA role, network policy agent): pulumi-eks
            # must not create a second one (pulumi/pulumi-eks nodejs/eks/cluster.ts: `args.useDefaultVpcCni
            # ? undefined : new VpcCniAddon(...)`); two add-ons of one name fail on create.
            use_default_vpc_cni=True,
            tags=args.tags,
            cluster_tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[logs]),
        )
        self.cluster_name = pulumi.Output.from_input(args.cluster_name)
        self.kubeconfig = pulumi.Output.secret(self.cluster.kubeconfig)
        self.security_group_id = self.cluster.cluster_security_group_id
        self.oidc_provider_arn = self.cluster.oidc_provider_arn
        self.oidc_provider_url = self.cluster.oidc_provider_url.apply(
            lambda url: url.removeprefix("https://"))
        self.vpc_cni = self._vpc_cni(name, args.cluster_name, partition)
        # Server-side apply: large CRDs (kube-prometheus-stack, Dynamo) exceed the client-side
        # last-applied annotation limit.
        # No deleteUnreachable: with it a refresh or destroy that merely cannot reach the API (an
        # address outside publicAccessCidrs) drops every object from the state. Left unset, the
        # provider fails instead and reads PULUMI_K8S_DELETE_UNREACHABLE, which the user sets only
        # once EKS says the cluster is gone (pulumi-kubernetes 4.34.2 Provider docs; Configure in
        # provider/pkg/provider/provider.go: the provider key, when present, overrides the variable).
        self.k8s_provider = k8s.Provider(
            f"{name}-k8s", kubeconfig=self.cluster.kubeconfig_json, enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self))
        self.register_outputs({"clusterName": self.cluster_name, "kubeconfig": self.kubeconfig,
                               "oidcProviderArn": self.oidc_provider_arn})

    def _vpc_cni(self, name: str, cluster_name: str, partition: pulumi.Output[str]) -> aws.eks.Addon:
        """The VPC CNI as an EKS add-on with its own IRSA role, so the node role (which every
        pod could reach through IMDS) needs no network-interface permissions. Installed before
        any node joins, as terraform-aws-eks does (`before_compute` for vpc-cni)."""
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(f"{name}-{VPC_CNI_ADDON}", opts=child, assume_role_policy=irsa_trust_policy(
            self.oidc_provider_arn, self.oidc_provider_url, "kube-system", VPC_CNI_SERVICE_ACCOUNT))
        attachment = aws.iam.RolePolicyAttachment(
            f"{name}-{VPC_CNI_ADDON}", role=role.name, opts=child,
            policy_arn=partition.apply(lambda p: f"arn:{p}:iam::aws:policy/{VPC_CNI_POLICY}"))
        return aws.eks.Addon(
            f"{name}-{VPC_CNI_ADDON}", cluster_name=cluster_name, addon_name=VPC_CNI_ADDON,
            service_account_role_arn=role.arn,
            # The network policy agent: without it NetworkPolicies are not enforced
            # (https://docs.aws.amazon.com/eks/latest/userguide/cni-network-policy-configure.html).
            configuration_values=json.dumps({"enableNetworkPolicy": "true"}),
            # EKS installed aws-node itself (self-managed): the add-on takes it over.
            resolve_conflicts_on_create="OVERWRITE",
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.cluster, attachment]))
