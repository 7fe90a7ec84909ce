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
# GPU Operator pods need host access (privileged); EKS does not enforce PSA by default, this
# says so explicitly for clusters that do.
PRIVILEGED = {"pod-security.kubernetes.io/enforce": "privileged"}
# Every other namespace of the lab: warn on apply and audit against the restricted profile
# (https://kubernetes.io/docs/concepts/security/pod-security-admission/ "Pod Security Admission
# labels for namespaces"), without enforcing it: the EFA workers add IPC_LOCK (RDMA pins memory),
# which the restricted profile forbids, and say so on every apply.
RESTRICTED_WARN_AUDIT = {"pod-security.kubernetes.io/warn": "restricted",
                         "pod-security.kubernetes.io/audit": "restricted"}


@dataclass(frozen=True)
class BaseArgs:
    namespaces: dict[str, str]  # role ("gpu-operator", "monitoring", ...) -> namespace name
    token_namespace: str  # role of the namespace that holds the HF token Secret
    hf_token: pulumi.Input[str] | None  # a Pulumi secret; None: public model, no Secret
    privileged: tuple[str, ...] = ()  # roles of namespaces whose pods need privilege
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
                    **PART_OF, **(PRIVILEGED if role in args.privileged else RESTRICTED_WARN_AUDIT)}},
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
