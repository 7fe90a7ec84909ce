"""Every pod the stack schedules must fit the node group it is pinned to.

A pod's requests (CPU, memory, ephemeral storage) are compared with what one node of its group
can give pods: the instance's allocatable capacity (facts/node_capacity.py: instance facts minus
nodeadm's kube reserve and eviction thresholds) minus the DaemonSets every node runs. Then the
group as a whole: the pods that stay (services, platform, serving graph) plus the largest Job
(the lab's Jobs run one after another) are packed first-fit-decreasing onto the group's nodes,
once per serving mode (agg and disagg never run together: the old graph is deleted first).

Two sources of pods, one check:
- `scheduled_pods(cfg)`: what the program will create, known before any resource exists (the
  serving graph of both modes, the Jobs' declared requests, the charts' and EKS add-ons' pods
  from their pinned defaults). `problems(cfg)` runs at the start of the composition.
- `pods_from_objects(...)`: the pods read from rendered objects (Jobs, Deployments,
  StatefulSets, DaemonSets, Pods, the DynamoGraphDeployment); tests/test_pod_fit.py renders the
  program and checks every rendered pod is pinned, fits, and is one `scheduled_pods` declares.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Iterable

from components.benchmark_jobs import BENCH_RESOURCES
from components.cluster import ROLE_LABEL
from components.gpu_release import RELEASE_RESOURCES
from components.kv_transport_check import CHECK_RESOURCES
from components.volume_guard import GUARD_RESOURCES
from components.model_store import DOWNLOAD_RESOURCES
from components.results_export import EXPORT_RESOURCES
from components.serving_graph import READY_RESOURCES
from components.wheelhouse import WHEELHOUSE_RESOURCES
from facts import images
from facts.instances import INSTANCE_FACTS
from facts.node_capacity import NODE_LIMITS, allocatable
from jobs.names import GPU_GROUPS as GPU_ROLES, GRAPHS, NODE_GROUPS
from stacks.config import MIN_GPU_DISK_GIB, NAMESPACE, StackConfig
from stacks.serving_spec import graph_manifest



@dataclass(frozen=True)
class Pod:
    name: str
    group: str | None  # the node group it is pinned to (ROLE_LABEL); None: not pinned
    cpu_millis: int
    memory_mib: int
    ephemeral_gib: float = 0.0
    replicas: int = 1
    job: bool = False  # a Job's pod: holds its requests only while the Job runs
    graph: str | None = None  # the serving mode whose graph it belongs to


@dataclass(frozen=True)
class Requests:
    cpu_millis: int = 0
    memory_mib: int = 0


# --- what runs on every node, and the platform's own pods (charts, EKS add-ons) -------------
# DaemonSets: requests from their pinned defaults. Those whose defaults set none (GPU Operator
# operands and NFD per helm_values/gpu-operator.yaml, node-exporter, efs-csi-node) add nothing.
DAEMONSETS_EVERY_NODE = {
    # kubernetes/kubernetes cluster/addons/kube-proxy/kube-proxy-ds.yaml: requests cpu 100m
    "kube-proxy": Requests(100, 0),
    # aws/amazon-vpc-cni-k8s charts/aws-vpc-cni/values.yaml: resources.requests.cpu 25m
    "aws-node": Requests(25, 0),
    # kubernetes-sigs/aws-ebs-csi-driver charts/aws-ebs-csi-driver/values.yaml: node 10m/40Mi
    "ebs-csi-node": Requests(10, 40),
}
DAEMONSETS_GPU_NODES = {
    # aws/eks-charts stable/aws-efa-k8s-device-plugin/values.yaml (v0.5.7): requests 10m/20Mi
    "aws-efa-k8s-device-plugin": Requests(10, 20),
}
# Deployments of the platform on the system nodes (the GPU taint keeps them off GPU nodes).
# kube-prometheus-stack 65.x, prometheus-pushgateway and aws-efs-csi-driver set no requests.
PLATFORM_PODS = (
    # kubernetes/kubernetes cluster/addons/dns/coredns/coredns.yaml.base: 100m/70Mi, 2 replicas
    Pod("coredns", "system", 100, 70, replicas=2),
    # aws-ebs-csi-driver chart: controller 10m/40Mi, replicaCount 2
    Pod("ebs-csi-controller", "system", 10, 40, replicas=2),
    # gpu-operator v24.9.0 values.yaml operator.resources.requests: 200m/100Mi
    Pod("gpu-operator", "system", 200, 100),
    # dynamo platform 0.9.x operator values.yaml: manager 512m/1Gi + kube-rbac-proxy 5m/64Mi
    Pod("dynamo-operator", "system", 517, 1024 + 64),
)


def daemonset_share(role: str) -> Requests:
    sets = {**DAEMONSETS_EVERY_NODE, **(DAEMONSETS_GPU_NODES if role in GPU_ROLES else {})}
    return Requests(sum(r.cpu_millis for r in sets.values()), sum(r.memory_mib for r in sets.values()))


# --- quantities ------------------------------------------------------------------------------
_UNITS = {"": 1, "k": 1000, "M": 1000 ** 2, "G": 1000 ** 3, "T": 1000 ** 4,
          "Ki": 1024, "Mi": 1024 ** 2, "Gi": 1024 ** 3, "Ti": 1024 ** 4}


def cpu_millis(quantity: str | int | float | None) -> int:
    if quantity in (None, ""):
        return 0
    text = str(quantity)
    return int(float(text[:-1])) if text.endswith("m") else round(float(text) * 1000)


def bytes_of(quantity: str | int | float | None) -> float:
    if quantity in (None, ""):
        return 0.0
    found = re.fullmatch(r"([0-9.]+)([KMGT]i?|k)?", str(quantity))
    if found is None:
        raise ValueError(f"not a Kubernetes quantity: {quantity!r}")
    return float(found.group(1)) * _UNITS[found.group(2) or ""]


def mib(quantity) -> int:
    return round(bytes_of(quantity) / 1024 ** 2)


def gib(quantity) -> float:
    return bytes_of(quantity) / 1024 ** 3


# --- pods read from objects ------------------------------------------------------------------
def pod_of_spec(name: str, pod_spec: dict, *, replicas: int = 1, job: bool = False) -> Pod:
    """A pod from a PodSpec: its containers' requests (an init container runs alone, so the
    larger of the two counts), its emptyDirs on disk, and the group its nodeSelector names."""
    containers, inits = pod_spec.get("containers", []), pod_spec.get("initContainers", [])

    def requested(key: str, convert) -> float:
        def of(group: list[dict]) -> float:
            return sum(convert(c.get("resources", {}).get("requests", {}).get(key)) for c in group)
        return max(of(containers), max((of([c]) for c in inits), default=0))

    disk = requested("ephemeral-storage", gib) + _empty_dirs_gib(pod_spec.get("volumes", []))
    return Pod(name, (pod_spec.get("nodeSelector") or {}).get(ROLE_LABEL),
               int(requested("cpu", cpu_millis)), int(requested("memory", mib)), disk, replicas, job)


def _empty_dirs_gib(volumes: list[dict]) -> float:
    """emptyDirs on the node's disk count against its ephemeral storage (memory ones do not)."""
    return sum(gib(v["emptyDir"].get("sizeLimit")) for v in volumes
               if "emptyDir" in v and v["emptyDir"].get("medium") != "Memory")


