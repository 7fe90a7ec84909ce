"""The volume guard's drain: claims left by StatefulSets are deleted, then it waits for the CSI
driver to delete their volumes (asynchronously), within its deadline; and its rights, as the
mocked program grants them: claims only in the namespaces it guards."""
from __future__ import annotations

import pytest

from cli import offline
from jobs import volume_guard
from tests.conftest import REPO

GUARDED = ["dynamo-system", "monitoring"]  # the namespaces of the gp3 StatefulSets
RBAC = "kubernetes:rbac.authorization.k8s.io/v1:"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "*"}


def claim(ns: str, name: str, storage_class: str, deleting: bool = False) -> dict:
    meta = {"namespace": ns, "name": name, **({"deletionTimestamp": "now"} if deleting else {})}
    return {"metadata": meta, "spec": {"storageClassName": storage_class}}


def volume(name: str, storage_class: str) -> dict:
    return {"metadata": {"name": name}, "spec": {"storageClassName": storage_class}}


class FakeApi:
    """PVs of deleted claims disappear a few polls later, as the CSI driver deletes them."""

    def __init__(self, polls_until_gone: int):
        self.claims = [claim("monitoring", "prometheus-db-0", "gp3"),
                       claim("dynamo-system", "data-etcd-0", "gp3"),
                       claim("dynamo-system", "nats-js-0", "gp3", deleting=True),
                       claim("benchlab", "model-store", "efs")]
        self.volumes = [volume("pvc-1", "gp3"), volume("pvc-2", "gp3"), volume("pvc-3", "efs")]
        self.deleted: list[str] = []
        self.listed: list[str] = []
        self.polls_until_gone = polls_until_gone

    def get(self, path: str) -> dict:
        if path.endswith("persistentvolumeclaims"):
            namespace = path.split("/")[4]  # /api/v1/namespaces/<ns>/persistentvolumeclaims
            self.listed.append(namespace)
            return {"items": [c for c in self.claims if c["metadata"]["namespace"] == namespace]}
        self.polls_until_gone -= 1
        if self.polls_until_gone <= 0:
            self.volumes = [v for v in self.volumes if v["spec"]["storageClassName"] != "gp3"]
        return {"items": self.volumes}

    def delete(self, path: str) -> dict:
        self.deleted.append(path)
        return {}


def test_deletes_the_class_claims_then_waits_until_their_volumes_are_gone():
    api, now = FakeApi(polls_until_gone=3), [0.0]
    left = volume_guard.drain("gp3", GUARDED, deadline=60, get=api.get, delete=api.delete,
                              clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert left == []
    assert api.listed == GUARDED  # never the cluster-wide list its Roles do not allow
    assert api.deleted == ["/api/v1/namespaces/dynamo-system/persistentvolumeclaims/data-etcd-0",
                           "/api/v1/namespaces/monitoring/persistentvolumeclaims/prometheus-db-0"]
    assert now[0] == 2 * volume_guard.POLL_SECONDS  # it waited for the asynchronous deletion


def test_names_what_is_left_at_the_deadline():
    api, now = FakeApi(polls_until_gone=1000), [0.0]
    left = volume_guard.drain("gp3", GUARDED, deadline=20, get=api.get, delete=api.delete,
                              clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert left == ["pvc-1", "pvc-2"] and now[0] >= 20


def test_only_a_destroy_drains_not_a_rollout_or_an_eviction():
    assert volume_guard.destroying(None)  # already gone
    assert volume_guard.destroying({"metadata": {"deletionTimestamp": "2026-11-29T23:00:00Z"}})
    assert not volume_guard.destroying({"metadata": {"name": "ebs-volume-guard"}})


def test_its_deployment_missing_counts_as_destroyed_other_api_errors_do_not():
    import urllib.error
    env = {"POD_NAMESPACE": "kube-system", "DEPLOYMENT": "ebs-volume-guard"}

    def gone(path):
        raise urllib.error.HTTPError(path, 404, "not found", {}, None)

    def refused(path):
        raise urllib.error.HTTPError(path, 403, "forbidden", {}, None)
    assert volume_guard.own_deployment(env, get=gone) is None
    with pytest.raises(urllib.error.HTTPError):  # a refused lookup never passes for a destroy
        volume_guard.own_deployment(env, get=refused)


@pytest.fixture(scope="module")
def recording() -> offline.Recording:
    return offline.run_program(offline.stack_config(str(REPO / "Pulumi.dev.yaml")))


def guard_rbac(recording: offline.Recording, kind: str) -> list[dict]:
    return [r.plain_inputs() for r in recording.of_type(RBAC + kind) if "-volume-guard" in r.name]


def test_the_guard_deletes_claims_only_in_the_namespaces_it_guards(recording):
    roles = {r["metadata"]["namespace"]: r["rules"] for r in guard_rbac(recording, "Role")}
    claims = [{"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["list", "delete"]}]
    assert {ns: rules for ns, rules in roles.items() if ns != "kube-system"} == dict.fromkeys(GUARDED, claims)
    assert roles["kube-system"] == [{"apiGroups": ["apps"], "resources": ["deployments"],
                                     "resourceNames": ["ebs-volume-guard"], "verbs": ["get"]}]
    bindings = guard_rbac(recording, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == sorted([*GUARDED, "kube-system"])
    assert all(b["subjects"] == [{"kind": "ServiceAccount", "name": "ebs-volume-guard", "namespace": "kube-system"}]
               and b["roleRef"]["kind"] == "Role" for b in bindings)
    deployment = recording.one("kubernetes:apps/v1:Deployment", "benchlab-dev-volume-guard").plain_inputs()
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert sorted(env["GUARDED_NAMESPACES"].split(",")) == GUARDED


def test_the_guard_s_cluster_wide_right_is_to_list_volumes(recording):
    (cluster_role,) = guard_rbac(recording, "ClusterRole")
    assert cluster_role["rules"] == [{"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": ["list"]}]


def test_no_cluster_role_of_the_stack_writes_anything(recording):
    """The class: a ClusterRole reaches every namespace, so none of ours may change an object."""
    writes = {r.name: rule["verbs"] for r in recording.of_type(RBAC + "ClusterRole")
              for rule in r.plain_inputs()["rules"] if WRITE_VERBS & set(rule["verbs"])}
    assert writes == {}


def test_destroy_deletes_the_guard_before_its_rights(recording):
    """The drain runs while the Deployment is deleted: its bindings must still be there."""
    guard = recording.one("kubernetes:apps/v1:Deployment", "benchlab-dev-volume-guard")
    for kind in ("RoleBinding", "ClusterRoleBinding"):
        for binding in recording.of_type(RBAC + kind):
            if "-volume-guard" in binding.name:
                assert recording.waits_for(guard, binding), binding.name
