"""The lab's stack config: one typed schema, defaults = the lab of Report 5, validated once.

Keys live under the `benchlab:` namespace, camelCase in `Pulumi.<env>.yaml` and snake_case
here. `parse()` is pure (tests call it directly); `load()` reads the running stack's config.
Every problem is reported at once, each naming the key, the value and what is allowed, and
before any resource is registered.
"""
from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from facts import eks, images, versions, wheel_locks
from jobs import deadlines, modes, typed_mapping
from jobs.names import GPU_GROUPS, NODE_GROUPS
from jobs.typed_mapping import limits
from facts import node_capacity
from facts.instances import INSTANCE_FACTS, workers_per_node

NAMESPACE = "benchlab"
SUPPORTED_EKS_VERSIONS = eks.VERSIONS  # each with its support calendar and AL2023 NVIDIA AMI
TENSOR_PARALLEL_SIZES = (1, 2, 4, 8)
SECRET_KEYS = ("hfToken", "grafanaAdminPassword")
# The vllm-runtime image is ~20 GB compressed; containerd needs room to unpack it twice.
MIN_GPU_DISK_GIB = 200
IAM_PRINCIPAL_ARN = r"arn:aws[a-z-]*:iam::\d{12}:(role|user)/[\w+=,.@/-]+"
# No request from the internet comes from these blocks, so a publicAccessCidrs entry inside one
# admits nobody: IANA IPv4 Special-Purpose Address Registry, "Globally Reachable: False"
# (https://www.iana.org/assignments/iana-ipv4-special-registry/). The shipped stack files'
# placeholder is in a documentation range (RFC 5737).
DOCUMENTATION_NETS = tuple(ipaddress.IPv4Network(n) for n in
                           ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"))
NOT_GLOBALLY_REACHABLE = {
    **{net: "a documentation range (RFC 5737)" for net in DOCUMENTATION_NETS},
    **{ipaddress.IPv4Network(n): "private use (RFC 1918)"
       for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")},
    ipaddress.IPv4Network("100.64.0.0/10"): "shared address space, carrier-grade NAT (RFC 6598)",
    ipaddress.IPv4Network("127.0.0.0/8"): "loopback",
    ipaddress.IPv4Network("169.254.0.0/16"): "link local",
    ipaddress.IPv4Network("198.18.0.0/15"): "benchmarking (RFC 2544)",
    ipaddress.IPv4Network("0.0.0.0/8"): "'this network'",
    ipaddress.IPv4Network("240.0.0.0/4"): "reserved",
}
# CloudWatch Logs' allowed retentions (PutRetentionPolicy; 0 = never expire is not offered).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096,
                      1827, 2192, 2557, 2922, 3288, 3653)
# What lands on a system node's root volume (facts/images.py), over the share the kubelet lets
# it fill: image GC starts at 85 % (kubelet imageGCHighThresholdPercent default,
# https://kubernetes.io/docs/reference/config-api/kubelet-config.v1beta1/). vllm-runtime (the
# frontend) counts twice: a pull holds compressed and unpacked layers at once.
SYSTEM_DISK_NEEDS_GIB = {
    "vllm-runtime pull (frontend)": 2 * images.VLLM_RUNTIME_UNPACKED_GIB,
    "other images": images.OTHER_SYSTEM_IMAGES_GIB,
    "client Jobs' scratch (installed wheels)": images.CLIENT_JOB_SCRATCH_GIB,
    "operating system": images.NODE_OS_GIB,
}
MIN_SYSTEM_DISK_GIB = math.ceil(sum(SYSTEM_DISK_NEEDS_GIB.values()) / 0.85)


AT_LEAST_ONE = limits(low=1)


class ConfigError(ValueError):
    """One or more bad config values; the message lists each with the allowed values."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid stack config:\n  - " + "\n  - ".join(problems))


# ---------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NodeGroup:
    instance_type: str
    count: int = field(metadata=AT_LEAST_ONE)
    disk_gib: int = 0  # the minimum depends on the group's role: checked below


@dataclass(frozen=True)
class NodeGroups:
    system: NodeGroup = NodeGroup("m7i.2xlarge", 2, 100)
    prefill: NodeGroup = NodeGroup("p4d.24xlarge", 2, 500)
    decode: NodeGroup = NodeGroup("g6e.12xlarge", 4, 500)


# vLLM's batch limits where dynamo.vllm 0.9.1 starts its engine (main.py: UsageContext.OPENAI_API_SERVER)
# on A100 and on GPUs under 70 GiB such as L40S (vLLM 0.14 arg_utils.py get_batch_defaults).
# Set on every worker, never left to vLLM's per-GPU default; the local twin's mocker gets the same.
VLLM_MAX_NUM_SEQS = 256
VLLM_MAX_NUM_BATCHED_TOKENS = 2048


@dataclass(frozen=True)
class Workers:
    tp: int = field(metadata=limits(choices=TENSOR_PARALLEL_SIZES))
    replicas: int = field(metadata=AT_LEAST_ONE)
    max_num_seqs: int = field(default=VLLM_MAX_NUM_SEQS, metadata=AT_LEAST_ONE)
    max_num_batched_tokens: int = field(default=VLLM_MAX_NUM_BATCHED_TOKENS, metadata=AT_LEAST_ONE)


@dataclass(frozen=True)
class KvOffload:
    """KV block manager tiers behind the GPU cache (disagg prefill workers): host memory, then
    an emptyDir on the node's instance store (RAID0), which it shares with the images."""
    cpu_cache_gib: int = field(default=64, metadata=AT_LEAST_ONE)
    disk_cache_gib: int = field(default=100, metadata=AT_LEAST_ONE)


@dataclass(frozen=True)
class Serving:
    mode: Literal["agg", "disagg"] = "agg"
    # agg: aggregated workers on the prefill (A100) node group: 2 nodes x 8 GPUs = 4 x TP4
    agg: Workers = Workers(tp=4, replicas=4)
    # disagg: prefill TP4 on the A100s (4 x TP4, 2 EFA interfaces each), decode TP2 on the L40S:
    # one per g6e.12xlarge, the node's one EFA interface its own (4 x TP2; see kv_transport)
    prefill: Workers = Workers(tp=4, replicas=4)
    decode: Workers = Workers(tp=2, replicas=4)
    # disagg: how KV blocks move prefill -> decode. "efa": NIXL's LIBFABRIC backend over EFA,
    # every worker with an EFA interface of its own (validated); "tcp": explicit opt-in to NIXL
    # over UCX/TCP, no EFA requested (Dynamo measured ~98 s TTFT over TCP vs ~1 s over EFA).
    kv_transport: Literal["efa", "tcp"] = "efa"
    # The frontend's router, the same in both modes so their cache hit rates compare; kv: the
    # KV-aware router, whose routing events are the run's measured hit rate (jobs/event_plane.py).
    router_mode: Literal["kv", "round-robin", "random"] = "kv"
    # The frontend's and workers' image; empty: vllm-runtime of versions.dynamo. Disagg over EFA
    # needs libfabric in it or on the node, and neither the 0.9.1 image nor the EKS AMI has it
    # (README, "The disagg KV path"): an image built on vllm-runtime with the EFA user space.
    image: str = ""
    kv_offload: KvOffload = KvOffload()
    ready_timeout_minutes: int = field(default=60, metadata=AT_LEAST_ONE)
    # Idle GPU nodes cost money: the node group the mode does not use is kept at size 0.
    scale_unused_gpu_group_to_zero: bool = True


@dataclass(frozen=True)
class Model:
    id: str = versions.MODEL_ID
    revision: str = "main"
    store_gib: int = field(default=200, metadata=AT_LEAST_ONE)
    download_timeout_minutes: int = field(default=90, metadata=AT_LEAST_ONE)


@dataclass(frozen=True)
class Versions:
    dynamo: str = versions.DYNAMO_VERSION
    aiperf: str = versions.AIPERF_VERSION
    gpu_operator: str = "v24.9.0"
    kube_prometheus_stack: str = "65.8.1"
    pushgateway: str = "2.15.0"
    efa_device_plugin: str = "v0.5.7"


@dataclass(frozen=True)
class Monitoring:
    retention: str = "15d"
    prometheus_storage_gib: int = field(default=100, metadata=AT_LEAST_ONE)
    grafana_storage_gib: int = field(default=10, metadata=AT_LEAST_ONE)


@dataclass(frozen=True)
class Results:
    storage_gib: int = field(default=50, metadata=AT_LEAST_ONE)
    retain_bucket_on_destroy: bool = True


@dataclass(frozen=True)
class Destroy:
    # Helm keeps the Dynamo CRDs (helm.sh/resource-policy: keep); remove them on destroy?
    remove_dynamo_crds: bool = False


@dataclass(frozen=True)
class ClusterAccess:
    # IAM role/user ARNs that become cluster admins (EKS access entries) beside the creator.
    admins: tuple[str, ...] = ()
    # The documented override that lets a /0 in publicAccessCidrs reach the EKS API.
    allow_api_from_anywhere: bool = False
    # AmazonSSMManagedInstanceCore on the node role (Session Manager into nodes): opt-in.
    node_ssm_sessions: bool = False


@dataclass(frozen=True)
class ImagePolicy:
    # The documented opt-in that lets a credential-holding pod run an image by tag (see `load`).
    allow_unpinned_images: bool = False


@dataclass(frozen=True)
class ControlPlaneLogs:
    # CloudWatch retention of the control-plane logs (api, audit, authenticator), days.
    retention_days: int = 30


@dataclass(frozen=True)
class FlowLogs:
    # CloudWatch retention of the VPC's flow logs (every accepted and rejected flow), days.
    retention_days: int = 30


@dataclass(frozen=True)
class GpuRelease:
    """GPUs bill only while they measure: the in-cluster release (components/gpu_release.py)."""
    # After the run's results export, the GPU node groups scale to zero once this grace is over
    # (time to look at the live graph); 0: never after a run (the lease still holds).
    grace_minutes: int = field(default=10, metadata=limits(low=0))
    # The longest a GPU node group may stay up since its last change (creation, scaling, a
    # restore); past it, it is released whatever still runs. At least every wait of one run
    # (_check_lease: about 6 h for Pulumi.dev.yaml, whose campaign plans ~3.5 h).
    lease_hours: int = field(default=6, metadata=AT_LEAST_ONE)


@dataclass(frozen=True)
class StackConfig:
    owner: str = "benchlab-operator"
    region: str = "us-east-1"
    availability_zones: tuple[str, ...] = ("us-east-1a", "us-east-1b")
    gpu_availability_zone: str = "us-east-1a"
    vpc_cidr: str = "10.42.0.0/16"
    # Who may reach the EKS API from the internet: required, no default (see `load`).
    public_access_cidrs: tuple[str, ...] = ()
    cluster_access: ClusterAccess = ClusterAccess()
    control_plane_logs: ControlPlaneLogs = ControlPlaneLogs()
    flow_logs: FlowLogs = FlowLogs()
    kubernetes_version: str = "1.32"
    node_groups: NodeGroups = NodeGroups()
    serving: Serving = Serving()
    model: Model = Model()
    versions: Versions = Versions()
    # The image lock: tagged reference -> digest (`benchlab lock-images`); deployed by digest.
    image_digests: dict[str, str] = field(default_factory=dict)
    image_policy: ImagePolicy = ImagePolicy()
    monitoring: Monitoring = Monitoring()
    results: Results = Results()
    destroy: Destroy = Destroy()
    gpu_release: GpuRelease = GpuRelease()
    bench: modes.BenchPlan = field(default_factory=modes.BenchPlan)
    # Secrets are never part of the parsed config: see `Secrets`.

    def gpus(self, role: Literal["prefill", "decode"]) -> int:
        group = getattr(self.node_groups, role)
        return INSTANCE_FACTS[group.instance_type].gpus * group.count

    def worker_roles(self) -> dict[str, tuple[str, Workers]]:
        """The serving mode's workers: role name -> (node group, workers)."""
        if self.serving.mode == "agg":
            return {"agg": ("prefill", self.serving.agg)}
        return {"prefill": ("prefill", self.serving.prefill), "decode": ("decode", self.serving.decode)}

    def all_worker_roles(self) -> dict[str, tuple[str, Workers]]:
        """Every role the config defines, whichever mode runs now."""
        return {"agg": ("prefill", self.serving.agg), "prefill": ("prefill", self.serving.prefill),
                "decode": ("decode", self.serving.decode)}

    def one_efa_per_worker(self) -> bool:
        """Whether every worker of the graph must hold an EFA interface of its own (disagg over EFA)."""
        return self.serving.mode == "disagg" and self.serving.kv_transport == "efa"
    def images(self) -> dict[str, str]:
        """The images the stack's own pods run, by pinned tag (the image lock's keys)."""
        return {"serving": self.serving.image or images.vllm_runtime(self.versions.dynamo),
                "client": images.CLIENT_IMAGE}

    def stock_serving_image(self) -> bool:
        """Whether the workers run the published vllm-runtime, which carries no libfabric."""
        return not self.serving.image

    def deployed_image(self, role: Literal["serving", "client"]) -> str:
        """What a pod's `image` says: by digest when the image lock has the tag."""
        return images.pinned(self.images()[role], self.image_digests)

    def unpinned_credential_images(self) -> list[str]:
        """Images of credential-holding pods (images.CREDENTIAL_ROLES) that the lock lacks."""
        return sorted({self.images()[role] for role in images.CREDENTIAL_ROLES} - set(self.image_digests))

    def desired_nodes(self, group: Literal["system", "prefill", "decode"]) -> int:
        """Nodes to run in a group: the configured count, or 0 for a GPU group the
        serving mode leaves idle (when `serving.scaleUnusedGpuGroupToZero`)."""
        used = {g for g, _ in self.worker_roles().values()} | {"system"}
        if group not in used and self.serving.scale_unused_gpu_group_to_zero:
            return 0
        return getattr(self.node_groups, group).count


# ---------------------------------------------------------------------------------------
# Parsing: a mapping of camelCase keys -> StackConfig, collecting every problem
# ---------------------------------------------------------------------------------------
def parse(raw: dict[str, Any]) -> StackConfig:
    """Build and validate a StackConfig from the namespace's keys (without the `benchlab:`
    prefix; values already JSON-decoded). Raises ConfigError listing every problem."""
    cfg, problems = validate(raw)
    if problems:
        raise ConfigError(problems)
    return cfg


def validate(raw: dict[str, Any]) -> tuple[StackConfig, list[str]]:
    """`parse` without raising: the config (a value of the wrong type replaced by its default)
    and every problem, for `preflight` to report beside its own checks."""
    problems: list[str] = []
    raw = {k: v for k, v in raw.items() if k not in SECRET_KEYS}
    # A value of the wrong type is reported and replaced by its default, so the rules below
    # always see a well-typed config and every problem is reported in one go.
    cfg = typed_mapping.build(StackConfig, raw, f"{NAMESPACE}:", StackConfig(), problems)
    problems.extend(_check(cfg))
    return cfg, problems


def _check(cfg: StackConfig) -> list[str]:
    problems: list[str] = []
    ns = NAMESPACE

    if cfg.kubernetes_version not in SUPPORTED_EKS_VERSIONS:
        problems.append(f"{ns}:kubernetesVersion: {cfg.kubernetes_version!r} is not supported; "
                        f"allowed: {', '.join(SUPPORTED_EKS_VERSIONS)}")
    for key, cidr in [("vpcCidr", cfg.vpc_cidr)] + [
            (f"publicAccessCidrs[{i}]", c) for i, c in enumerate(cfg.public_access_cidrs)]:
        try:
            ipaddress.IPv4Network(cidr)
        except ValueError as err:
            problems.append(f"{ns}:{key}: {cidr!r} is not an IPv4 CIDR ({err})")
    problems.extend(_check_api_access(cfg))

    if not re.fullmatch(r"[a-z]{2}(-[a-z]+)+-\d", cfg.region):
        problems.append(f"{ns}:region: {cfg.region!r} is not an AWS region name (e.g. us-east-1)")
    if len(set(cfg.availability_zones)) < 2:
        problems.append(f"{ns}:availabilityZones: {list(cfg.availability_zones)} has fewer than "
                        "2 distinct zones; EKS needs subnets in at least 2")
    for i, az in enumerate(cfg.availability_zones):
        if not (az.startswith(cfg.region) and re.fullmatch(r"[a-z]", az[len(cfg.region):])):
            problems.append(f"{ns}:availabilityZones[{i}]: {az!r} is not a zone of region "
                            f"{cfg.region!r} (e.g. {cfg.region}a)")
    if cfg.gpu_availability_zone not in cfg.availability_zones:
        problems.append(f"{ns}:gpuAvailabilityZone: {cfg.gpu_availability_zone!r} is not one of "
                        f"availabilityZones {list(cfg.availability_zones)}")

    for role in NODE_GROUPS:
        group: NodeGroup = getattr(cfg.node_groups, role)
        key = f"{ns}:nodeGroups.{role}"
        known = INSTANCE_FACTS.get(group.instance_type)
        if role == "system":
            allowed = sorted(t for t, f in INSTANCE_FACTS.items() if not f.gpus)
        else:
            allowed = sorted(t for t, f in INSTANCE_FACTS.items() if f.gpus)
        if known is None or group.instance_type not in allowed:
            what = "GPU" if role != "system" else "CPU"
            problems.append(f"{key}.instanceType: {group.instance_type!r} is not a {what} "
                            f"instance type the lab has facts for; allowed: {', '.join(allowed)}")
        min_disk = MIN_GPU_DISK_GIB if role != "system" else MIN_SYSTEM_DISK_GIB
        if group.disk_gib < min_disk:
            why = ("the vllm-runtime image is large" if role != "system" else
                   ", ".join(f"{what} {gib} GiB" for what, gib in SYSTEM_DISK_NEEDS_GIB.items())
                   + ", within the 85 % the kubelet fills before image GC")
            problems.append(f"{key}.diskGib: {group.disk_gib} GiB is too small; at least "
                            f"{min_disk} GiB ({why})")

    problems.extend(_check_workers(cfg))
    problems.extend(_check_lease(cfg))

    problems.extend(_check_model(cfg.model))
    if not re.fullmatch(r"\d+[smhdwy]", cfg.monitoring.retention):
        problems.append(f"{ns}:monitoring.retention: {cfg.monitoring.retention!r} is not a "
                        "Prometheus duration (e.g. 15d, 12h)")
    version_patterns = {
        "dynamo": r"\d+\.\d+\.\d+", "aiperf": r"\d+\.\d+\.\d+", "gpuOperator": r"v\d+\.\d+\.\d+",
        "kubePrometheusStack": r"65\.\d+\.\d+", "pushgateway": r"\d+\.\d+\.\d+",
        "efaDevicePlugin": r"v\d+\.\d+\.\d+",
    }
    locked_aiperf = wheel_locks.AIPERF.versions().get("aiperf")
    if cfg.versions.aiperf != locked_aiperf:
        problems.append(f"{ns}:versions.aiperf: {cfg.versions.aiperf!r} is not the AIPerf the "
                        f"benchmark Jobs install; allowed: {locked_aiperf!r} (the hash lock "
                        f"facts/locks/{wheel_locks.AIPERF.file_name}; another version needs a new "
                        "lock: facts/versions.py, then `./benchlab lock-wheels`)")
    problems.extend(_check_image_digests(cfg.image_digests))
    if cfg.serving.image and not images.TAGGED_REFERENCE.fullmatch(cfg.serving.image):
        problems.append(f"{ns}:serving.image: {cfg.serving.image!r} is not a tagged image reference "
                        f"(registry/repository:tag, e.g. {images.vllm_runtime(cfg.versions.dynamo)}-efa)")
    for name, pattern in version_patterns.items():
        value = getattr(cfg.versions, typed_mapping.snake(name))
        if not re.fullmatch(pattern, value):
            problems.append(f"{ns}:versions.{name}: {value!r} does not match {pattern}"
                            + (" (the lab is built for kube-prometheus-stack 65.x)"
                               if name == "kubePrometheusStack" else ""))
    return problems


def _check_api_access(cfg: StackConfig) -> list[str]:
    """Who reaches the cluster: no open endpoint without the override; admins as IAM ARNs;
    a log retention CloudWatch accepts."""
    ns, problems = NAMESPACE, []
    problems.extend(public_access_problems(cfg.public_access_cidrs,
                                           allow_anywhere=cfg.cluster_access.allow_api_from_anywhere))
    for i, arn in enumerate(cfg.cluster_access.admins):
        # Access entries take IAM users and roles, not STS assumed-role session ARNs:
        # https://docs.aws.amazon.com/eks/latest/userguide/creating-access-entries.html
        if not re.fullmatch(IAM_PRINCIPAL_ARN, arn):
            problems.append(f"{ns}:clusterAccess.admins[{i}]: {arn!r} is not an IAM role or user ARN "
                            "(arn:aws:iam::<account>:role/<name> or :user/<name>)")
    for key, days in (("controlPlaneLogs", cfg.control_plane_logs.retention_days),
                      ("flowLogs", cfg.flow_logs.retention_days)):
        if days not in LOG_RETENTION_DAYS:
            problems.append(f"{ns}:{key}.retentionDays: {days} "
                            f"is not a CloudWatch retention; allowed: {', '.join(map(str, LOG_RETENTION_DAYS))}")
    return problems


def public_access_problems(cidrs: Sequence[str], allow_anywhere: bool) -> list[str]:
    """publicAccessCidrs that would leave the API open to the internet (unless `allow_anywhere`)
    or admit nobody; `pulumi up`'s validation and `preflight` both report these."""
    ns, problems = NAMESPACE, []
    if is_open_to_internet(cidrs) and not allow_anywhere:
        problems.append(f"{ns}:publicAccessCidrs: {list(cidrs)} together open the EKS API to the "
                        "whole internet; list your own CIDRs (e.g. your address /32), or set "
                        f"{ns}:clusterAccess.allowApiFromAnywhere: true to accept that knowingly")
    for i, cidr in enumerate(cidrs):
        try:
            network = ipaddress.IPv4Network(cidr)
        except ValueError:
            continue  # reported as not a CIDR
        block = next((b for b in NOT_GLOBALLY_REACHABLE if network.subnet_of(b)), None)
        if block is not None:
            placeholder = " (the shipped stack files' placeholder)" if block in DOCUMENTATION_NETS else ""
            problems.append(
                f"{ns}:publicAccessCidrs[{i}]: {cidr!r} is in {block}, {NOT_GLOBALLY_REACHABLE[block]}"
                f"{placeholder}: no request from the internet comes from there, so nobody could reach "
                "the cluster's API; allowed: your own public addresses, e.g. `pulumi config set --path "
                "'publicAccessCidrs[0]' \"$(curl -s https://checkip.amazonaws.com)/32\"`")
    return problems


def is_open_to_internet(cidrs: Sequence[str]) -> bool:
    """Whether the CIDRs together cover every IPv4 address (0.0.0.0/0, or 0.0.0.0/1 + 128.0.0.0/1)."""
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.IPv4Network(cidr))
        except ValueError:
            continue  # reported as not a CIDR
    return ipaddress.IPv4Network("0.0.0.0/0") in ipaddress.collapse_addresses(networks)


