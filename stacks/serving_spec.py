"""The DynamoGraphDeployment the stack serves, agg or disagg, built from the stack config.

Pure: the composition, the run plan, tests and `benchlab synth` render both modes from a StackConfig.

- agg: a Frontend on a CPU node; aggregated vLLM workers (TP from config) on the prefill
  (A100) node group.
- disagg: a Frontend with the KV-aware router; prefill workers on the A100s, decode workers on
  the L40S nodes; KV blocks move prefill -> decode through NIXL over EFA (UCX's SRD
  transport), and the prefill workers offload KV blocks GPU -> host memory -> local disk
  through the KV block manager (KVBM).

Every pod reads the model from the model-store PVC (no hub access: HF_HUB_OFFLINE). The
manifest is annotated so Pulumi waits for the operator's Ready condition.
"""
from __future__ import annotations

from dataclasses import dataclass

from components.base import PART_OF
from components.cluster import GPU_TAINT_EFFECT, GPU_TAINT_KEY, ROLE_LABEL
from components.job_code import env_list
from components.model_store import MODEL_MOUNT, MODEL_PVC, OFFLINE_ENV, model_dir
from facts.instances import InstanceFacts, facts
from stacks.config import StackConfig, Workers

API_VERSION = "nvidia.com/v1alpha1"
KIND = "DynamoGraphDeployment"
WORKING_DIR = "/workspace/examples/backends/vllm"
EFA_RESOURCE = "vpc.amazonaws.com/efa"
# Dynamo's disagg communication guide: vLLM needs ~16 GiB of /dev/shm for its worker processes.
SHARED_MEMORY = "16Gi"
KVBM_DISK_MOUNT = "/kvbm-disk"
# NIXL -> UCX over EFA, as Dynamo's disagg communication guide requires for AWS EFA: the SRD
# transport (TCP as fallback), and no forced zero-copy rendezvous (crashes on EFA with CUDA
# buffers); cuda_copy lets UCX see GPU buffers. FI_PROVIDER pins libfabric users to EFA.
EFA_ENV = {"UCX_TLS": "srd,cuda_copy,tcp", "UCX_RNDV_SCHEME": "auto", "UCX_RNDV_THRESH": "8192",
           "FI_PROVIDER": "efa"}
# Part of a GPU node's CPU and memory left to DaemonSets and the kubelet: a worker requests
# its GPU share of the rest.
HOST_SHARE_USED = 0.75
GPU_TOLERATION = {"key": GPU_TAINT_KEY, "operator": "Exists", "effect": GPU_TAINT_EFFECT}


def graph_name(mode: str) -> str:
    return f"benchlab-{mode}"


def image(cfg: StackConfig) -> str:
    """vllm-runtime at the pinned Dynamo version, by digest when the stack locks it."""
    return cfg.deployed_image("serving")


@dataclass(frozen=True)
class WorkerShare:
    """What one worker of a node group requests besides its GPUs."""
    cpu: int
    memory_gib: int
    efa: int  # EFA interfaces per worker: all of a node's, split among its workers


def worker_share(node: InstanceFacts, tp: int) -> WorkerShare:
    per_node = node.gpus // tp
    return WorkerShare(cpu=int(node.vcpus * HOST_SHARE_USED) // per_node,
                       memory_gib=int(node.memory_gib * HOST_SHARE_USED) // per_node,
                       efa=node.efa_interfaces // per_node)


def graph_warnings(cfg: StackConfig) -> list[str]:
    """Facts about the chosen graph an operator should know before paying for it."""
    if cfg.serving.mode != "disagg":
        return []
    warnings = []
    for role, (group, workers) in cfg.worker_roles().items():
        instance = getattr(cfg.node_groups, group).instance_type
        node = facts(instance)
        if worker_share(node, workers.tp).efa == 0:
            warnings.append(
                f"{role} workers get no EFA interface: a {instance} has {node.efa_interfaces} for "
                f"{node.gpus // workers.tp} TP{workers.tp} workers, so their KV transfers fall "
                "back to TCP (pick an instance type with one EFA interface per worker, e.g. "
                "g6e.24xlarge for TP2 decode, to keep them on EFA)")
    return warnings


def graph_manifest(cfg: StackConfig, namespace: str | None = None) -> dict:
    """The DynamoGraphDeployment object for cfg.serving.mode."""
    mode = cfg.serving.mode
    metadata: dict = {"name": graph_name(mode), "labels": dict(PART_OF),
                      # pulumi-kubernetes: a custom resource is ready when this condition is.
                      "annotations": {"pulumi.com/waitFor": "condition=Ready"}}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata,
            "spec": graph_spec(cfg)}


