"""Summary series of one run, pushed to the Prometheus Pushgateway for the Pareto dashboard.

One Pushgateway group per AIPerf run (run_id, graph, mode, step), so a later run never
replaces an earlier one's points. Gauges (names below, units in the name):

    benchlab_ttft_seconds{stat="avg"|"p50"|"p99"}         time to first token
    benchlab_itl_seconds{stat=...}                          inter-token latency
    benchlab_request_latency_seconds{stat=...}
    benchlab_output_throughput_tokens_per_second            the whole graph
    benchlab_output_tokens_per_second_per_gpu               over the GPUs of the graph's nodes
    benchlab_output_tokens_per_second_per_user              AIPerf's per-user throughput

The per-GPU and per-user figures are defined as in the report (jobs/report_tables.py),
so the dashboard and the report agree.
    benchlab_concurrency                                    requests in flight (configured)

No Pulumi import: runs in the results-export Job.
"""
from __future__ import annotations

import base64
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from jobs import exports, names, run_manifest

JOB = "benchlab"
LATENCIES = {"ttft": "time_to_first_token", "itl": "inter_token_latency",
             "request_latency": "request_latency"}
LATENCY_STATS = ("avg", "p50", "p99")
MS_PER_SECOND = 1000.0


@dataclass(frozen=True)
class Summary:
    """The points of one AIPerf run."""
    mode: str
    step: str
    gauges: dict[str, float]  # exposition line (name{labels}) -> value


def run_summary(mode: str, step: str, export: exports.ProfileExport, gpus: int) -> Summary:
    gauges: dict[str, float] = {}
    for short, metric in LATENCIES.items():
        for stat in LATENCY_STATS:
            value = export.stat(metric, stat)
            if value is not None:  # AIPerf reports these in ms
                gauges[f'benchlab_{short}_seconds{{stat="{stat}"}}'] = value / MS_PER_SECOND
    throughput = export.stat("output_token_throughput", "avg")
    if throughput is not None:
        gauges["benchlab_output_throughput_tokens_per_second"] = throughput
        gauges["benchlab_output_tokens_per_second_per_gpu"] = throughput / gpus
    per_user = export.stat(exports.TPS_PER_USER, "avg")
    if per_user is not None:
        gauges["benchlab_output_tokens_per_second_per_user"] = per_user
    if export.concurrency is not None:
        gauges["benchlab_concurrency"] = float(export.concurrency)
    return Summary(mode, step, gauges)


def run_summaries(graph_dir: Path) -> tuple[list[Summary], list[str]]:
    """Summaries of every finished step of a graph's run, and what could not be read."""
    manifest = run_manifest.read_manifest(graph_dir)
    gpus = manifest.total_gpus
    summaries, problems = [], []
    for mode in names.MODES:
        mode_dir = graph_dir / mode
        if not mode_dir.is_dir():
            continue
        try:
            steps = run_manifest.read_status(mode_dir).steps
        except run_manifest.ManifestError as err:
            problems.append(str(err))
            continue
        for step in steps:
            try:
                for run_dir in exports.find_run_dirs(mode_dir / step):
                    export = exports.parse_profile_export(run_dir / exports.PROFILE_EXPORT)
                    label = step if run_dir == mode_dir / step else f"{step}/{run_dir.name}"
                    summaries.append(run_summary(mode, label, export, gpus))
            except exports.ExportError as err:
                problems.append(str(err))
    return summaries, problems


def exposition(summary: Summary) -> str:
    """Prometheus text format; every series a gauge."""
    lines, typed = [], set()
    for series, value in sorted(summary.gauges.items()):
        name = series.split("{", 1)[0]
        if name not in typed:
            lines.append(f"# TYPE {name} gauge")
            typed.add(name)
        lines.append(f"{series} {value!r}")
    return "\n".join(lines) + "\n"


def group_path(run_id: str, graph: str, summary: Summary) -> str:
    """The Pushgateway grouping key as a URL path (values base64url-encoded where needed)."""
    parts = [("job", JOB), ("run_id", run_id), ("graph", graph), ("mode", summary.mode),
             ("step", summary.step)]
    return "/metrics/" + "/".join(_label(name, value) for name, value in parts)


def _label(name: str, value: str) -> str:
    if "/" in value or not value:
        return f"{name}@base64/{base64.urlsafe_b64encode(value.encode()).decode().rstrip('=')}"
    return f"{name}/{urllib.parse.quote(value, safe='')}"


def push(base_url: str, run_id: str, graph: str, summary: Summary, timeout: float = 30) -> None:
    request = urllib.request.Request(
        base_url.rstrip("/") + group_path(run_id, graph, summary),
        data=exposition(summary).encode(), method="PUT",
        headers={"Content-Type": "text/plain; version=0.0.4"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if response.status not in (200, 202):
            raise OSError(f"Pushgateway answered {response.status}")


def push_run(base_url: str, run_id: str, graph_dir: Path) -> list[str]:
    """Push every step's summary; return the problems (unreadable exports, failed pushes)."""
    summaries, problems = run_summaries(graph_dir)
    for summary in summaries:
        try:
            push(base_url, run_id, graph_dir.name, summary)
        except OSError as err:
            problems.append(f"push {summary.mode}/{summary.step}: {err}")
    print(f"pushed {len(summaries) - sum(p.startswith('push ') for p in problems)} of "
          f"{len(summaries)} step summaries to {base_url}", flush=True)
    return problems
