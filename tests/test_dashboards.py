"""Every query of the lab's dashboards reads metric names that real processes expose: the
Dynamo 0.9.1 frontend and mocker worker (their /metrics, captured in the local lab), the DCGM
exporter's default metric list, and the KV block manager's names in the Dynamo source
(tests/fixtures/metrics/README.md says how each was obtained)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from components import dashboards
from components.dashboards import DASHBOARDS, Dashboard, Panel, Query, render

METRICS = Path(__file__).parent / "fixtures" / "metrics"
DCGM_DEFAULTS = "dcgm-exporter/dcp-metrics-included.csv"
# PromQL words that are not metric names.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
            "and", "or", "unless", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text):
        if text[match.end():].lstrip().startswith("(") or match.group().lower() in KEYWORDS:
            continue  # a function call or a keyword
        names.add(match.group())
    return names


def exposed(prom_file: str) -> set[str]:
    """Sample names in a Prometheus text exposition (histograms as _bucket/_sum/_count)."""
    lines = (METRICS / prom_file).read_text().splitlines()
    return {re.split(r"[{\s]", line, maxsplit=1)[0] for line in lines if line and not line.startswith("#")}


def kvbm_names() -> set[str]:
    lines = (METRICS / "kvbm-0.9.1-metric-names.txt").read_text().splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


def dcgm_defaults(shared) -> set[str]:
    lines = shared(DCGM_DEFAULTS).read_text().splitlines()
    return {line.split(",")[0].strip() for line in lines if line.strip() and not line.startswith("#")}


def source_names(source: str, shared) -> set[str]:
    if source == dashboards.FRONTEND:
        return exposed("dynamo-0.9.1-frontend.prom")
    if source == dashboards.WORKER:
        return exposed("dynamo-0.9.1-mocker-worker.prom")
    if source == dashboards.KVBM:
        return kvbm_names()
    if source == dashboards.DCGM:
        return dcgm_defaults(shared)
    pytest.fail(f"unknown metric source {source!r}: add how its names are known")


def unknown_names(dashboard: Dashboard, shared) -> dict[str, set[str]]:
    """Panel title -> names its queries read that the dashboard's sources do not expose."""
    known = set().union(*(source_names(s, shared) for s in dashboard.sources))
    unknown = {}
    for panel in dashboard.panels:
        used = set().union(*(metric_names(q.expr) for q in panel.queries))
        assert used, f"{panel.title}: no metric in its queries"
        if used - known:
            unknown[panel.title] = used - known
    return unknown


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda d: d.key)
def test_every_query_reads_metrics_its_sources_expose(dashboard, shared):
    assert unknown_names(dashboard, shared) == {}


def test_the_check_rejects_a_metric_no_process_exposes(shared):
    """vLLM's own series are not what the mocker exposes, and DCGM's NVLink counters are not
    in the exporter's default list: both are caught."""
    bad = Dashboard("bad", "bad", "", (dashboards.WORKER, dashboards.DCGM), (
        Panel("vllm", (Query('rate(vllm:num_requests_running{model="m"}[5m])'),)),
        Panel("nvlink", (Query("DCGM_FI_PROF_NVLINK_TX_BYTES"),)),
        Panel("fine", (Query("DCGM_FI_DEV_GPU_UTIL"),))))
    assert unknown_names(bad, shared) == {"vllm": {"vllm:num_requests_running"},
                                          "nvlink": {"DCGM_FI_PROF_NVLINK_TX_BYTES"}}


def test_captured_expositions_hold_the_frontend_and_worker_series():
    """The captures are real and complete: served requests left samples in the histograms."""
    frontend, worker = exposed("dynamo-0.9.1-frontend.prom"), exposed("dynamo-0.9.1-mocker-worker.prom")
    assert {"dynamo_frontend_requests_total", "dynamo_frontend_time_to_first_token_seconds_bucket",
            "dynamo_frontend_inter_token_latency_seconds_count"} <= frontend
    assert {"dynamo_component_requests_total", "dynamo_component_request_duration_seconds_bucket"} <= worker
    assert re.search(r"^dynamo_frontend_requests_total\{.*\} [1-9]", (METRICS / "dynamo-0.9.1-frontend.prom")
                     .read_text(), re.M)


@pytest.mark.parametrize("expr, names", [
    ("histogram_quantile(0.99, sum by (le, dynamo_component) (rate(x_bucket[$__rate_interval])))",
     {"x_bucket"}),
    ('sum(rate(a_sum{model=~"$m"}[5m])) / sum(rate(a_count[5m])) * 1e3', {"a_sum", "a_count"}),
    ("DCGM_FI_DEV_GPU_UTIL", {"DCGM_FI_DEV_GPU_UTIL"}),
    ("max by (model) (b) or on (model) vector(0)", {"b"}),
])
def test_metric_names_of_promql(expr, names):
    assert metric_names(expr) == names


def test_rendered_dashboards_are_grafana_models_with_unique_ids():
    for dashboard in DASHBOARDS:
        model = render(dashboard)
        assert model["uid"] == f"benchlab-{dashboard.key}" and len(model["uid"]) <= 40
        ids = [p["id"] for p in model["panels"]]
        assert len(ids) == len(set(ids)) == len(dashboard.panels)
        places = {(p["gridPos"]["x"], p["gridPos"]["y"]) for p in model["panels"]}
        assert len(places) == len(ids), "panels overlap"
        for panel in model["panels"]:
            refs = [t["refId"] for t in panel["targets"]]
            assert refs and len(refs) == len(set(refs))