def pods_of_graph(manifest: dict) -> list[Pod]:
    """The pods a DynamoGraphDeployment makes: one per replica of each service."""
    mode = manifest["metadata"]["name"].rsplit("-", 1)[-1]
    pods = []
    for service, spec in manifest["spec"]["services"].items():
        requests = spec.get("resources", {}).get("requests", {})
        extra = spec.get("extraPodSpec", {})
        pods.append(Pod(f"{manifest['metadata']['name']}/{service}",
                        (extra.get("nodeSelector") or {}).get(ROLE_LABEL),
                        cpu_millis(requests.get("cpu")), mib(requests.get("memory")),
                        _empty_dirs_gib(extra.get("volumes", [])), int(spec.get("replicas", 1)),
                        graph=mode))
    return pods


WORKLOAD_KINDS = ("Job", "Deployment", "StatefulSet", "ReplicaSet", "Pod", "DaemonSet")


def pods_from_objects(objects: Iterable[tuple[str, str, dict]]) -> list[Pod]:
    """Pods from rendered objects, given as (kind, name, spec); DaemonSets come back with
    replicas 0 (one per node: see `daemonset_share`); other kinds are ignored."""
    pods = []
    for kind, name, spec in objects:
        if kind == "DynamoGraphDeployment":
            pods.extend(pods_of_graph({"metadata": {"name": name}, "spec": spec}))
        elif kind == "Pod":
            pods.append(pod_of_spec(name, spec))
        elif kind in WORKLOAD_KINDS:
            # Pulumi's wire format carries numbers as floats
            replicas = 0 if kind == "DaemonSet" else int(spec.get("parallelism" if kind == "Job" else "replicas", 1))
            pods.append(pod_of_spec(name, spec["template"]["spec"], replicas=replicas, job=kind == "Job"))
    return pods


