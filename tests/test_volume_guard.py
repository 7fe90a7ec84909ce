"""The volume guard's drain: claims left by StatefulSets are deleted, then it waits for the CSI
driver to delete their volumes (asynchronously), within its deadline."""
from __future__ import annotations

import pytest

from jobs import volume_guard


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
        self.polls_until_gone = polls_until_gone

    def get(self, path: str) -> dict:
        if path.endswith("persistentvolumeclaims"):
            return {"items": self.claims}
        self.polls_until_gone -= 1
        if self.polls_until_gone <= 0:
            self.volumes = [v for v in self.volumes if v["spec"]["storageClassName"] != "gp3"]
        return {"items": self.volumes}

    def delete(self, path: str) -> dict:
        self.deleted.append(path)
        return {}


def test_deletes_the_class_claims_then_waits_until_their_volumes_are_gone():
    api, now = FakeApi(polls_until_gone=3), [0.0]
    left = volume_guard.drain("gp3", deadline=60, get=api.get, delete=api.delete,
                              clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert left == []
    assert api.deleted == ["/api/v1/namespaces/monitoring/persistentvolumeclaims/prometheus-db-0",
                           "/api/v1/namespaces/dynamo-system/persistentvolumeclaims/data-etcd-0"]
    assert now[0] == 2 * volume_guard.POLL_SECONDS  # it waited for the asynchronous deletion


def test_names_what_is_left_at_the_deadline():
    api, now = FakeApi(polls_until_gone=1000), [0.0]
    left = volume_guard.drain("gp3", deadline=20, get=api.get, delete=api.delete,
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
