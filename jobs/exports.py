"""Find and parse what AIPerf wrote: run summaries, sweep aggregates and per-request records.

Checked against real exports of AIPerf 0.9.0 (summary schema 1.3) and 0.13.0 (schema 1.4):
both keep one object per metric (`unit`, `avg`, percentiles `p1`..`p99`, `std`, `min`, `max`)
and the run's own input config (`input_config.phases[].concurrency`,
`input_config.datasets[].prompts.isl/osl`); 0.13.0 adds `is_complete`, many metrics whose
percentile set is partial (`effective_*`, `active_*`), and more per-record metadata.
Anything that cannot be read becomes an `ExportError` naming the file and what is wrong, so the
report can list it and carry on with the rest.

No Pulumi import: this module also runs inside the cluster Jobs.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

TPS_PER_USER = "output_token_throughput_per_user"  # AIPerf: mean over requests of 1 / ITL
PROFILE_EXPORT = "profile_export_aiperf.json"
REQUEST_RECORDS = "profile_export.jsonl"
SWEEP_AGGREGATE = "profile_export_aiperf_sweep.json"
INPUTS_FILE = "inputs.json"
# Files whose presence marks a directory as one AIPerf run, whether or not it got to a summary.
RUN_MARKERS = (PROFILE_EXPORT, REQUEST_RECORDS, INPUTS_FILE)

# The figures every run summary must carry (metric -> statistics); one missing makes it malformed.
REQUIRED_STATS = {
    "time_to_first_token": ("avg", "p50", "p99"),
    "inter_token_latency": ("avg", "p50", "p99"),
    "request_latency": ("avg", "p50", "p99"),
    "output_token_throughput": ("avg",),
    "request_count": ("avg",),
}
PROFILING_PHASE = "profiling"
# Step directory names that carry a concurrency: `c4` (one call per level), `concurrency_4`
# (what AIPerf names the levels of a list-style sweep).
_CONCURRENCY_DIR = re.compile(r"^(?:c|concurrency_)(\d+)$")


class ExportError(Exception):
    """One export that cannot be used: which file, and what is wrong with it."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class Metric:
    unit: str
    stats: Mapping[str, float]  # avg, p50, p99, std, ... as AIPerf wrote them

    def get(self, stat: str) -> float | None:
        return self.stats.get(stat)


@dataclass(frozen=True)
class ProfileExport:
    """One AIPerf run summary (or one level of a sweep aggregate)."""
    path: Path
    aiperf_version: str
    concurrency: int | None
    # Configured mean input/output tokens from the run's own input config; None when absent or
    # when a sequence distribution replaces them.
    isl: float | None
    osl: float | None
    metrics: Mapping[str, Metric]
    # The run's goodput SLO as AIPerf recorded it (`input_config.slos`: metric -> ms); empty
    # when the run counted no goodput.
    slos: Mapping[str, float] = field(default_factory=dict)

    def stat(self, metric: str, stat: str) -> float | None:
        found = self.metrics.get(metric)
        return found.get(stat) if found else None


@dataclass(frozen=True)
class RequestRecord:
    """One request of `profile_export.jsonl`."""
    conversation_id: str | None
    turn_index: int | None
    start_ns: int
    end_ns: int
    metrics: Mapping[str, float]  # scalar per-request metrics (time_to_first_token, ...)
    error: str | None


def find_run_dirs(step_dir: Path) -> list[Path]:
    """The AIPerf run directories at or below one step (a list-style sweep has one per level)."""
    if not step_dir.is_dir():
        raise ExportError(step_dir, "step directory missing")
    runs = {marker.parent for name in RUN_MARKERS for marker in step_dir.rglob(name)}
    if not runs:
        raise ExportError(step_dir, f"no AIPerf export found (none of {', '.join(RUN_MARKERS)})")
    return sorted(runs)


def parse_profile_export(path: Path) -> ProfileExport:
    body = load_json_object(path)
    if body.get("was_cancelled") or body.get("is_complete") is False:
        raise ExportError(path, "AIPerf marked this run cancelled or incomplete")
    metrics = _metrics(path, "", body)
    config = body.get("input_config") or {}
    return ProfileExport(
        path=path,
        aiperf_version=str(body.get("aiperf_version", "unknown")),
        concurrency=_configured_concurrency(config) or concurrency_from_dir_name(path.parent),
        isl=_configured_prompt_mean(config, "isl"),
        osl=_configured_prompt_mean(config, "osl"),
        metrics=metrics,
        slos={key: float(value) for key, value in (config.get("slos") or {}).items()
              if _is_number(value)},
    )