# --- what the stack schedules, known before any resource exists ----------------------------
def _job(name: str, resources: dict, job: bool = True) -> Pod:
    """A pod of the lab's own code (components/job_code.job_template): its container's
    requests, plus the scratch directory the template adds, as `pod_of_spec` counts it (the
    ephemeral-storage request and the emptyDir's size limit)."""
    requests = resources.get("requests", {})
    scratch = 2 * images.CLIENT_JOB_SCRATCH_GIB
    return Pod(name, "system", cpu_millis(requests.get("cpu")), mib(requests.get("memory")),
               gib(requests.get("ephemeral-storage")) + scratch, job=job)


def scheduled_pods(cfg: StackConfig) -> list[Pod]:
    graphs = [pod for mode in GRAPHS for pod in pods_of_graph(graph_manifest(
        dataclasses.replace(cfg, serving=dataclasses.replace(cfg.serving, mode=mode))))]
    return [*PLATFORM_PODS, *graphs, _job("model-download", DOWNLOAD_RESOURCES),
            _job("benchmark", BENCH_RESOURCES), _job("results-export", EXPORT_RESOURCES),
            # a CronJob: it runs beside the benchmark Jobs, so it counts as a pod that stays
            _job("kv-transport-check", CHECK_RESOURCES), _job("serving-ready", READY_RESOURCES),
            _job("wheelhouse", WHEELHOUSE_RESOURCES),
            _job("gpu-release", RELEASE_RESOURCES, job=False),
            _job("ebs-volume-guard", GUARD_RESOURCES, job=False)]  # a Deployment


# --- the check -------------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeRoom:
    """What one node of a group gives pods, after kube reserve and DaemonSets."""
    role: str
    instance_type: str
    count: int
    cpu_millis: int
    memory_mib: int
    ephemeral_gib: float
    disk_key: str  # the config key that sizes the disk pods' ephemeral storage lands on


def node_room(cfg: StackConfig, role: str) -> NodeRoom | None:
    group = getattr(cfg.node_groups, role)
    node = INSTANCE_FACTS.get(group.instance_type)
    if node is None:
        return None  # reported on nodeGroups.<role>.instanceType by the config's own checks
    free = allocatable(group.instance_type, node.vcpus, node.memory_gib, group.disk_gib)
    share = daemonset_share(role)
    # GPU nodes keep room for the vllm-runtime image on the disk their emptyDirs share.
    images = MIN_GPU_DISK_GIB if role in GPU_ROLES else 0
    local = NODE_LIMITS[group.instance_type].instance_store_gb > 0
    return NodeRoom(role, group.instance_type, group.count, free.cpu_millis - share.cpu_millis,
                    free.memory_mib - share.memory_mib, free.ephemeral_gib - images,
                    f"nodeGroups.{role}.{'instanceType' if local else 'diskGib'}")