# huggingface_hub utils/_validators.py validate_repo_id: letters, digits, '-', '_', '.'; no '--'
# or '..'; '-' and '.' neither start nor end a name; at most 96 characters.
_HF_NAME = r"(?![.-])(?!.*(--|\.\.))[A-Za-z0-9_.-]+(?<![.-])"
# git-check-ref-format(1): no '..', '@{', '//', control or ' ~^:?*[\\' characters; no component
# starting with '.' or ending with '.lock'; not ending with '/' or '.'. A commit: 40 hex digits.
_GIT_REF = r"(?!.*(\.\.|@\{|//|/\.|\.lock/|\.lock$|[/.]$))[A-Za-z0-9_][A-Za-z0-9_./+-]{0,254}"


def _check_model(model: Model) -> list[str]:
    """The model's repo id and revision name a Hugging Face repo and a git ref: they become the
    model's path on the store and the download's arguments, so nothing else passes."""
    problems = []
    if len(model.id) > 96 or not re.fullmatch(f"{_HF_NAME}/{_HF_NAME}", model.id):
        problems.append(f"{NAMESPACE}:model.id: {model.id!r} is not a Hugging Face repo id: org/name, "
                        "each of letters, digits, '-', '_', '.', without '--' or '..', not starting "
                        "or ending with '-' or '.', at most 96 characters")
    if not re.fullmatch(_GIT_REF, model.revision):
        problems.append(f"{NAMESPACE}:model.revision: {model.revision!r} is not a branch, tag or "
                        "commit (a git ref name such as main or v1.0, or a 40-hex commit)")
    return problems


