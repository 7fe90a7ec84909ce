"""AIPerf's GPU telemetry export: what the DCGM exporters on the graph's nodes said during a run.

`gpu_telemetry_export.jsonl` (AIPerf 0.9.0 with `--gpu-telemetry <DCGM exporter URLs>`), checked
against a real export (tests/fixtures/gpu-telemetry-0.9.0): one line per GPU per scrape,
`{gpu_uuid, gpu_model_name, hostname, timestamp_ns, dcgm_url, telemetry_data: {gpu_utilization
(%), gpu_power_usage (W), ...}}`, the DCGM fields renamed and converted by AIPerf
(aiperf/gpu_telemetry/constants.py DCGM_TO_FIELD_MAPPING). Its first scrape is a baseline taken
before the load starts, so the samples are cut to the run's window. A file that cannot be read
is an ExportError; `step_figures` names it as a problem of the report and carries on.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

from jobs.exports import ExportError, numbered_lines
from report.inputs import StepResult
from report.problems import Problem

GPU_TELEMETRY_EXPORT = "gpu_telemetry_export.jsonl"
UTIL, POWER = "gpu_utilization", "gpu_power_usage"
WHAT = "GPU utilisation, power"


@dataclass(frozen=True)
class Sample:
    node: str
    model: str
    gpu: str       # its UUID
    time_s: float
    util_pct: float | None
    power_w: float | None


@dataclass(frozen=True)
class NodeGpus:
    """One node's GPUs of one model over a window: means over every GPU and scrape."""
    node: str
    model: str
    gpus: int
    util_pct: float | None
    power_w: float | None  # per GPU


def parse_gpu_telemetry(path: Path) -> list[Sample]:
    samples = []
    for number, line in numbered_lines(path):
        try:
            row = json.loads(line)
            data = row["telemetry_data"]
            samples.append(Sample(node=str(row["hostname"]), model=str(row["gpu_model_name"]),
                                  gpu=str(row["gpu_uuid"]), time_s=row["timestamp_ns"] / 1e9,
                                  util_pct=_number(data.get(UTIL)),
                                  power_w=_number(data.get(POWER))))
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ExportError(path, f"line {number}: not an AIPerf GPU telemetry record "
                                    f"({type(err).__name__}: {err})") from err
    return samples


def per_node(samples: list[Sample], start: float, end: float) -> list[NodeGpus]:
    """The samples scraped within [start, end], by node and GPU model."""
    groups: dict[tuple[str, str], list[Sample]] = {}
    for sample in samples:
        if start <= sample.time_s <= end:
            groups.setdefault((sample.node, sample.model), []).append(sample)
    return [NodeGpus(node=node, model=model, gpus=len({s.gpu for s in group}),
                     util_pct=_mean(s.util_pct for s in group),
                     power_w=_mean(s.power_w for s in group))
            for (node, model), group in sorted(groups.items())]


def step_figures(simulated: bool, result: StepResult, window: tuple[float, float] | None,
                 problems: list[Problem]) -> tuple[dict[str, Any], str | None]:
    """A step's GPU columns for the evidence table, and why they are empty when they are."""
    figures: dict[str, Any] = {"gpus": None, "gpu_util_pct": None, "gpu_power_w": None,
                               "gpu_energy_j_per_token": None}
    if simulated:
        return figures, f"{WHAT}: not exposed by the mocker (simulated: no GPU)"
    paths = [d / GPU_TELEMETRY_EXPORT for d in result.run_dirs if (d / GPU_TELEMETRY_EXPORT).exists()]
    if not paths:  # the Job found no DCGM exporter and ran AIPerf with --no-gpu-telemetry
        return figures, f"{WHAT}: not exposed (no DCGM exporter found on the workers' nodes)"
    samples = []
    for path in paths:
        try:
            samples += parse_gpu_telemetry(path)
        except ExportError as err:
            problems.append(Problem(err.path, f"{err.problem}; GPU figures of this run are absent"))
            return figures, f"{WHAT}: export unreadable"
    if window is None:
        return figures, f"{WHAT}: no request records to place the step in time"
    nodes = per_node(samples, *window)
    if not nodes:
        return figures, f"{WHAT}: no DCGM sample within the run's window"
    figures |= {"gpus": "; ".join(_node_text(node) for node in nodes),
                "gpu_util_pct": _per_gpu(nodes, "util_pct"), "gpu_power_w": _per_gpu(nodes, "power_w")}
    # energy = the GPUs' mean power over the run's duration (AIPerf's, per trial) / its tokens
    watts = sum(node.power_w * node.gpus for node in nodes if node.power_w is not None)
    seconds = result.export.stat("benchmark_duration", "avg")
    tokens = result.export.stat("total_output_tokens", "avg")
    if watts and seconds and tokens:
        figures["gpu_energy_j_per_token"] = watts * seconds / tokens
    return figures, None


def _node_text(node: NodeGpus) -> str:
    util = "n/a" if node.util_pct is None else f"{node.util_pct:.0f} %"
    power = "n/a" if node.power_w is None else f"{node.power_w:.0f} W"
    return f"{node.node}, {node.gpus}x {node.model}: {util}, {power}"


def _per_gpu(nodes: list[NodeGpus], field: str) -> float | None:
    """A per-GPU mean over every node (each node weighted by its GPU count)."""
    found = [(getattr(node, field), node.gpus) for node in nodes if getattr(node, field) is not None]
    return sum(v * n for v, n in found) / sum(n for _, n in found) if found else None


def _number(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{value!r} is not a number")
    return float(value)


def _mean(values) -> float | None:
    found = [value for value in values if value is not None]
    return fmean(found) if found else None
