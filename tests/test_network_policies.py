"""The NetworkPolicies the program renders, evaluated (tests/netpol.py) for every flow the lab
needs (allowed) and for flows it must not have (denied); the VPC CNI enforces them."""
from __future__ import annotations

import json

import pytest
import yaml

from cli import offline
from components.network_policies import ETCD_PORT, NATS_PORT, NetworkPoliciesArgs, policies
from components.serving_graph import FRONTEND_PORT
from tests.conftest import REPO
from tests.netpol import External, Pod, allowed

LAB, SYSTEM, MON = "benchlab", "dynamo-system", "monitoring"
ROLE = "nvidia.com/dynamo-component-type"
FRONTEND = Pod(LAB, {ROLE: "frontend"})
PREFILL = Pod(LAB, {ROLE: "worker", "nvidia.com/dynamo-sub-component-type": "prefill"})
DECODE = Pod(LAB, {ROLE: "worker", "nvidia.com/dynamo-sub-component-type": "decode"})
BENCHMARK = Pod(LAB, {"app.kubernetes.io/name": "benchmark"})
EXPORT = Pod(LAB, {"app.kubernetes.io/name": "results-export"})
DOWNLOAD = Pod(LAB, {"app.kubernetes.io/name": "model-download"})
KV_CHECK = Pod(LAB, {"app.kubernetes.io/name": "kv-transport-check"})
GPU_RELEASE = Pod(LAB, {"app.kubernetes.io/name": "gpu-release"})
GRAPH_READY = Pod(LAB, {"app.kubernetes.io/name": "graph-ready"})
WHEELHOUSE = Pod(LAB, {"app.kubernetes.io/name": "wheelhouse"})
ETCD = Pod(SYSTEM, {"app.kubernetes.io/name": "etcd"})
NATS = Pod(SYSTEM, {"app.kubernetes.io/name": "nats"})
OPERATOR = Pod(SYSTEM, {"app.kubernetes.io/name": "dynamo-operator", "control-plane": "controller-manager"})
NEW_SYSTEM_POD = Pod(SYSTEM, {"app.kubernetes.io/name": "something-new"})
PROMETHEUS = Pod(MON, {"app.kubernetes.io/name": "prometheus"})
GRAFANA = Pod(MON, {"app.kubernetes.io/name": "grafana"})
PUSHGATEWAY = Pod(MON, {"app.kubernetes.io/name": "prometheus-pushgateway"})
PROMETHEUS_OPERATOR = Pod(MON, {"app": "kube-prometheus-stack-operator"})
DCGM_EXPORTER = Pod("gpu-operator", {"app": "nvidia-dcgm-exporter"})
GPU_OPERATOR = Pod("gpu-operator", {"app": "gpu-operator"})
KUBE_DNS = Pod("kube-system", {"k8s-app": "kube-dns"})
VOLUME_GUARD = Pod("kube-system", {"app.kubernetes.io/name": "ebs-volume-guard"})
STRANGER = Pod("default", {"app": "anything"})  # any other pod of the cluster
# 10.42.0.0/16 over two zones: private /18s at .0 and .64, public /19s at .128 and .192, and
# in 10.42.160.0/19 the /28s: control plane .160.0 and .160.16, AWS endpoints .160.32 and .160.48.
API_SERVER = External("10.42.160.5")  # an EKS control-plane ENI in its own subnet
VPC_ADDRESS = External("10.42.10.20")  # a node or a pod (private subnet): not the control plane
AWS_ENDPOINT = External("10.42.160.40")  # the STS or EKS interface endpoint's ENI
API_SERVICE = External("172.20.0.1")  # the kubernetes Service
NODE = External("10.42.12.34")
HUGGING_FACE = External("18.239.50.10")  # outside the VPC
PYPI = External("151.101.0.223")  # outside the VPC
S3 = External("52.216.0.1")