def _check_lease(cfg: StackConfig) -> list[str]:
    """The lease must let one `pulumi up` finish on the GPUs it started (the lease counts from
    the node group's last change): every wait of the run, from the Jobs' own deadlines."""
    waits = deadlines.run_waits_minutes(cfg.model.download_timeout_minutes,
                                        cfg.serving.ready_timeout_minutes, cfg.bench)
    needed = math.ceil(sum(waits.values()) / 60)
    if cfg.gpu_release.lease_hours >= needed:
        return []
    return [f"{NAMESPACE}:gpuRelease.leaseHours: {cfg.gpu_release.lease_hours} h would release the "
            f"GPUs during a slow but healthy run ({sum(waits.values())} min: "
            + ", ".join(f"{what} {m}" for what, m in waits.items())
            + f" (model.downloadTimeoutMinutes, serving.readyTimeoutMinutes, bench.*)); at least {needed}"]


def _check_image_digests(digests: dict[str, str]) -> list[str]:
    problems = []
    for reference, digest in digests.items():
        key = f"{NAMESPACE}:imageDigests[{reference!r}]"
        if not images.TAGGED_REFERENCE.fullmatch(reference):
            problems.append(f"{key}: not a tagged image reference (registry/repository:tag, "
                            f"e.g. {images.CLIENT_IMAGE})")
        if not images.DIGEST.fullmatch(digest):
            problems.append(f"{key}: {digest!r} is not an image digest; expected sha256: and 64 "
                            "lowercase hex digits (`benchlab lock-images` writes them)")
    return problems


