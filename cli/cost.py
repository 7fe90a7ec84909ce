"""`benchlab cost`: what the stack costs per hour while up, and what a campaign costs.

A campaign is the README's sequence: `pulumi up` with serving.mode=agg, the four benchmark
modes, results export; switch to disagg and `pulumi up` again, the four modes, export;
`pulumi destroy`. Its cost is a timeline of phases, each with the nodes up during it, priced
by the hour, plus the one-off per-GB charges (EFS elastic throughput, NAT data processing).
The physical floor is what the GPUs cost while the benchmarks run and nothing else.
"""
from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

from cli import pricing, stack_file
from jobs.names import GPU_GROUPS, GRAPHS, NODE_GROUPS
from stacks.config import StackConfig
from facts.instances import (EKS_CONTROL_PLANE_USD_PER_HOUR, NAT_GATEWAY_USD_PER_HOUR,
                                   PRICE_REGION)

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
# Destroy, part 1 (GPU nodes still billed): DGD finalizers, Helm uninstalls, node group
# deletion (~5-8 min). Part 2: control plane, NAT gateway, VPC.
DESTROY_NODES_MIN = 10
DESTROY_CLUSTER_MIN = 10


@dataclass(frozen=True)
class Phase:
    name: str
    minutes: float
    nodes: dict[str, int]  # role -> nodes billed during the phase


@dataclass(frozen=True)
class Estimate:
    hourly: dict[str, dict[str, float]]  # graph -> line -> $/h
    phases: list[Phase]
    phase_usd: list[float]
    one_off: dict[str, float]  # line -> $
    floor: dict[str, float]  # graph -> $ of the GPUs during the benchmarks only
    bench_minutes: float  # per graph

    @property
    def total_usd(self) -> float:
        return sum(self.phase_usd) + sum(self.one_off.values())

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


def fixed_usd_per_hour(cfg: StackConfig) -> dict[str, float]:
    """What costs the same per hour whatever nodes are up."""
    volumes_gib = cfg.monitoring.prometheus_storage_gib + cfg.monitoring.grafana_storage_gib
    return {
        "EKS control plane": EKS_CONTROL_PLANE_USD_PER_HOUR,
        f"NAT gateway x{NAT_GATEWAYS} + public IPv4":
            NAT_GATEWAYS * (NAT_GATEWAY_USD_PER_HOUR + PUBLIC_IPV4_USD_PER_HOUR),
        f"EFS, {model_gib(cfg):g} GiB stored": model_gib(cfg) * EFS_STANDARD_USD_PER_GB_MONTH / HOURS_PER_MONTH,
        f"EBS gp3, {volumes_gib} GiB of monitoring volumes": volumes_gib * EBS_GP3_USD_PER_GB_MONTH / HOURS_PER_MONTH,
    }


def hourly(cfg: StackConfig, prices: pricing.InstancePrices, graph: str) -> dict[str, float]:
    """$/h of the whole stack while up in `graph` mode, one line per cost (nodes incl. root disks)."""
    lines = {}
    for role, count in nodes_up(cfg, graph).items():
        group = getattr(cfg.node_groups, role)
        lines[f"{role}: {count} x {group.instance_type} + {group.disk_gib} GiB gp3"] = \
            node_usd_per_hour(cfg, prices, role, count)
    return {**lines, **fixed_usd_per_hour(cfg)}


