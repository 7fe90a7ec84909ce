"""Composition of the lab, in order. Each layer is a function that takes what it needs from
the layers before it and returns what later layers need; the dependency graph is explicit in
the resources' options, so Pulumi runs everything that does not need a GPU node while the GPU
node groups boot (see DESIGN.md, "Critical path").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from stacks.config import LabConfig, Secrets

PROJECT = "benchlab"


@dataclass(frozen=True)
class LabContext:
    cfg: LabConfig
    secrets: Secrets
    stack: str
    name: str  # prefix of every resource name: benchlab-<stack>
    tags: dict[str, str]
    aws_provider: aws.Provider

    def opts(self, **kwargs: Any) -> pulumi.ResourceOptions:
        """Options for a top-level component: the tagged AWS provider, plus `kwargs`."""
        return pulumi.ResourceOptions(providers={"aws": self.aws_provider}, **kwargs)


def build(cfg: LabConfig, secrets: Secrets, stack: str) -> None:
    tags = {"project": PROJECT, "stack": stack, "owner": cfg.owner}
    # Every AWS resource gets the tags through the provider's default tags, so a forgotten
    # lab can be found and its cost attributed.
    aws_provider = aws.Provider("aws", region=cfg.region, default_tags={"tags": tags})
    ctx = LabContext(cfg, secrets, stack, f"{PROJECT}-{stack}", tags, aws_provider)
    infra = aws_layer(ctx)
    platform = platform_layer(ctx, infra)
    workloads_layer(ctx, infra, platform)


@dataclass(frozen=True)
class Infra:
    """What the AWS layer hands to the Kubernetes layers."""
    k8s_provider: pulumi.ProviderResource  # every Kubernetes resource uses it
    cluster_name: pulumi.Input[str]
    system_nodes: pulumi.Resource  # CPU work (monitoring, Dynamo platform, downloads) waits for it
    gpu_nodes: dict[str, pulumi.Resource]  # "prefill" / "decode" -> node group
    efs_storage_class: pulumi.Resource  # RWX, for the model store and results PVCs
    gp3_storage_class: pulumi.Resource  # default RWO, for etcd/NATS/Prometheus/Grafana
    results_bucket: aws.s3.BucketV2
    oidc_provider_arn: pulumi.Input[str]  # for IRSA roles of later layers
    oidc_provider_url: pulumi.Input[str]


@dataclass(frozen=True)
class Platform:
    """What the platform layer hands to the workloads."""
    namespaces: dict[str, pulumi.Resource]  # "gpu-operator", "monitoring", "dynamo-system", "lab"
    hf_token_secret: pulumi.Resource | None  # Secret in the lab namespace (None: no token set)
    gpu_operator: pulumi.Resource
    efa_device_plugin: pulumi.Resource
    monitoring: pulumi.Resource  # kube-prometheus-stack: before anything making ServiceMonitors
    pushgateway_url: str  # in-cluster URL the results export pushes to
    dynamo_platform: pulumi.Resource  # operator + webhook ready: before any DGD


# --- 1. AWS: network, cluster and node groups, storage, results bucket, Kubernetes provider ---
def aws_layer(ctx: LabContext) -> Infra:
    raise NotImplementedError("aws_layer")


# --- 2. Platform: base, GPU Operator, EFA device plugin, monitoring, Dynamo platform ----------
def platform_layer(ctx: LabContext, infra: Infra) -> Platform:
    raise NotImplementedError("platform_layer")


# --- 3. Workloads: model store, serving graph, benchmarks, results export ---------------------
def workloads_layer(ctx: LabContext, infra: Infra, platform: Platform) -> None:
    raise NotImplementedError("workloads_layer")