def parse_sweep_aggregate(path: Path) -> list[ProfileExport]:
    """One record per concurrency level of a sweep aggregate, in the order AIPerf wrote them.

    Only `avg` and percentiles are kept: the aggregate's `std`, `min` and `max` describe the
    spread across trials, not across requests as in a run summary.
    """
    body = load_json_object(path)
    combinations = body.get("per_combination_metrics")
    if not isinstance(combinations, list):
        raise ExportError(path, "no 'per_combination_metrics' list: not a sweep aggregate")
    levels = []
    for index, combination in enumerate(combinations):
        where = f"per_combination_metrics[{index}]"
        concurrency = (combination.get("parameters") or {}).get("concurrency")
        metrics = combination.get("metrics")
        if not isinstance(concurrency, int) or not isinstance(metrics, dict):
            raise ExportError(path, f"{where}: needs an integer parameters.concurrency "
                                    "and a metrics object")
        kept = {name: _without_trial_spread(value) for name, value in metrics.items()
                if isinstance(value, dict)}
        levels.append(ProfileExport(path=path, aiperf_version="unknown", concurrency=concurrency,
                                    isl=None, osl=None, metrics=_metrics(path, f"{where}.", kept)))
    return levels


def numbered_lines(path: Path, error: type[Exception] = ExportError,
                   whole_lines_only: bool = False) -> list[tuple[int, str]]:
    """The non-blank lines of a JSON-lines file, numbered from 1; a missing or unreadable file
    raises `error(path, problem)`. `whole_lines_only`: a last line without its newline (its
    writer stopped mid-line) is dropped."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise error(path, "missing") from None
    except (OSError, UnicodeDecodeError) as err:
        raise error(path, f"unreadable ({err})") from None
    lines = text.splitlines()
    if whole_lines_only and not text.endswith("\n"):
        lines = lines[:-1]
    return [(number, line) for number, line in enumerate(lines, start=1) if line.strip()]


def parse_request_records(path: Path) -> list[RequestRecord]:
    """The profiling-phase requests of one `profile_export.jsonl` (warm-up requests dropped)."""
    records = []
    for number, line in numbered_lines(path):
        try:
            row = json.loads(line)
            meta = row["metadata"]
            if meta.get("benchmark_phase", PROFILING_PHASE) != PROFILING_PHASE:
                continue
            records.append(RequestRecord(
                conversation_id=meta.get("conversation_id"),
                turn_index=meta.get("turn_index"),
                start_ns=int(meta["request_start_ns"]),
                end_ns=int(meta["request_end_ns"]),
                metrics={name: float(value["value"]) for name, value in row["metrics"].items()
                         if _is_number(value.get("value"))},
                error=_error_text(row.get("error")),
            ))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
            raise ExportError(path, f"line {number}: not an AIPerf request record "
                                    f"({type(err).__name__}: {err})") from None
    if not records:
        raise ExportError(path, "no profiling-phase request records")
    return records


def concurrency_from_dir_name(directory: Path) -> int | None:
    match = _CONCURRENCY_DIR.match(directory.name)
    return int(match.group(1)) if match else None


def load_json_object(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(path, "missing") from None
    except json.JSONDecodeError as err:
        raise ExportError(path, f"not valid JSON, truncated or corrupt ({err})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ExportError(path, f"unreadable ({err})") from None
    if not isinstance(body, dict):
        raise ExportError(path, f"expected a JSON object, got {type(body).__name__}")
    return body


def _metrics(path: Path, where: str, body: dict[str, Any]) -> dict[str, Metric]:
    """Every metric object of `body`; the required figures must be there and be numbers."""
    metrics = {name: Metric(unit=str(value["unit"]),
                            stats={stat: float(number) for stat, number in value.items()
                                   if _is_number(number)})
               for name, value in body.items() if isinstance(value, dict) and "unit" in value}
    for name, stats in REQUIRED_STATS.items():
        if name not in metrics:
            raise ExportError(path, f"missing metric {where}{name}")
        for stat in stats:
            if metrics[name].get(stat) is None:
                raise ExportError(path, f"metric {where}{name}: {stat} missing or not a number "
                                        f"({body[name].get(stat)!r})")
    return metrics


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _without_trial_spread(body: dict[str, Any]) -> dict[str, Any]:
    return {stat: value for stat, value in body.items()
            if stat in ("unit", "avg") or re.fullmatch(r"p\d+", stat)}


def _profiling_phase(config: dict[str, Any]) -> dict[str, Any]:
    phases = config.get("phases")
    if not isinstance(phases, list):
        return {}
    return next((phase for phase in phases if isinstance(phase, dict)
                 and phase.get("name") == PROFILING_PHASE), {})


def _configured_concurrency(config: dict[str, Any]) -> int | None:
    concurrency = _profiling_phase(config).get("concurrency")
    return int(concurrency) if _is_number(concurrency) else None


def _configured_prompt_mean(config: dict[str, Any], key: str) -> float | None:
    datasets = config.get("datasets")
    if not isinstance(datasets, list) or not datasets or not isinstance(datasets[0], dict):
        return None
    prompts = datasets[0].get("prompts") or {}
    # AIPerf still records the --isl/--osl defaults beside a sequence distribution, unused.
    if prompts.get("sequence_distribution"):
        return None
    mean = (prompts.get(key) or {}).get("mean")
    return float(mean) if _is_number(mean) else None


def _error_text(error: Any) -> str | None:
    if error is None:
        return None
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or error)
    return str(error)