def graph_spec(cfg: StackConfig) -> dict:
    services = {"Frontend": _frontend(cfg)}
    if cfg.serving.mode == "agg":
        services["VllmWorker"] = _worker(cfg, "prefill", cfg.serving.agg, sub_component=None)
    else:
        services["VllmPrefillWorker"] = _worker(cfg, "prefill", cfg.serving.prefill, "prefill")
        services["VllmDecodeWorker"] = _worker(cfg, "decode", cfg.serving.decode, "decode")
    return {"backendFramework": "vllm",
            # The claim exists already (ModelStore): the operator only mounts it.
            "pvcs": [{"name": MODEL_PVC, "create": False}],
            "services": services}


def _frontend(cfg: StackConfig) -> dict:
    return {
        "componentType": "frontend",
        "replicas": 1,
        "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}},
        "volumeMounts": [{"name": MODEL_PVC, "mountPoint": MODEL_MOUNT}],
        "envs": env_list({**OFFLINE_ENV, **({"DYN_ROUTER_MODE": "kv"} if cfg.serving.mode == "disagg" else {})}),
        "extraPodSpec": {"nodeSelector": {ROLE_LABEL: "system"},
                         "mainContainer": {"image": image(cfg)}},
    }


def _worker(cfg: StackConfig, group: str, workers: Workers, sub_component: str | None) -> dict:
    node = facts(getattr(cfg.node_groups, group).instance_type)
    share = worker_share(node, workers.tp)
    disagg = sub_component is not None
    gpus = str(workers.tp)
    requests: dict = {"cpu": str(share.cpu), "memory": f"{share.memory_gib}Gi", "gpu": gpus}
    limits: dict = {"gpu": gpus}
    if disagg and share.efa:  # extended resources: request == limit
        requests["custom"] = limits["custom"] = {EFA_RESOURCE: str(share.efa)}

    args = ["--model", model_dir(cfg.model.id, cfg.model.revision),
            "--served-model-name", cfg.model.id, "--tensor-parallel-size", gpus]
    env = dict(OFFLINE_ENV)
    container: dict = {"image": image(cfg), "workingDir": WORKING_DIR,
                       "command": ["python3", "-m", "dynamo.vllm"]}
    pod: dict = {"nodeSelector": {ROLE_LABEL: group}, "tolerations": [GPU_TOLERATION]}
    if sub_component == "prefill":
        args += ["--is-prefill-worker", "--connector", "kvbm", "nixl"]
        offload = cfg.serving.kv_offload
        env |= {"DYN_KVBM_CPU_CACHE_GB": str(offload.cpu_cache_gib),
                "DYN_KVBM_DISK_CACHE_GB": str(offload.disk_cache_gib),
                "DYN_KVBM_DISK_CACHE_DIR": KVBM_DISK_MOUNT}
        # The disk tier: node-local storage (the node's SSD). The limit is the cache's size:
        # KVBM stays within it, so the kubelet never evicts the worker for its disk use.
        pod["volumes"] = [{"name": "kvbm-disk",
                           "emptyDir": {"sizeLimit": f"{offload.disk_cache_gib}Gi"}}]
        container["volumeMounts"] = [{"name": "kvbm-disk", "mountPath": KVBM_DISK_MOUNT}]
    elif sub_component == "decode":
        args += ["--is-decode-worker", "--connector", "nixl"]
    if disagg:
        env |= EFA_ENV
        # RDMA pins (registers) memory: UCX needs to lock more than the default memlock limit.
        container["securityContext"] = {"capabilities": {"add": ["IPC_LOCK"]}}
    container["args"] = args
    pod["mainContainer"] = container

    service: dict = {"componentType": "worker"}
    if sub_component:
        service["subComponentType"] = sub_component
    service.update({
        "replicas": workers.replicas,
        "resources": {"requests": requests, "limits": limits},
        "sharedMemory": {"size": SHARED_MEMORY},
        "volumeMounts": [{"name": MODEL_PVC, "mountPoint": MODEL_MOUNT}],
        "envs": env_list(env),
        "extraPodSpec": pod,
    })
    return service


