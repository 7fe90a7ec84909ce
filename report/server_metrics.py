"""AIPerf's server-metrics export: what the serving side's Prometheus endpoints said during a run.

`server_metrics_export.json`, checked against real exports of AIPerf 0.9.0 (schema 1.0) and
0.13.0 (schema 1.1, adds `metrics_phase`): both keep `summary.endpoints_successful` and
`metrics.<name> = {type, unit, series: [{endpoint_url, labels, stats}]}`; a gauge's stats are
avg/min/max/p.., a counter's `total` (increase over the run) and `rate`, a histogram's
count/sum/avg and `p<n>_estimate`. A file that cannot be read is an ExportError.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from jobs.exports import ExportError, load_json_object

SERVER_METRICS_EXPORT = "server_metrics_export.json"


@dataclass(frozen=True)
class Series:
    endpoint: str
    labels: Mapping[str, str]
    stats: Mapping[str, float]


@dataclass(frozen=True)
class ServerMetrics:
    path: Path
    aiperf_version: str
    endpoints: tuple[str, ...]          # the endpoints AIPerf scraped successfully
    metrics: Mapping[str, tuple[Series, ...]]

    def total(self, name: str, stat: str) -> float | None:
        """`stat` summed over every series of `name` (every worker), None when absent."""
        values = [series.stats[stat] for series in self.metrics.get(name, ())
                  if stat in series.stats]
        return sum(values) if values else None

    def first(self, name: str, stat: str) -> float | None:
        for series in self.metrics.get(name, ()):
            if stat in series.stats:
                return series.stats[stat]
        return None


def parse_server_metrics(path: Path) -> ServerMetrics:
    body = load_json_object(path)
    metrics = body.get("metrics")
    summary = body.get("summary")
    if not isinstance(metrics, dict) or not isinstance(summary, dict):
        raise ExportError(path, "no 'metrics' and 'summary' objects: not an AIPerf "
                                "server-metrics export")
    parsed = {}
    for name, metric in metrics.items():
        series = metric.get("series") if isinstance(metric, dict) else None
        if not isinstance(series, list):
            raise ExportError(path, f"metrics.{name}: no 'series' list")
        parsed[name] = tuple(_series(path, name, index, entry) for index, entry in enumerate(series))
    endpoints = summary.get("endpoints_successful") or []
    return ServerMetrics(path=path, aiperf_version=str(body.get("aiperf_version", "unknown")),
                         endpoints=tuple(str(url) for url in endpoints), metrics=parsed)


def _series(path: Path, name: str, index: int, entry: Any) -> Series:
    if not isinstance(entry, dict) or not isinstance(entry.get("stats"), dict):
        raise ExportError(path, f"metrics.{name}.series[{index}]: no 'stats' object")
    stats = {stat: float(value) for stat, value in entry["stats"].items()
             if isinstance(value, (int, float)) and not isinstance(value, bool)}
    return Series(endpoint=str(entry.get("endpoint_url", "")),
                  labels={str(k): str(v) for k, v in (entry.get("labels") or {}).items()},
                  stats=stats)
