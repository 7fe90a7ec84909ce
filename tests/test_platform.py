"""The platform layer under mocks: what it registers (charts, repositories, pinned versions,
the values that matter), the Secrets, and the order graph, including what it must *not* wait
for (a GPU node group)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from jobs import push_summary
from components.cluster import GPU_TAINT_EFFECT, GPU_TAINT_KEY
from cli import offline
from stacks import compose, config
from tests.conftest import REPO, serving_mode

RELEASE = "kubernetes:helm.sh/v3:Release"
CHART_V4 = "kubernetes:helm.sh/v4:Chart"
PREFIX = "benchlab-dev"
NGC = "https://helm.ngc.nvidia.com/nvidia"
PROMETHEUS_COMMUNITY = "https://prometheus-community.github.io/helm-charts"
# Pulumi name suffix -> (chart, repository, the config's version field, namespace)
RELEASES = {
    "kube-prometheus-stack": ("kube-prometheus-stack", PROMETHEUS_COMMUNITY, "kube_prometheus_stack",
                              "monitoring"),
    "pushgateway": ("prometheus-pushgateway", PROMETHEUS_COMMUNITY, "pushgateway", "monitoring"),
    "gpu-operator": ("gpu-operator", NGC, "gpu_operator", "gpu-operator"),
    "aws-efa-k8s-device-plugin": ("aws-efa-k8s-device-plugin", "https://aws.github.io/eks-charts",
                                  "efa_device_plugin", "kube-system"),
    "dynamo-platform": ("dynamo-platform", f"{NGC}/ai-dynamo", "dynamo", "dynamo-system"),
}
GPU_TOLERATION = {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": GPU_TAINT_EFFECT}
FAKE_TOKEN = "hf_platformTestToken42"
FAKE_PASSWORD = "grafana-platform-test-pw-42"
DEV_CONFIG = offline.stack_config(str(REPO / "Pulumi.dev.yaml"))


def run_platform(overrides: dict | None = None, secrets: dict | None = None):
    """Run the program with the workloads layer replaced by a probe that keeps the Platform
    the platform layer hands over: -> (recording, platform)."""
    seen = {}
    original = compose.workloads_layer
    compose.workloads_layer = lambda ctx, infra, platform: seen.update(platform=platform)
    try:
        recording = offline.run_program({**DEV_CONFIG, **(overrides or {})}, secrets)
    finally:
        compose.workloads_layer = original
    return recording, seen["platform"]


@pytest.fixture(scope="module")
def agg():
    return run_platform(secrets={"hfToken": FAKE_TOKEN})[0]


def release(rec: offline.Recording, suffix: str) -> offline.Resource:
    return rec.one(RELEASE, f"{PREFIX}-{suffix}")


def values(rec: offline.Recording, suffix: str) -> dict:
    return release(rec, suffix).plain_inputs()["values"]


def node_group(rec: offline.Recording, role: str) -> offline.Resource:
    return rec.one("eks:index:ManagedNodeGroup", f"{PREFIX}-{role}")


def gp3_name(rec: offline.Recording) -> str:
    return rec.one("kubernetes:storage.k8s.io/v1:StorageClass", f"{PREFIX}-gp3").inputs["metadata"]["name"]


# --- charts, repositories, pinned versions -------------------------------------------------
@pytest.mark.parametrize("suffix", RELEASES)
def test_release_chart_repository_version_and_namespace(agg, suffix):
    chart, repo, version_field, namespace = RELEASES[suffix]
    inputs = release(agg, suffix).plain_inputs()
    assert inputs["chart"] == chart
    assert inputs["repositoryOpts"]["repo"] == repo
    assert inputs["version"] == getattr(config.StackConfig().versions, version_field)
    assert inputs["namespace"] == namespace
    # Real Helm, waited for until ready; a failed first install is rolled back.
    assert inputs["skipAwait"] is False and inputs["atomic"] is True and inputs["timeout"] > 0


def test_pinned_versions_are_the_issue_s():
    versions = config.StackConfig().versions
    assert (versions.gpu_operator, versions.kube_prometheus_stack, versions.dynamo) == \
        ("v24.9.0", "65.8.1", "0.9.1")


def test_chart_versions_follow_config():
    rec, _ = run_platform({"versions": {"gpuOperator": "v24.9.2", "kubePrometheusStack": "65.1.0",
                                        "dynamo": "0.9.0"}})
    assert release(rec, "gpu-operator").inputs["version"] == "v24.9.2"
    assert release(rec, "kube-prometheus-stack").inputs["version"] == "65.1.0"
    assert release(rec, "dynamo-platform").inputs["version"] == "0.9.0"
    assert rec.one(CHART_V4, f"{PREFIX}-dynamo-crds").inputs["version"] == "0.9.0"


def test_dynamo_crds_chart_before_the_platform(agg):
    crds = agg.one(CHART_V4, f"{PREFIX}-dynamo-crds").plain_inputs()
    assert (crds["chart"], crds["repositoryOpts"]["repo"], crds["version"]) == \
        ("dynamo-crds", f"{NGC}/ai-dynamo", "0.9.1")
    assert agg.waits_for(release(agg, "dynamo-platform"), agg.one(CHART_V4, f"{PREFIX}-dynamo-crds"))


# --- the values that matter -----------------------------------------------------------------
def test_gpu_operator_uses_the_ami_driver_and_toolkit(agg):
    v = values(agg, "gpu-operator")
    assert v["driver"]["enabled"] is False and v["toolkit"]["enabled"] is False
    assert all(v[k]["enabled"] is True for k in ("devicePlugin", "gfd", "dcgmExporter"))
    assert v["dcgmExporter"]["serviceMonitor"]["enabled"] is True
    assert v["operator"]["defaultRuntime"] == "containerd"


def test_gpu_pieces_tolerate_the_gpu_taint(agg):
    assert GPU_TOLERATION in values(agg, "gpu-operator")["daemonsets"]["tolerations"]
    assert GPU_TOLERATION in values(agg, "aws-efa-k8s-device-plugin")["tolerations"]


def test_node_feature_discovery_runs_on_gpu_nodes(agg, shared):
    """NFD's worker labels the GPU nodes the operands select: with our values over the
    chart's defaults (a list replaces the default), it still tolerates the GPU taint."""
    defaults = yaml.safe_load(shared("gpu-operator-v24.9.0/values.yaml").read_text())
    worker = {**defaults["node-feature-discovery"]["worker"],
              **values(agg, "gpu-operator").get("node-feature-discovery", {}).get("worker", {})}
    assert GPU_TOLERATION in worker["tolerations"]