def timeline(cfg: StackConfig) -> list[Phase]:
    agg, disagg = nodes_up(cfg, "agg"), nodes_up(cfg, "disagg")
    bench = cfg.bench.planned_seconds / 60 + len(cfg.bench.modes()) * BENCH_JOB_OVERHEAD_MIN
    download = model_gib(cfg) * 1024 / MODEL_DOWNLOAD_MB_PER_S / 60
    new_gpu_nodes = any(disagg[r] > agg[r] for r in NODE_GROUPS)
    none = {role: 0 for role in NODE_GROUPS}
    return [
        Phase("up (agg): VPC, EKS control plane", CONTROL_PLANE_MIN, none),
        Phase("up (agg): node groups boot", NODE_GROUP_READY_MIN, agg),
        Phase("up (agg): GPU Operator ready / model onto EFS",
              max(GPU_OPERATOR_READY_MIN, download), agg),
        Phase("up (agg): serving graph Ready", DGD_READY_MIN, agg),
        Phase("up (agg): four benchmarks", bench, agg),
        Phase("up (agg): results export", RESULTS_EXPORT_MIN, agg),
        Phase("switch to disagg", OPERATOR_TURNAROUND_MIN, agg),
        Phase("up (disagg): decode nodes boot, GPU Operator",
              NODE_GROUP_READY_MIN + GPU_OPERATOR_READY_MIN if new_gpu_nodes else 0, disagg),
        Phase("up (disagg): serving graph Ready", DGD_READY_MIN, disagg),
        Phase("up (disagg): four benchmarks", bench, disagg),
        Phase("up (disagg): results export", RESULTS_EXPORT_MIN, disagg),
        Phase("before destroy", OPERATOR_TURNAROUND_MIN, disagg),
        Phase("destroy: workloads, platform, node groups", DESTROY_NODES_MIN, disagg),
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


def estimate(cfg: StackConfig, prices: pricing.InstancePrices) -> Estimate:
    fixed = sum(fixed_usd_per_hour(cfg).values())
    phases = timeline(cfg)
    phase_usd = [p.minutes / 60 * (fixed + sum(node_usd_per_hour(cfg, prices, r, n)
                                               for r, n in p.nodes.items()))
                 for p in phases]
    bench_minutes = cfg.bench.planned_seconds / 60
    floor = {}
    for graph in GRAPHS:
        gpu_usd_per_hour = sum(n * prices[getattr(cfg.node_groups, r).instance_type]
                               for r, n in nodes_up(cfg, graph).items() if r != "system")
        floor[graph] = gpu_usd_per_hour * bench_minutes / 60
    return Estimate({g: hourly(cfg, prices, g) for g in GRAPHS}, phases, phase_usd,
                    one_off_usd(cfg), floor, bench_minutes)


# ---------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------
def render(est: Estimate, prices: pricing.InstancePrices, cfg: StackConfig) -> str:
    out = [f"prices: {prices.source}"]
    if PRICE_REGION != cfg.region and "live" not in prices.source:
        out.append(f"note: the stack is in {cfg.region}; these are {PRICE_REGION} prices "
                   "(use --live for the stack's region)")
    out += ["", "$/hour of the stack while up"]
    for graph in GRAPHS:
        out.append(f"  serving.mode={graph}")
        out += [f"    {name:<52} {usd:>8.2f}" for name, usd in est.hourly[graph].items()]
        out.append(f"    {'total':<52} {sum(est.hourly[graph].values()):>8.2f}")
    out += ["", "campaign: agg then disagg, four benchmark modes each, then destroy",
            f"  {'phase':<52} {'min':>6} {'$':>9}"]
    out += [f"  {p.name:<52} {p.minutes:>6.0f} {usd:>9.2f}"
            for p, usd in zip(est.phases, est.phase_usd) if p.minutes]
    out += [f"  {name:<52} {'':>6} {usd:>9.2f}" for name, usd in est.one_off.items()]
    out.append(f"  {'total':<52} {est.total_minutes:>6.0f} {est.total_usd:>9.2f}")
    out += ["", f"physical floor: GPU $/h x {est.bench_minutes:.0f} benchmark minutes per graph"]
    out += [f"  {graph:<52} {'':>6} {usd:>9.2f}" for graph, usd in est.floor.items()]
    out.append(f"  {'total':<52} {'':>6} {est.floor_usd:>9.2f}")
    out.append(f"campaign / floor: {est.total_usd / est.floor_usd:.2f}x "
               "(provisioning, idle GPUs while the graph loads, and everything besides GPUs)")
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


def run(args: argparse.Namespace) -> int:
    cfg = stack_file.load(args.stack).config()
    types = sorted({getattr(cfg.node_groups, role).instance_type for role in NODE_GROUPS})
    prices = (pricing.live_prices(pricing.pricing_client(args.profile), types, cfg.region)
              if args.live else pricing.table_prices(types))
    print(f"cost of stack {args.stack}")
    print(render(estimate(cfg, prices), prices, cfg))
    return 0
