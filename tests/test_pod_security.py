"""Every pod the stack creates, held to one bar: checkov ignores the DynamoGraphDeployment (a
custom resource) and never sees what the Helm charts render, so this walks every pod spec the
program registers itself, Jobs, CronJobs, Deployments, DaemonSets and each DGD service's
extraPodSpec alike, in both serving modes with every image locked:

- security context: no privilege escalation, not privileged, every capability dropped, none
  added but IPC_LOCK on a pod holding EFA interfaces (RDMA pins memory), non-root, seccomp
  RuntimeDefault, read-only root filesystem;
- no host namespaces and no hostPath volume;
- no automounted service-account token (a pod that calls the API gets a projected one);
- images: by digest where the lock has the tag, never `:latest` or untagged; a pod holding a
  credential runs an image whose digest `pulumi up` requires (facts/images.CREDENTIAL_ROLES);
- each pod meets the Pod Security level its namespace enforces.

For the charts, the values the stack passes: each release pinned to an exact version, no image
tag `latest`, and the dynamo-platform overrides (namespace-restricted operator, no TRT-LLM SSH
key Job).
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import pytest

from cli import offline, synth
from components.base import PSA_LEVELS
from facts import images
from stacks import config
from stacks.serving_spec import EFA_RESOURCE, RDMA_CAPABILITY
from tests.conftest import REPO, serving_mode

# Pod Security Standards (https://kubernetes.io/docs/concepts/security/pod-security-standards/):
# baseline's "Capabilities" allow-list; restricted allows NET_BIND_SERVICE alone, and these volumes.
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}
HOST_NAMESPACES = ("hostNetwork", "hostPID", "hostIPC")
# semver as Helm pins it (a leading v allowed): no range, no wildcard
EXACT_VERSION = re.compile(r"v?\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?")


@dataclass(frozen=True)
class Pod:
    where: str  # the resource, and the DGD service for a graph's pod
    namespace: str
    spec: dict  # pod-level fields
    containers: list[dict]  # init containers included
    efa: bool  # holds EFA interfaces (the one case allowed IPC_LOCK)


def pod_spec(obj: dict) -> dict | None:
    kind, spec = obj["kind"], obj.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"]
    if kind in ("Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"):
        return spec["template"]["spec"]
    return None


def pods(rec: offline.Recording) -> list[Pod]:
    found = []
    for res in rec.resources.values():
        if not synth.is_kubernetes_object(res):
            continue
        obj = synth.kubernetes_object(res)
        namespace = obj["metadata"].get("namespace", "default")
        if obj["kind"] == "DynamoGraphDeployment":
            for service, body in obj["spec"]["services"].items():
                extra = dict(body.get("extraPodSpec") or {})
                main = extra.pop("mainContainer")
                found.append(Pod(f"{res.name}/{service}", namespace, extra, [main],
                                 EFA_RESOURCE in str(body.get("resources"))))
            continue
        spec = pod_spec(obj)
        if spec is not None:
            containers = [*spec.get("initContainers", []), *spec["containers"]]
            found.append(Pod(res.name, namespace, spec, containers,
                             any(EFA_RESOURCE in str(c.get("resources")) for c in containers)))
    return found


def digest_of(reference: str) -> str:
    return "sha256:" + hashlib.sha256(reference.encode()).hexdigest()


def stack_values(mode: str, locked_roles: tuple[str, ...]) -> dict:
    """Pulumi.dev.yaml in `mode`, the images of `locked_roles` locked, no tag accepted."""
    raw = offline.stack_config(str(REPO / "Pulumi.dev.yaml"))
    raw = {**raw, "serving": {**raw["serving"], **serving_mode(mode)}, "imagePolicy": {"allowUnpinnedImages": False}}
    references = config.parse(raw).images()
    return {**raw, "imageDigests": {references[role]: digest_of(references[role]) for role in locked_roles}}


@pytest.fixture(scope="module", params=["agg", "disagg"])
def locked(request):
    """(config, recording) of a stack with every image locked."""
    raw = stack_values(request.param, ("serving", "client"))
    return config.parse(raw), offline.run_program(raw, {"hfToken": "hf_x", "grafanaAdminPassword": "pw"})


def container_problems(pod: Pod) -> list[str]:
    problems = []
    pod_context = pod.spec.get("securityContext") or {}
    for c in pod.containers:
        sc, name = c.get("securityContext") or {}, f"{pod.where} container {c.get('name', 'main')}"
        caps = sc.get("capabilities") or {}
        allowed = {RDMA_CAPABILITY} if pod.efa else set()
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{name}: capabilities not dropped (drop: {caps.get('drop')})")
        if set(caps.get("add", [])) - allowed:
            problems.append(f"{name}: adds {sorted(set(caps['add']) - allowed)}")
        if not sc.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot is not set")
        if sc.get("runAsUser", pod_context.get("runAsUser")) in (0, None):
            problems.append(f"{name}: no numeric non-root runAsUser (the kubelet cannot check a user name)")
        seccomp = (sc.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            problems.append(f"{name}: seccomp profile {seccomp!r}, not RuntimeDefault")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: root filesystem is writable")
    return problems


def pod_problems(pod: Pod) -> list[str]:
    problems = [f"{pod.where}: {field}" for field in HOST_NAMESPACES if pod.spec.get(field)]
    problems += [f"{pod.where}: hostPath volume {v['name']}" for v in pod.spec.get("volumes", []) if "hostPath" in v]
    if pod.spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{pod.where}: the service-account token is automounted")
    return problems + container_problems(pod)


def image_problems(pod: Pod, digests: dict[str, str]) -> list[str]:
    problems = []
    for c in pod.containers:
        reference, _, digest = c["image"].partition("@")
        tag = reference.rpartition("/")[2].partition(":")[2]
        if tag in ("", "latest"):
            problems.append(f"{pod.where}: {c['image']} has no pinned tag")
        if reference in digests and digest != digests[reference]:
            problems.append(f"{pod.where}: {c['image']} is not deployed by its locked digest {digests[reference]}")
    return problems


def holds_credential(pod: Pod) -> bool:
    """A Secret, a service-account token or an IRSA identity (a service account) in the pod."""
    text = str(pod.spec) + str(pod.containers)
    return bool(pod.spec.get("serviceAccountName")) or any(
        marker in text for marker in ("'secret'", "secretKeyRef", "secretRef", "serviceAccountToken"))


def psa_problems(pod: Pod, level: str) -> list[str]:
    """What keeps `pod` out of a namespace enforcing `level` (the checks the lab's pods touch)."""
    if level == "privileged":
        return []
    # host namespaces and hostPath: baseline forbids both
    problems = [f"{pod.where}: {field}" for field in HOST_NAMESPACES if pod.spec.get(field)]
    problems += [f"{pod.where}: hostPath" for v in pod.spec.get("volumes", []) if "hostPath" in v]
    allowed = BASELINE_CAPABILITIES if level == "baseline" else {"NET_BIND_SERVICE"}
    for c in pod.containers:
        sc = c.get("securityContext") or {}
        extra = set((sc.get("capabilities") or {}).get("add", [])) - allowed
        if extra or sc.get("privileged"):
            problems.append(f"{pod.where}: {level} forbids {sorted(extra) or 'privileged'}")
    if level == "restricted":
        problems += [p for p in container_problems(pod) if "root filesystem" not in p]
        problems += [f"{pod.where}: volume {v['name']} is not of a restricted type" for v in pod.spec.get("volumes", [])
                     if not set(v) - {"name"} <= RESTRICTED_VOLUMES]
    return problems


def test_every_pod_spec_is_hardened(locked):
    _, rec = locked
    found = pods(rec)
    kinds = {synth.kubernetes_object(r)["kind"] for r in rec.resources.values() if synth.is_kubernetes_object(r)}
    assert {"Job", "CronJob", "Deployment", "DynamoGraphDeployment"} <= kinds  # not vacuous
    assert sum("/" in p.where for p in found) >= 2  # the graph's services are among them
    assert [problem for pod in found for problem in pod_problems(pod)] == []


def test_every_image_is_pinned_and_deployed_by_its_digest(locked):
    cfg, rec = locked
    assert cfg.image_digests and all(cfg.image_digests.values())
    assert [problem for pod in pods(rec) for problem in image_problems(pod, cfg.image_digests)] == []


def test_every_credential_holder_runs_an_image_pulumi_up_requires_a_digest_for():
    """Lock only the CREDENTIAL_ROLES images: every pod holding a credential is then by digest,
    so validation's rule (stacks/config.check_image_pinning) covers each of them."""
    for mode in ("agg", "disagg"):
        rec = offline.run_program(stack_values(mode, images.CREDENTIAL_ROLES), {"hfToken": "hf_x"})
        holders = [p for p in pods(rec) if holds_credential(p)]
        assert len(holders) >= 5, [p.where for p in holders]  # download, benchmarks, check, export, release, guard
        assert [f"{p.where}: {c['image']}" for p in holders for c in p.containers if "@sha256:" not in c["image"]] == []


def test_each_pod_meets_its_namespaces_enforced_pod_security_level(locked):
    _, rec = locked
    levels = {ns.inputs["metadata"]["name"]: ns.inputs["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
              for ns in rec.of_type("kubernetes:core/v1:Namespace")}
    assert set(levels.values()) <= set(PSA_LEVELS), levels
    problems = [p for pod in pods(rec) if pod.namespace in levels for p in psa_problems(pod, levels[pod.namespace])]
    assert problems == []
    assert {pod.namespace for pod in pods(rec)} & set(levels)  # not vacuous
    if levels["benchlab"] == "privileged":  # only for the EFA workers' IPC_LOCK
        assert any(pod.efa for pod in pods(rec) if pod.namespace == "benchlab")


def test_the_lab_namespace_is_restricted_unless_efa_workers_need_ipc_lock(run_lab):
    """Baseline's capability allow-list has no IPC_LOCK: only disagg over EFA relaxes the lab."""
    def level(overrides):
        rec = run_lab(overrides=overrides)
        (ns,) = [n for n in rec.of_type("kubernetes:core/v1:Namespace") if n.inputs["metadata"]["name"] == "benchlab"]
        return ns.inputs["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
    assert level({"serving": serving_mode("agg")}) == "restricted"
    assert level({"serving": {**serving_mode("disagg"), "kvTransport": "tcp"}}) == "restricted"


def releases(rec: offline.Recording) -> dict[str, dict]:
    return {r.name: synth.helm_release(r) for r in rec.resources.values() if r.type in synth.HELM_TYPES}


def image_tags(values, path=""):
    """(path, tag) of every image block (`repository` + `tag`) in chart values."""
    if isinstance(values, dict):
        if "repository" in values and "tag" in values:
            yield path, str(values["tag"])
        for key, value in values.items():
            yield from image_tags(value, f"{path}.{key}")
    elif isinstance(values, list):
        for i, value in enumerate(values):
            yield from image_tags(value, f"{path}[{i}]")


def test_every_chart_is_pinned_to_an_exact_version_and_no_value_pulls_latest(locked):
    _, rec = locked
    found = releases(rec)
    assert len(found) >= 5, sorted(found)
    assert {name: r["version"] for name, r in found.items() if not EXACT_VERSION.fullmatch(str(r["version"]))} == {}
    assert [(name, path, tag) for name, r in found.items() for path, tag in image_tags(r["values"])
            if tag in ("", "latest")] == []


def test_the_dynamo_operator_watches_the_lab_namespace_only(locked):
    _, rec = locked
    (platform,) = [r for r in releases(rec).values() if r["chart"] == "dynamo-platform"]
    operator = platform["values"]["dynamo-operator"]
    assert operator["namespaceRestriction"] == {"enabled": True, "targetNamespace": "benchlab"}
    (graph,) = [synth.kubernetes_object(r) for r in rec.resources.values()
                if synth.is_kubernetes_object(r) and r.type.endswith(":DynamoGraphDeployment")]
    assert graph["metadata"].get("namespace", "benchlab") == "benchlab"
    assert operator["dynamo"]["mpiRun"]["sshKeygen"]["enabled"] is False


def test_the_overridden_keys_exist_in_the_pinned_chart(shared):
    """Each key the lab sets exists in the 0.9.x chart's own values (a misspelt key is ignored by Helm)."""
    import yaml
    chart = yaml.safe_load(shared("dynamo-0.9.x/deploy/helm/charts/platform/values.yaml").read_text())
    operator = chart["dynamo-operator"]
    assert "enabled" in operator["namespaceRestriction"] and "targetNamespace" in operator["namespaceRestriction"]
    assert "enabled" in operator["dynamo"]["mpiRun"]["sshKeygen"]