def _check_workers(cfg: StackConfig) -> list[str]:
    problems = []
    # Every role, whatever serving.mode: the campaign switches modes with the same config.
    for role, (group_name, workers) in cfg.all_worker_roles().items():
        key = f"{NAMESPACE}:serving.{role}"
        # vLLM refuses it at start (vllm/config/scheduler.py SchedulerConfig._verify_args)
        if workers.max_num_batched_tokens < workers.max_num_seqs:
            problems.append(f"{key}.maxNumBatchedTokens: {workers.max_num_batched_tokens} is less "
                            f"than {key}.maxNumSeqs ({workers.max_num_seqs}); vLLM needs at least "
                            "one batched token per sequence")
        group: NodeGroup = getattr(cfg.node_groups, group_name)
        facts = INSTANCE_FACTS.get(group.instance_type)
        if facts is None or not facts.gpus:
            continue  # the instance type problem is reported on its own key
        if workers.tp > facts.gpus:
            problems.append(f"{key}.tp: {workers.tp} is more than the {facts.gpus} GPUs of one "
                            f"{group.instance_type} node (nodeGroups.{group_name}); a worker "
                            "cannot span nodes")
        elif workers.replicas * workers.tp > facts.gpus * group.count:
            problems.append(f"{key}: {workers.replicas} replicas x TP{workers.tp} = "
                            f"{workers.replicas * workers.tp} GPUs, more than the "
                            f"{facts.gpus * group.count} GPUs of nodeGroups.{group_name} "
                            f"({group.count} x {group.instance_type})")
    problems.extend(_check_kv_disk(cfg))
    # Checked whatever the mode now: a campaign's switch to disagg must not be where it fails.
    if cfg.serving.kv_transport == "efa":
        problems.extend(_check_efa_share(cfg))
        if cfg.serving.mode == "disagg" and cfg.stock_serving_image():
            problems.append(
                f"{NAMESPACE}:serving.image: disagg over EFA needs libfabric in the serving image, and "
                f"{images.vllm_runtime(cfg.versions.dynamo)} has none (nor do the GPU nodes: the EKS "
                "AL2023 NVIDIA AMI installs the EFA kernel module only); set serving.image to that image "
                "with the EFA user space added (README, The disagg KV path), or serving.kvTransport: tcp")
    return problems