NEEDED = [
    ("benchmark -> frontend", BENCHMARK, FRONTEND, FRONTEND_PORT, "TCP"),
    ("frontend -> worker (request plane)", FRONTEND, PREFILL, 34567, "TCP"),
    ("worker -> frontend (response stream)", DECODE, FRONTEND, 41234, "TCP"),
    ("prefill <-> decode (NIXL side channel)", PREFILL, DECODE, 5600, "TCP"),
    ("worker -> etcd", DECODE, ETCD, ETCD_PORT, "TCP"),
    ("frontend -> etcd", FRONTEND, ETCD, ETCD_PORT, "TCP"),
    ("worker -> NATS", PREFILL, NATS, NATS_PORT, "TCP"),
    ("frontend -> NATS", FRONTEND, NATS, NATS_PORT, "TCP"),
    ("operator -> etcd", OPERATOR, ETCD, ETCD_PORT, "TCP"),
    ("Prometheus scrapes frontend", PROMETHEUS, FRONTEND, FRONTEND_PORT, "TCP"),
    ("Prometheus scrapes worker system port", PROMETHEUS, DECODE, 9090, "TCP"),
    ("Prometheus scrapes KVBM metrics", PROMETHEUS, PREFILL, 6880, "TCP"),
    ("Prometheus scrapes NATS", PROMETHEUS, NATS, 7777, "TCP"),
    ("Prometheus scrapes DCGM exporter", PROMETHEUS, DCGM_EXPORTER, 9400, "TCP"),
    ("Prometheus scrapes Pushgateway", PROMETHEUS, PUSHGATEWAY, 9091, "TCP"),
    ("Prometheus scrapes kubelet", PROMETHEUS, NODE, 10250, "TCP"),
    ("Prometheus -> API (discovery)", PROMETHEUS, API_SERVICE, 443, "TCP"),
    ("Grafana -> Prometheus", GRAFANA, PROMETHEUS, 9090, "TCP"),
    ("Grafana sidecar -> API", GRAFANA, API_SERVER, 443, "TCP"),
    ("export -> Pushgateway", EXPORT, PUSHGATEWAY, 9091, "TCP"),
    ("export -> S3", EXPORT, S3, 443, "TCP"),
    # the Hub has no fixed addresses: the download keeps HTTPS outside the VPC
    ("download -> Hugging Face", DOWNLOAD, HUGGING_FACE, 443, "TCP"),
    ("wheelhouse -> PyPI (the credential holders' locked wheels)", WHEELHOUSE, PYPI, 443, "TCP"),
    ("benchmark -> PyPI (pinned AIPerf)", BENCHMARK, HUGGING_FACE, 443, "TCP"),
    ("benchmark -> API (pod placement)", BENCHMARK, API_SERVICE, 443, "TCP"),
    ("operator -> API", OPERATOR, API_SERVER, 443, "TCP"),
    ("benchmark -> NATS (event plane)", BENCHMARK, NATS, NATS_PORT, "TCP"),
    ("benchmark -> worker metrics (server metrics)", BENCHMARK, DECODE, 9090, "TCP"),
    ("benchmark -> DCGM exporter (GPU telemetry)", BENCHMARK, DCGM_EXPORTER, 9400, "TCP"),
    ("KV check -> frontend", KV_CHECK, FRONTEND, FRONTEND_PORT, "TCP"),
    ("KV check -> worker metrics", KV_CHECK, PREFILL, 9090, "TCP"),
    ("KV check -> API (pods, logs)", KV_CHECK, API_SERVICE, 443, "TCP"),
    ("GPU release -> API (Events)", GPU_RELEASE, API_SERVICE, 443, "TCP"),
    ("graph Ready wait -> API (graph, pods, logs)", GRAPH_READY, API_SERVICE, 443, "TCP"),
    ("GPU release -> STS / EKS endpoint", GPU_RELEASE, AWS_ENDPOINT, 443, "TCP"),
    ("export -> STS endpoint", EXPORT, AWS_ENDPOINT, 443, "TCP"),
    ("volume guard -> API", VOLUME_GUARD, API_SERVICE, 443, "TCP"),
    ("volume guard -> API server", VOLUME_GUARD, API_SERVER, 443, "TCP"),
    ("API server -> Dynamo webhook", API_SERVER, OPERATOR, 9443, "TCP"),
    ("API server -> Prometheus operator webhook", API_SERVER, PROMETHEUS_OPERATOR, 10250, "TCP"),
    *((f"{pod.labels} DNS", pod, KUBE_DNS, 53, "UDP")
      for pod in (FRONTEND, DECODE, BENCHMARK, EXPORT, DOWNLOAD, WHEELHOUSE, ETCD, OPERATOR, PROMETHEUS,
                  GRAFANA)),
]
FORBIDDEN = [
    ("benchmark -> etcd", BENCHMARK, ETCD, ETCD_PORT, "TCP"),
    ("download (HF token) -> NATS", DOWNLOAD, NATS, NATS_PORT, "TCP"),
    ("download -> frontend", DOWNLOAD, FRONTEND, FRONTEND_PORT, "TCP"),
    ("benchmark -> worker", BENCHMARK, DECODE, 34567, "TCP"),
    ("any pod -> etcd", STRANGER, ETCD, ETCD_PORT, "TCP"),
    ("any pod -> NATS", STRANGER, NATS, NATS_PORT, "TCP"),
    ("any pod -> frontend", STRANGER, FRONTEND, FRONTEND_PORT, "TCP"),
    ("any pod -> Pushgateway", STRANGER, PUSHGATEWAY, 9091, "TCP"),
    ("any pod -> Grafana", STRANGER, GRAFANA, 3000, "TCP"),
    ("frontend -> Pushgateway", FRONTEND, PUSHGATEWAY, 9091, "TCP"),
    ("Grafana -> etcd", GRAFANA, ETCD, ETCD_PORT, "TCP"),
    ("worker -> internet", DECODE, HUGGING_FACE, 443, "TCP"),
    ("worker -> API", DECODE, API_SERVICE, 443, "TCP"),
    ("download -> API", DOWNLOAD, API_SERVICE, 443, "TCP"),
    ("download -> plain HTTP outside", DOWNLOAD, HUGGING_FACE, 80, "TCP"),
    ("KV check -> worker request plane", KV_CHECK, DECODE, 34567, "TCP"),
    ("KV check -> etcd", KV_CHECK, ETCD, ETCD_PORT, "TCP"),
    ("KV check -> internet", KV_CHECK, HUGGING_FACE, 443, "TCP"),
    ("GPU release -> frontend", GPU_RELEASE, FRONTEND, FRONTEND_PORT, "TCP"),
    ("graph Ready wait -> internet", GRAPH_READY, HUGGING_FACE, 443, "TCP"),
    ("benchmark -> DCGM exporter, another port", BENCHMARK, DCGM_EXPORTER, 5555, "TCP"),
    ("benchmark -> another GPU Operator pod", BENCHMARK, GPU_OPERATOR, 9400, "TCP"),
    ("benchmark -> an exporter-labelled pod elsewhere", BENCHMARK,
     Pod("default", {"app": "nvidia-dcgm-exporter"}), 9400, "TCP"),
    ("download -> DCGM exporter", DOWNLOAD, DCGM_EXPORTER, 9400, "TCP"),
    ("KV check -> DCGM exporter", KV_CHECK, DCGM_EXPORTER, 9400, "TCP"),
    # the webhooks: from the control plane's subnets only, on the webhook port only
    ("VPC address -> Dynamo webhook", VPC_ADDRESS, OPERATOR, 9443, "TCP"),
    ("any pod -> Dynamo webhook", STRANGER, OPERATOR, 9443, "TCP"),
    ("any pod -> operator :8080", STRANGER, OPERATOR, 8080, "TCP"),
    ("control plane -> operator, another port", API_SERVER, OPERATOR, 8080, "TCP"),
    ("control plane -> a new pod in dynamo-system", API_SERVER, NEW_SYSTEM_POD, 9443, "TCP"),
    ("VPC address -> a new pod in dynamo-system", VPC_ADDRESS, NEW_SYSTEM_POD, 8080, "TCP"),
    ("VPC address -> Prometheus operator webhook", VPC_ADDRESS, PROMETHEUS_OPERATOR, 10250, "TCP"),
    ("control plane -> Grafana :10250", API_SERVER, GRAFANA, 10250, "TCP"),
    ("VPC address -> Prometheus :10250", VPC_ADDRESS, PROMETHEUS, 10250, "TCP"),
    # the API is the control plane's subnets (and the kubernetes Service), not the VPC
    ("operator -> a VPC address on 443", OPERATOR, VPC_ADDRESS, 443, "TCP"),
    ("GPU release -> a VPC address on 443", GPU_RELEASE, VPC_ADDRESS, 443, "TCP"),
    # the AWS endpoints: for the holders of AWS credentials
    ("download -> AWS endpoint", DOWNLOAD, AWS_ENDPOINT, 443, "TCP"),
    ("benchmark -> AWS endpoint", BENCHMARK, AWS_ENDPOINT, 443, "TCP"),
    # the holders of AWS credentials never reach the internet (their wheels
    # come from the wheelhouse), the wheelhouse Job reaches PyPI and nothing of the cluster's
    ("export -> internet", EXPORT, PYPI, 443, "TCP"),
    ("gpu-release -> internet", GPU_RELEASE, PYPI, 443, "TCP"),
    ("wheelhouse -> AWS endpoint", WHEELHOUSE, AWS_ENDPOINT, 443, "TCP"),
    ("wheelhouse -> API", WHEELHOUSE, API_SERVICE, 443, "TCP"),
    ("wheelhouse -> Pushgateway", WHEELHOUSE, PUSHGATEWAY, 9091, "TCP"),
    ("any pod -> wheelhouse", STRANGER, WHEELHOUSE, 8080, "TCP"),
    # kube-system's volume guard: the API and nothing else
    ("volume guard -> internet", VOLUME_GUARD, HUGGING_FACE, 443, "TCP"),
    ("volume guard -> a VPC address", VOLUME_GUARD, VPC_ADDRESS, 443, "TCP"),
    ("volume guard -> etcd", VOLUME_GUARD, ETCD, ETCD_PORT, "TCP"),
    ("any pod -> volume guard", STRANGER, VOLUME_GUARD, 8080, "TCP"),
]


