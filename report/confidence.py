"""Repeated runs: AIPerf's confidence aggregate over `--num-profile-runs` trials.

`aggregate/profile_export_aiperf_aggregate.json`, checked against real exports of AIPerf 0.9.0
and 0.13.0 (both schema 1.0): `metadata.{num_profile_runs, num_successful_runs,
confidence_level}` and `metrics.<metric>_<stat> = {mean, std, ci_low, ci_high, unit, ...}`
(Student's t interval over the trials).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from jobs.exports import ExportError, Metric, ProfileExport, load_json_object
from report.problems import Problem

AGGREGATE_EXPORT = "profile_export_aiperf_aggregate.json"
AGGREGATE_DIR = "aggregate"
TRIALS_DIR = "profile_runs"


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float

    def excludes(self, value: float) -> bool:
        return not self.low <= value <= self.high


@dataclass(frozen=True)
class Confidence:
    path: Path
    trials: int
    level: float
    intervals: Mapping[str, Interval]  # "<metric>_<stat>", e.g. "time_to_first_token_p50"

    def get(self, metric: str, stat: str) -> Interval | None:
        return self.intervals.get(f"{metric}_{stat}")


def parse_confidence(path: Path) -> Confidence:
    body = load_json_object(path)
    meta, metrics = body.get("metadata"), body.get("metrics")
    if not isinstance(meta, dict) or not isinstance(metrics, dict):
        raise ExportError(path, "no 'metadata' and 'metrics' objects: not an AIPerf "
                                "confidence aggregate")
    if meta.get("aggregation_type") != "confidence":
        raise ExportError(path, f"aggregation_type {meta.get('aggregation_type')!r}, "
                                "expected 'confidence'")
    intervals = {}
    for key, value in metrics.items():
        if isinstance(value, dict) and all(_number(value.get(k)) for k in ("mean", "ci_low",
                                                                             "ci_high")):
            intervals[key] = Interval(float(value["mean"]), float(value["ci_low"]),
                                      float(value["ci_high"]))
    return Confidence(path=path, trials=int(meta.get("num_successful_runs") or 0),
                      level=float(meta.get("confidence_level") or 0.95), intervals=intervals)


def aggregate_path(run_dir: Path) -> Path | None:
    """The confidence aggregate of a trial directory (`<step>/profile_runs/run_N[/level]`):
    `<step>/aggregate[/level]/...`; None when `run_dir` is not a trial."""
    parts = run_dir.parts
    if TRIALS_DIR not in parts:
        return None
    at = len(parts) - 1 - parts[::-1].index(TRIALS_DIR)
    step, level = Path(*parts[:at]), parts[at + 2:]
    return step / AGGREGATE_DIR / Path(*level) / AGGREGATE_EXPORT if level else \
        step / AGGREGATE_DIR / AGGREGATE_EXPORT


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Combined:
    """One step (or sweep level) over its trials: the trials' mean as one export."""
    export: ProfileExport
    confidence: Confidence | None
    trials: tuple[ProfileExport, ...]


def combine_trials(summaries: list[ProfileExport], problems: list) -> list[Combined]:
    """Group the trials of repeated runs (`profile_runs/...`) by their aggregate; a step run
    once stays as it is. The combined export carries the aggregate's means; an unusable
    aggregate is named and the first trial stands in."""
    groups: dict[object, list[ProfileExport]] = {}
    for summary in summaries:  # a sweep aggregate's levels share one path: the level tells
        key = aggregate_path(summary.path.parent)
        groups.setdefault(key or (summary.path, summary.concurrency), []).append(summary)
    combined = []
    for key, trials in groups.items():
        trials.sort(key=lambda export: str(export.path))
        if not isinstance(key, Path):
            combined.append(Combined(trials[0], None, tuple(trials)))
            continue
        try:
            confidence = parse_confidence(key)
        except ExportError as err:
            problems.append(Problem(err.path, f"{err.problem}; the first trial stands in and "
                                              "no confidence interval is given"))
            combined.append(Combined(trials[0], None, tuple(trials)))
            continue
        combined.append(Combined(_mean_export(trials[0], confidence), confidence, tuple(trials)))
    return combined


def _mean_export(first: ProfileExport, confidence: Confidence) -> ProfileExport:
    metrics = {}
    for name, metric in first.metrics.items():
        stats = {stat: interval.mean for stat in metric.stats
                 if (interval := confidence.get(name, stat)) is not None}
        if stats:
            metrics[name] = Metric(metric.unit, stats)
    return dataclasses.replace(first, metrics=metrics)