def test_the_dcgm_exporter_listens_where_the_benchmarks_look(agg, shared):
    """Its port, from the pinned chart's defaults, which our values leave alone."""
    from jobs.cluster_facts import DCGM_EXPORTER_PORT

    defaults = yaml.safe_load(shared("gpu-operator-v24.9.0/values.yaml").read_text())
    listen = {e["name"]: e["value"] for e in defaults["dcgmExporter"]["env"]}["DCGM_EXPORTER_LISTEN"]
    assert listen == f":{DCGM_EXPORTER_PORT}"
    assert "env" not in values(agg, "gpu-operator")["dcgmExporter"]


def test_prometheus_selects_every_monitor_and_keeps_data_on_gp3():
    rec, _ = run_platform({"monitoring": {"retention": "30d", "prometheusStorageGib": 123,
                                          "grafanaStorageGib": 7}})
    v = values(rec, "kube-prometheus-stack")
    spec = v["prometheus"]["prometheusSpec"]
    for kind in ("serviceMonitor", "podMonitor", "probe", "rule", "scrapeConfig"):
        assert spec[f"{kind}SelectorNilUsesHelmValues"] is False, kind
    assert not spec.get("serviceMonitorNamespaceSelector") and not spec.get("podMonitorNamespaceSelector")
    gp3 = gp3_name(rec)
    claim = spec["storageSpec"]["volumeClaimTemplate"]["spec"]
    assert claim["storageClassName"] == gp3
    assert claim["resources"]["requests"]["storage"] == "123Gi"
    assert spec["retention"] == "30d"
    grafana = v["grafana"]["persistence"]
    assert (grafana["enabled"], grafana["storageClassName"], grafana["size"]) == (True, gp3, "7Gi")


