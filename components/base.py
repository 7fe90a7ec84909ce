"""Base: the lab's namespaces and the Hugging Face token Secret.

The namespaces are created after the storage classes (the caller passes them in
`depends_on`) so that `pulumi destroy` deletes them *before* the storage classes and CSI
drivers: deleting a namespace deletes every PVC in it, including the ones StatefulSets
(Prometheus, etcd, NATS) create and Helm leaves behind, and Pulumi waits until the namespace
is gone, while the CSI drivers can still delete the EBS volumes and EFS access points.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

HF_TOKEN_SECRET = "hf-token-secret"  # the name Dynamo's examples use
HF_TOKEN_KEY = "HF_TOKEN"
PART_OF = {"app.kubernetes.io/part-of": "benchlab"}
# Pod Security Admission: each namespace enforces the strictest profile its pods meet (the
# caller's `enforce`) and warns and audits against restricted
# (https://kubernetes.io/docs/concepts/security/pod-security-admission/ "Pod Security Admission
# labels for namespaces"); tests/test_pod_security.py holds every rendered pod to its namespace's.
PSA_LEVELS = ("restricted", "baseline", "privileged")


def pod_security_labels(enforce: str) -> dict[str, str]:
    labels = {"pod-security.kubernetes.io/enforce": enforce}
    if enforce != "privileged":  # a privileged namespace's pods would warn on every apply
        labels |= {"pod-security.kubernetes.io/warn": "restricted",
                   "pod-security.kubernetes.io/audit": "restricted"}
    return labels


@dataclass(frozen=True)
class BaseArgs:
    namespaces: dict[str, str]  # role ("gpu-operator", "monitoring", ...) -> namespace name
    token_namespace: str  # role of the namespace that holds the HF token Secret
    hf_token: pulumi.Input[str] | None  # a Pulumi secret; None: public model, no Secret
    enforce: dict[str, str] = field(default_factory=dict)  # role -> PSA level (PSA_LEVELS)
    depends_on: list[pulumi.Resource] = field(default_factory=list)


class Base(pulumi.ComponentResource):
    namespaces: dict[str, k8s.core.v1.Namespace]
    hf_token_secret: k8s.core.v1.Secret | None

    def __init__(self, name: str, args: BaseArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("benchlab:platform:Base", name, None, opts)
        self.namespaces = {
            role: k8s.core.v1.Namespace(
                f"{name}-{role}",
                metadata={"name": ns, "labels": {
                    **PART_OF, **pod_security_labels(args.enforce[role])}},
                opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on))
            for role, ns in args.namespaces.items()}
        self.hf_token_secret = None if args.hf_token is None else k8s.core.v1.Secret(
            f"{name}-hf-token",
            metadata={"name": HF_TOKEN_SECRET, "labels": PART_OF,
                      "namespace": self.namespaces[args.token_namespace].metadata.name},
            type="Opaque",
            # The token is a Pulumi secret: the provider keeps the Secret's data encrypted in
            # state and redacted in diffs and logs.
            string_data={HF_TOKEN_KEY: pulumi.Output.secret(args.hf_token)},
            opts=pulumi.ResourceOptions(parent=self))
        outputs: dict[str, Any] = {"namespaces": {r: n.metadata.name for r, n in self.namespaces.items()}}
        if self.hf_token_secret is not None:
            outputs["hfTokenSecret"] = self.hf_token_secret.metadata.name
        self.register_outputs(outputs)