def _check_efa_share(cfg: StackConfig) -> list[str]:
    """Disagg over EFA: a transfer with one non-EFA end is TCP, so every worker needs an EFA
    interface of its own; the scheduler places at most one per interface on a node."""
    problems = []
    disagg_roles = {r: v for r, v in cfg.all_worker_roles().items() if r in GPU_GROUPS}
    for role, (group_name, workers) in disagg_roles.items():
        group: NodeGroup = getattr(cfg.node_groups, group_name)
        facts = INSTANCE_FACTS.get(group.instance_type)
        if facts is None or not facts.gpus or workers.tp > facts.gpus:
            continue  # reported on their own keys
        slots = group.count * workers_per_node(facts, workers.tp, one_efa_each=True)
        if workers.replicas <= slots:
            continue
        problems.append(
            f"{NAMESPACE}:serving.{role}.replicas: {workers.replicas} TP{workers.tp} workers each "
            f"need an EFA interface of their own, but nodeGroups.{group_name} ({group.count} x "
            f"{group.instance_type}, {facts.efa_interfaces} EFA interface(s) each) holds {slots}; "
            f"lower replicas to {slots}, pick an instance type with more EFA interfaces, or set "
            "serving.kvTransport: tcp to accept KV transfers over TCP")
    return problems