def test_pushgateway_is_scraped_with_its_pushed_labels(agg):
    v = values(agg, "pushgateway")
    assert v["serviceMonitor"] == {**v["serviceMonitor"], "enabled": True, "honorLabels": True,
                                   "namespace": "monitoring"}


def test_dynamo_platform_values(agg):
    v = values(agg, "dynamo-platform")
    operator = v["dynamo-operator"]
    proxy = operator["controllerManager"]["kubeRbacProxy"]["image"]
    assert not proxy["repository"].startswith("gcr.io") and proxy["tag"]
    assert operator["controllerManager"]["manager"]["image"]["tag"] == config.StackConfig().versions.dynamo
    assert operator["webhook"]["enabled"] is True
    etcd = v["etcd"]["persistence"]
    assert (etcd["enabled"], etcd["storageClass"]) == (True, gp3_name(agg))
    pvc = v["nats"]["config"]["jetstream"]["fileStore"]["pvc"]
    assert (pvc["enabled"], pvc["storageClassName"]) == (True, gp3_name(agg))


def test_operator_prometheus_endpoint_is_the_stack_s_prometheus(agg):
    """The endpoint is the service kube-prometheus-stack creates: <fullname>-prometheus in
    its namespace, on Prometheus' port."""
    kps = release(agg, "kube-prometheus-stack").plain_inputs()
    service = f"{kps['values']['fullnameOverride']}-prometheus.{kps['namespace']}"
    operator = values(agg, "dynamo-platform")["dynamo-operator"]
    assert operator["dynamo"]["metrics"]["prometheusEndpoint"] == f"http://{service}.svc.cluster.local:9090"


def test_pushgateway_url_is_the_chart_s_service():
    rec, platform = run_platform()
    v = values(rec, "pushgateway")
    assert platform.pushgateway_url == f"http://{v['fullnameOverride']}.monitoring.svc.cluster.local:9091"


# --- dashboards -----------------------------------------------------------------------------
DASHBOARD_KEYS = ("dynamo", "dcgm", "kvbm", "pareto")  # the four dashboards of Report 5


def _dashboard_configmaps(rec) -> dict[str, dict]:
    return {key: rec.one("kubernetes:core/v1:ConfigMap", f"{PREFIX}-{key}-dashboard").plain_inputs()
            for key in DASHBOARD_KEYS}


def test_grafana_loads_the_lab_s_dashboards_from_its_own_namespace_only(agg):
    grafana = values(agg, "kube-prometheus-stack")["grafana"]
    sidecar = grafana["sidecar"]["dashboards"]
    assert sidecar["enabled"] is True and sidecar["searchNamespace"] == "monitoring"
    assert grafana["rbac"]["namespaced"] is True  # a Role: no ClusterRole over every Secret
    for key, cm in _dashboard_configmaps(agg).items():
        assert cm["metadata"]["namespace"] == "monitoring"
        assert cm["metadata"]["labels"][sidecar["label"]] == sidecar["labelValue"]
        (dashboard,) = [json.loads(text) for text in cm["data"].values()]
        assert dashboard["uid"] == f"benchlab-{key}"


