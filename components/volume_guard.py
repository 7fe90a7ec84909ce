"""VolumeGuard: on `pulumi destroy`, the lab's EBS volumes are gone before the EBS CSI add-on.

StatefulSets (Prometheus, etcd, NATS) leave their claims behind, and the CSI driver deletes a
released volume asynchronously: deleting the namespaces does not wait for the EBS volumes, and an
add-on removed meanwhile leaves them in the account. This Deployment (code: jobs/volume_guard.py)
sits between the releases that own such volumes and the gp3 StorageClass: destroy deletes it
after those releases and before the StorageClass and the add-on. Pulumi deletes a Deployment in
the foreground, waiting for its pod; the pod's answer to SIGTERM is to delete the class's claims
and wait until the CSI driver has deleted every volume of the class.

Its rights are those of the drain and no more: list and delete claims in the namespaces whose
volumes it guards (a Role in each), read its own Deployment (a Role in kube-system), and list
PersistentVolumes (cluster-scoped objects, so a ClusterRole, read-only).
"""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import job_code
from components.base import PART_OF

NAME = "ebs-volume-guard"
GUARD_RESOURCES = {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}
NAMESPACE = "kube-system"  # outlives every namespace of the lab
GRACE_SECONDS = 600  # how long destroy may wait for the EBS volumes
DRAIN_SECONDS = GRACE_SECONDS - 30  # answer (and log) before the kubelet's SIGKILL
READY_FILE = f"{job_code.SCRATCH}/ready"
# Foreground: the Deployment is gone only once its pod is (the provider's default, said here
# because the order depends on it): https://github.com/pulumi/pulumi-kubernetes/pull/3011
PROPAGATION = {"pulumi.com/deletionPropagationPolicy": "foreground"}


@dataclass(frozen=True)
class VolumeGuardArgs:
    storage_class: pulumi.Input[str]  # the RWO class whose volumes must go first (gp3)
    image: str  # the client image: the guard is standard-library code
    cpu_node_selector: dict[str, str]
    guarded_namespaces: dict[str, pulumi.Resource]  # name -> Namespace whose gp3 claims it drains
    depends_on: list[pulumi.Resource]  # the StorageClass (so, its CSI add-on) and the system nodes


def deployment_spec(args: VolumeGuardArgs, code_configmap: pulumi.Input[str], code_sha: str) -> dict:
    labels = {"app.kubernetes.io/name": NAME, **PART_OF}
    container = {
        "name": "guard",
        "image": args.image,
        "command": job_code.run_module("volume_guard"),
        "env": [*job_code.env_list({"STORAGE_CLASS": args.storage_class, "DEPLOYMENT": NAME,
                                    "GUARDED_NAMESPACES": ",".join(sorted(args.guarded_namespaces)),
                                    "DRAIN_SECONDS": str(DRAIN_SECONDS), "READY_FILE": READY_FILE}),
                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
        # Ready (and alive) once it has read the volumes through the API: it can drain them.
        "readinessProbe": {"exec": {"command": ["test", "-f", READY_FILE]}, "periodSeconds": 10},
        "livenessProbe": {"exec": {"command": ["test", "-f", READY_FILE]},
                          "initialDelaySeconds": 60, "periodSeconds": 30},
        "resources": GUARD_RESOURCES,
    }
    template = job_code.job_template(
        container=container, lock=None, volumes=[], code_configmap=code_configmap,
        node_selector=args.cpu_node_selector, labels=labels,
        annotations={job_code.DIGEST_ANNOTATION: code_sha}, service_account=NAME, api_token=True)
    template["spec"] = {**template["spec"], "restartPolicy": "Always",
                        "terminationGracePeriodSeconds": GRACE_SECONDS}
    return {"replicas": 1, "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
            "template": template}


class VolumeGuard(pulumi.ComponentResource):
    deployment: k8s.apps.v1.Deployment

    def __init__(self, name: str, args: VolumeGuardArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("benchlab:aws:VolumeGuard", name, None, opts)
        after = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)
        account = k8s.core.v1.ServiceAccount(
            f"{name}-volume-guard", metadata={"name": NAME, "namespace": NAMESPACE, "labels": PART_OF},
            automount_service_account_token=False, opts=after)
        subject = [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]
        volumes = k8s.rbac.v1.ClusterRole(
            f"{name}-volume-guard", metadata={"labels": PART_OF}, opts=after,
            rules=[{"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": ["list"]}])
        bindings = [k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-volume-guard", metadata={"labels": PART_OF}, opts=after, subjects=subject,
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                      "name": volumes.metadata.name})]
        # is its own Deployment being deleted (destroy) or only rolled out?
        own = {"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": [NAME], "verbs": ["get"]}
        claims = {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["list", "delete"]}
        rules = {NAMESPACE: ([own], None), **{ns: ([claims], resource) for ns, resource in
                                                 sorted(args.guarded_namespaces.items())}}
        for namespace, (namespace_rules, resource) in rules.items():
            in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[
                *args.depends_on, *([resource] if resource is not None else [])])
            role = k8s.rbac.v1.Role(f"{name}-volume-guard-{namespace}", opts=in_namespace,
                                    metadata={"namespace": namespace, "labels": PART_OF}, rules=namespace_rules)
            bindings.append(k8s.rbac.v1.RoleBinding(
                f"{name}-volume-guard-{namespace}", opts=in_namespace, subjects=subject,
                metadata={"namespace": namespace, "labels": PART_OF},
                role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role.metadata.name}))
        code = job_code.code_files("volume_guard", None)
        code_map = job_code.immutable_config_map(f"{name}-volume-guard-code", NAMESPACE, code, after)
        self.deployment = k8s.apps.v1.Deployment(
            f"{name}-volume-guard",
            metadata={"name": NAME, "namespace": NAMESPACE, "annotations": PROPAGATION,
                      "labels": {"app.kubernetes.io/name": NAME, **PART_OF}},
            spec=deployment_spec(args, code_map.metadata.name, job_code.digest(code)),
            opts=pulumi.ResourceOptions(
                # after its rights, so destroy deletes it (and runs the drain) before them
                parent=self, depends_on=[*args.depends_on, account, *bindings],
                custom_timeouts=pulumi.CustomTimeouts(delete=f"{GRACE_SECONDS // 60 + 1}m")))
        self.register_outputs({"deployment": NAME})
