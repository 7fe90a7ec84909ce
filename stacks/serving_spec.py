"""The DynamoGraphDeployment the stack serves, agg or disagg, built from the stack config.

Pure: the composition, the run plan, tests and `benchlab synth` render both modes from a StackConfig.

- agg: a Frontend on a CPU node; aggregated vLLM workers (TP from config) on the prefill
  (A100) node group.
- both: the Frontend routes with `serving.routerMode` (KV-aware by default), and every worker
  runs with its role's batch limits set explicitly (`maxNumSeqs`, `maxNumBatchedTokens`).
- disagg: prefill workers on the A100s, decode workers on the L40S nodes; KV blocks move
  prefill -> decode through NIXL, over EFA by default (NIXL's LIBFABRIC backend, each worker
  with EFA interfaces of its own; `serving.kvTransport`), and the prefill workers offload KV
  blocks GPU -> host memory -> local disk through the KV block manager (KVBM).

Every pod reads the model from the model-store PVC, mounted read-only (no hub access:
HF_HUB_OFFLINE). Serving pods run without privilege escalation, with every capability dropped
(IPC_LOCK added back where RDMA pins memory) and without a service-account token: discovery
goes through etcd, not the Kubernetes API. The manifest is annotated so Pulumi waits for the
operator's Ready condition.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from components.base import PART_OF
from components.cluster import GPU_TAINT_EFFECT, GPU_TAINT_KEY, ROLE_LABEL
from components.job_code import env_list
from components.model_store import MODEL_MOUNT, MODEL_PVC, OFFLINE_ENV, model_dir
from facts.instances import InstanceFacts, facts, workers_per_node
from stacks.config import StackConfig, Workers

API_VERSION = "nvidia.com/v1alpha1"
KIND = "DynamoGraphDeployment"
WORKING_DIR = "/workspace/examples/backends/vllm"
EFA_RESOURCE = "vpc.amazonaws.com/efa"
# Dynamo's disagg communication guide: vLLM needs ~16 GiB of /dev/shm for its worker processes.
SHARED_MEMORY = "16Gi"
KVBM_DISK_MOUNT = "/kvbm-disk"
# KVBM's Prometheus endpoint (its own server, not the worker's system port), which the
# KV-block-manager dashboard reads; off unless DYN_KVBM_METRICS is true.
# wxsms/dynamo docs/kvbm/vllm-setup.md (DYN_KVBM_METRICS, DYN_KVBM_METRICS_PORT, default 6880)
KVBM_METRICS_PORT = 6880
KVBM_METRICS_PORT_NAME = "kvbm-metrics"  # the PodMonitor (components/serving_graph.py) scrapes it
# NIXL backend per serving.kvTransport. EFA: LIBFABRIC; UCX, NIXL's default, lands on a
# TCP-speed transport between EFA pods (ai-dynamo/dynamo docs/kubernetes/cloud-providers/eks/efa.md, Step 4).
NIXL_BACKEND = {"efa": "LIBFABRIC", "tcp": "UCX"}
# ai-dynamo/dynamo docs/kubernetes/cloud-providers/eks/efa.md "Required EFA environment variables":
# libfabric pinned to the EFA provider (no silent fallback to its tcp/sockets providers), GPU
# memory registered with the NIC, and no shared-memory transfer (corrupts GPU buffers under load).
EFA_ENV = {"FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1", "FI_EFA_ENABLE_SHM_TRANSFER": "0"}
# Explicit TCP: UCX over TCP only, cuda_copy so UCX sees GPU buffers
# (ai-dynamo/dynamo docs/kubernetes/disagg-communication-guide.md, "Core Transport Selection").
TCP_ENV = {"UCX_TLS": "tcp,cuda_copy"}
# NIXL's Python API logs "Backend <name> was instantiated" at INFO (nixl 0.9.0 _api.py,
# logging.py: NIXL_LOG_LEVEL): the transport check reads it.
NIXL_LOG_ENV = {"NIXL_LOG_LEVEL": "INFO"}
# The EFA user space (libfabric with its EFA provider) where the EFA installer lays it out. NIXL's
# LIBFABRIC plugin links libfabric.so.1, which neither the nixl wheel nor the 0.9.1 vllm-runtime
# image ships (nixl-cu12 0.9.0 wheel: libplugin_LIBFABRIC.so NEEDED), and the GPU nodes' EKS
# AL2023 NVIDIA AMI installs the EFA kernel module and rdma-core only (awslabs/amazon-eks-ami
# templates/al2023/provisioners/install-efa.sh: efa_installer.sh --minimal). So it comes with the
# image: vllm-runtime with `efa_installer.sh -y --skip-kmod --skip-limit-conf --no-verify`, the
# installer's recipe for containers (serving.image; validation refuses the stock image).
EFA_DIR = "/opt/amazon/efa"


def efa_launch(efa_dir: str = EFA_DIR) -> str:
    """libfabric first on the library path (the image's own LD_LIBRARY_PATH kept: Kubernetes env
    cannot append to an image variable); none: refuse to start, loudly, rather than move KV
    blocks some slower way."""
    return ('lib=""; for d in {efa}/lib64 {efa}/lib; do '
            '[ -e "$d/libfabric.so.1" ] && lib="$d" && break; done; '
            'if [ -z "$lib" ]; then echo "benchlab: no libfabric.so.1 under {efa} in this image: '
            'serving.kvTransport is efa; set serving.image to an image with the EFA user space '
            '(README, The disagg KV path)" >&2; exit 78; fi; '
            'export LD_LIBRARY_PATH="$lib${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"; '
            'exec python3 -m dynamo.vllm "$@"').format(efa=efa_dir)


EFA_LAUNCH = efa_launch()
# A side channel the decode workers can reach: Dynamo sets it only for `--connector nixl`, not
# for an explicit --kv-transfer-config (dynamo.vllm 0.9.1 args.py: overwrite_args,
# ensure_side_channel_host); vLLM's default is localhost.
SIDE_CHANNEL_HOST = {"name": "VLLM_NIXL_SIDE_CHANNEL_HOST",
                     "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
KVBM_MODULE = "kvbm.vllm_integration.connector"
# RDMA registers (pins) memory beyond the default memlock limit: IPC_LOCK, the only capability a
# serving container keeps (ai-dynamo/dynamo docs/kubernetes/disagg-communication-guide.md,
# "AWS EFA Configuration": the validated EFA config adds IPC_LOCK).
RDMA_CAPABILITY = "IPC_LOCK"
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
    efa: int  # EFA interfaces per worker: all of a node's, split among its workers; 0 = none


def worker_share(node: InstanceFacts, tp: int, one_efa_each: bool) -> WorkerShare:
    per_node = workers_per_node(node, tp, one_efa_each)
    return WorkerShare(cpu=int(node.vcpus * HOST_SHARE_USED) // per_node,
                       memory_gib=int(node.memory_gib * HOST_SHARE_USED) // per_node,
                       efa=node.efa_interfaces // per_node if one_efa_each else 0)


def kv_transfer_config(sub_component: str, backend: str) -> dict:
    """vLLM's --kv-transfer-config of a disagg worker: NIXL with an explicit backend (vLLM 0.14.1
    nixl_connector.py reads kv_connector_extra_config["backends"], default ["UCX"]); prefill
    workers put KVBM in front of it, as `--connector kvbm nixl` does (dynamo.vllm 0.9.1
    args.py: create_kv_transfer_config; vLLM multi_connector.py builds each sub-connector from
    its own entry, extra config included)."""
    nixl = {"kv_connector": "NixlConnector", "kv_role": "kv_both",
            "kv_connector_extra_config": {"backends": [backend]}}
    if sub_component == "decode":
        return nixl
    kvbm = {"kv_connector": "DynamoConnector", "kv_connector_module_path": KVBM_MODULE,
            "kv_role": "kv_both"}
    return {"kv_connector": "PdConnector", "kv_role": "kv_both",
            "kv_connector_module_path": KVBM_MODULE,
            "kv_connector_extra_config": {"connectors": [kvbm, nixl]}}


# vllm-runtime 0.9.x runs as `dynamo`, uid 1000, HOME=/home/dynamo, where it keeps "config/cache
# files" (ai-dynamo/dynamo@9e2a2cc9 container/Dockerfile.vllm: useradd ... dynamo, `id -u dynamo`
# -eq 1000, USER dynamo). The uid is given as a number: the kubelet cannot verify runAsNonRoot
# against a user name. The operator sets only fsGroup 1000 and leaves the rest to extraPodSpec
# (deploy/operator/internal/dynamo/graph.go applyDefaultSecurityContext).
SERVING_UID = 1000
SERVING_HOME = "/home/dynamo"
# The read-only root's writable places: HOME (HF_HOME ~/.cache/huggingface, vLLM's VLLM_CACHE_ROOT
# ~/.cache/vllm with its torch.compile cache, ~/.config/vllm, Triton ~/.triton, FlashInfer's JIT
# ~/.cache/flashinfer) and /tmp (torch inductor's default /tmp/torchinductor_<user>, tempfiles).
WRITABLE_DIRS = {"home": SERVING_HOME, "tmp": "/tmp"}


def serving_pod_security_context() -> dict:
    """A serving pod's: the image's own non-root uid, enforced, and the runtime's seccomp profile."""
    return {"runAsNonRoot": True, "runAsUser": SERVING_UID, "seccompProfile": {"type": "RuntimeDefault"}}