def test_no_dashboard_is_downloaded_and_none_can_hold_up_the_release(agg):
    """Grafana fetches nothing at start (no `dashboards` by URL, no provider folder for them),
    and the dashboard ConfigMaps and the Helm release do not wait for each other."""
    grafana = values(agg, "kube-prometheus-stack")["grafana"]
    assert "dashboards" not in grafana and "dashboardProviders" not in grafana
    kps = release(agg, "kube-prometheus-stack")
    for key in DASHBOARD_KEYS:
        cm = agg.one("kubernetes:core/v1:ConfigMap", f"{PREFIX}-{key}-dashboard")
        assert not agg.waits_for(kps, cm) and not agg.waits_for(cm, kps)


URL = re.compile(r"https?://[^\s\"']+")


def test_no_helm_values_point_outside_the_cluster(agg):
    """A URL in a release's values is fetched by a pod at start: one outside the cluster is a
    deploy-time dependency (GitHub outage -> Init:Error -> atomic rollback)."""
    for rel in agg.of_type(RELEASE):
        urls = URL.findall(json.dumps(rel.plain_inputs()["values"]))
        outside = [u for u in urls if ".svc.cluster.local" not in u]
        assert outside == [], (rel.name, outside)


def _pareto_dashboard(rec) -> dict:
    cm = rec.one("kubernetes:core/v1:ConfigMap", f"{PREFIX}-pareto-dashboard").plain_inputs()
    return json.loads(next(iter(cm["data"].values())))


class _EveryStat:
    """An AIPerf export in which every statistic is there."""
    concurrency = 8

    def stat(self, metric: str, stat: str) -> float:
        return 1.0


def pushed_series() -> tuple[set[str], set[str]]:
    """The series names the results export pushes per benchmark step, and their labels."""
    summary = push_summary.run_summary("concurrency_sweep", "c8", _EveryStat(), gpus=16)
    names = {series.split("{", 1)[0] for series in summary.gauges}
    parts = push_summary.group_path("r1", "agg", summary).removeprefix("/metrics/").split("/")
    labels = set(parts[::2])  # the grouping key: /name/value/name/value...
    labels |= {m for series in summary.gauges for m in re.findall(r"(\w+)=", series)}
    return names, labels


def test_pareto_dashboard_plots_the_series_the_results_export_pushes(agg):
    dashboard = _pareto_dashboard(agg)
    names, labels = pushed_series()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\bbenchlab_\w+", e)}
    assert used and used <= names, used - names
    used_labels = {m for e in exprs for m in re.findall(r"(\w+)=~?\"", e)}
    used_labels |= {v["name"] for v in dashboard["templating"]["list"]}
    used_labels |= {f for p in dashboard["panels"] for t in p.get("transformations", [])
                    if t["id"] == "partitionByValues" for f in t["options"]["fields"]}
    assert used_labels <= labels, used_labels - labels
    # The two Pareto views: per-GPU vs per-user throughput, and TTFT vs throughput.
    xy = [p for p in dashboard["panels"] if p["type"] == "xychart"]
    pairs = {frozenset(re.findall(r"\bbenchlab_\w+", t["expr"])[0] for t in p["targets"]) for p in xy}
    assert pairs == {
        frozenset({"benchlab_output_tokens_per_second_per_gpu",
                   "benchlab_output_tokens_per_second_per_user"}),
        frozenset({"benchlab_ttft_seconds", "benchlab_output_throughput_tokens_per_second"})}


def test_every_dashboard_uses_the_stack_s_prometheus_datasource(agg, shared):
    kps_reference = yaml.safe_load(shared("kube-prometheus-stack-65.8.1/values.yaml").read_text())
    uid = kps_reference["grafana"]["sidecar"]["datasources"]["uid"]
    for cm in _dashboard_configmaps(agg).values():
        (dashboard,) = [json.loads(text) for text in cm["data"].values()]
        sources = [p["datasource"]["uid"] for p in dashboard["panels"]]
        sources += [t["datasource"]["uid"] for p in dashboard["panels"] for t in p["targets"]]
        assert sources and set(sources) == {uid}, dashboard["uid"]