def problems(cfg: StackConfig, pods: list[Pod] | None = None) -> list[str]:
    """Every pod that cannot fit its group, each naming the config key to change."""
    pods = scheduled_pods(cfg) if pods is None else pods
    rooms = {role: node_room(cfg, role) for role in NODE_GROUPS}
    found: list[str] = []
    for pod in pods:
        room = rooms.get(pod.group)
        if pod.group not in rooms:
            found.append(f"pod {pod.name} is pinned to no node group ({ROLE_LABEL} in {', '.join(NODE_GROUPS)})")
        elif room is not None:
            found.extend(_pod_problems(pod, room))
    if found:
        return found  # a pod that fits no node makes the packing below meaningless
    for mode in GRAPHS:
        for role, room in rooms.items():
            if room is not None:
                found.extend(_packing_problems(mode, room, [p for p in pods if p.group == role]))
    return sorted(set(found), key=found.index)


def _pod_problems(pod: Pod, room: NodeRoom) -> list[str]:
    prefix = f"{NAMESPACE}:nodeGroups.{room.role}"
    where = f"a {room.instance_type} node has {{}} for pods (after kube reserve and DaemonSets)"
    out = []
    if pod.cpu_millis > room.cpu_millis:
        out.append(f"{prefix}.instanceType: {room.instance_type!r} is too small for pod {pod.name}: it "
                   f"requests {pod.cpu_millis}m CPU, " + where.format(f"{room.cpu_millis}m"))
    if pod.memory_mib > room.memory_mib:
        out.append(f"{prefix}.instanceType: {room.instance_type!r} is too small for pod {pod.name}: it "
                   f"requests {pod.memory_mib} MiB memory, " + where.format(f"{room.memory_mib} MiB"))
    if pod.ephemeral_gib > room.ephemeral_gib:
        out.append(f"{NAMESPACE}:{room.disk_key}: pod {pod.name} needs {pod.ephemeral_gib:.0f} GiB of "
                   "local disk, " + where.format(f"{room.ephemeral_gib:.0f} GiB"))
    return out


def _packing_problems(mode: str, room: NodeRoom, pods: list[Pod]) -> list[str]:
    """First-fit-decreasing of the mode's pods (and the largest Job) onto the group's nodes."""
    staying = [p for p in pods if not p.job and p.graph in (None, mode) and p.replicas]
    jobs = [p for p in pods if p.job]
    largest_job = max(jobs, key=lambda p: (p.cpu_millis, p.memory_mib), default=None)
    units = [p for p in staying for _ in range(p.replicas)] + ([largest_job] if largest_job else [])
    if not units:
        return []
    nodes = [[room.cpu_millis, room.memory_mib, room.ephemeral_gib] for _ in range(room.count)]
    for pod in sorted(units, key=lambda p: (p.cpu_millis, p.memory_mib), reverse=True):
        node = next((n for n in nodes if pod.cpu_millis <= n[0] and pod.memory_mib <= n[1]
                     and pod.ephemeral_gib <= n[2]), None)
        if node is None:
            return [f"{NAMESPACE}:nodeGroups.{room.role}.count: {room.count} x {room.instance_type} "
                    f"cannot hold every pod of the {mode} lab at once (no room left for {pod.name}: "
                    f"{pod.cpu_millis}m CPU, {pod.memory_mib} MiB); raise count or pick a larger "
                    "instanceType"]
        node[0] -= pod.cpu_millis
        node[1] -= pod.memory_mib
        node[2] -= pod.ephemeral_gib
    return []
