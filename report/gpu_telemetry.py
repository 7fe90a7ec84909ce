"""AIPerf's GPU telemetry export: what the DCGM exporters on the graph's nodes said during a run.

`gpu_telemetry_export.jsonl` (AIPerf 0.9.0 with `--gpu-telemetry <DCGM exporter URLs>`), checked
against a real export (tests/fixtures/gpu-telemetry-0.9.0): one line per GPU per scrape,
`{gpu_uuid, gpu_model_name, hostname, timestamp_ns, dcgm_url, telemetry_data: {gpu_utilization
(%), gpu_power_usage (W), ...}}`, the DCGM fields renamed and converted by AIPerf
(aiperf/gpu_telemetry/constants.py DCGM_TO_FIELD_MAPPING). Its first scrape is a baseline taken
before the load starts, so the samples are cut to the run's window. A file that cannot be read
is an ExportError.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean

from jobs.exports import ExportError

GPU_TELEMETRY_EXPORT = "gpu_telemetry_export.jsonl"
UTIL, POWER = "gpu_utilization", "gpu_power_usage"


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
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ExportError(path, f"unreadable ({err})") from err
    samples = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
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


def _number(value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{value!r} is not a number")
    return float(value)


def _mean(values) -> float | None:
    found = [value for value in values if value is not None]
    return fmean(found) if found else None
