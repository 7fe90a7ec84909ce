"""Composition of the lab, in order. Each layer is a function that takes what it needs from
the layers before it and returns what later layers need; the dependency graph is explicit in
the resources' options, so Pulumi runs everything that does not need a GPU node while the GPU
node groups boot (GPU hours are the cost).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from components.base import HF_TOKEN_SECRET, Base, BaseArgs
from components.benchmark_jobs import Benchmarks, BenchmarksArgs, shipped_code_sha
from components.cluster import ROLE_LABEL, ClusterArgs, EksCluster, control_plane_log_group
from components.dynamo_platform import DynamoPlatform, DynamoPlatformArgs
from components.efa_device_plugin import EfaDevicePlugin, EfaDevicePluginArgs
from components.gpu_release import GpuRelease, GpuReleaseArgs
from components.gpu_restore import GpuGroupSize, GpuRestore, GpuRestoreArgs, log_group_name
from components.gpu_operator import GpuOperator, GpuOperatorArgs
from components.kv_transport_check import KvTransportCheck, KvTransportCheckArgs
from components.model_store import ModelStore, ModelStoreArgs
from components.monitoring import Monitoring, MonitoringArgs
from components.lab_key import LabKey, LabKeyArgs
from components.network import Network, NetworkArgs, flow_log_group
from components.network_policies import NetworkPolicies, NetworkPoliciesArgs
from components.node_groups import NodeGroups, NodeGroupsArgs, NodeGroupSpec
from components.results_bucket import ResultsBucket, ResultsBucketArgs
from components.results_export import ResultsExport, ResultsExportArgs
from components.serving_graph import ServingGraph, ServingGraphArgs, frontend_url
from components.storage import Storage, StorageArgs
from components.volume_guard import VolumeGuard, VolumeGuardArgs
from components.wheelhouse import Wheelhouse, WheelhouseArgs
from facts.instances import facts
from facts.wheel_locks import BOTO3
from facts.node_capacity import NODE_LIMITS
from jobs.names import GPU_GROUPS, NODE_GROUPS
from stacks import pod_fit
from stacks.config import ConfigError, Secrets, StackConfig
from stacks.run_plan import run_plan
from stacks.serving_spec import KVBM_METRICS_PORT_NAME, graph_manifest

PROJECT = "benchlab"
# Prefix of the workloads' resource names, which become Kubernetes object names (Jobs, ConfigMaps,
# RBAC: `<resource name>-<8 hex>`). Not the stack name: the objects live in the stack's own
# cluster, and a Job's name must stay within the 63 characters of its pods' job-name label.
WORKLOADS = PROJECT


@dataclass(frozen=True)
class StackContext:
    cfg: StackConfig
    secrets: Secrets
    stack: str
    name: str  # prefix of every resource name: benchlab-<stack>
    tags: dict[str, str]
    aws_provider: aws.Provider

    def opts(self, **kwargs: Any) -> pulumi.ResourceOptions:
        """Options for a top-level component: the tagged AWS provider, plus `kwargs`."""
        return pulumi.ResourceOptions(providers={"aws": self.aws_provider}, **kwargs)


def build(cfg: StackConfig, secrets: Secrets, stack: str) -> None:
    # Before any resource: a pod that fits no node would leave its Job Pending until its deadline.
    unfit = pod_fit.problems(cfg)
    if unfit:
        raise ConfigError(unfit)
    tags = {"project": PROJECT, "stack": stack, "owner": cfg.owner}
    # Every AWS resource gets the tags through the provider's default tags, so a forgotten
    # lab can be found and its cost attributed.
    aws_provider = aws.Provider("aws", region=cfg.region, default_tags={"tags": tags})
    ctx = StackContext(cfg, secrets, stack, f"{PROJECT}-{stack}", tags, aws_provider)
    infra = aws_layer(ctx)
    platform = platform_layer(ctx, infra)
    workloads_layer(ctx, infra, platform)


@dataclass(frozen=True)
class Infra:
    """What the AWS layer hands to the Kubernetes layers."""
    k8s_provider: pulumi.ProviderResource  # every Kubernetes resource uses it
    cluster_name: pulumi.Input[str]
    system_nodes: pulumi.Resource  # CPU work (monitoring, Dynamo platform, downloads) waits for it
    gpu_node_groups: dict[str, str]  # "prefill" / "decode" -> EKS node group name
    efs_storage_class: pulumi.Resource  # RWX, for the model store and results PVCs
    gp3_storage_class: pulumi.Resource  # default RWO, for etcd/NATS/Prometheus/Grafana
    results_bucket: aws.s3.Bucket
    oidc_provider_arn: pulumi.Input[str]  # for IRSA roles of later layers
    oidc_provider_url: pulumi.Input[str]
    network: Network  # its subnet plan and S3's CIDRs, for the network policies


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
def aws_layer(ctx: StackContext) -> Infra:
    cfg = ctx.cfg
    key = LabKey(ctx.name, LabKeyArgs(region=cfg.region, log_groups=(
        control_plane_log_group(ctx.name), flow_log_group(ctx.name), log_group_name(ctx.name))),
        opts=ctx.opts())
    network = Network(ctx.name, NetworkArgs(
        cidr=cfg.vpc_cidr, availability_zones=cfg.availability_zones, cluster_name=ctx.name,
        nat_zone=cfg.gpu_availability_zone, region=cfg.region,
        flow_log_retention_days=cfg.flow_logs.retention_days, log_key_arn=key.key.arn), opts=ctx.opts())
    cluster = EksCluster(ctx.name, ClusterArgs(
        cluster_name=ctx.name, kubernetes_version=cfg.kubernetes_version, vpc_id=network.vpc_id,
        control_plane_subnet_ids=network.control_plane_subnet_ids,
        public_access_cidrs=cfg.public_access_cidrs, admin_principal_arns=cfg.cluster_access.admins,
        log_retention_days=cfg.control_plane_logs.retention_days, key_arn=key.key.arn, tags=ctx.tags),
        opts=ctx.opts())
    specs = _node_group_specs(cfg, network)
    nodes = NodeGroups(ctx.name, NodeGroupsArgs(
        cluster=cluster.cluster, cluster_name=ctx.name, kubernetes_version=cfg.kubernetes_version,
        vpc_id=network.vpc_id, cluster_security_group_id=cluster.security_group_id,
        groups=specs, ssm_sessions=cfg.cluster_access.node_ssm_sessions,
        joins_after=[cluster.vpc_cni], tags=ctx.tags), opts=ctx.opts())
    # A new run brings back the GPU node groups a release scaled to zero, on a plain `up`.
    GpuRestore(ctx.name, GpuRestoreArgs(
        region=cfg.region, cluster_name=ctx.name,
        run_key=run_plan(cfg, shipped_code_sha())["config_hash"],
        groups={spec.role: GpuGroupSize(
            node_group=nodes.names[spec.role], min_size=spec.desired_size,
            desired_size=spec.desired_size, max_size=spec.max_size, resource=nodes.groups[spec.role])
            for spec in specs if spec.role in GPU_GROUPS}, log_key_arn=key.key.arn), opts=ctx.opts())
    storage = Storage(ctx.name, StorageArgs(
        cluster_name=ctx.name, vpc_id=network.vpc_id, node_subnet_ids=network.private_subnet_ids,
        node_security_group_ids=[nodes.system_security_group_id, nodes.gpu_security_group_id],
        oidc_provider_arn=cluster.oidc_provider_arn, oidc_provider_url=cluster.oidc_provider_url,
        system_nodes=nodes.groups["system"], k8s_provider=cluster.k8s_provider,
        volume_tags=ctx.tags), opts=ctx.opts())
    results = ResultsBucket(ctx.name, ResultsBucketArgs(
        name_prefix=ctx.name, retain_on_destroy=cfg.results.retain_bucket_on_destroy), opts=ctx.opts())

    pulumi.export("clusterName", cluster.cluster_name)
    pulumi.export("kubeconfig", cluster.kubeconfig)  # secret: it grants access to the cluster
    pulumi.export("nodeGroups", nodes.names)
    pulumi.export("efsId", storage.file_system.id)
    pulumi.export("resultsBucket", results.bucket_name)
    pulumi.export("region", cfg.region)
    return Infra(
        k8s_provider=cluster.k8s_provider, cluster_name=cluster.cluster_name,
        system_nodes=nodes.groups["system"],
        gpu_node_groups={role: nodes.names[role] for role in GPU_GROUPS},
        efs_storage_class=storage.efs_storage_class, gp3_storage_class=storage.gp3_storage_class,
        results_bucket=results.bucket,
        oidc_provider_arn=cluster.oidc_provider_arn, oidc_provider_url=cluster.oidc_provider_url,
        network=network)


def _node_group_specs(cfg: StackConfig, network: Network) -> tuple[NodeGroupSpec, ...]:
    """System nodes spread over every zone; GPU nodes pinned to the GPU zone's subnet, where
    their placement group is."""
    specs = []
    for role in NODE_GROUPS:
        group = getattr(cfg.node_groups, role)
        gpu = role != "system"
        zones = (cfg.gpu_availability_zone,) if gpu else cfg.availability_zones
        specs.append(NodeGroupSpec(
            role=role, instance_type=group.instance_type, desired_size=cfg.desired_nodes(role),
            max_size=group.count, disk_gib=group.disk_gib, gpu=gpu,
            efa_interfaces=facts(group.instance_type).efa_interfaces if gpu else 0,
            subnet_ids=[network.private_subnet_by_zone[zone] for zone in zones], zones=zones,
            instance_store=NODE_LIMITS[group.instance_type].instance_store_gb > 0))
    return tuple(specs)


# --- 2. Platform: base, GPU Operator, EFA device plugin, monitoring, Dynamo platform ----------
NAMESPACES = {"gpu-operator": "gpu-operator", "monitoring": "monitoring",
              "dynamo-system": "dynamo-system", "lab": PROJECT}


def platform_layer(ctx: StackContext, infra: Infra) -> Platform:
    cfg = ctx.cfg
    # Children inherit the cluster's Kubernetes provider.
    opts = pulumi.ResourceOptions(providers={"kubernetes": infra.k8s_provider})
    gp3 = infra.gp3_storage_class.metadata.name
    base = Base(ctx.name, BaseArgs(
        namespaces=NAMESPACES, token_namespace="lab", hf_token=ctx.secrets.hf_token,
        # GPU Operator: host access. Lab: the EFA workers add IPC_LOCK (RDMA pins memory), which
        # baseline forbids (Pod Security Standards, "Capabilities"); else restricted.
        enforce={"gpu-operator": "privileged", "monitoring": "baseline", "dynamo-system": "baseline",
                 "lab": "privileged" if cfg.one_efa_per_worker() else "restricted"},
        # After the storage classes, so destroy deletes the namespaces (and their PVCs) first.
        depends_on=[infra.gp3_storage_class, infra.efs_storage_class]), opts=opts)
    ns = base.namespaces
    # What owns gp3 volumes waits for the guard: destroy deletes those first, then waits here
    # until the CSI driver has deleted their EBS volumes, then removes the StorageClass and add-on.
    guard = VolumeGuard(ctx.name, VolumeGuardArgs(
        storage_class=gp3, image=cfg.deployed_image("client"), cpu_node_selector={ROLE_LABEL: "system"},
        guarded_namespaces={NAMESPACES[role]: ns[role] for role in ("monitoring", "dynamo-system")},
        depends_on=[infra.gp3_storage_class, infra.system_nodes]), opts=opts)
    # With the namespaces, before any workload: a default deny and the flows the lab needs.
    NetworkPolicies(ctx.name, NetworkPoliciesArgs(
        lab=NAMESPACES["lab"], dynamo_system=NAMESPACES["dynamo-system"],
        monitoring=NAMESPACES["monitoring"], gpu_operator=NAMESPACES["gpu-operator"],
        vpc_cidr=cfg.vpc_cidr, control_plane_cidrs=tuple(infra.network.plan.control_plane),
        aws_endpoint_cidrs=tuple(infra.network.plan.endpoints), s3_cidrs=infra.network.s3_cidrs,
        depends_on=[ns[role] for role in ("lab", "dynamo-system", "monitoring")]), opts=opts)
    # Monitoring and the Dynamo platform run on CPU nodes with gp3 volumes: they wait for the
    # system nodes and gp3, never for a GPU node group, and install while the GPU nodes boot.
    cpu_ready = [infra.system_nodes, infra.gp3_storage_class, guard.deployment]
    monitoring = Monitoring(ctx.name, MonitoringArgs(
        namespace=NAMESPACES["monitoring"],
        kube_prometheus_stack_version=cfg.versions.kube_prometheus_stack,
        pushgateway_version=cfg.versions.pushgateway,
        retention=cfg.monitoring.retention,
        prometheus_storage_gib=cfg.monitoring.prometheus_storage_gib,
        grafana_storage_gib=cfg.monitoring.grafana_storage_gib, storage_class=gp3,
        admin_password=ctx.secrets.grafana_admin_password,
        depends_on=[*cpu_ready, ns["monitoring"]]), opts=opts)
    # The GPU Operator and the EFA plugin need no GPU node to install: their DaemonSets
    # schedule on each GPU node as it joins. They wait for the system nodes only (the GPU
    # Operator also for kube-prometheus-stack: the DCGM exporter's ServiceMonitor).
    gpu_operator = GpuOperator(ctx.name, GpuOperatorArgs(
        version=cfg.versions.gpu_operator, namespace=ns["gpu-operator"].metadata.name,
        depends_on=[infra.system_nodes, monitoring.stack]), opts=opts)
    efa = EfaDevicePlugin(ctx.name, EfaDevicePluginArgs(
        version=cfg.versions.efa_device_plugin, depends_on=[infra.system_nodes]), opts=opts)
    # The operator creates PodMonitors: after kube-prometheus-stack.
    dynamo = DynamoPlatform(ctx.name, DynamoPlatformArgs(
        version=cfg.versions.dynamo, namespace=NAMESPACES["dynamo-system"],
        watched_namespace=NAMESPACES["lab"], prometheus_url=monitoring.prometheus_url, storage_class=gp3,
        remove_crds_on_destroy=cfg.destroy.remove_dynamo_crds,
        depends_on=[*cpu_ready, ns["dynamo-system"], monitoring.stack]), opts=opts)

    pulumi.export("grafanaAdminPassword", monitoring.admin_password)  # secret
    pulumi.export("grafanaService", monitoring.grafana_service)  # kubectl port-forward svc/...
    return Platform(
        namespaces=ns, hf_token_secret=base.hf_token_secret, gpu_operator=gpu_operator.release,
        efa_device_plugin=efa.release, monitoring=monitoring.stack,
        pushgateway_url=monitoring.pushgateway_url, dynamo_platform=dynamo.release)


# --- 3. Workloads: model store, serving graph, benchmarks, results export ---------------------
def workloads_layer(ctx: StackContext, infra: Infra, platform: Platform) -> None:
    cfg = ctx.cfg
    namespace = NAMESPACES["lab"]
    opts = pulumi.ResourceOptions(providers={"kubernetes": infra.k8s_provider, "aws": ctx.aws_provider})
    cpu_nodes = {ROLE_LABEL: "system"}
    token = platform.hf_token_secret
    # The credential holders' boto3, fetched by a Job without credentials: they install from it
    # and never reach the internet themselves (components/wheelhouse.py). First of the Jobs.
    wheelhouse = Wheelhouse(f"{WORKLOADS}-wheelhouse", WheelhouseArgs(
        namespace=namespace, storage_class=infra.efs_storage_class.metadata.name, lock=BOTO3,
        image=cfg.deployed_image("client"), cpu_node_selector=cpu_nodes,
        depends_on=[platform.namespaces["lab"], infra.efs_storage_class, infra.system_nodes]), opts=opts)
    # The download needs no GPU: it runs while the GPU node groups boot.
    store = ModelStore(f"{WORKLOADS}-models", ModelStoreArgs(
        namespace=namespace, storage_class=infra.efs_storage_class.metadata.name,
        model_id=cfg.model.id, revision=cfg.model.revision, model_store_gib=cfg.model.store_gib,
        results_gib=cfg.results.storage_gib,
        download_timeout_minutes=cfg.model.download_timeout_minutes,
        hf_token_secret=None if token is None else HF_TOKEN_SECRET,
        image=cfg.deployed_image("client"), cpu_node_selector=cpu_nodes,
        depends_on=[platform.namespaces["lab"], infra.efs_storage_class, infra.system_nodes, wheelhouse.job,
                    *([token] if token is not None else [])]), opts=opts)

    manifest = graph_manifest(cfg)
    # No edge to the GPU node groups: nothing in the program depends on them, so `pulumi
    # destroy` deletes them first, while the graph is deleted through the operator (EKS drains
    # a node for at most 5 minutes before terminating it:
    # https://docs.aws.amazon.com/eks/latest/userguide/delete-managed-node-group.html). On up,
    # the graph's Ready wait covers the nodes' boot.
    graph = ServingGraph(f"{WORKLOADS}-serving", ServingGraphArgs(
        manifest=manifest, namespace=namespace,
        ready_timeout_minutes=cfg.serving.ready_timeout_minutes,
        depends_on=[store.download, platform.dynamo_platform, platform.gpu_operator,
                    *([platform.efa_device_plugin] if cfg.serving.mode == "disagg" else [])],
        image=cfg.deployed_image("client"),
        cpu_node_selector=cpu_nodes, kvbm_metrics_port=KVBM_METRICS_PORT_NAME), opts=opts)

    plan = run_plan(cfg, shipped_code_sha())
    # Beside the results volume, before any GPU node is needed: the lease also guards a run
    # that never reaches its export; the release after the run waits for the export's marker.
    GpuRelease(f"{WORKLOADS}-gpu-release", GpuReleaseArgs(
        namespace=namespace, region=cfg.region, cluster_name=ctx.name,
        node_groups=tuple(infra.gpu_node_groups[group] for group in GPU_GROUPS),
        grace_minutes=cfg.gpu_release.grace_minutes, lease_hours=cfg.gpu_release.lease_hours,
        config_hash=plan["config_hash"], graph=cfg.serving.mode,
        oidc_provider_arn=infra.oidc_provider_arn, oidc_provider_url=infra.oidc_provider_url,
        image=cfg.deployed_image("client"),
        cpu_node_selector=cpu_nodes, depends_on=[store.results_pvc, infra.system_nodes, wheelhouse.job]),
        opts=opts)

    # The KV path, proven from the workers' evidence, before any benchmark: a wrong one stops here.
    name = manifest["metadata"]["name"]
    disagg = cfg.serving.mode == "disagg"
    check = KvTransportCheck(f"{WORKLOADS}-kv-check", KvTransportCheckArgs(
        namespace=namespace, graph_name=name, frontend_url=frontend_url(name), model=cfg.model.id,
        kv_transport=cfg.serving.kv_transport if disagg else "none",
        kv_router=cfg.serving.router_mode == "kv",  # serving_spec: DYN_ROUTER_MODE
        config_hash=plan["config_hash"], image=cfg.deployed_image("client"),
        cpu_node_selector=cpu_nodes,
        depends_on=[graph.ready, store.results_pvc]), opts=opts)

    bench = Benchmarks(f"{WORKLOADS}-bench", BenchmarksArgs(
        namespace=namespace, plan=plan, modes=cfg.bench.modes(),
        image=cfg.deployed_image("client"), cpu_node_selector=cpu_nodes,
        depends_on=[graph.ready, check.job, store.results_pvc],
        gpu_operator_namespace=NAMESPACES["gpu-operator"]), opts=opts)
    ResultsExport(f"{WORKLOADS}-export", ResultsExportArgs(
        namespace=namespace, region=cfg.region, bucket_name=infra.results_bucket.bucket,
        bucket_arn=infra.results_bucket.arn, oidc_provider_arn=infra.oidc_provider_arn,
        oidc_provider_url=infra.oidc_provider_url, pushgateway_url=platform.pushgateway_url,
        image=cfg.deployed_image("client"),
        plan_configmap=bench.plan_configmap, config_hash=bench.plan["config_hash"],
        cpu_node_selector=cpu_nodes, depends_on=[bench.jobs[-1], wheelhouse.job]), opts=opts)

    pulumi.export("servingGraph", name)
    pulumi.export("frontend", f"{namespace}/{name}-frontend")  # kubectl port-forward svc/...
    pulumi.export("frontendUrl", frontend_url(name))  # in-cluster
    pulumi.export("benchConfigHash", bench.plan["config_hash"])
