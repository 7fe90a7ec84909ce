"""Network policy: each of the lab's namespaces denies all traffic by default and allows only
the flows the lab needs. The VPC CNI enforces it once its network policy agent is on
(components/cluster.py).

Why it matters: etcd and NATS of the Dynamo platform run without authentication (etcd
`auth.rbac.create: false`, NATS without TLS or authorization: ai-dynamo/dynamo@9e2a2cc
deploy/helm/charts/platform/values.yaml, the 0.9 line), so without policy any pod could read
or rewrite the serving graph's discovery and events; the Pushgateway takes any push, and the
model-download Job holds the Hugging Face token.

Flows allowed (tests/test_network_policies.py evaluates them, and a few forbidden ones):
- DNS (kube-dns) from every pod; the Kubernetes API from the pods that call it.
- lab: Dynamo pods (frontend, workers) among themselves on any port (request plane, response
  streams and NIXL side channels use ports chosen at run time); Dynamo pods -> etcd/NATS;
  benchmark Jobs -> frontend; benchmark Jobs -> the DCGM exporters' port (GPU Operator
  namespace: AIPerf's GPU telemetry); export Job -> Pushgateway; the Jobs that fetch packages or
  the model (download, benchmarks, wheelhouse) -> HTTPS outside the VPC (Hugging Face, PyPI).
- Prometheus -> every pod (scrapes) and the nodes (kubelet, node exporter).
- the control plane -> the admission webhooks (Dynamo operator, Prometheus operator): from the
  control plane's own subnets (components/network.py) and on the webhook port only.
- The holders of AWS credentials (export, GPU release) -> the STS and EKS interface endpoints'
  subnets and S3's prefix-list CIDRs (the gateway endpoint's), on 443; never the internet: their
  install step reads the wheelhouse claim (components/wheelhouse.py), not PyPI.
- kube-system's volume guard -> the API server, nothing else, and nothing to it.
- Pods of a platform namespace (monitoring, dynamo-system) among themselves.

What the VPC CNI's policy agent can express: upstream NetworkPolicy only, i.e. pod and namespace
selectors and CIDRs (ipBlock); no DNS names, prefix lists or security groups. The API server is
named by the control-plane subnets (no selector reaches it: aws/aws-network-policy-agent#281)
and S3 by its prefix list's CIDRs as the gateway endpoint reports them at deploy time. An
install init container shares its pod's policy (a policy selects pods, not containers:
https://kubernetes.io/docs/concepts/services-networking/network-policies/), which is why the
credential holders' wheels come from a claim and the internet is left to pods without credentials.
The model download keeps it: the Hugging Face Hub (and its CDN) has no fixed addresses.
The GPU Operator's namespace is left without policy (no ingress rule of ours to open there):
its host-level DaemonSets do not live on the pod network; its DCGM exporter, which does, is read
by Prometheus and, through the egress rule above, by the benchmark Jobs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s

from components.base import PART_OF
from components.serving_graph import FRONTEND_PORT
from components.volume_guard import NAME as VOLUME_GUARD
from components.wheelhouse import APP as WHEELHOUSE
from jobs.cluster_facts import DCGM_EXPORTER, DCGM_EXPORTER_LABEL, DCGM_EXPORTER_PORT

ETCD_PORT, NATS_PORT, PUSHGATEWAY_PORT, DNS_PORT, HTTPS_PORT = 2379, 4222, 9091, 53, 443
# kube-prometheus-stack 65.8.1 values: prometheusOperator.tls.internalPort (its webhook).
PROMETHEUS_OPERATOR_WEBHOOK_PORT = 10250
# The operator's pods: kube-prometheus-stack templates (prometheus-operator selector labels:
# `app: <chart name>-operator`; the chart name is not overridden here, fullnameOverride is not it).
PROMETHEUS_OPERATOR = {"matchLabels": {"app": "kube-prometheus-stack-operator"}}
# The Dynamo operator's pods and webhook port: ai-dynamo/dynamo deploy/helm/charts/platform/
# components/operator/templates/deployment.yaml (`control-plane: controller-manager`, 9443 webhook-server).
DYNAMO_OPERATOR = {"matchLabels": {"control-plane": "controller-manager"}}
DYNAMO_WEBHOOK_PORT = 9443
# EKS picks one of these for Services when the cluster sets none; the API server's Service
# IP lies in it. https://docs.aws.amazon.com/eks/latest/APIReference/API_KubernetesNetworkConfigRequest.html
EKS_SERVICE_CIDRS = ("10.100.0.0/16", "172.20.0.0/16")
INTERNET = "0.0.0.0/0"

NAME = "app.kubernetes.io/name"
NAMESPACE_NAME = "kubernetes.io/metadata.name"  # set by Kubernetes on every namespace
# The operator labels DGD pods by role (its PodMonitors select on it): dynamo-platform chart,
# components/operator/templates/prometheus.yaml.
DYNAMO_ROLE = "nvidia.com/dynamo-component-type"
DYNAMO_PODS = {"matchExpressions": [{"key": DYNAMO_ROLE, "operator": "Exists"}]}
FRONTEND = {"matchLabels": {DYNAMO_ROLE: "frontend"}}
# Chart names as the pods' app.kubernetes.io/name (Bitnami etcd, nats-io NATS, the Prometheus
# operator's Prometheus pods, prometheus-pushgateway), as long as no nameOverride is set:
# prometheus-operator pkg/prometheus/server/statefulset.go (podSelectorLabels),
# prometheus-community/helm-charts charts/prometheus-pushgateway/templates/_helpers.tpl.
ETCD, NATS = {"matchLabels": {NAME: "etcd"}}, {"matchLabels": {NAME: "nats"}}
PROMETHEUS = {"matchLabels": {NAME: "prometheus"}}
PUSHGATEWAY = {"matchLabels": {NAME: "prometheus-pushgateway"}}
# The lab's own Jobs (components/benchmark_jobs.py, model_store.py, results_export.py,
# kv_transport_check.py, gpu_release.py).
BENCHMARK, EXPORT, DOWNLOAD = "benchmark", "results-export", "model-download"
KV_CHECK, GPU_RELEASE = "kv-transport-check", "gpu-release"
GRAPH_READY = "graph-ready"  # components/serving_graph.py READY_APP
# The workers' system port (metrics), which the KV transport check reads: dynamo.vllm's
# DYN_SYSTEM_PORT as the operator sets it (the PodMonitors scrape it too).
WORKER_SYSTEM_PORT = 9090
DCGM_EXPORTER_PODS = {"matchLabels": {DCGM_EXPORTER_LABEL: DCGM_EXPORTER}}  # jobs/cluster_facts.py
ALL = {}  # a selector that selects every pod


def _job(*names: str) -> dict:
    return {"matchExpressions": [{"key": NAME, "operator": "In", "values": list(names)}]}


def _ns(namespace: str) -> dict:
    return {"matchLabels": {NAMESPACE_NAME: namespace}}


def _ip_blocks(cidrs: pulumi.Input[list[str]]) -> pulumi.Input[list[dict]]:
    """ipBlock peers of CIDRs known now (a list) or only at deploy time (an Output)."""
    if isinstance(cidrs, (list, tuple)):
        return [{"ipBlock": {"cidr": cidr}} for cidr in cidrs]
    return pulumi.Output.from_input(cidrs).apply(lambda known: [{"ipBlock": {"cidr": c}} for c in known])


def _ports(*ports: int, protocol: str = "TCP") -> list[dict]:
    return [{"protocol": protocol, "port": port} for port in ports]


@dataclass(frozen=True)
class NetworkPoliciesArgs:
    lab: str  # namespace names
    dynamo_system: str
    monitoring: str
    gpu_operator: str
    vpc_cidr: str  # nodes (and, with the VPC CNI, pod IPs)
    control_plane_cidrs: tuple[str, ...]  # the EKS cluster's subnets: its network interfaces only
    aws_endpoint_cidrs: tuple[str, ...]  # the STS and EKS interface endpoints' subnets
    s3_cidrs: pulumi.Input[list[str]]  # S3's prefix list (the gateway endpoint's cidr_blocks)
    kube_system: str = "kube-system"
    depends_on: list[pulumi.Resource] = field(default_factory=list)


def policies(args: NetworkPoliciesArgs) -> list[dict]:
    """Every NetworkPolicy of the lab, as manifests."""
    out: list[dict] = []

    def policy(namespace: str, name: str, pods: dict, *, ingress: list | None = None,
               egress: list | None = None) -> None:
        types = [t for t, rules in (("Ingress", ingress), ("Egress", egress)) if rules is not None]
        spec = {"podSelector": pods, "policyTypes": types}
        spec |= {"ingress": ingress} if ingress is not None else {}
        spec |= {"egress": egress} if egress is not None else {}
        out.append({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                    "metadata": {"name": name, "namespace": namespace, "labels": PART_OF},
                    "spec": spec})

    kube_dns = {"to": [{"namespaceSelector": _ns("kube-system"),
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                "ports": [*_ports(DNS_PORT, protocol="UDP"), *_ports(DNS_PORT)]}
    api_server = {"to": [{"ipBlock": {"cidr": cidr}} for cidr in (*args.control_plane_cidrs, *EKS_SERVICE_CIDRS)],
                  "ports": _ports(HTTPS_PORT)}
    from_control_plane = [{"ipBlock": {"cidr": cidr}} for cidr in args.control_plane_cidrs]
    aws_endpoints = {"to": [{"ipBlock": {"cidr": cidr}} for cidr in args.aws_endpoint_cidrs],
                     "ports": _ports(HTTPS_PORT)}
    s3 = {"to": _ip_blocks(args.s3_cidrs), "ports": _ports(HTTPS_PORT)}
    outside_vpc_https = {"to": [{"ipBlock": {"cidr": INTERNET,
                                             "except": [args.vpc_cidr, *EKS_SERVICE_CIDRS]}}],
                         "ports": _ports(HTTPS_PORT)}
    from_prometheus = {"from": [{"namespaceSelector": _ns(args.monitoring), "podSelector": PROMETHEUS}]}
    same_namespace = [{"podSelector": ALL}]

    for namespace in (args.lab, args.dynamo_system, args.monitoring):
        policy(namespace, "default-deny", ALL, ingress=[], egress=[])
        policy(namespace, "allow-dns", ALL, egress=[kube_dns])

    # --- lab: the serving graph and the lab's Jobs ---
    lab = args.lab
    policy(lab, "dynamo-pods", DYNAMO_PODS,
           ingress=[{"from": [{"podSelector": DYNAMO_PODS}]}, from_prometheus],
           egress=[{"to": [{"podSelector": DYNAMO_PODS}]},
                   {"to": [{"namespaceSelector": _ns(args.dynamo_system), "podSelector": ETCD}],
                    "ports": _ports(ETCD_PORT)},
                   {"to": [{"namespaceSelector": _ns(args.dynamo_system), "podSelector": NATS}],
                    "ports": _ports(NATS_PORT)}])
    policy(lab, "frontend-from-benchmarks", FRONTEND,
           ingress=[{"from": [{"podSelector": _job(BENCHMARK, KV_CHECK)}], "ports": _ports(FRONTEND_PORT)}])
    # The KV transport check: a few requests, then the workers' NIXL counters and logs (API).
    policy(lab, "worker-metrics-from-lab-jobs", DYNAMO_PODS,
           ingress=[{"from": [{"podSelector": _job(KV_CHECK, BENCHMARK)}],
                     "ports": _ports(WORKER_SYSTEM_PORT)}])
    policy(lab, "kv-transport-check", _job(KV_CHECK),
           egress=[{"to": [{"podSelector": FRONTEND}], "ports": _ports(FRONTEND_PORT)},
                   {"to": [{"podSelector": DYNAMO_PODS}], "ports": _ports(WORKER_SYSTEM_PORT)}, api_server])
    # The GPU release: Events through the API; STS and the EKS API through their endpoints.
    policy(lab, "gpu-release", _job(GPU_RELEASE), egress=[api_server, aws_endpoints])
    # The graph's Ready wait: the graph, its pods and their logs through the API.
    policy(lab, "graph-ready", _job(GRAPH_READY), egress=[api_server])
    # Benchmarks: the frontend; the workers' metrics, the DCGM exporters and the NATS event
    # plane (the run's server-side evidence: AIPerf --server-metrics and --gpu-telemetry,
    # jobs/event_plane.py); pod placement and the exporters' pods (API).
    policy(lab, "benchmarks", _job(BENCHMARK),
           egress=[{"to": [{"podSelector": FRONTEND}], "ports": _ports(FRONTEND_PORT)},
                   {"to": [{"podSelector": DYNAMO_PODS}], "ports": _ports(WORKER_SYSTEM_PORT)},
                   {"to": [{"namespaceSelector": _ns(args.gpu_operator), "podSelector": DCGM_EXPORTER_PODS}],
                    "ports": _ports(DCGM_EXPORTER_PORT)},
                   {"to": [{"namespaceSelector": _ns(args.dynamo_system), "podSelector": NATS}],
                    "ports": _ports(NATS_PORT)}, api_server])
    policy(lab, "export-to-pushgateway", _job(EXPORT),
           egress=[{"to": [{"namespaceSelector": _ns(args.monitoring), "podSelector": PUSHGATEWAY}],
                    "ports": _ports(PUSHGATEWAY_PORT)}, aws_endpoints, s3])
    # Not the export nor the GPU release: they hold AWS credentials (their wheels: the wheelhouse).
    policy(lab, "jobs-to-https-outside", _job(BENCHMARK, DOWNLOAD, WHEELHOUSE), egress=[outside_vpc_https])

    # --- dynamo-system: operator (and its webhook), etcd, NATS ---
    system = args.dynamo_system
    policy(system, "same-namespace", ALL, ingress=[{"from": same_namespace}], egress=[{"to": same_namespace}])
    policy(system, "etcd-nats-from-dynamo-pods", {"matchExpressions": [
        {"key": NAME, "operator": "In", "values": ["etcd", "nats"]}]},
        ingress=[{"from": [{"namespaceSelector": _ns(lab), "podSelector": DYNAMO_PODS}],
                  "ports": _ports(ETCD_PORT, NATS_PORT)}, from_prometheus])
    policy(system, "nats-from-benchmarks", NATS,
           ingress=[{"from": [{"namespaceSelector": _ns(lab), "podSelector": _job(BENCHMARK)}],
                     "ports": _ports(NATS_PORT)}])
    # Only the control plane reaches the operator, on its webhook port; Prometheus scrapes it.
    policy(system, "operator", DYNAMO_OPERATOR,
           ingress=[{"from": from_control_plane, "ports": _ports(DYNAMO_WEBHOOK_PORT)}, from_prometheus])
    # The API from the operator and the chart's hook Jobs (egress only: nothing is admitted).
    policy(system, "api-clients", {"matchExpressions": [
        {"key": NAME, "operator": "NotIn", "values": ["etcd", "nats"]}]}, egress=[api_server])

    # --- monitoring: Prometheus, Grafana, the Prometheus operator, Pushgateway ---
    mon = args.monitoring
    policy(mon, "same-namespace", ALL, ingress=[{"from": same_namespace}],
           egress=[{"to": same_namespace}, api_server])
    policy(mon, "prometheus-scrapes", PROMETHEUS,
           egress=[{"to": [{"namespaceSelector": ALL}]}, {"to": [{"ipBlock": {"cidr": args.vpc_cidr}}]}])
    policy(mon, "pushgateway-from-export", PUSHGATEWAY,
           ingress=[{"from": [{"namespaceSelector": _ns(lab), "podSelector": _job(EXPORT)}],
                     "ports": _ports(PUSHGATEWAY_PORT)}])
    policy(mon, "operator-webhook", PROMETHEUS_OPERATOR,
           ingress=[{"from": from_control_plane, "ports": _ports(PROMETHEUS_OPERATOR_WEBHOOK_PORT)}])

    # --- kube-system: the volume guard (components/volume_guard.py) talks to the API only ---
    policy(args.kube_system, "volume-guard", {"matchLabels": {NAME: VOLUME_GUARD}},
           ingress=[], egress=[api_server])
    return out


class NetworkPolicies(pulumi.ComponentResource):
    def __init__(self, name: str, args: NetworkPoliciesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("benchlab:platform:NetworkPolicies", name, None, opts)
        for manifest in policies(args):
            meta = manifest["metadata"]
            k8s.networking.v1.NetworkPolicy(
                f"{name}-{meta['namespace']}-{meta['name']}", metadata=meta, spec=manifest["spec"],
                opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on))
        self.register_outputs({})
