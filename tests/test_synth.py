"""`benchlab synth`: the program run offline and written out. Every registered Kubernetes object and
Helm release lands in a file, the objects validate (Kubernetes 1.32 strict, the DGD against its
CRD), secrets are redacted in every file, the graph files hold every resource and dependency,
the apply script follows the order the API server needs. Plus what a clean destroy relies on."""
from __future__ import annotations

import base64
import re
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from components import volume_guard
from cli import cli, offline, stack_file, synth
from stacks import compose as program
from tests.conftest import REPO, serving_mode
from tests.test_dgd_schema import CRD as DGD_CRD
from tests.test_dgd_schema import strict

FAKE_TOKEN = "hf_SynthTestToken_7f3a9c"
FAKE_PASSWORD = "synth-test-grafana-pw-51d2"
SECRETS = {"hfToken": FAKE_TOKEN, "grafanaAdminPassword": FAKE_PASSWORD}
from jobs.names import GRAPHS as MODES
DGD_TYPE = "kubernetes:nvidia.com/v1alpha1:DynamoGraphDeployment"
DEV_CONFIG = offline.stack_config(str(REPO / "Pulumi.dev.yaml"))


@pytest.fixture(scope="module", params=MODES)
def synthesized(request, tmp_path_factory):
    """(recording, output directory, what was written) for one serving mode, with secrets set."""
    config = {**DEV_CONFIG, "serving": {**DEV_CONFIG["serving"], **serving_mode(request.param)}}
    result = synth.synthesize(config, SECRETS, "dev")
    if result.error is not None:
        raise result.error
    out = tmp_path_factory.mktemp(f"synth-{request.param}")
    written = synth.write(result.recording, out, list(SECRETS.values()))
    return result.recording, out, written


def manifests(out: Path) -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted((out / "k8s").glob("*.yaml"))}