# --- secrets --------------------------------------------------------------------------------
def test_hf_token_secret_is_secret_and_nowhere_plain():
    rec, platform = run_platform(secrets={"hfToken": FAKE_TOKEN})
    secret = rec.one("kubernetes:core/v1:Secret", f"{PREFIX}-hf-token")
    assert secret.inputs["stringData"] == offline.Secret({"HF_TOKEN": FAKE_TOKEN})
    assert secret.inputs["metadata"]["namespace"] == "benchlab"
    assert platform.hf_token_secret is not None
    rendered = json.dumps([r.plain_inputs() for r in rec.resources.values()]) + json.dumps(
        offline.plain(rec.stack_outputs))
    assert FAKE_TOKEN not in rendered


def test_no_token_no_secret():
    rec, platform = run_platform()
    assert platform.hf_token_secret is None
    assert not [r for r in rec.of_type("kubernetes:core/v1:Secret") if r.name.endswith("hf-token")]


def test_configured_grafana_password_is_used_secret_and_never_in_values():
    rec, _ = run_platform(secrets={"grafanaAdminPassword": FAKE_PASSWORD})
    assert not rec.of_type("random:index/randomPassword:RandomPassword")
    admin = rec.one("kubernetes:core/v1:Secret", f"{PREFIX}-grafana-admin")
    assert admin.inputs["stringData"] == offline.Secret(
        {"admin-user": "admin", "admin-password": FAKE_PASSWORD})
    grafana = values(rec, "kube-prometheus-stack")["grafana"]
    assert grafana["admin"]["existingSecret"] == admin.inputs["metadata"]["name"]
    assert rec.stack_outputs["grafanaAdminPassword"] == offline.Secret(FAKE_PASSWORD)
    rendered = json.dumps([r.plain_inputs() for r in rec.resources.values()]) + json.dumps(
        offline.plain(rec.stack_outputs))
    assert FAKE_PASSWORD not in rendered
    assert rec.waits_for(release(rec, "kube-prometheus-stack"), admin)


def test_grafana_password_is_generated_when_not_configured(agg):
    (generated,) = agg.of_type("random:index/randomPassword:RandomPassword")
    assert generated.inputs["length"] >= 20
    admin = agg.one("kubernetes:core/v1:Secret", f"{PREFIX}-grafana-admin")
    assert isinstance(admin.inputs["stringData"], offline.Secret)
    assert admin.inputs["stringData"].value["admin-password"]
    assert agg.waits_for(admin, generated)
    assert isinstance(agg.stack_outputs["grafanaAdminPassword"], offline.Secret)


# --- order ----------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["agg", "disagg"])
def any_mode(request):
    return run_platform({"serving": serving_mode(request.param)})[0]


CPU_PIECES = ["kube-prometheus-stack", "pushgateway", "dynamo-platform"]
NO_GPU_NODE_NEEDED = CPU_PIECES + ["gpu-operator", "aws-efa-k8s-device-plugin"]


@pytest.mark.parametrize("suffix", NO_GPU_NODE_NEEDED)
def test_platform_does_not_wait_for_gpu_node_groups(any_mode, suffix):
    for role in ("prefill", "decode"):
        assert not any_mode.waits_for(release(any_mode, suffix), node_group(any_mode, role)), (suffix, role)
    crds = any_mode.one(CHART_V4, f"{PREFIX}-dynamo-crds")
    assert not any(any_mode.waits_for(crds, node_group(any_mode, role)) for role in ("prefill", "decode"))


@pytest.mark.parametrize("suffix", NO_GPU_NODE_NEEDED)
def test_platform_waits_for_the_system_nodes(any_mode, suffix):
    assert any_mode.waits_for(release(any_mode, suffix), node_group(any_mode, "system"))