def _check_kv_disk(cfg: StackConfig) -> list[str]:
    """The KV disk tier of every prefill worker on a node must fit on the disk its emptyDir
    lands on (the instance store where there is one), beside the images."""
    group, workers = cfg.node_groups.prefill, cfg.serving.prefill
    facts = INSTANCE_FACTS.get(group.instance_type)
    if facts is None or not facts.gpus or workers.tp > facts.gpus:
        return []  # reported on their own keys
    per_node = workers_per_node(facts, workers.tp, one_efa_each=cfg.serving.kv_transport == "efa")
    allocatable = node_capacity.allocatable(group.instance_type, facts.vcpus, facts.memory_gib,
                                            group.disk_gib).ephemeral_gib
    room = int(allocatable) - MIN_GPU_DISK_GIB
    if per_node * cfg.serving.kv_offload.disk_cache_gib <= room:
        return []
    disk = ("its instance store" if node_capacity.NODE_LIMITS[group.instance_type].instance_store_gb
            else f"nodeGroups.prefill.diskGib ({group.disk_gib})")
    return [f"{NAMESPACE}:serving.kvOffload.diskCacheGib: {cfg.serving.kv_offload.disk_cache_gib} GiB x "
            f"{per_node} prefill workers per node exceeds the {room} GiB a {group.instance_type} "
            f"node has on {disk} after {MIN_GPU_DISK_GIB} GiB for images; lower it to at most "
            f"{room // per_node}"]


