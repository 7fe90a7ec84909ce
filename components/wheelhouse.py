"""Wheelhouse: the credential holders' locked wheels, fetched by a Job that holds no credential.

The export and the GPU release hold AWS identities (IRSA) and, the release, an API token; their
pods reach the AWS endpoints and in-cluster services only, never the internet. So their install
step cannot take the boto3 lock from PyPI: this Job does, before either is created (Pulumi
depends_on). It runs `pip download` with the lock's own hash-checking flags onto the wheelhouse
claim, with no service account token, no secret and no AWS identity, and its pod may reach HTTPS
outside the VPC and DNS, nothing else. The credential holders mount the claim read-only and
install from it alone, still requiring every hash: a wheel changed on the claim fails their
install, never runs.

A claim of its own (EFS, like the model store), not a directory on the results volume: that one
is written by the benchmarks (AIPerf's code), the export and the release, and uploaded by the
export; this Job alone writes the wheelhouse. It runs first, before the model download (the lab's
Jobs run one at a time: stacks/pod_fit.py packs one), and pulls the client image the download
needs anyway.
"""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import job_code
from components.base import PART_OF
from components.model_store import rwx_claim
from facts.wheel_locks import INSTALL_FLAGS, WheelLock

APP = "wheelhouse"  # the pod's app.kubernetes.io/name, which its NetworkPolicy selects
WHEELHOUSE_PVC = "wheelhouse"
WHEELHOUSE_GIB = 1  # nominal, as every EFS claim's (the boto3 lock: 7 wheels, ~17 MB)
TIMEOUT_MINUTES = 10  # a few wheels from PyPI
BACKOFF_LIMIT = 3
# What the Job's pod requests (stacks/pod_fit.py checks it fits a system node).
WHEELHOUSE_RESOURCES = {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}


def download_command(lock: WheelLock) -> list[str]:
    """The lock's wheels into its wheelhouse directory, each checked against its sha256 as it
    arrives: pip download takes install's requirement and hash options
    (https://pip.pypa.io/en/stable/cli/pip_download/)."""
    return ["python", "-m", "pip", "download", *INSTALL_FLAGS, *job_code.PIP_QUIET,
            "--index-url", job_code.INDEX_URL, "-d", job_code.wheel_dir(lock), "-r", job_code.lock_file(lock)]


@dataclass(frozen=True)
class WheelhouseArgs:
    namespace: str
    storage_class: pulumi.Input[str]  # the RWX (EFS) StorageClass's name
    lock: WheelLock
    image: str  # the client image: the pip that checks the hashes
    cpu_node_selector: dict[str, str]
    depends_on: list[pulumi.Resource]  # the namespace, the EFS StorageClass, the system nodes


def wheelhouse_job_spec(args: WheelhouseArgs, code_configmap: pulumi.Input[str], code_sha: str) -> dict:
    container = {
        "name": "download-wheels",
        "image": args.image,
        "command": download_command(args.lock),
        "resources": WHEELHOUSE_RESOURCES,
        "volumeMounts": [{"name": job_code.WHEELHOUSE_VOLUME, "mountPath": job_code.WHEELHOUSE_MOUNT}],
    }
    return {
        "backoffLimit": BACKOFF_LIMIT,
        "activeDeadlineSeconds": TIMEOUT_MINUTES * 60,
        # No service account (the namespace's default has no IRSA role) and no token mounted.
        "template": job_code.job_template(
            container=container, lock=None,
            volumes=[{"name": job_code.WHEELHOUSE_VOLUME,
                      "persistentVolumeClaim": {"claimName": WHEELHOUSE_PVC}}],
            code_configmap=code_configmap, node_selector=args.cpu_node_selector,
            labels={"app.kubernetes.io/name": APP, **PART_OF},
            annotations={job_code.DIGEST_ANNOTATION: code_sha}),
    }


class Wheelhouse(pulumi.ComponentResource):
    claim: k8s.core.v1.PersistentVolumeClaim
    job: k8s.batch.v1.Job

    def __init__(self, name: str, args: WheelhouseArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("benchlab:workloads:Wheelhouse", name, None, opts)
        after_inputs = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)
        self.claim = rwx_claim(f"{name}-claim", WHEELHOUSE_PVC, WHEELHOUSE_GIB, args.namespace,
                               args.storage_class, after_inputs)
        code = {args.lock.file_name: args.lock.text()}  # the lock alone: pip is the Job's code
        code_map = job_code.immutable_config_map(f"{name}-lock", args.namespace, code, after_inputs)
        self.job = k8s.batch.v1.Job(
            f"{name}-job",
            metadata={"namespace": args.namespace, "labels": {"app.kubernetes.io/name": APP, **PART_OF}},
            spec=wheelhouse_job_spec(args, code_map.metadata.name, job_code.digest(code)),
            opts=job_code.job_options(self, [*args.depends_on, self.claim], TIMEOUT_MINUTES))
        self.register_outputs({"claim": WHEELHOUSE_PVC, "job": self.job.metadata.name})