def serving_security_context(capabilities: tuple[str, ...] = ()) -> dict:
    """A serving container's: no privilege escalation, a read-only root, every capability
    dropped but `capabilities`."""
    caps: dict = {"drop": ["ALL"]}
    if capabilities:
        caps["add"] = list(capabilities)
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": caps}


def writable_volumes() -> tuple[list[dict], list[dict]]:
    """emptyDirs (pod volumes, container mounts) for the places the runtime writes."""
    return ([{"name": f"writable-{name}", "emptyDir": {}} for name in WRITABLE_DIRS],
            [{"name": f"writable-{name}", "mountPath": path} for name, path in WRITABLE_DIRS.items()])


def model_store_volume() -> tuple[dict, dict]:
    """The model-store PVC as (pod volume, container mount), read-only on both: one compromised
    pod must not alter the weights the others load. (The DGD's own volumeMounts have no
    read-only flag in the 0.9.x CRD, so the volume goes through extraPodSpec.)"""
    return ({"name": MODEL_PVC, "persistentVolumeClaim": {"claimName": MODEL_PVC, "readOnly": True}},
            {"name": MODEL_PVC, "mountPath": MODEL_MOUNT, "readOnly": True})


def graph_manifest(cfg: StackConfig, namespace: str | None = None) -> dict:
    """The DynamoGraphDeployment object for cfg.serving.mode."""
    mode = cfg.serving.mode
    metadata: dict = {"name": graph_name(mode), "labels": dict(PART_OF),
                      # Applied without Pulumi's wait (pulumi/pulumi-kubernetes#417): the
                      # graph-ready Job waits for Ready and fails fast (components/serving_graph.py).
                      "annotations": {"pulumi.com/skipAwait": "true"}}
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
    return {"backendFramework": "vllm", "services": services}