# ---------------------------------------------------------------------------------------
# Reading the running stack's config
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Secrets:
    """Secret config values, as Pulumi secret Outputs (None when not set)."""
    hf_token: Any = None
    grafana_admin_password: Any = None


def raw_stack_config() -> tuple[dict[str, Any], set[str]]:
    """This stack's `benchlab:` keys and which of them are secret. Pulumi hands config to
    the program as strings (PULUMI_CONFIG, or set_all_config under test): objects and lists
    arrive as JSON text and are decoded; scalars stay strings ("1.32" is not a float)."""
    import json

    import pulumi.runtime.config as runtime_config

    prefix = f"{NAMESPACE}:"
    values = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    secret_keys = set(runtime_config.get_config_secret_keys_env()) | runtime_config._SECRET_KEYS.get()
    raw, secret = {}, set()
    for full_key, value in values.items():
        if not full_key.startswith(prefix):
            continue
        key = full_key[len(prefix):]
        if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
            try:
                value = json.loads(value)
            except ValueError as err:
                raise ConfigError([f"{full_key}: not valid JSON/YAML structure ({err})"]) from None
        raw[key] = value
        if full_key in secret_keys:
            secret.add(key)
    return raw, secret


# AWS names carry `benchlab-<stack>`: the EKS cluster's (letters, digits, - and _:
# https://docs.aws.amazon.com/eks/latest/APIReference/API_CreateCluster.html) and IAM roles,
# which Pulumi auto-names `<resource name>-<7 hex>` within IAM's 64 characters; the longest is
# `benchlab-<stack>-aws-ebs-csi-driver`: 9 + stack + 19 + 8 <= 64. (Kubernetes names do not
# carry the stack: tests/test_names.py renders the program with the longest stack name.)
MAX_STACK_NAME = 64 - len("benchlab-") - len("-aws-ebs-csi-driver") - len("-0123456")
STACK_NAME = r"[A-Za-z0-9][A-Za-z0-9_-]*"


