"""The EKS control plane and the Kubernetes provider every later resource uses.

The node groups live in components/node_groups.py; the node labels and the GPU taint are
defined here because they are the contract with the layers that schedule pods.
"""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_eks as eks
import pulumi_kubernetes as k8s

# Node labels every node group carries; the platform and workload layers select nodes by them.
ROLE_LABEL = "benchlab.io/role"  # "system" | "prefill" | "decode"
NODE_GROUP_LABEL = "benchlab.io/node-group"  # the EKS node group's name
# GPU nodes are tainted so that only pods tolerating it (GPU workers, GPU DaemonSets) land there.
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_TAINT_VALUE = "true"
GPU_TAINT_EFFECT = "NoSchedule"  # Kubernetes spelling; EKS's API spells it NO_SCHEDULE


@dataclass(frozen=True)
class ClusterArgs:
    cluster_name: str
    kubernetes_version: str
    vpc_id: pulumi.Input[str]
    public_subnet_ids: list[pulumi.Input[str]]
    private_subnet_ids: list[pulumi.Input[str]]
    public_access_cidrs: tuple[str, ...]
    tags: dict[str, str]


class EksCluster(pulumi.ComponentResource):
    cluster: eks.Cluster
    cluster_name: pulumi.Output[str]
    kubeconfig: pulumi.Output
    security_group_id: pulumi.Output[str]  # EKS's cluster security group, on every node
    oidc_provider_arn: pulumi.Output[str]
    oidc_provider_url: pulumi.Output[str]  # without the https:// scheme, as IAM conditions want
    k8s_provider: k8s.Provider

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("benchlab:aws:EksCluster", name, None, opts)
        self.cluster = eks.Cluster(
            name,
            name=args.cluster_name,  # a known string: exports and IAM conditions use it
            version=args.kubernetes_version,
            vpc_id=args.vpc_id,
            public_subnet_ids=args.public_subnet_ids,
            private_subnet_ids=args.private_subnet_ids,
            skip_default_node_group=True,
            # Managed node groups only: EKS's own cluster security group covers node <-> control
            # plane traffic; pulumi-eks's extra groups are for self-managed nodes.
            skip_default_security_groups=True,
            create_oidc_provider=True,
            authentication_mode=eks.AuthenticationMode.API,
            endpoint_private_access=True,
            endpoint_public_access=True,
            public_access_cidrs=list(args.public_access_cidrs),
            # The VPC CNI's network policy agent: without it NetworkPolicies are not enforced.
            # pulumi/pulumi-eks@3328fbe:nodejs/eks/addons/cni-addon.ts (-> the vpc-cni add-on's
            # configurationValues.enableNetworkPolicy); https://docs.aws.amazon.com/eks/latest/userguide/cni-network-policy-configure.html
            vpc_cni_options={"enable_network_policy": True},
            tags=args.tags,
            cluster_tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.cluster_name = pulumi.Output.from_input(args.cluster_name)
        self.kubeconfig = pulumi.Output.secret(self.cluster.kubeconfig)
        self.security_group_id = self.cluster.cluster_security_group_id
        self.oidc_provider_arn = self.cluster.oidc_provider_arn
        self.oidc_provider_url = self.cluster.oidc_provider_url.apply(
            lambda url: url.removeprefix("https://"))
        # Server-side apply: large CRDs (kube-prometheus-stack, Dynamo) exceed the client-side
        # last-applied annotation limit.
        self.k8s_provider = k8s.Provider(
            f"{name}-k8s", kubeconfig=self.cluster.kubeconfig_json, enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self))
        self.register_outputs({"clusterName": self.cluster_name, "kubeconfig": self.kubeconfig,
                               "oidcProviderArn": self.oidc_provider_arn})