def _frontend(cfg: StackConfig) -> dict:
    volume, mount = model_store_volume()
    scratch, scratch_mounts = writable_volumes()
    return {
        "componentType": "frontend",
        "replicas": 1,
        "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}},
        # dynamo.frontend 0.9.1 main.py: --router-mode defaults to $DYN_ROUTER_MODE, else round-robin
        "envs": env_list({**OFFLINE_ENV, "DYN_ROUTER_MODE": cfg.serving.router_mode}),
        "extraPodSpec": {"nodeSelector": {ROLE_LABEL: "system"},
                         "automountServiceAccountToken": False,
                         "securityContext": serving_pod_security_context(),
                         "volumes": [volume, *scratch],
                         "mainContainer": {"image": image(cfg), "volumeMounts": [mount, *scratch_mounts],
                                           "securityContext": serving_security_context()}},
    }


def _worker(cfg: StackConfig, group: str, workers: Workers, sub_component: str | None) -> dict:
    node = facts(getattr(cfg.node_groups, group).instance_type)
    over_efa = cfg.one_efa_per_worker()
    share = worker_share(node, workers.tp, over_efa)
    gpus = str(workers.tp)
    requests: dict = {"cpu": str(share.cpu), "memory": f"{share.memory_gib}Gi", "gpu": gpus}
    limits: dict = {"gpu": gpus}
    if share.efa:  # extended resources: request == limit
        requests["custom"] = limits["custom"] = {EFA_RESOURCE: str(share.efa)}

    args = ["--model", model_dir(cfg.model.id, cfg.model.revision),
            "--served-model-name", cfg.model.id, "--tensor-parallel-size", gpus,
            "--max-num-seqs", str(workers.max_num_seqs),
            "--max-num-batched-tokens", str(workers.max_num_batched_tokens)]
    env = dict(OFFLINE_ENV)
    volume, mount = model_store_volume()
    scratch, scratch_mounts = writable_volumes()
    volumes, mounts = [volume, *scratch], [mount, *scratch_mounts]
    container: dict = {"image": image(cfg), "workingDir": WORKING_DIR,
                       "command": ["python3", "-m", "dynamo.vllm"],
                       "securityContext": serving_security_context()}
    pod: dict = {"nodeSelector": {ROLE_LABEL: group}, "tolerations": [GPU_TOLERATION],
                 "automountServiceAccountToken": False, "securityContext": serving_pod_security_context()}
    extra_env: list[dict] = []
    if sub_component is not None:  # disagg: KV blocks move prefill -> decode through NIXL
        transport = cfg.serving.kv_transport
        # `--connector` defaults to nixl and may not be combined with --kv-transfer-config:
        # `none` hands vLLM the explicit config (dynamo.vllm 0.9.1 args.py: parse_args).
        args += [f"--is-{sub_component}-worker", "--connector", "none", "--kv-transfer-config",
                 json.dumps(kv_transfer_config(sub_component, NIXL_BACKEND[transport]),
                            separators=(",", ":"))]
        env |= NIXL_LOG_ENV | (EFA_ENV if transport == "efa" else TCP_ENV)
        extra_env.append(SIDE_CHANNEL_HOST)
        if transport == "efa":
            container["command"] = ["sh", "-c", EFA_LAUNCH, "dynamo.vllm"]
            container["securityContext"] = serving_security_context((RDMA_CAPABILITY,))
    if sub_component == "prefill":
        offload = cfg.serving.kv_offload
        env |= {"DYN_KVBM_CPU_CACHE_GB": str(offload.cpu_cache_gib),
                "DYN_KVBM_DISK_CACHE_GB": str(offload.disk_cache_gib),
                "DYN_KVBM_DISK_CACHE_DIR": KVBM_DISK_MOUNT,
                "DYN_KVBM_METRICS": "true", "DYN_KVBM_METRICS_PORT": str(KVBM_METRICS_PORT)}
        container["ports"] = [{"name": KVBM_METRICS_PORT_NAME, "containerPort": KVBM_METRICS_PORT,
                               "protocol": "TCP"}]
        # The disk tier: node-local storage (the node's SSD). The limit is the cache's size:
        # KVBM stays within it, so the kubelet never evicts the worker for its disk use.
        volumes.append({"name": "kvbm-disk", "emptyDir": {"sizeLimit": f"{offload.disk_cache_gib}Gi"}})
        mounts.append({"name": "kvbm-disk", "mountPath": KVBM_DISK_MOUNT})
    container["args"] = args
    container["volumeMounts"] = mounts
    if extra_env:
        container["env"] = extra_env
    pod["volumes"] = volumes
    pod["mainContainer"] = container

    service: dict = {"componentType": "worker"}
    if sub_component:
        service["subComponentType"] = sub_component
    service.update({
        "replicas": workers.replicas,
        "resources": {"requests": requests, "limits": limits},
        "sharedMemory": {"size": SHARED_MEMORY},
        "envs": env_list(env),
        "extraPodSpec": pod,
    })
    return service
