"""Every Kubernetes object the program registers itself validates against Kubernetes 1.32
(kubernetes-validate, strict: unknown fields are errors), agg and disagg. Helm releases and
charts are Helm's to render; custom resources (whose schema is a CRD, e.g. the
DynamoGraphDeployment) are validated against their CRD elsewhere (tests/test_dgd_schema.py)."""
from __future__ import annotations

import kubernetes_validate
import pytest

from cli import offline
from tests.conftest import serving_mode

KUBERNETES_VERSION = "1.32"
NOT_OBJECTS = ("kubernetes:helm.sh/", "kubernetes:yaml/", "kubernetes:kustomize/")
# API groups served by Kubernetes itself; any other group is a custom resource.
CORE_GROUPS = {"", "apps", "batch", "policy", "autoscaling"}


def is_builtin(api_version: str) -> bool:
    group = api_version.rpartition("/")[0]
    return group in CORE_GROUPS or group.endswith(".k8s.io")


def manifests(rec: offline.Recording) -> list[tuple[str, dict]]:
    """(resource name, object) for every built-in Kubernetes object the program registers.
    Secrets revealed, in memory only: redaction markers would not validate."""
    out = []
    for res in rec.resources.values():
        if not res.type.startswith("kubernetes:") or res.type.startswith(NOT_OBJECTS):
            continue
        assert not res.type.endswith("Patch"), f"{res.name}: a patch is not a whole object"
        obj = res.plain_inputs(reveal=True)
        if is_builtin(obj["apiVersion"]):
            out.append((res.name, obj))
    return out


@pytest.fixture(scope="module", params=["agg", "disagg"])
def recording(request):
    from tests.conftest import REPO
    config = offline.stack_config(str(REPO / "Pulumi.dev.yaml"))
    return offline.run_program({**config, "serving": serving_mode(request.param)}, {"hfToken": "hf_x"})


def test_every_object_validates_against_kubernetes_1_32(recording):
    objects = manifests(recording)
    kinds = {obj["kind"] for _, obj in objects}
    assert {"Namespace", "Secret", "ConfigMap"} <= kinds, kinds  # not vacuous
    # the benchmarks' pod listing in the GPU Operator's namespace (components/benchmark_jobs.py)
    assert {("Role", "gpu-operator"), ("RoleBinding", "gpu-operator")} <= {
        (obj["kind"], obj["metadata"].get("namespace")) for _, obj in objects}
    problems = []
    for name, obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            where = "/".join(str(p) for p in err.path)
            problems.append(f"{name} ({obj['kind']}) at {where or '/'}: {err.message}")
        except kubernetes_validate.SchemaNotFoundError:
            problems.append(f"{name}: no Kubernetes {KUBERNETES_VERSION} schema for "
                            f"{obj['apiVersion']}/{obj['kind']}")
    assert not problems, "\n".join(problems)


def test_custom_resources_are_told_apart_from_builtins():
    assert is_builtin("v1") and is_builtin("apps/v1") and is_builtin("rbac.authorization.k8s.io/v1")
    assert not is_builtin("nvidia.com/v1alpha1") and not is_builtin("monitoring.coreos.com/v1")


def test_an_unknown_field_fails_strict_validation(recording):
    """The same check rejects a field Kubernetes does not have, and a wrong type."""
    namespace = next(o for _, o in manifests(recording) if o["kind"] == "Namespace")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**namespace, "spec": {"finalizer": ["x"]}}, KUBERNETES_VERSION,
                                     strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**namespace, "metadata": {**namespace["metadata"], "labels": "x"}},
                                     KUBERNETES_VERSION, strict=True)
