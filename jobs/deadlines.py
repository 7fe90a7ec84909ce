"""How long each of the lab's Jobs may run, and so how long one run may hold the GPUs.

The components set these as the Jobs' activeDeadlineSeconds and Pulumi's waits
(components/job_code.py job_options); the stack config checks the GPU lease against their sum
(stacks/config.py), so a slow but healthy run is never released mid-measurement. Pure; no
Pulumi import.
"""
from __future__ import annotations

import math

from jobs import kv_transport, modes

# Pulumi waits a minute past a Job's own deadline, so Kubernetes' verdict is the one seen.
PULUMI_WAIT_EXTRA_MINUTES = 1
# Before and after a mode's planned load: installing the locked AIPerf wheels (init container),
# tokenizer load and dataset generation per call, and slack for a slow frontend.
JOB_OVERHEAD_SECONDS = 600
PLANNED_SLACK = 1.25  # load windows are wall-clock; drains and per-call start-up vary
# The graph's Ready wait stops itself at serving.readyTimeoutMinutes and reports; its deadline
# leaves room for its pod to start and report first.
GRAPH_READY_SLACK_SECONDS = 300
# The KV transport check's requests: each may take the frontend's full TCP-fallback worst case
# (~100 s TTFT per Dynamo's disagg guide) before the check can call it slow; plus reading the logs.
KV_CHECK_REQUESTS = 8
KV_CHECK_REQUEST_TIMEOUT_SECONDS = 300
KV_CHECK_LOG_SECONDS = 300
EXPORT_TIMEOUT_MINUTES = 30  # upload of one run's files, the marker, the Pushgateway summary


def pulumi_wait_minutes(deadline_minutes: int) -> int:
    return deadline_minutes + PULUMI_WAIT_EXTRA_MINUTES


def benchmark_seconds(mode: modes.Mode, repeats: int = 1) -> int:
    """A mode's Job deadline. `repeats`: AIPerf runs every step that often (bench.repeats)."""
    return math.ceil(mode.planned_seconds * repeats * PLANNED_SLACK) + JOB_OVERHEAD_SECONDS


def graph_ready_seconds(ready_timeout_minutes: int) -> int:
    return ready_timeout_minutes * 60 + GRAPH_READY_SLACK_SECONDS


def kv_check_seconds() -> int:
    """The check's requests and the late ones the KV router may need (jobs/kv_transport.py)."""
    return ((KV_CHECK_REQUESTS + kv_transport.ROUTER_LATE_PROBES) * KV_CHECK_REQUEST_TIMEOUT_SECONDS
            + kv_transport.ROUTER_LATE_PROBES * kv_transport.ROUTER_LATE_PROBE_WAIT_SECONDS
            + KV_CHECK_LOG_SECONDS)


def run_waits_minutes(download_timeout_minutes: int, ready_timeout_minutes: int,
                      plan: modes.BenchPlan) -> dict[str, int]:
    """What Pulumi may wait for, one Job after another, from the GPU node groups' creation to the
    export: the longest a healthy `pulumi up` keeps the GPUs it started. The download counts
    whole, though it starts beside the GPU nodes' boot: a slow one delays everything after it."""
    minutes = lambda seconds: pulumi_wait_minutes(math.ceil(seconds / 60))  # noqa: E731
    return {"model download": pulumi_wait_minutes(download_timeout_minutes),
            "graph Ready": minutes(graph_ready_seconds(ready_timeout_minutes)),
            "KV transport check": minutes(kv_check_seconds()),
            **{f"benchmark {m.name}": minutes(benchmark_seconds(m, plan.repeats)) for m in plan.modes()},
            "results export": pulumi_wait_minutes(EXPORT_TIMEOUT_MINUTES)}
