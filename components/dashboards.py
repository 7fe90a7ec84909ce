"""The lab's Grafana dashboards, written here as data and rendered to Grafana's JSON model.

Each dashboard lists the metric sources it reads (`sources`); a test checks every query's
metric names against what those sources really expose (tests/fixtures/metrics/README.md).
Grafana's sidecar loads them from labelled ConfigMaps (components/monitoring.py): nothing is
downloaded when Grafana starts, so a dashboard can never hold up the monitoring release.
The benchmark Pareto dashboard (helm_values/dashboards/benchmark-pareto.json) is kept as JSON:
its XY chart needs transformations this small builder does not model.
"""
from __future__ import annotations

from dataclasses import dataclass

# The Prometheus datasource kube-prometheus-stack provisions (grafana.sidecar.datasources.uid).
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
RATE = "$__rate_interval"
PANEL_WIDTH, PANEL_HEIGHT, COLUMNS = 12, 8, 2
SCHEMA_VERSION = 39

# Metric sources a dashboard may read (the test maps each to the names it exposes).
FRONTEND, WORKER, DCGM, KVBM = "dynamo-frontend", "dynamo-worker", "dcgm-exporter", "kvbm"


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    description: str = ""


@dataclass(frozen=True)
class Dashboard:
    key: str  # ConfigMap and file name: benchlab-<key>
    title: str
    description: str
    sources: tuple[str, ...]
    panels: tuple[Panel, ...]

    @property
    def uid(self) -> str:
        return f"benchlab-{self.key}"


def quantiles(metric: str, by: str = "") -> tuple[Query, ...]:
    """p50 and p99 of a Prometheus histogram, summed over pods (and split by `by`)."""
    group = ", ".join(["le", *([by] if by else [])])
    legend = f"{{{{{by}}}}} " if by else ""
    return tuple(Query(f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[{RATE}])))",
                       f"{legend}p{int(q * 100)}") for q in (0.5, 0.99))


def mean(metric: str, legend: str) -> Query:
    """Mean of a histogram over the rate window."""
    return Query(f"sum(rate({metric}_sum[{RATE}])) / sum(rate({metric}_count[{RATE}]))", legend)


PER_GPU = "{{Hostname}} GPU {{gpu}}"

DYNAMO = Dashboard(
    key="dynamo", title="Dynamo serving graph",
    description="The Dynamo frontend (OpenAI API) and its workers, as the operator's PodMonitors "
                "scrape them: load, latency the user sees, and per-worker load.",
    sources=(FRONTEND, WORKER),
    panels=(
        Panel("Frontend requests/s by status",
              (Query(f"sum by (status) (rate(dynamo_frontend_requests_total[{RATE}]))", "{{status}}"),),
              "reqps"),
        Panel("In flight and queued at the frontend",
              (Query("sum(dynamo_frontend_inflight_requests)", "in flight"),
               Query("sum(dynamo_frontend_queued_requests)", "queued"))),
        Panel("Time to first token", quantiles("dynamo_frontend_time_to_first_token_seconds"), "s"),
        Panel("Inter-token latency", quantiles("dynamo_frontend_inter_token_latency_seconds"), "s"),
        Panel("Request duration", quantiles("dynamo_frontend_request_duration_seconds"), "s"),
        Panel("Output tokens/s",
              (Query(f"sum(rate(dynamo_frontend_output_tokens_total[{RATE}]))", "tokens/s"),)),
        Panel("Mean input and output sequence length",
              (mean("dynamo_frontend_input_sequence_tokens", "input tokens"),
               mean("dynamo_frontend_output_sequence_tokens", "output tokens"))),
        Panel("Worker requests/s by component",
              (Query("sum by (dynamo_component, dynamo_endpoint) "
                     f"(rate(dynamo_component_requests_total[{RATE}]))",
                     "{{dynamo_component}}/{{dynamo_endpoint}}"),), "reqps"),
        Panel("Worker request duration by component",
              quantiles("dynamo_component_request_duration_seconds", by="dynamo_component"), "s"),
        Panel("Worker requests in flight",
              (Query("sum by (dynamo_component) (dynamo_component_inflight_requests)",
                     "{{dynamo_component}}"),)),
        Panel("KV blocks the workers offer the router",
              (Query("max by (model) (dynamo_frontend_model_total_kv_blocks)", "{{model}}"),)),
    ))