@pytest.mark.parametrize("suffix", CPU_PIECES)
def test_cpu_pieces_wait_for_gp3(any_mode, suffix):
    gp3 = any_mode.one("kubernetes:storage.k8s.io/v1:StorageClass", f"{PREFIX}-gp3")
    assert any_mode.waits_for(release(any_mode, suffix), gp3)


@pytest.mark.parametrize("suffix", ["pushgateway", "gpu-operator", "dynamo-platform"])
def test_monitor_makers_wait_for_kube_prometheus_stack(any_mode, suffix):
    """They create ServiceMonitors/PodMonitors, whose CRDs kube-prometheus-stack installs."""
    assert any_mode.waits_for(release(any_mode, suffix), release(any_mode, "kube-prometheus-stack"))


def test_kube_prometheus_stack_waits_for_none_of_the_others(any_mode):
    kps = release(any_mode, "kube-prometheus-stack")
    for suffix in ("pushgateway", "gpu-operator", "aws-efa-k8s-device-plugin", "dynamo-platform"):
        assert not any_mode.waits_for(kps, release(any_mode, suffix)), suffix


def test_namespaces_follow_the_storage_classes_so_destroy_empties_them_first(any_mode):
    for ns in any_mode.of_type("kubernetes:core/v1:Namespace"):
        for sc in any_mode.of_type("kubernetes:storage.k8s.io/v1:StorageClass"):
            assert any_mode.waits_for(ns, sc), (ns.name, sc.name)


def test_platform_hands_over_every_field():
    _, platform = run_platform(secrets={"hfToken": FAKE_TOKEN})
    assert set(platform.namespaces) == {"gpu-operator", "monitoring", "dynamo-system", "lab"}
    names = {field: getattr(platform, field)._name for field in
             ("gpu_operator", "efa_device_plugin", "monitoring", "dynamo_platform", "hf_token_secret")}
    assert names == {"gpu_operator": f"{PREFIX}-gpu-operator",
                     "efa_device_plugin": f"{PREFIX}-aws-efa-k8s-device-plugin",
                     "monitoring": f"{PREFIX}-kube-prometheus-stack",
                     "dynamo_platform": f"{PREFIX}-dynamo-platform",
                     "hf_token_secret": f"{PREFIX}-hf-token"}
    assert platform.pushgateway_url.startswith("http://")


# --- CRDs on destroy ------------------------------------------------------------------------
def test_dynamo_crds_are_kept_by_default(agg):
    assert "postRenderer" not in agg.one(CHART_V4, f"{PREFIX}-dynamo-crds").inputs


def test_remove_dynamo_crds_strips_the_keep_policy(shared):
    """With destroy.removeDynamoCrds, the post-renderer Helm runs over the rendered CRDs drops
    `helm.sh/resource-policy: keep`, so the CRDs are ordinary Pulumi resources that destroy
    deletes. Run the recorded post-renderer over the upstream CRDs to prove it."""
    rec, _ = run_platform({"destroy": {"removeDynamoCrds": True}})
    renderer = rec.one(CHART_V4, f"{PREFIX}-dynamo-crds").inputs["postRenderer"]
    if shutil.which(renderer["command"]) is None:
        pytest.skip(f"{renderer['command']} is not installed")
    templates = shared("dynamo-0.9.x/deploy/helm/charts/crds/templates")
    manifest = "\n".join(p.read_text() for p in sorted(templates.glob("*.yaml")))
    before = [d for d in yaml.safe_load_all(manifest) if d]
    assert any(d["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep" for d in before)
    out = subprocess.run([renderer["command"], *renderer["args"]], input=manifest, text=True,
                         capture_output=True, check=True).stdout
    after = [d for d in yaml.safe_load_all(out) if d]
    assert len(after) == len(before)
    for old, new in zip(before, after):
        assert "helm.sh/resource-policy" not in (new["metadata"].get("annotations") or {})
        old["metadata"].get("annotations", {}).pop("helm.sh/resource-policy", None)
        assert new == old, "the post-renderer must change nothing else"
