"""`benchlab cost`: what the stack costs per hour while up, and what a campaign costs.

A campaign is the README's sequence: `pulumi up` with serving.mode=agg, the four benchmark
modes, results export; switch to disagg and `pulumi up` again, the four modes, export;
`pulumi destroy`. Its cost is a timeline of phases, each with the nodes up during it, priced
by the hour, plus the one-off per-GB charges (EFS elastic throughput, NAT data processing).
The physical floor is what the GPUs cost while the benchmarks run and nothing else.

Each phase is priced twice: with the GPU release off (`gpuRelease.graceMinutes: 0`) and on (the
stack's grace: a person's wait after an export bills GPUs for the grace at most). Destroy deletes
the GPU node groups first in both. A forgotten lab shows what the release and the lease cap.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
from dataclasses import dataclass
from datetime import date

from cli import pricing, stack_file
from jobs.names import GPU_GROUPS, GRAPHS, NODE_GROUPS
from stacks.config import StackConfig
from facts import eks
from facts.instances import NAT_GATEWAY_USD_PER_HOUR, PRICE_REGION, stale_prices_warning

HELP = "estimate $/hour of the stack and the cost of an agg + disagg campaign"

HOURS_PER_MONTH = 730  # AWS prices storage per GB-month; this is their month

# --- Other prices (us-east-1, same date as the instance table: PRICES_AS_OF) --------------
PUBLIC_IPV4_USD_PER_HOUR = 0.005  # the NAT gateway's Elastic IP (charged since Feb 2024)
EFS_STANDARD_USD_PER_GB_MONTH = 0.30
EFS_ELASTIC_READ_USD_PER_GB = 0.03  # the lab's EFS uses elastic throughput (components/storage.py)
EFS_ELASTIC_WRITE_USD_PER_GB = 0.06
EBS_GP3_USD_PER_GB_MONTH = 0.08
NAT_DATA_USD_PER_GB = 0.045

# --- What the program builds (tests/test_cost.py checks these against the mocked program) --
NAT_GATEWAYS = 1  # components/network.py: one NAT gateway, in the GPU zone

# --- Sizes ----------------------------------------------------------------------------------
# Downloaded model sizes (safetensors + tokenizer); another model counts as model.storeGib.
MODEL_DOWNLOAD_GIB = {"Qwen/Qwen3-30B-A3B-FP8": 31}
# The vllm-runtime image, compressed (see stacks/config.py MIN_GPU_DISK_GIB): every GPU node
# pulls it once, and so does the system node that runs the frontend.
RUNTIME_IMAGE_GIB = 20

# --- Provisioning overheads, minutes ---------------------------------------------------------
# Published or commonly observed figures, NOT yet measured by this project: replace them with
# the durations of the first real campaign (`pulumi up` prints each resource's time).
# EKS control plane creation: "currently averages 15 minutes" (aws/containers-roadmap#1227),
# since reduced; VPC and NAT gateway come up within it.
CONTROL_PLANE_MIN = 12
# Managed node group: EC2 launch, AL2023 NVIDIA AMI boot, kubelet join. p4d/g6e boot slower
# than CPU instances (8 GPUs, 4 EFA cards); EKS's own timeout for this is 20+ minutes.
NODE_GROUP_READY_MIN = 8
# GPU Operator with driver and toolkit preinstalled on the AMI: device plugin, GFD, DCGM
# exporter DaemonSets pull small images and advertise nvidia.com/gpu.
GPU_OPERATOR_READY_MIN = 4
# Hugging Face download onto EFS through the NAT gateway, at this sustained rate.
MODEL_DOWNLOAD_MB_PER_S = 100
# DynamoGraphDeployment Ready: pull the runtime image (~20 GB, ~8 min), load the weights
# from EFS and warm up vLLM (CUDA graphs, ~5 min).
DGD_READY_MIN = 15
# Per benchmark Job: scheduling, container start, the in-Job entrypoint's checks.
BENCH_JOB_OVERHEAD_MIN = 1
RESULTS_EXPORT_MIN = 2
# An operator edits the config and runs `pulumi up`/`destroy` (preview included).
OPERATOR_TURNAROUND_MIN = 5
# Destroy, part 1: DGD finalizers, Helm uninstalls, node group deletion (~5-8 min). Nothing
# depends on the GPU node groups, so their deletion starts at once and they bill only while EKS
# drains (at most 5 minutes) and terminates them. Part 2: control plane, NAT gateway, VPC.
DESTROY_NODES_MIN = 10
GPU_NODE_GROUP_DELETE_MIN = 5
DESTROY_CLUSTER_MIN = 10
# A lab forgotten after the campaign's last export, e.g. over a weekend.
FORGOTTEN_HOURS = 60
# Longer waits after each export than OPERATOR_TURNAROUND_MIN: what the release saves then.
LONGER_WAITS_MIN = (30, 120)


@dataclass(frozen=True)
class Phase:
    name: str
    minutes: float
    nodes: dict[str, int]  # role -> nodes billed during the phase
    # With the GPU release on: the minutes the GPU nodes still bill (None: all of them).
    gpu_minutes_released: float | None = None


@dataclass(frozen=True)
class Estimate:
    hourly: dict[str, dict[str, float]]  # graph -> line -> $/h
    phases: list[Phase]
    phase_usd: list[float]  # GPU release off
    phase_usd_released: list[float]  # GPU release on (the stack's grace)
    one_off: dict[str, float]  # line -> $
    floor: dict[str, float]  # graph -> $ of the GPUs during the benchmarks only
    bench_minutes: float  # per graph
    forgotten: dict[str, float]  # a lab left up FORGOTTEN_HOURS after the last export: case -> $
    on: dt.date  # the day priced: the EKS control plane's support phase depends on it

    @property
    def total_usd(self) -> float:
        return sum(self.phase_usd) + sum(self.one_off.values())

    @property
    def total_usd_released(self) -> float:
        return sum(self.phase_usd_released) + sum(self.one_off.values())

    @property
    def total_minutes(self) -> float:
        return sum(p.minutes for p in self.phases)

    @property
    def floor_usd(self) -> float:
        return sum(self.floor.values())


def at_mode(cfg: StackConfig, graph: str) -> StackConfig:
    return dataclasses.replace(cfg, serving=dataclasses.replace(cfg.serving, mode=graph))


def nodes_up(cfg: StackConfig, graph: str) -> dict[str, int]:
    mode_cfg = at_mode(cfg, graph)
    return {role: mode_cfg.desired_nodes(role) for role in NODE_GROUPS}


def model_gib(cfg: StackConfig) -> float:
    return MODEL_DOWNLOAD_GIB.get(cfg.model.id, cfg.model.store_gib)


def node_usd_per_hour(cfg: StackConfig, prices: pricing.InstancePrices, role: str, count: int) -> float:
    group = getattr(cfg.node_groups, role)
    ebs = count * group.disk_gib * EBS_GP3_USD_PER_GB_MONTH / HOURS_PER_MONTH
    return count * prices[group.instance_type] + ebs


def fixed_usd_per_hour(cfg: StackConfig, on: dt.date) -> dict[str, float]:
    """What costs the same per hour whatever nodes are up."""
    volumes_gib = cfg.monitoring.prometheus_storage_gib + cfg.monitoring.grafana_storage_gib
    version = cfg.kubernetes_version
    return {
        f"EKS control plane ({version}, {eks.phase(version, on)} support)":
            eks.control_plane_usd_per_hour(version, on),
        f"NAT gateway x{NAT_GATEWAYS} + public IPv4":
            NAT_GATEWAYS * (NAT_GATEWAY_USD_PER_HOUR + PUBLIC_IPV4_USD_PER_HOUR),
        f"EFS, {model_gib(cfg):g} GiB stored": model_gib(cfg) * EFS_STANDARD_USD_PER_GB_MONTH / HOURS_PER_MONTH,
        f"EBS gp3, {volumes_gib} GiB of monitoring volumes": volumes_gib * EBS_GP3_USD_PER_GB_MONTH / HOURS_PER_MONTH,
    }


def hourly(cfg: StackConfig, prices: pricing.InstancePrices, graph: str,
           on: dt.date | None = None) -> dict[str, float]:
    """$/h of the whole stack while up in `graph` mode, one line per cost (nodes incl. root disks)."""
    lines = {}
    for role, count in nodes_up(cfg, graph).items():
        group = getattr(cfg.node_groups, role)
        lines[f"{role}: {count} x {group.instance_type} + {group.disk_gib} GiB gp3"] = \
            node_usd_per_hour(cfg, prices, role, count)
    return {**lines, **fixed_usd_per_hour(cfg, on or dt.date.today())}


def timeline(cfg: StackConfig, wait_min: float = OPERATOR_TURNAROUND_MIN) -> list[Phase]:
    agg, disagg = nodes_up(cfg, "agg"), nodes_up(cfg, "disagg")
    bench = cfg.bench.planned_seconds / 60 + len(cfg.bench.modes()) * BENCH_JOB_OVERHEAD_MIN
    download = model_gib(cfg) * 1024 / MODEL_DOWNLOAD_MB_PER_S / 60
    new_gpu_nodes = any(disagg[r] > agg[r] for r in NODE_GROUPS)
    none = {role: 0 for role in NODE_GROUPS}
    system = {**none, "system": disagg["system"]}
    grace = cfg.gpu_release.grace_minutes
    # A person's wait after an export: with the release on, the GPUs go after the grace.
    waited = min(wait_min, grace) if grace else None
    return [
        Phase("up (agg): VPC, EKS control plane", CONTROL_PLANE_MIN, none),
        Phase("up (agg): node groups boot", NODE_GROUP_READY_MIN, agg),
        Phase("up (agg): GPU Operator ready / model onto EFS",
              max(GPU_OPERATOR_READY_MIN, download), agg),
        Phase("up (agg): serving graph Ready", DGD_READY_MIN, agg),
        Phase("up (agg): four benchmarks", bench, agg),
        Phase("up (agg): results export", RESULTS_EXPORT_MIN, agg),
        Phase("switch to disagg", wait_min, agg, waited),
        Phase("up (disagg): decode nodes boot, GPU Operator",
              NODE_GROUP_READY_MIN + GPU_OPERATOR_READY_MIN if new_gpu_nodes else 0, disagg),
        Phase("up (disagg): serving graph Ready", DGD_READY_MIN, disagg),
        Phase("up (disagg): four benchmarks", bench, disagg),
        Phase("up (disagg): results export", RESULTS_EXPORT_MIN, disagg),
        Phase("before destroy", wait_min, disagg, waited),
        Phase("destroy: GPU node groups first (drain, terminate)", GPU_NODE_GROUP_DELETE_MIN, disagg),
        Phase("destroy: workloads, platform, system nodes",
              DESTROY_NODES_MIN - GPU_NODE_GROUP_DELETE_MIN, system),
        Phase("destroy: control plane, network", DESTROY_CLUSTER_MIN, none),
    ]


def one_off_usd(cfg: StackConfig) -> dict[str, float]:
    """Per-GB charges: the model written to EFS once and read by every worker at start; the
    model and the runtime image through the NAT gateway."""
    model = model_gib(cfg)
    workers = sum(w.replicas for graph in GRAPHS for _, w in at_mode(cfg, graph).worker_roles().values())
    agg, disagg = nodes_up(cfg, "agg"), nodes_up(cfg, "disagg")
    gpu_nodes = sum(max(agg[r], disagg[r]) for r in GPU_GROUPS)
    image_pulls = gpu_nodes + 1  # + the system node running the frontend
    return {
        f"EFS: write {model:g} GiB once, {workers} worker starts read it":
            model * (EFS_ELASTIC_WRITE_USD_PER_GB + workers * EFS_ELASTIC_READ_USD_PER_GB),
        f"NAT data: model + {image_pulls} runtime image pulls":
            (model + image_pulls * RUNTIME_IMAGE_GIB) * NAT_DATA_USD_PER_GB,
    }


def estimate(cfg: StackConfig, prices: pricing.InstancePrices, on: dt.date | None = None,
             wait_min: float = OPERATOR_TURNAROUND_MIN) -> Estimate:
    on = on or dt.date.today()
    fixed = sum(fixed_usd_per_hour(cfg, on).values())

    def usd_per_hour(nodes: dict[str, int]) -> float:
        return fixed + sum(node_usd_per_hour(cfg, prices, r, n) for r, n in nodes.items())

    def released(phase: Phase) -> float:
        if phase.gpu_minutes_released is None:
            return phase.minutes / 60 * usd_per_hour(phase.nodes)
        cpu_only = {r: (n if r == "system" else 0) for r, n in phase.nodes.items()}
        return (phase.gpu_minutes_released * usd_per_hour(phase.nodes)
                + (phase.minutes - phase.gpu_minutes_released) * usd_per_hour(cpu_only)) / 60

    phases = timeline(cfg, wait_min)
    bench_minutes = cfg.bench.planned_seconds / 60
    floor = {}
    for graph in GRAPHS:
        floor[graph] = gpu_usd_per_hour(cfg, prices, graph) * bench_minutes / 60
    return Estimate({g: hourly(cfg, prices, g, on) for g in GRAPHS}, phases,
                    [p.minutes / 60 * usd_per_hour(p.nodes) for p in phases],
                    [released(p) for p in phases], one_off_usd(cfg), floor, bench_minutes,
                    forgotten_usd(cfg, prices, on), on)


def gpu_usd_per_hour(cfg: StackConfig, prices: pricing.InstancePrices, graph: str) -> float:
    return sum(n * prices[getattr(cfg.node_groups, r).instance_type]
               for r, n in nodes_up(cfg, graph).items() if r != "system")


def gpu_nodes_usd_per_hour(cfg: StackConfig, prices: pricing.InstancePrices, graph: str) -> float:
    """The GPU nodes with their root volumes: what a release stops billing."""
    return sum(node_usd_per_hour(cfg, prices, r, n) for r, n in nodes_up(cfg, graph).items()
               if r != "system")


def forgotten_usd(cfg: StackConfig, prices: pricing.InstancePrices, on: dt.date) -> dict[str, float]:
    """A disagg lab left up FORGOTTEN_HOURS after its export: what the GPUs and the rest cost
    with neither guard, with the lease alone (counted, at worst, from the export), and with the
    release after the grace."""
    gpus = gpu_nodes_usd_per_hour(cfg, prices, "disagg")
    rest = sum(hourly(cfg, prices, "disagg", on).values()) - gpus
    grace_hours = cfg.gpu_release.grace_minutes / 60 or FORGOTTEN_HOURS
    lease_hours = min(cfg.gpu_release.lease_hours, FORGOTTEN_HOURS)
    return {"no release, no lease": FORGOTTEN_HOURS * (rest + gpus),
            f"lease only ({cfg.gpu_release.lease_hours} h), at most": FORGOTTEN_HOURS * rest + lease_hours * gpus,
            f"release after {cfg.gpu_release.grace_minutes} min grace":
                FORGOTTEN_HOURS * rest + min(grace_hours, lease_hours) * gpus}


# ---------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------
def render(est: Estimate, prices: pricing.InstancePrices, cfg: StackConfig) -> str:
    out = [f"prices: {prices.source}"]
    if _stale(prices):
        out.append(f"warning: {_stale(prices)}")
    if PRICE_REGION != cfg.region and not prices.live:
        out.append(f"note: the stack is in {cfg.region}; these are {PRICE_REGION} prices "
                   "(use --live for the stack's region)")
    out += ["", "$/hour of the stack while up"]
    for graph in GRAPHS:
        out.append(f"  serving.mode={graph}")
        out += [f"    {name:<52} {usd:>8.2f}" for name, usd in est.hourly[graph].items()]
        out.append(f"    {'total':<52} {sum(est.hourly[graph].values()):>8.2f}")
    grace = cfg.gpu_release.grace_minutes
    out += ["", eks.describe(cfg.kubernetes_version, est.on),
            f"GPU release: node groups to 0 {grace} min after each results export"
            + (" (off: gpuRelease.graceMinutes 0)" if not grace else "")
            + f"; lease {cfg.gpu_release.lease_hours} h (gpuRelease.leaseHours)",
            "", "campaign: agg then disagg, four benchmark modes each, then destroy",
            f"  {'phase':<52} {'min':>6} {'$ release off':>14} {'$ release on':>13}"]
    out += [f"  {p.name:<52} {p.minutes:>6.0f} {usd:>14.2f} {released:>13.2f}"
            for p, usd, released in zip(est.phases, est.phase_usd, est.phase_usd_released) if p.minutes]
    out += [f"  {name:<52} {'':>6} {usd:>14.2f} {usd:>13.2f}" for name, usd in est.one_off.items()]
    out.append(f"  {'total':<52} {est.total_minutes:>6.0f} {est.total_usd:>14.2f} "
               f"{est.total_usd_released:>13.2f}")
    out += ["", f"physical floor: GPU $/h x {est.bench_minutes:.0f} benchmark minutes per graph"]
    out += [f"  {graph:<52} {'':>6} {usd:>14.2f}" for graph, usd in est.floor.items()]
    out.append(f"  {'total':<52} {'':>6} {est.floor_usd:>14.2f}")
    out.append(f"campaign / floor: {est.total_usd / est.floor_usd:.2f}x release off, "
               f"{est.total_usd_released / est.floor_usd:.2f}x release on "
               "(provisioning, idle GPUs while the graph loads, and everything besides GPUs)")
    for wait in LONGER_WAITS_MIN:
        longer = estimate(cfg, prices, est.on, wait)
        out.append(f"  if each wait after an export lasts {wait} min: {longer.total_usd:.2f} release off "
                   f"({longer.total_usd / est.floor_usd:.2f}x), {longer.total_usd_released:.2f} release on "
                   f"({longer.total_usd_released / est.floor_usd:.2f}x)")
    out += ["", f"a lab forgotten {FORGOTTEN_HOURS} h after its last export (disagg)"]
    out += [f"  {case:<52} {'':>6} {usd:>14.2f}" for case, usd in est.forgotten.items()]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    stack_file.add_stack_argument(parser)
    parser.add_argument("--live", action="store_true",
                        help="ask the AWS Pricing API for today's instance prices in the stack's "
                             "region (needs AWS credentials) instead of the dated table")
    parser.add_argument("--profile", help="AWS profile for --live")
    parser.add_argument("--json", action="store_true", help="print the estimate as JSON")


def run(args: argparse.Namespace) -> int:
    stack = stack_file.load(args.stack)
    cfg = stack.config()
    types = sorted({getattr(cfg.node_groups, role).instance_type for role in NODE_GROUPS})
    prices = (pricing.live_prices(pricing.pricing_client(args.profile), types, cfg.region)
              if args.live else pricing.table_prices(types))
    est = estimate(cfg, prices)
    if args.json:
        print(json.dumps(as_json(stack.name, est, prices), indent=2))
    else:
        print(f"cost of stack {stack.name}")
        print(render(est, prices, cfg))
    return 0


def as_json(stack: str, est: Estimate, prices: pricing.InstancePrices) -> dict:
    return {"stack": stack, "prices": prices.source, "prices_warning": _stale(prices),
            "usd_per_hour": {graph: {"lines": lines, "total": sum(lines.values())}
                             for graph, lines in est.hourly.items()},
            "campaign": {"phases": [{"name": p.name, "minutes": p.minutes, "usd": usd}
                                    for p, usd in zip(est.phases, est.phase_usd)],
                         "one_off_usd": est.one_off, "total_minutes": est.total_minutes,
                         "total_usd": est.total_usd},
            "physical_floor_usd": {"by_graph": est.floor, "total": est.floor_usd}}


def _stale(prices: pricing.InstancePrices) -> str | None:
    """The dated table's age warning (live prices are today's)."""
    return None if prices.live else stale_prices_warning(date.today())