def check_stack_name(stack: str) -> list[str]:
    if re.fullmatch(STACK_NAME, stack) and len(stack) <= MAX_STACK_NAME:
        return []
    return [f"stack name {stack!r}: the lab's AWS names (EKS cluster benchlab-<stack>, IAM roles) "
            f"need at most {MAX_STACK_NAME} characters of letters, digits, '-' and '_', starting "
            "with a letter or digit; `pulumi stack rename` or init a stack with a shorter name"]


def stack_problems(raw: dict[str, Any], secret_keys: set[str] | Sequence[str], stack: str) -> list[str]:
    """What `load` refuses beyond `parse`: the stack name, a secret set in plain text, no
    publicAccessCidrs (preflight reports the same)."""
    problems = check_stack_name(stack) + [
        f"{NAMESPACE}:{k}: is a secret; set it with `pulumi config set --secret {k}`"
        for k in SECRET_KEYS if k in raw and k not in secret_keys]
    if not raw.get("publicAccessCidrs"):
        problems.append(f"{NAMESPACE}:publicAccessCidrs: required, no default: the CIDRs that may "
                        "reach the EKS API, e.g. `pulumi config set --path 'publicAccessCidrs[0]' "
                        "\"$(curl -s https://checkip.amazonaws.com)/32\"`")
    return problems


def check_image_pinning(cfg: StackConfig) -> list[str]:
    """What `pulumi up` refuses: a pod holding a credential runs code by a name the registry can
    move, unless the stack says it accepts that (`imagePolicy.allowUnpinnedImages`)."""
    unpinned = cfg.unpinned_credential_images()
    if not unpinned or cfg.image_policy.allow_unpinned_images:
        return []
    return [f"{NAMESPACE}:imageDigests: no digest for {', '.join(unpinned)}, which runs the pods "
            "holding credentials (HF token, IRSA roles, API tokens); allowed: a sha256 digest for "
            "each (`./benchlab lock-images` records them), or "
            f"{NAMESPACE}:imagePolicy.allowUnpinnedImages: true to accept deploying them by tag"]


def load() -> tuple[StackConfig, Secrets]:
    """Parse and validate the running stack's config; raise ConfigError on any problem."""
    import pulumi

    raw, secret = raw_stack_config()
    cfg, found = validate(raw)
    # every problem at once: the pinning rule reads the config as validate typed it
    problems = found + stack_problems(raw, secret, pulumi.get_stack()) + check_image_pinning(cfg)
    if problems:
        raise ConfigError(problems)
    conf = pulumi.Config(NAMESPACE)
    return cfg, Secrets(hf_token=conf.get_secret("hfToken"),
                        grafana_admin_password=conf.get_secret("grafanaAdminPassword"))