@pytest.fixture(scope="module")
def recording() -> offline.Recording:
    return offline.run_program(offline.stack_config(str(REPO / "Pulumi.dev.yaml")))


@pytest.fixture(scope="module")
def rendered(recording) -> list[dict]:
    """The NetworkPolicies of the dev stack as the program registers them."""
    rec = recording
    found = [{"metadata": r.plain_inputs()["metadata"], "spec": r.plain_inputs()["spec"]}
             for r in rec.of_type("kubernetes:networking.k8s.io/v1:NetworkPolicy")]
    assert found
    return found


@pytest.mark.parametrize("flow", NEEDED, ids=[f[0] for f in NEEDED])
def test_needed_flow_is_allowed(rendered, flow):
    _, source, destination, port, protocol = flow
    assert allowed(rendered, source, destination, port, protocol)


@pytest.mark.parametrize("flow", FORBIDDEN, ids=[f[0] for f in FORBIDDEN])
def test_forbidden_flow_is_denied(rendered, flow):
    _, source, destination, port, protocol = flow
    assert not allowed(rendered, source, destination, port, protocol)


def test_every_lab_namespace_denies_by_default(rendered):
    for namespace in (LAB, SYSTEM, MON):
        deny = [p for p in rendered if p["metadata"]["namespace"] == namespace
                and p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")
                and not p["spec"].get("egress")]
        assert deny and set(deny[0]["spec"]["policyTypes"]) == {"Ingress", "Egress"}, namespace