GPUS = Dashboard(
    key="dcgm", title="GPUs (DCGM)",
    description="Per-GPU activity from the GPU Operator's DCGM exporter (its default metric list).",
    sources=(DCGM,),
    panels=(
        Panel("GPU utilization", (Query("DCGM_FI_DEV_GPU_UTIL", PER_GPU),), "percent"),
        Panel("Tensor pipe active", (Query("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", PER_GPU),), "percentunit"),
        Panel("Graphics engine active", (Query("DCGM_FI_PROF_GR_ENGINE_ACTIVE", PER_GPU),), "percentunit"),
        Panel("Memory bandwidth active (DRAM)", (Query("DCGM_FI_PROF_DRAM_ACTIVE", PER_GPU),), "percentunit"),
        Panel("Frame buffer used", (Query("DCGM_FI_DEV_FB_USED", PER_GPU),), "mbytes"),  # MiB
        Panel("Power draw", (Query("DCGM_FI_DEV_POWER_USAGE", PER_GPU),), "watt"),
        Panel("GPU temperature", (Query("DCGM_FI_DEV_GPU_TEMP", PER_GPU),), "celsius"),
        Panel("SM clock", (Query("DCGM_FI_DEV_SM_CLOCK", PER_GPU),), "MHz"),
        # In the default list these two are gauges already holding bytes per second.
        Panel("PCIe traffic",
              (Query("DCGM_FI_PROF_PCIE_TX_BYTES", f"TX {PER_GPU}"),
               Query("DCGM_FI_PROF_PCIE_RX_BYTES", f"RX {PER_GPU}")), "Bps"),
        Panel("NVLink traffic (all lanes)",
              (Query(f"rate(DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL[{RATE}])", PER_GPU),)),
        Panel("Last XID error", (Query("DCGM_FI_DEV_XID_ERRORS", PER_GPU),),
              description="Non-zero: the driver reported an XID error (see NVIDIA's XID list)."),
    ))

KV_BLOCK_MANAGER = Dashboard(
    key="kvbm", title="KV block manager (KVBM)",
    description="KV cache offload of the prefill workers: GPU -> host memory -> local disk, and "
                "blocks brought back instead of being recomputed.",
    sources=(KVBM,),
    panels=(
        Panel("Blocks offloaded/s",
              (Query(f"sum(rate(kvbm_offload_blocks_d2h[{RATE}]))", "GPU -> host"),
               Query(f"sum(rate(kvbm_offload_blocks_h2d[{RATE}]))", "host -> disk"),
               Query(f"sum(rate(kvbm_offload_blocks_d2d[{RATE}]))", "GPU -> disk"))),
        Panel("Blocks onboarded/s",
              (Query(f"sum(rate(kvbm_onboard_blocks_h2d[{RATE}]))", "host -> GPU"),
               Query(f"sum(rate(kvbm_onboard_blocks_d2d[{RATE}]))", "disk -> GPU"))),
        Panel("Cache hit rate",
              (Query("avg(kvbm_host_cache_hit_rate)", "host"),
               Query("avg(kvbm_disk_cache_hit_rate)", "disk")), "percentunit"),
        Panel("Matched tokens/s", (Query(f"sum(rate(kvbm_matched_tokens[{RATE}]))", "tokens/s"),)),
    ))

DASHBOARDS = (DYNAMO, GPUS, KV_BLOCK_MANAGER)


def render(dashboard: Dashboard) -> dict:
    """Grafana's dashboard JSON model: one time-series panel per Panel, two per row."""
    return {
        "uid": dashboard.uid, "title": dashboard.title, "description": dashboard.description,
        "tags": ["benchlab"], "editable": False, "schemaVersion": SCHEMA_VERSION, "version": 1,
        "timezone": "utc", "refresh": "30s", "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": []}, "annotations": {"list": []},
        "panels": [_panel(i, panel) for i, panel in enumerate(dashboard.panels)],
    }


def _panel(index: int, panel: Panel) -> dict:
    return {
        "id": index + 1, "type": "timeseries", "title": panel.title,
        "description": panel.description, "datasource": DATASOURCE,
        "gridPos": {"h": PANEL_HEIGHT, "w": PANEL_WIDTH,
                    "x": (index % COLUMNS) * PANEL_WIDTH, "y": (index // COLUMNS) * PANEL_HEIGHT},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "targets": [{"datasource": DATASOURCE, "refId": chr(ord("A") + i), "expr": q.expr,
                     "legendFormat": q.legend, "range": True}
                    for i, q in enumerate(panel.queries)],
    }
