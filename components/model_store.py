"""ModelStore: the RWX volumes on EFS (model store, benchmark results) and the model download.

The download Job runs on the CPU (system) nodes and waits only for what it needs: the
namespace, the volume (so the EFS StorageClass and its CSI driver) and the HF token Secret.
It does not wait for any GPU node group, so the ~30 GB download overlaps the GPU nodes'
boot, the GPU Operator and the Dynamo platform install (GPU hours are the cost).
"""
from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from jobs import model_download
from components import job_code
from components.base import HF_TOKEN_KEY, PART_OF
from facts.wheel_locks import HUGGINGFACE_HUB

MODEL_PVC = "model-store"
RESULTS_PVC = "bench-results"
MODEL_MOUNT = "/models"  # where every pod of the lab sees the model store
# Every pod reads the model from the store: no Hugging Face hub access at run time.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
RESULTS_MOUNT = "/results"
# What an EFS claim requests: nominal, EFS does not enforce it (capacity "has no meaning and is
# ignored by the CSI driver": https://docs.redhat.com/ja/documentation/openshift_container_platform/4.20/html/storage/efs-create-static-pv_persistent-storage-csi-aws-efs).
EFS_NOMINAL_REQUEST = "1Gi"
EXPECTED_SIZE_ANNOTATION = "benchlab.io/expected-size"  # the configured size, for people and `cost`
# The HF token reaches the download only as a file in its own container (never an env
# variable, never the install init container); jobs/model_download.py reads it after its imports.
HF_TOKEN_DIR = "/var/run/secrets/benchlab/hf-token"
HF_TOKEN_FILE = f"{HF_TOKEN_DIR}/token"
# Pod retries on top of the in-process retries; Kubernetes backs off 10 s, 20 s, 40 s between.
DOWNLOAD_BACKOFF_LIMIT = 3

# What the download Job's pod requests (stacks/pod_fit.py checks it fits a system node).
DOWNLOAD_RESOURCES = {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}


def model_dir(model_id: str, revision: str) -> str:
    """The model's directory as every pod mounting the model store sees it."""
    return str(model_download.model_path(MODEL_MOUNT, model_id, revision))


@dataclass(frozen=True)
class ModelStoreArgs:
    namespace: pulumi.Input[str]
    storage_class: pulumi.Input[str]  # the RWX (EFS) StorageClass's name
    model_id: str
    revision: str
    model_store_gib: int
    results_gib: int
    download_timeout_minutes: int
    hf_token_secret: pulumi.Input[str] | None  # name of the Secret holding HF_TOKEN; None: public model
    image: str  # the client image (facts/images.py), by digest when the stack locks it
    cpu_node_selector: dict[str, str]
    depends_on: list[pulumi.Resource]  # namespace, StorageClass, system nodes, token Secret, the Job before


def download_job_spec(args: ModelStoreArgs, code_configmap: pulumi.Input[str], code_sha: str) -> dict:
    env = {"MODEL_ID": args.model_id, "MODEL_REVISION": args.revision, "MODEL_ROOT": MODEL_MOUNT}
    mounts = [{"name": "model-store", "mountPath": MODEL_MOUNT}]
    volumes = [{"name": "model-store", "persistentVolumeClaim": {"claimName": MODEL_PVC}}]
    if args.hf_token_secret is not None:
        env["HF_TOKEN_FILE"] = HF_TOKEN_FILE
        mounts.append({"name": "hf-token", "mountPath": HF_TOKEN_DIR, "readOnly": True})
        volumes.append({"name": "hf-token", "secret": {
            "secretName": args.hf_token_secret, "items": [{"key": HF_TOKEN_KEY, "path": "token"}]}})
    container = {
        "name": "download",
        "image": args.image,
        "command": job_code.run_module("model_download"),
        "env": job_code.env_list(env),
        "resources": DOWNLOAD_RESOURCES,
        "volumeMounts": mounts,
    }
    return {
        "backoffLimit": DOWNLOAD_BACKOFF_LIMIT,
        # Kubernetes stops the download where Pulumi stops waiting for it.
        "activeDeadlineSeconds": args.download_timeout_minutes * 60,
        # No ttlSecondsAfterFinished: a Job Kubernetes deleted would be re-created (and re-run)
        # by the next `pulumi up`. Finished Jobs hold no resources; destroy removes them.
        "template": job_code.job_template(
            container=container, lock=HUGGINGFACE_HUB, volumes=volumes,
            code_configmap=code_configmap, node_selector=args.cpu_node_selector,
            labels={"app.kubernetes.io/name": "model-download", **PART_OF},
            annotations={job_code.DIGEST_ANNOTATION: code_sha}),
    }


class ModelStore(pulumi.ComponentResource):
    model_pvc: k8s.core.v1.PersistentVolumeClaim
    results_pvc: k8s.core.v1.PersistentVolumeClaim
    download: k8s.batch.v1.Job

    def __init__(self, name: str, args: ModelStoreArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("benchlab:workloads:ModelStore", name, None, opts)
        after_inputs = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)
        self.model_pvc = rwx_claim(f"{name}-{MODEL_PVC}", MODEL_PVC, args.model_store_gib,
                                   args.namespace, args.storage_class, after_inputs)
        self.results_pvc = rwx_claim(f"{name}-{RESULTS_PVC}", RESULTS_PVC, args.results_gib,
                                     args.namespace, args.storage_class, after_inputs)

        self.download = job_code.code_job(
            self, f"{name}-download", entry="model_download", lock=HUGGINGFACE_HUB,
            configmap_name=f"{name}-download-code",
            namespace=args.namespace, app="model-download",
            spec=lambda code_map, code_sha: download_job_spec(args, code_map, code_sha),
            configmap_opts=after_inputs, depends_on=[*args.depends_on, self.model_pvc],
            timeout_minutes=args.download_timeout_minutes)
        self.register_outputs({"modelPvc": MODEL_PVC, "resultsPvc": RESULTS_PVC,
                               "downloadJob": self.download.metadata.name})


def rwx_claim(resource_name: str, claim: str, gib: int, namespace: pulumi.Input[str],
              storage_class: pulumi.Input[str], opts: pulumi.ResourceOptions) -> k8s.core.v1.PersistentVolumeClaim:
    """A ReadWriteMany claim on EFS named `claim`, of nominal size."""
    # Named, not auto-named: the serving graph and the Jobs refer to the claims by name.
    # EFS is elastic and its CSI driver ignores a claim's capacity, so the request is a fixed
    # nominal size: the API server refuses any size change of a bound claim whose
    # StorageClass does not allow expansion (kubernetes/kubernetes:
    # plugin/pkg/admission/storage/persistentvolume/resize/admission.go), and the configured
    # size, a mutable annotation, changes without touching the spec.
    return k8s.core.v1.PersistentVolumeClaim(
        resource_name,
        metadata={"name": claim, "namespace": namespace, "labels": PART_OF,
                  "annotations": {EXPECTED_SIZE_ANNOTATION: f"{gib}Gi"}},
        spec={"accessModes": ["ReadWriteMany"], "storageClassName": storage_class,
              "resources": {"requests": {"storage": EFS_NOMINAL_REQUEST}}},
        opts=opts)