def test_without_policies_everything_is_open():
    """The evaluator is not vacuous: the same forbidden flows pass when no policy exists."""
    assert all(allowed([], source, destination, port, protocol)
               for _, source, destination, port, protocol in FORBIDDEN)


def test_policies_follow_the_control_plane_endpoint_and_s3_cidrs():
    manifests = policies(NetworkPoliciesArgs(
        LAB, SYSTEM, MON, "gpu-operator", vpc_cidr="10.9.0.0/16", control_plane_cidrs=("10.9.200.0/28",),
        aws_endpoint_cidrs=("10.9.200.32/28",), s3_cidrs=["16.15.0.0/16"]))
    assert allowed(manifests, OPERATOR, External("10.9.200.5"), 443)
    assert allowed(manifests, External("10.9.200.5"), OPERATOR, 9443)
    assert not allowed(manifests, OPERATOR, External("10.42.160.5"), 443)
    assert allowed(manifests, EXPORT, External("10.9.200.40"), 443)
    assert allowed(manifests, EXPORT, External("16.15.3.4"), 443)
    assert not allowed(manifests, GPU_RELEASE, External("10.9.200.40"), 80)


def test_the_export_reaches_s3_by_the_gateway_endpoint_s_cidrs(recording, rendered):
    """The export's S3 rule is the S3 gateway endpoint's cidr_blocks as the program reads them."""
    (endpoint,) = [r for r in recording.of_type("aws:ec2/vpcEndpoint:VpcEndpoint")
                   if r.plain_inputs()["vpcEndpointType"] == "Gateway"]
    assert endpoint.plain_inputs()["serviceName"] == "com.amazonaws.us-east-1.s3"
    (export,) = [p for p in rendered if p["metadata"]["name"] == "export-to-pushgateway"]
    cidrs = {peer["ipBlock"]["cidr"] for rule in export["spec"]["egress"] for peer in rule["to"]
             if "ipBlock" in peer}
    assert set(offline.MOCK_S3_CIDRS) <= cidrs