def walk(node, path=""):
    """(path, value) of every leaf."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}[{i}]")
    else:
        yield path, node


# ---- what is written ---------------------------------------------------------------------
def test_every_kubernetes_object_has_its_file(synthesized):
    recording, out, _ = synthesized
    objects = [r for r in recording.resources.values() if synth.is_kubernetes_object(r)]
    written = manifests(out)
    assert len(written) == len(objects) > 0
    pairs = {(m["kind"], m["metadata"].get("namespace"), m["metadata"]["name"]) for m in written.values()}
    assert len(pairs) == len(written)  # no two files for one object
    assert ("DynamoGraphDeployment" in {m["kind"] for m in written.values()})


def test_every_helm_release_has_values_and_coordinates(synthesized):
    recording, out, _ = synthesized
    charts = [r for r in recording.resources.values() if r.type in synth.HELM_TYPES]
    releases = yaml.safe_load((out / "helm" / "releases.yaml").read_text())
    assert sorted(r["pulumiName"] for r in releases) == sorted(c.name for c in charts)
    for release, chart in zip(sorted(releases, key=lambda r: r["pulumiName"]),
                              sorted(charts, key=lambda c: c.name)):
        assert release["chart"] and release["repo"].startswith("https://") and release["version"]
        values = yaml.safe_load((out / release["valuesFile"]).read_text()) or {}
        assert values == synth.redact(chart.inputs.get("values") or {})


def test_objects_validate_against_kubernetes_1_32_and_the_dgd_crd(synthesized, shared):
    _, out, _ = synthesized
    crd = yaml.safe_load(shared(DGD_CRD).read_text())
    schema = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")["schema"]["openAPIV3Schema"]
    dgd = jsonschema.Draft7Validator(strict(schema))
    problems = []
    for name, manifest in manifests(out).items():
        if manifest["kind"] == "DynamoGraphDeployment":
            problems += [f"{name}: {e.message}" for e in dgd.iter_errors(manifest)]
            continue
        if manifest["kind"] == "PodMonitor":  # its CRD comes with kube-prometheus-stack
            problems += [f"{name}: {p}" for p in pod_monitor_problems(manifest)]
            continue
        try:
            kubernetes_validate.validate(manifest, "1.32.0", strict=True)
        except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as err:
            problems.append(f"{name}: {str(err).splitlines()[0]}")
    assert problems == []


def pod_monitor_problems(manifest: dict) -> list[str]:
    """The PodMonitor fields the lab uses, as prometheus-operator's API defines them
    (https://prometheus-operator.dev/docs/api-reference/api/#monitoring.coreos.com/v1.PodMonitorSpec)."""
    problems = [] if manifest["apiVersion"] == "monitoring.coreos.com/v1" else ["apiVersion"]
    spec = manifest["spec"]
    problems += [f"spec.{k}: unknown" for k in spec if k not in {"selector", "podMetricsEndpoints"}]
    if not isinstance(spec.get("selector", {}).get("matchLabels"), dict):
        problems.append("spec.selector.matchLabels: a mapping is required")
    for endpoint in spec.get("podMetricsEndpoints") or [None]:
        if not isinstance(endpoint, dict) or set(endpoint) - {"port", "path"} \
                or not isinstance(endpoint.get("port"), str) or not endpoint.get("path", "/").startswith("/"):
            problems.append(f"spec.podMetricsEndpoints: {endpoint!r}")
    return problems


def test_no_value_is_left_unresolved(synthesized):
    """A null in a manifest is an output the mocks left None: the object would be wrong."""
    _, out, _ = synthesized
    nulls = [f"{name}{path}" for name, m in manifests(out).items() for path, v in walk(m) if v is None]
    assert nulls == []


# Objects every namespace has without anyone creating them.
CLUSTER_PROVIDED = {("ConfigMap", "kube-root-ca.crt")}
# pod-spec field -> (referenced kind, the key holding the name)
POD_REFERENCES = {"configMap": ("ConfigMap", "name"), "secret": ("Secret", "secretName"),
                  "persistentVolumeClaim": ("PersistentVolumeClaim", "claimName"),
                  "configMapKeyRef": ("ConfigMap", "name"), "configMapRef": ("ConfigMap", "name"),
                  "secretKeyRef": ("Secret", "name"), "secretRef": ("Secret", "name")}


def references(manifest: dict) -> list[tuple[str, str | None, str]]:
    """(kind, namespace, name) of the objects a manifest names: volumes, env sources, service
    account, role bindings."""
    namespace = manifest["metadata"].get("namespace")
    found = []

    def visit(node):
        if isinstance(node, dict):
            for field, (kind, key) in POD_REFERENCES.items():
                if isinstance(node.get(field), dict) and key in node[field]:
                    found.append((kind, namespace, node[field][key]))
            if "serviceAccountName" in node:
                found.append(("ServiceAccount", namespace, node["serviceAccountName"]))
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    if manifest["kind"] != "DynamoGraphDeployment":  # its fields are the operator's, not pods'
        visit(manifest.get("spec", {}))
    if "roleRef" in manifest:
        role = manifest["roleRef"]
        found.append((role["kind"], namespace if role["kind"] == "Role" else None, role["name"]))
        found += [(s["kind"], s.get("namespace"), s["name"]) for s in manifest.get("subjects", [])]
    return found


def test_every_referenced_object_is_written_under_that_name(synthesized):
    """An auto-named object (no metadata.name) is written under the name the others use."""
    _, out, _ = synthesized
    written = manifests(out).values()
    present = {(m["kind"], m["metadata"].get("namespace"), m["metadata"]["name"]) for m in written}
    dangling = [(m["metadata"]["name"], ref) for m in written for ref in references(m)
                if ref not in present and (ref[0], ref[2]) not in CLUSTER_PROVIDED]
    assert dangling == []


def test_secrets_are_redacted_in_every_file(synthesized):
    _, out, written = synthesized
    forms = [s for secret in SECRETS.values() for s in (secret, base64.b64encode(secret.encode()).decode())]
    leaking = [str(p) for p in out.rglob("*") if p.is_file() and any(f in p.read_text() for f in forms)]
    assert leaking == []
    assert written.leaks == []  # every secret reached the files marked secret, none was scrubbed
    token_secret = [m for m in manifests(out).values()
                    if m["kind"] == "Secret" and offline.REDACTED in str(m.get("stringData") or m.get("data"))]
    assert token_secret, "the HF token Secret is written, its value redacted"


def test_scrubbing_catches_a_secret_a_resource_left_plain(tmp_path):
    recording = offline.Recording()
    recording.resources["urn:cm"] = offline.Resource(
        type="kubernetes:core/v1:ConfigMap", name="leaky", urn="urn:cm", parent="", dependencies=set(),
        inputs={"metadata": {"name": "leaky"}, "data": {"token": FAKE_TOKEN,
                                                        "b64": base64.b64encode(FAKE_TOKEN.encode()).decode()}},
        custom=True, remote=False, provider="", custom_timeouts={})
    written = synth.write(recording, tmp_path, [FAKE_TOKEN])
    text = next((tmp_path / "k8s").glob("*.yaml")).read_text()
    assert FAKE_TOKEN not in text and text.count(offline.REDACTED) == 2
    assert written.leaks == [next((tmp_path / "k8s").glob("*.yaml"))]


def test_no_service_of_type_load_balancer(synthesized):
    """Grafana, Prometheus and the frontend are ClusterIP (kubectl port-forward): no load
    balancer holds ENIs in the VPC when `pulumi destroy` removes it."""
    _, out, _ = synthesized
    services = [m for m in manifests(out).values() if m["kind"] == "Service"]
    assert [m["metadata"]["name"] for m in services if m["spec"].get("type") == "LoadBalancer"] == []
    in_values = [f"{p.name}{path}" for p in (out / "helm").glob("*.values.yaml")
                 for path, v in walk(yaml.safe_load(p.read_text()) or {}) if v == "LoadBalancer"]
    assert in_values == []


# ---- the graph and the apply order ---------------------------------------------------------
def test_graph_files_hold_every_resource_and_dependency(synthesized):
    recording, out, _ = synthesized
    urn_of = {(synth.short_type(r), r.name): r.urn for r in recording.resources.values()}
    assert len(urn_of) == len(recording.resources)  # a node label names one resource
    mermaid = (out / "graph.mmd").read_text()
    nodes = {node: urn_of[(kind, name)]
             for node, kind, name in re.findall(r'(n\d+)\["([^"<]*)<br/>([^"]+)"\]', mermaid)}
    assert sorted(nodes.values()) == sorted(recording.resources)
    edges = {(nodes[a], nodes[b]) for a, b in re.findall(r"(n\d+) --> (n\d+)", mermaid)}
    expected = {(d, r.urn) for r in recording.resources.values() for d in r.dependencies
                if d in recording.resources and d != r.urn}
    assert edges == expected
    listed = re.findall(r"^\s+\d+\. (\S+)  (\S+)", (out / "graph.txt").read_text(), re.M)
    assert sorted(listed) == sorted((r.type, r.name) for r in recording.resources.values())


def test_creation_order_puts_dependencies_and_namespaces_first(synthesized):
    recording, _, _ = synthesized
    ordered = synth.topological(recording)
    seen: set[str] = set()
    created_namespaces = {(r.inputs.get("metadata") or {}).get("name"): r.urn
                          for r in recording.of_type("kubernetes:core/v1:Namespace")}
    for res in ordered:
        assert {d for d in res.dependencies if d in recording.resources} <= seen, res.name
        namespace = (res.inputs.get("metadata") or {}).get("namespace")
        if synth.is_kubernetes_object(res) and namespace in created_namespaces:
            assert created_namespaces[namespace] in seen, res.name
        seen.add(res.urn)


def test_apply_script_applies_every_file_once_crds_before_the_graph(synthesized):
    _, out, _ = synthesized
    script = (out / "apply-order.sh").read_text().splitlines()
    applied = [line.split(" -f ")[1].split()[0] for line in script if " -f " in line]
    expected = sorted([f"k8s/{n}" for n in manifests(out)] + [
        r["valuesFile"] for r in yaml.safe_load((out / "helm" / "releases.yaml").read_text())])
    assert sorted(applied) == expected
    position = {path: i for i, path in enumerate(applied)}
    crds = next(p for p in position if p.endswith("dynamo-crds.values.yaml"))
    platform = next(p for p in position if p.endswith("dynamo-platform.values.yaml"))
    dgd = next(p for p in position if "-dynamographdeployment-" in p)
    assert position[crds] < position[platform] < position[dgd]
    # the graph is applied without a wait; its Ready wait is a Job (components/serving_graph.py)
    wait = next(i for i, line in enumerate(script)
                if line.startswith("kubectl wait --for=condition=complete job/benchlab-serving-ready-"))
    assert next(i for i, line in enumerate(script) if dgd in line) < wait


# ---- clean destroy: what Pulumi's reverse order must get right -----------------------------
@pytest.mark.parametrize("remove_crds", [False, True])
def test_destroy_removes_the_graph_while_the_operator_and_crds_exist(remove_crds):
    """Destroy runs in reverse dependency order: the DGD goes first, while the Dynamo operator
    (which runs its finalizers) and the CRDs still exist; then the platform; the CRDs last,
    or never when Helm's keep policy stays (destroy.removeDynamoCrds false)."""
    recording = offline.run_program({**DEV_CONFIG, "destroy": {"removeDynamoCrds": remove_crds}})
    dgd = recording.one(DGD_TYPE)
    charts = {r.inputs.get("chart"): r for r in recording.resources.values() if r.type in synth.HELM_TYPES}
    platform, crds = charts["dynamo-platform"], charts["dynamo-crds"]
    assert recording.waits_for(dgd, platform) and recording.waits_for(platform, crds)
    assert ("postRenderer" in crds.inputs) is remove_crds  # the keep annotation dropped or kept


@pytest.mark.parametrize("mode", ["agg", "disagg"])
def test_destroy_releases_the_gpu_node_groups_first(mode):
    """GPUs bill only while they measure: no resource depends on a GPU node group, so `pulumi
    destroy` deletes both at once, at its start, while the graph goes through the operator
    (which still runs: the graph waits for the platform)."""
    recording = offline.run_program({**DEV_CONFIG, "serving": {**DEV_CONFIG["serving"], **serving_mode(mode)}})
    groups = [recording.one("eks:index:ManagedNodeGroup", f"benchlab-dev-{g}") for g in ("prefill", "decode")]
    # Only each group's GPU restore waits for it; deleting that invocation calls nothing
    # (components/gpu_restore.py), so the groups still go at once.
    dependents = sorted((r.type, r.name) for r in recording.resources.values() for g in groups
                        if r.urn != g.urn and recording.waits_for(r, g)
                        and not r.type.startswith("benchlab:"))  # a component deletes nothing itself
    assert dependents == [("aws:lambda/invocation:Invocation", f"benchlab-dev-{g}") for g in ("decode", "prefill")]
    platform = next(r for r in recording.resources.values()
                    if r.type in synth.HELM_TYPES and r.inputs.get("chart") == "dynamo-platform")
    assert recording.waits_for(recording.one(DGD_TYPE), platform)
    # the same query finds what waits for the system nodes: it can fail
    system = recording.one("eks:index:ManagedNodeGroup", "benchlab-dev-system")
    assert any(recording.waits_for(r, system) for r in recording.resources.values())


def test_objects_wait_for_the_namespace_the_program_creates_for_them(synthesized):
    """Up: no object relies on the provider's create retries for its namespace to appear.
    Destroy: a namespace is deleted only after what Pulumi put in it."""
    recording, _, _ = synthesized
    namespaces = {r.inputs["metadata"]["name"]: r for r in recording.of_type("kubernetes:core/v1:Namespace")}
    early = [r.name for r in recording.resources.values() if synth.is_kubernetes_object(r)
             and (namespace := (r.inputs.get("metadata") or {}).get("namespace")) in namespaces
             and not recording.waits_for(r, namespaces[namespace])]
    assert namespaces and early == []


def test_everything_kubernetes_goes_before_the_cluster(synthesized):
    recording, _, _ = synthesized
    cluster = recording.one("eks:index:Cluster")
    kubernetes = [r for r in recording.resources.values() if r.type.startswith("kubernetes:")]
    assert kubernetes and all(recording.waits_for(r, cluster) for r in kubernetes)


# ---- CLI -------------------------------------------------------------------------------------
def test_cli_writes_then_rewrites_its_directory(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["synth", "--stack", "dev", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Kubernetes objects" in printed
    # the dev file's placeholder CIDR, which `pulumi up` refuses, is rendered as the test CIDR and said so
    assert "203.0.113.0/24 (the stack file's placeholder) rendered as the test CIDR 1.2.3.4/32" in printed
    stale = out / "k8s" / "999-stale.yaml"
    stale.write_text("kind: Stale\n")
    assert cli.main(["synth", "--out", str(out)]) == 0
    assert not stale.exists() and (out / "graph.mmd").is_file()


def test_cli_refuses_a_directory_it_did_not_write(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    assert cli.main(["synth", "--out", str(tmp_path)]) == 2
    assert "not written by benchlab synth" in capsys.readouterr().err
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_cli_stack_with_encrypted_secrets_renders_them_redacted(tmp_path, monkeypatch, capsys):
    doc = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())
    doc["config"]["benchlab:hfToken"] = {"secure": "v1:ZW5jcnlwdGVk"}
    (tmp_path / "Pulumi.sec.yaml").write_text(yaml.safe_dump(doc))
    monkeypatch.setattr(stack_file, "REPO_ROOT", tmp_path)
    out = tmp_path / "out"
    assert cli.main(["synth", "--stack", "sec", "--out", str(out)]) == 0
    texts = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
    assert "synth-placeholder" not in texts and "ZW5jcnlwdGVk" not in texts
    secrets = [m for m in manifests(out).values() if m["kind"] == "Secret"]
    assert any(offline.REDACTED in str(m.get("stringData")) for m in secrets)


def test_cli_program_failing_part_way_writes_what_came_before_and_fails(tmp_path, monkeypatch, capsys):
    def broken(ctx, infra, platform):
        raise RuntimeError("workloads exploded")
    monkeypatch.setattr(program, "workloads_layer", broken)
    out = tmp_path / "out"
    assert cli.main(["synth", "--out", str(out)]) == 2
    assert "RuntimeError: workloads exploded" in capsys.readouterr().err
    kinds = {m["kind"] for m in manifests(out).values()}
    assert "Namespace" in kinds and "DynamoGraphDeployment" not in kinds


def test_cli_bad_config_is_a_clear_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "Pulumi.bad.yaml").write_text("config:\n  benchlab:serving: {mode: hybrid}\n")
    monkeypatch.setattr(stack_file, "REPO_ROOT", tmp_path)
    assert cli.main(["synth", "--stack", "bad", "--out", str(tmp_path / "out")]) == 2
    assert "serving.mode: 'hybrid'" in capsys.readouterr().err


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["synth", "--help"])
    assert exit_.value.code == 0 and "--out" in capsys.readouterr().out


def test_destroy_deletes_the_gp3_volumes_before_the_ebs_csi_add_on(synthesized):
    """Prometheus, Grafana, etcd and NATS go first; then the volume guard (whose pod deletes the
    claims they leave and waits for the CSI driver to delete their EBS volumes); then the gp3
    StorageClass and the EBS CSI add-on."""
    recording, _, _ = synthesized
    guard = recording.one("kubernetes:apps/v1:Deployment", "benchlab-dev-volume-guard")
    gp3 = next(r for r in recording.of_type("kubernetes:storage.k8s.io/v1:StorageClass")
               if r.inputs["metadata"]["name"] == "gp3")
    addon = next(r for r in recording.of_type("aws:eks/addon:Addon") if r.inputs["addonName"] == "aws-ebs-csi-driver")
    assert recording.waits_for(guard, gp3) and recording.waits_for(gp3, addon)
    charts = {r.inputs.get("chart"): r for r in recording.resources.values() if r.type in synth.HELM_TYPES}
    for chart in ("kube-prometheus-stack", "dynamo-platform"):  # Prometheus + Grafana; etcd + NATS
        assert recording.waits_for(charts[chart], guard), chart
    assert not recording.waits_for(guard, charts["kube-prometheus-stack"])  # direction matters
    pod = guard.plain_inputs()["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > volume_guard.DRAIN_SECONDS
    assert guard.plain_inputs()["metadata"]["annotations"]["pulumi.com/deletionPropagationPolicy"] == "foreground"
