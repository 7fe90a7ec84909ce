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


COUNTER, GAUGE = "counter", "gauge"
RATED = re.compile(r"\b(?:rate|irate|increase)\(\s*([A-Za-z_:][\w:]*)")


def exposed(prom_file: str) -> dict[str, str]:
    """Sample name -> type in a Prometheus text exposition; a histogram's _bucket, _sum and
    _count samples are counters."""
    lines = (METRICS / prom_file).read_text().splitlines()
    declared = {parts[2]: parts[3] for parts in (line.split() for line in lines) if parts[:2] == ["#", "TYPE"]}
    types = {}
    for line in lines:
        if line and not line.startswith("#"):
            name = re.split(r"[{\s]", line, maxsplit=1)[0]
            family = re.sub(r"_(bucket|sum|count)$", "", name)
            types[name] = COUNTER if declared.get(family) == "histogram" else declared.get(name, "untyped")
    return types


def kvbm_names() -> dict[str, str]:
    lines = (METRICS / "kvbm-0.9.1-metric-names.txt").read_text().splitlines()
    return dict(line.split() for line in lines if line.strip() and not line.startswith("#"))


def dcgm_defaults(shared) -> dict[str, str]:
    lines = shared(DCGM_DEFAULTS).read_text().splitlines()
    rows = [[f.strip() for f in line.split(",")] for line in lines if line.strip() and not line.startswith("#")]
    return {row[0]: row[1] for row in rows}


def source_names(source: str, shared) -> dict[str, str]:
    if source == dashboards.FRONTEND:
        return exposed("dynamo-0.9.1-frontend.prom")
    if source == dashboards.WORKER:
        return exposed("dynamo-0.9.1-mocker-worker.prom")
    if source == dashboards.KVBM:
        return kvbm_names()
    if source == dashboards.DCGM:
        return dcgm_defaults(shared)
    pytest.fail(f"unknown metric source {source!r}: add how its names are known")


def problems(dashboard: Dashboard, shared) -> dict[str, set[str]]:
    """Panel title -> what is wrong with its queries: names the dashboard's sources do not
    expose, gauges under rate() (or counters outside it, where they only ever grow)."""
    known: dict[str, str] = {}
    for source in dashboard.sources:
        known |= source_names(source, shared)
    found = {}
    for panel in dashboard.panels:
        used = set().union(*(metric_names(q.expr) for q in panel.queries))
        rated = {m for q in panel.queries for m in RATED.findall(q.expr)}
        assert used, f"{panel.title}: no metric in its queries"
        wrong = {f"{m}: not exposed" for m in used - set(known)}
        wrong |= {f"{m}: {known[m]} under rate()" for m in rated & set(known) if known[m] != COUNTER}
        wrong |= {f"{m}: counter without rate()" for m in used - rated if known.get(m) == COUNTER}
        if wrong:
            found[panel.title] = wrong
    return found


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda d: d.key)
def test_every_query_reads_metrics_its_sources_expose(dashboard, shared):
    assert problems(dashboard, shared) == {}


def test_the_check_rejects_what_no_process_exposes_and_misused_types(shared):
    """vLLM's own series are not what the mocker exposes, DCGM's NVLink counters are not in
    the exporter's default list, its PCIe figures are gauges (rate() of them is meaningless),
    and a raw counter only ever grows: all are caught."""
    bad = Dashboard("bad", "bad", "", (dashboards.WORKER, dashboards.DCGM), (
        Panel("vllm", (Query('rate(vllm:num_requests_running{model="m"}[5m])'),)),
        Panel("nvlink", (Query("DCGM_FI_PROF_NVLINK_TX_BYTES"),)),
        Panel("pcie", (Query("rate(DCGM_FI_PROF_PCIE_TX_BYTES[1m])"),)),
        Panel("raw counter", (Query("dynamo_component_requests_total"),)),
        Panel("fine", (Query("DCGM_FI_DEV_GPU_UTIL"), Query("rate(dynamo_component_requests_total[1m])")))))
    assert problems(bad, shared) == {
        "vllm": {"vllm:num_requests_running: not exposed"},
        "nvlink": {"DCGM_FI_PROF_NVLINK_TX_BYTES: not exposed"},
        "pcie": {"DCGM_FI_PROF_PCIE_TX_BYTES: gauge under rate()"},
        "raw counter": {"dynamo_component_requests_total: counter without rate()"}}


def test_captured_expositions_hold_the_frontend_and_worker_series():
    """The captures are real and complete: served requests left samples in the histograms."""
    frontend, worker = exposed("dynamo-0.9.1-frontend.prom"), exposed("dynamo-0.9.1-mocker-worker.prom")
    assert {"dynamo_frontend_requests_total", "dynamo_frontend_time_to_first_token_seconds_bucket",
            "dynamo_frontend_inter_token_latency_seconds_count"} <= frontend.keys()
    assert {"dynamo_component_requests_total", "dynamo_component_request_duration_seconds_bucket"} <= worker.keys()
    assert (frontend["dynamo_frontend_inflight_requests"], worker["dynamo_component_requests_total"]) == \
        (GAUGE, COUNTER)
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