def test_the_vpc_cni_network_policy_agent_is_on_in_the_one_vpc_cni_add_on(recording):
    """One vpc-cni add-on (ours, with its IRSA role) enables the agent; pulumi-eks is told not
    to create its own (two add-ons of one name fail on create)."""
    rec = recording
    addons = [json.loads(a.plain_inputs().get("configurationValues") or "{}")
              for a in rec.of_type("aws:eks/addon:Addon") if a.plain_inputs()["addonName"] == "vpc-cni"]
    cluster = rec.one("eks:index:Cluster").plain_inputs()
    assert [a.get("enableNetworkPolicy") for a in addons] == ["true"]
    assert cluster["useDefaultVpcCni"] is True and "vpcCniOptions" not in cluster


def test_etcd_chart_adds_no_policy_of_its_own(recording):
    """Bitnami's etcd chart would add an allow-all-clients policy (allowExternal) to ours."""
    platform = recording.one("kubernetes:helm.sh/v3:Release", "benchlab-dev-dynamo-platform").plain_inputs()
    assert platform["values"]["etcd"]["networkPolicy"]["enabled"] is False


@pytest.mark.parametrize("pod, job_suffix", [(BENCHMARK, "-bench-concurrency-sweep"), (EXPORT, "-export-job"),
                                             (DOWNLOAD, "-models-download"),
                                             (KV_CHECK, "-kv-check-job"),
                                             (GRAPH_READY, "-serving-ready"),
                                             (WHEELHOUSE, "-wheelhouse-job")])
def test_the_lab_s_jobs_carry_the_labels_the_policies_select(recording, pod, job_suffix):
    """The flows above are evaluated for pods labelled as the program labels its Jobs' pods."""
    (job,) = [r for r in recording.of_type("kubernetes:batch/v1:Job") if r.name.endswith(job_suffix)]
    spec = job.plain_inputs()
    assert spec["metadata"]["namespace"] == pod.namespace
    labels = spec["spec"]["template"]["metadata"]["labels"]
    assert labels.items() >= pod.labels.items()


def test_the_premise_etcd_and_nats_take_no_credentials(shared):
    """Why the policies guard etcd and NATS: the Dynamo 0.9 platform chart turns etcd's
    authentication off and gives NATS neither TLS nor authorization."""
    values = yaml.safe_load(shared("dynamo-0.9.x/deploy/helm/charts/platform/values.yaml").read_text())
    assert values["etcd"]["auth"]["rbac"]["create"] is False
    nats = values["nats"]["config"]
    assert nats["nats"]["tls"]["enabled"] is False
    assert "authorization" not in nats.get("merge", {}) and "accounts" not in nats.get("merge", {})


def test_no_chart_renames_the_pods_the_policies_select(recording):
    """The selectors use the charts' names as app.kubernetes.io/name: a nameOverride would
    silently leave etcd, NATS or the Pushgateway outside their policies."""
    releases = {r.name: r.plain_inputs()["values"] for r in recording.of_type("kubernetes:helm.sh/v3:Release")}
    platform, pushgateway = releases["benchlab-dev-dynamo-platform"], releases["benchlab-dev-pushgateway"]
    assert "nameOverride" not in pushgateway
    assert all("nameOverride" not in platform.get(chart, {}) for chart in ("etcd", "nats"))
