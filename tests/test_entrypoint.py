"""The code that runs inside the cluster Jobs (jobs/): run ids, the benchmark entrypoint,
the model download, the results export and the Pushgateway summary.

AIPerf itself is faked here by a runner that writes a real AIPerf 0.9.0 summary
(tests/fixtures/aiperf-0.9.0) into the artifact directory it is given; S3 is moto; the
Pushgateway is a local HTTP server on 127.0.0.1."""
from __future__ import annotations

import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from jobs import (cluster_facts, entrypoint, export_to_s3, exports, model_download, modes, names,
                        push_summary, run_manifest, runs, serving_probe)
from components import benchmark_jobs, job_code
from facts import wheel_locks
from stacks import run_plan as run_plan_module
from stacks import config
from tests.conftest import serving_mode

FIXTURES = Path(__file__).parent / "fixtures" / "aiperf-0.9.0" / "exports.tar.gz"
SUMMARY = "disagg/concurrency_sweep/c1/profile_export_aiperf.json"
HASH = "a" * 64


@pytest.fixture(scope="module")
def real_summary(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("aiperf-0.9.0")
    with tarfile.open(FIXTURES) as archive:
        # the data filter where this Python has it (3.11.4+; Debian's 3.11.2 does not)
        archive.extractall(out, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return out / SUMMARY


class FakeAiperf:
    """Stands in for `python -m aiperf ...`: records the call, writes a real summary."""

    def __init__(self, summary: Path, fail_steps: tuple[str, ...] = ()):
        self.summary, self.fail_steps, self.calls, self.envs = summary, fail_steps, [], []

    def __call__(self, argv, env=None):
        assert argv[:3] == [sys.executable, "-m", "aiperf"]
        self.envs.append(env)
        self.calls.append(argv[3:])
        artifact = Path(argv[argv.index("--artifact-dir") + 1])
        artifact.mkdir(parents=True, exist_ok=True)
        if artifact.name in self.fail_steps:
            return subprocess.CompletedProcess(argv, 2)
        shutil.copy(self.summary, artifact / "profile_export_aiperf.json")
        return subprocess.CompletedProcess(argv, 0)


def plan_for(mode: str = "agg", bench: dict | None = None) -> dict:
    cfg = config.parse({"serving": serving_mode(mode), **({"bench": bench} if bench else {})})
    return run_plan_module.run_plan(cfg, code_sha="test")


QUICK = {"concurrencySweep": {"concurrency": [1, 4], "stepSeconds": 5, "graceSeconds": 1},
         "multiTurn": {"durationSeconds": 5}, "sequenceDistribution": {"stepSeconds": 5},
         "prefixCache": {"hitRatios": [0, 100], "stepSeconds": 5}}


# --- run ids -----------------------------------------------------------------------------------
def test_a_retried_pod_of_the_same_job_gets_the_same_run(tmp_path):
    first = runs.allocate(tmp_path, HASH, "job-1", now=0)
    assert first == "19700101T000000Z-aaaaaaaa"
    assert runs.allocate(tmp_path, HASH, "job-1", now=99) == first
    assert runs.current(tmp_path, HASH) == first


def test_new_jobs_for_the_same_config_make_a_second_run_beside_the_first(tmp_path):
    first = runs.allocate(tmp_path, HASH, "job-1", now=0)
    (tmp_path / first / "agg").mkdir()
    second = runs.allocate(tmp_path, HASH, "job-2", now=0)  # same second: never reuse the dir
    assert second == f"{first}-1" and (tmp_path / first / "agg").is_dir()
    assert runs.current(tmp_path, HASH) == second


def test_a_later_job_without_an_allocated_run_fails(tmp_path):
    with pytest.raises(runs.RunError, match="no run allocated"):
        runs.current(tmp_path, HASH)


# --- one mode ----------------------------------------------------------------------------------
def target() -> entrypoint.aiperf_argv.Target:
    return entrypoint.aiperf_argv.Target(url="http://benchlab-agg-frontend:8000",
                                         model="Qwen/Qwen3-30B-A3B-FP8", tokenizer="/models/x")


def test_a_sweep_runs_one_call_per_level_and_records_ok(tmp_path, real_summary):
    mode = modes.ConcurrencySweep(concurrency=(1, 4, 16))
    aiperf = FakeAiperf(real_summary)
    status = entrypoint.run_mode(mode, tmp_path / "agg", target(), run=aiperf)
    assert status.status == "ok" and status.error is None
    assert status.steps == ["c1", "c4", "c16"] and status.planned_seconds == mode.planned_seconds
    assert [argv[argv.index("--concurrency") + 1] for argv in aiperf.calls] == ["1", "4", "16"]
    assert run_manifest.read_status(tmp_path / "agg" / "concurrency_sweep") == status
    for step in status.steps:
        assert (tmp_path / "agg" / "concurrency_sweep" / step / "profile_export_aiperf.json").is_file()


def test_a_finished_mode_is_not_run_again_and_a_partial_one_is_set_aside(tmp_path, real_summary):
    mode = modes.MultiTurn()
    aiperf = FakeAiperf(real_summary)
    entrypoint.run_mode(mode, tmp_path, target(), run=aiperf)
    entrypoint.run_mode(mode, tmp_path, target(), run=aiperf)
    assert len(aiperf.calls) == 1  # ok: skipped

    partial = tmp_path / "prefix_cache" / "hit0"
    partial.mkdir(parents=True)
    (partial / "half-written").write_text("x")
    entrypoint.run_mode(modes.PrefixCache(hit_ratios=(0,)), tmp_path, target(), run=aiperf)
    assert (tmp_path / ".attempts" / "prefix_cache-1" / "hit0" / "half-written").read_text() == "x"
    assert run_manifest.read_status(tmp_path / "prefix_cache").status == "ok"


def test_only_the_pinned_aiperf_runs_never_another_version(monkeypatch):
    monkeypatch.setattr(entrypoint.importlib.metadata, "version", lambda name: "0.9.0")
    entrypoint.require_aiperf("0.9.0")
    monkeypatch.setattr(entrypoint.importlib.metadata, "version", lambda name: "0.3.0")
    with pytest.raises(entrypoint.WrongAiperf, match="aiperf 0.3.0 is installed where 0.9.0 is pinned"):
        entrypoint.require_aiperf("0.9.0")

    def absent(name):
        raise entrypoint.importlib.metadata.PackageNotFoundError(name)
    monkeypatch.setattr(entrypoint.importlib.metadata, "version", absent)
    with pytest.raises(entrypoint.WrongAiperf, match=r"aiperf \(none\)"):
        entrypoint.require_aiperf("0.9.0")


def test_the_job_with_another_aiperf_runs_nothing(tmp_path, monkeypatch):
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan_for("agg", QUICK)))
    monkeypatch.setattr(entrypoint.importlib.metadata, "version", lambda name: "0.13.0")
    ran = []
    with pytest.raises(entrypoint.WrongAiperf):
        entrypoint.main({"PLAN_FILE": str(plan_file), "RESULTS_ROOT": str(tmp_path / "results"),
                         "BENCH_MODE": "concurrency_sweep", "JOB_UID": "u", "POD_NAMESPACE": "lab",
                         "ALLOCATE_RUN": "1"}, run=lambda *a, **k: ran.append(a))
    assert ran == [] and not (tmp_path / "results").exists()


# --- the whole Job, four modes, then the export -------------------------------------------------
WORKER_CONTAINER = {"ports": [{"name": "system", "containerPort": 9090}, {"name": "http", "containerPort": 8000}],
                    "env": [{"name": "NATS_SERVER", "value": "nats://127.0.0.1:9"}]}
PODS = [{"metadata": {"name": "benchlab-agg-vllmworker-0",
                      "labels": {"nvidia.com/dynamo-component-type": "worker"}},
         "spec": {"nodeName": "ip-1", "containers": [WORKER_CONTAINER]}, "status": {"podIP": "10.0.0.5"}},
        {"metadata": {"name": "benchlab-agg-frontend-0"}, "spec": {"nodeName": "ip-9"}},
        {"metadata": {"name": "other-pod"}, "spec": {"nodeName": "ip-1"}},
        {"metadata": {"name": "benchlab-agg-vllmworker-1"}, "spec": {}}]  # not scheduled yet
NODES = [{"metadata": {"name": "ip-1", "labels": {"node.kubernetes.io/instance-type": "p4d.24xlarge",
                                                  "benchlab.io/role": "prefill"}}},
         {"metadata": {"name": "ip-9", "labels": {"node.kubernetes.io/instance-type": "m7i.2xlarge",
                                                  "benchlab.io/role": "system"}}}]


def test_placement_maps_the_graphs_pods_to_nodes():
    assert cluster_facts.placement(PODS, NODES, "benchlab-agg", "benchlab.io/role") == [
        {"pod": "benchlab-agg-frontend-0", "node": "ip-9", "instance_type": "m7i.2xlarge", "role": "system"},
        {"pod": "benchlab-agg-vllmworker-0", "node": "ip-1", "instance_type": "p4d.24xlarge", "role": "prefill"},
    ]


def test_worker_pods_give_the_metrics_endpoints_and_the_nats_address():
    frontend = {"metadata": {"name": "benchlab-agg-frontend-0",
                             "labels": {"nvidia.com/dynamo-component-type": "frontend"}},
                "spec": {"containers": [WORKER_CONTAINER]}, "status": {"podIP": "10.0.0.9"}}
    pending = {"metadata": {"name": "benchlab-agg-vllmworker-1",
                            "labels": {"nvidia.com/dynamo-component-type": "worker"}},
               "spec": {"containers": [WORKER_CONTAINER]}, "status": {}}
    assert cluster_facts.worker_endpoints([*PODS, frontend, pending], "benchlab-agg") == (
        ["http://10.0.0.5:9090/metrics"], "nats://127.0.0.1:9")
    assert cluster_facts.worker_endpoints([frontend], "benchlab-agg") == ([], None)


# The GPU Operator's DCGM exporter pods (its DaemonSet's label), one per GPU node.
EXPORTERS = [{"metadata": {"name": f"nvidia-dcgm-exporter-{node}", "labels": {"app": "nvidia-dcgm-exporter"}},
              "spec": {"nodeName": node}, "status": {"podIP": ip}}
             for node, ip in (("ip-1", "10.0.1.1"), ("ip-9", "10.0.9.1"), ("ip-2", None))]


def test_dcgm_exporters_on_the_workers_nodes_only():
    """The frontend's node and a node without a worker are left out, as is a pod not running."""
    on_worker_node = [*EXPORTERS, {"metadata": {"name": "gpu-feature-discovery-x", "labels": {"app": "gpu-feature-discovery"}},
                                   "spec": {"nodeName": "ip-1"}, "status": {"podIP": "10.0.1.2"}}]
    assert cluster_facts.dcgm_exporter_urls(on_worker_node, PODS, "benchlab-agg") == ["http://10.0.1.1:9400/metrics"]
    assert cluster_facts.dcgm_exporter_urls(EXPORTERS, PODS, "benchlab-disagg") == []
    assert cluster_facts.dcgm_exporter_urls([], PODS, "benchlab-agg") == []


def test_the_exporters_are_listed_by_label_in_the_gpu_operators_namespace(monkeypatch):
    asked = []

    def get(path):
        asked.append(path)
        return {"items": EXPORTERS if path.startswith("/api/v1/namespaces/gpu-operator/") else PODS}

    monkeypatch.setattr(cluster_facts.kube_api, "get", get)
    assert cluster_facts.read_dcgm_exporter_urls("gpu-operator", "benchlab", "benchlab-agg") == [
        "http://10.0.1.1:9400/metrics"]
    assert asked == ["/api/v1/namespaces/gpu-operator/pods?labelSelector=app%3Dnvidia-dcgm-exporter",
                     "/api/v1/namespaces/benchlab/pods"]


def run_job(tmp_path, plan, mode, job_uid, aiperf, monkeypatch, allocate) -> int:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    monkeypatch.setattr(entrypoint, "require_aiperf", lambda version: None)
    monkeypatch.setattr(cluster_facts, "read_placement",
                        lambda ns, graph, label: cluster_facts.placement(PODS, NODES, graph, label))
    monkeypatch.setattr(cluster_facts, "read_worker_endpoints",
                        lambda ns, graph: cluster_facts.worker_endpoints(PODS, graph))
    monkeypatch.setattr(cluster_facts, "read_dcgm_exporter_urls",
                        lambda gpu_ns, ns, graph: cluster_facts.dcgm_exporter_urls(EXPORTERS, PODS, graph))
    monkeypatch.setattr(serving_probe, "still_serving", lambda url, model: True)  # a failed step is just that
    return entrypoint.main({"PLAN_FILE": str(plan_file), "RESULTS_ROOT": str(tmp_path / "results"),
                            "BENCH_MODE": mode, "JOB_UID": job_uid, "POD_NAMESPACE": "benchlab",
                            "GPU_OPERATOR_NAMESPACE": "gpu-operator",
                            "ALLOCATE_RUN": "1" if allocate else "0"}, run=aiperf)


def run_campaign(tmp_path, plan, job_uid, aiperf, monkeypatch) -> str:
    for index, mode in enumerate(names.MODES):
        assert run_job(tmp_path, plan, mode, f"{job_uid}-{mode}", aiperf, monkeypatch, index == 0) == 0
    return runs.current(tmp_path / "results", plan["config_hash"])


def test_four_jobs_fill_one_run_with_a_manifest_and_a_status_per_mode(tmp_path, real_summary, monkeypatch):
    plan = plan_for("agg", QUICK)
    aiperf = FakeAiperf(real_summary)
    run_id = run_campaign(tmp_path, plan, "uid", aiperf, monkeypatch)
    assert aiperf.envs and all(env["POD_NAMESPACE"] == "benchlab" for env in aiperf.envs)  # the Job's env
    for argv in aiperf.calls:  # every call scrapes the worker pods and their GPUs, counts goodput
        at = argv.index("--server-metrics")
        assert argv[at + 1] == "http://10.0.0.5:9090/metrics"
        at = argv.index("--gpu-telemetry")
        assert argv[at + 1] == "http://10.0.1.1:9400/metrics" and argv[at + 2].startswith("--")
        assert "--goodput" in argv
    graph_dir = tmp_path / "results" / run_id / "agg"
    manifest = run_manifest.read_manifest(graph_dir)
    assert (manifest.run_id, manifest.graph, manifest.simulated, manifest.profile) == (run_id, "agg", False, "cloud")
    assert manifest.workers == {"agg": run_manifest.WorkerSpec(replicas=4, tp=4)}
    assert [(n.role, n.instance_type, n.count, n.gpus_per_node) for n in manifest.nodes] == [
        ("prefill", "p4d.24xlarge", 2, 8)]
    assert manifest.extra["config_hash"] == plan["config_hash"]
    assert manifest.extra["dgd_spec"] == plan["manifest"]["dgd_spec"]
    assert len(manifest.extra["placement"]) == 2
    assert manifest.versions["aiperf"] == "0.9.0"
    for mode in names.MODES:
        assert run_manifest.read_status(graph_dir / mode).status == "ok"
    steps = run_manifest.read_status(graph_dir / "prefix_cache").steps
    assert steps == ["hit0", "hit100"]


def test_switching_graphs_or_reapplying_makes_new_runs_beside_the_old(tmp_path, real_summary, monkeypatch):
    aiperf = FakeAiperf(real_summary)
    agg = run_campaign(tmp_path, plan_for("agg", QUICK), "first", aiperf, monkeypatch)
    disagg = run_campaign(tmp_path, plan_for("disagg", QUICK), "second", aiperf, monkeypatch)
    again = run_campaign(tmp_path, plan_for("agg", QUICK), "third", aiperf, monkeypatch)
    assert len({agg, disagg, again}) == 3
    root = tmp_path / "results"
    assert run_manifest.read_manifest(root / agg / "agg").run_id == agg  # untouched
    assert run_manifest.read_manifest(root / disagg / "disagg").graph == "disagg"


class Pushgateway(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, str]] = []

    def do_PUT(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        Pushgateway.received.append((self.path, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def pushgateway():
    Pushgateway.received = []
    server = http.server.HTTPServer(("127.0.0.1", 0), Pushgateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", Pushgateway.received
    server.shutdown()
    server.server_close()


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="results")
        yield client


def export_env(tmp_path, plan, url) -> dict:
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    return {"PLAN_FILE": str(plan_file), "RESULTS_ROOT": str(tmp_path / "results"),
            "RESULTS_BUCKET": "results", "PUSHGATEWAY_URL": url}


def test_export_uploads_the_run_and_pushes_one_group_per_step(tmp_path, real_summary, monkeypatch,
                                                              pushgateway, s3):
    url, received = pushgateway
    plan = plan_for("agg", QUICK)
    run_id = run_campaign(tmp_path, plan, "uid", FakeAiperf(real_summary), monkeypatch)
    assert export_to_s3.main(export_env(tmp_path, plan, url), s3=s3) == 0

    keys = {item["Key"] for item in s3.list_objects_v2(Bucket="results")["Contents"]}
    assert f"{run_id}/agg/manifest.json" in keys
    assert f"{run_id}/agg/concurrency_sweep/c4/profile_export_aiperf.json" in keys
    assert all(key.startswith(f"{run_id}/agg/") for key in keys)
    local = {p for p in (tmp_path / "results" / run_id).rglob("*") if p.is_file()}
    assert len(keys) == len(local)

    steps = sum(len(run_manifest.read_status(tmp_path / "results" / run_id / "agg" / m).steps)
                for m in names.MODES)
    assert len(received) == steps == 2 + 1 + 3 + 2
    path, body = received[0]
    assert path.startswith(f"/metrics/job/benchlab/run_id/{run_id}/graph/agg/mode/")
    summary = json.loads(real_summary.read_text())
    assert f"benchlab_output_throughput_tokens_per_second {summary['output_token_throughput']['avg']!r}" in body
    per_gpu = summary["output_token_throughput"]["avg"] / 16  # 4 workers x TP4
    assert f"benchlab_output_tokens_per_second_per_gpu {per_gpu!r}" in body
    assert f'benchlab_ttft_seconds{{stat="p99"}} {summary["time_to_first_token"]["p99"] / 1000!r}' in body

    # a retried export uploads nothing twice
    assert export_to_s3.upload_run(tmp_path / "results", run_id, "results", s3) == (0, len(keys))
    # the marker the GPU release waits for, written once the run is in S3 (and uploaded too)
    assert run_manifest.read_exported(tmp_path / "results" / run_id / "agg") is not None
    assert f"{run_id}/agg/{run_manifest.EXPORTED_FILE}" in keys


def test_the_export_uploads_regular_files_only_never_through_a_link(tmp_path, s3, capsys):
    run_dir = tmp_path / "results" / "run1" / "agg"
    (run_dir / "multi_turn").mkdir(parents=True)
    (run_dir / "manifest.json").write_text("{}")
    token = tmp_path / "token"
    token.write_text("the pod's own service-account token")
    (run_dir / "multi_turn" / "profile_export_aiperf.json").symlink_to(token)  # planted links
    (run_dir / "linked_dir").symlink_to(tmp_path, target_is_directory=True)
    assert export_to_s3.upload_run(tmp_path / "results", "run1", "results", s3) == (1, 0)
    keys = [item["Key"] for item in s3.list_objects_v2(Bucket="results")["Contents"]]
    assert keys == ["run1/agg/manifest.json"]
    assert s3.get_object(Bucket="results", Key=keys[0])["Body"].read() == b"{}"
    said = capsys.readouterr().err
    assert "agg/multi_turn/profile_export_aiperf.json is not a regular file" in said
    assert "agg/linked_dir is not a regular file" in said


def test_a_file_swapped_for_a_link_after_the_walk_is_not_followed(tmp_path, s3, monkeypatch, capsys):
    run_dir = tmp_path / "results" / "run1"
    run_dir.mkdir(parents=True)
    planted = run_dir / "summary.json"
    token = tmp_path / "token"
    token.write_text("secret")
    monkeypatch.setattr(export_to_s3, "regular_files", lambda _: [planted])  # walked as a file
    planted.symlink_to(token)  # then swapped for a link
    assert export_to_s3.upload_run(tmp_path / "results", "run1", "results", s3) == (0, 0)
    assert "Contents" not in s3.list_objects_v2(Bucket="results")
    assert "summary.json not uploaded" in capsys.readouterr().err


def test_an_export_that_could_not_upload_leaves_no_marker(tmp_path, real_summary, monkeypatch,
                                                          pushgateway, s3):
    url, _ = pushgateway
    plan = plan_for("agg", QUICK)
    run_id = run_campaign(tmp_path, plan, "uid", FakeAiperf(real_summary), monkeypatch)

    def refuse(*args, **kwargs):
        raise OSError("S3 unreachable")
    monkeypatch.setattr(s3, "upload_fileobj", refuse)
    with pytest.raises(OSError):
        export_to_s3.main(export_env(tmp_path, plan, url), s3=s3)
    assert run_manifest.read_exported(tmp_path / "results" / run_id / "agg") is None


def test_export_fails_the_deployment_after_uploading_when_a_mode_failed(tmp_path, real_summary,
                                                                       monkeypatch, pushgateway, s3):
    url, _ = pushgateway
    plan = plan_for("agg", QUICK)
    run_id = run_campaign(tmp_path, plan, "uid", FakeAiperf(real_summary, fail_steps=("zipf",)),
                          monkeypatch)
    assert export_to_s3.main(export_env(tmp_path, plan, url), s3=s3) == 1
    keys = {item["Key"] for item in s3.list_objects_v2(Bucket="results")["Contents"]}
    assert f"{run_id}/agg/sequence_distribution/status.json" in keys
    graph_dir = tmp_path / "results" / run_id / "agg"
    assert export_to_s3.unfinished_modes(graph_dir, list(names.MODES)) == [
        "sequence_distribution: failed (zipf: aiperf exited 2)"]


def test_every_series_the_pareto_dashboard_queries_is_pushed(real_summary):
    dashboard = Path(__file__).parent.parent / "helm_values" / "dashboards" / "benchmark-pareto.json"
    if not dashboard.exists():
        pytest.skip("the Pareto dashboard (platform layer) is not in this tree")
    queried = {name for panel in json.loads(dashboard.read_text())["panels"]
               for target in panel.get("targets", [])
               for name in re.findall(r"\b(benchlab_\w+)\{", target["expr"])}
    summary = push_summary.run_summary("m", "s", exports.parse_profile_export(real_summary), gpus=8)
    pushed = {series.split("{")[0] for series in summary.gauges}
    assert queried and queried <= pushed, sorted(queried - pushed)


def test_group_path_encodes_values_with_slashes():
    summary = push_summary.Summary("concurrency_sweep", "sweep/concurrency_1", {})
    path = push_summary.group_path("r1", "agg", summary)
    assert path.endswith("/step@base64/c3dlZXAvY29uY3VycmVuY3lfMQ")


# --- the model download ------------------------------------------------------------------------
def test_download_once_then_skip(tmp_path):
    fetched = []
    marker = model_download.download("Org/Model", "main", tmp_path, resolve_commit=lambda: "c0ffee",
                                     fetch=lambda target: fetched.append(target))
    target = tmp_path / "Org" / "Model" / "main"
    assert fetched == [target] and marker["commit"] == "c0ffee"
    again = model_download.download("Org/Model", "main", tmp_path, resolve_commit=lambda: "other",
                                    fetch=lambda target: fetched.append(target))
    assert len(fetched) == 1 and again["commit"] == "c0ffee"
    # another revision is another download, beside the first
    model_download.download("Org/Model", "v2", tmp_path, resolve_commit=lambda: "beef",
                            fetch=lambda target: fetched.append(target))
    assert fetched[-1] == tmp_path / "Org" / "Model" / "v2"


def test_download_retries_with_backoff_then_gives_up(tmp_path):
    waits, attempts = [], []

    def flaky(target):
        attempts.append(target)
        if len(attempts) < 3:
            raise OSError("connection reset")

    model_download.download("Org/Model", "main", tmp_path, resolve_commit=lambda: "c",
                            fetch=flaky, sleep=waits.append)
    assert len(attempts) == 3 and waits == [30, 60]
    assert model_download.completed(tmp_path / "Org" / "Model" / "main", "Org/Model", "main")

    def broken(target):
        raise OSError("hub down")
    with pytest.raises(OSError, match="hub down"):
        model_download.download("Org/Other", "main", tmp_path, resolve_commit=lambda: "c",
                                fetch=broken, sleep=lambda s: None)
    assert not model_download.completed(tmp_path / "Org" / "Other" / "main", "Org/Other", "main")


def test_the_serving_graph_reads_the_model_where_the_download_put_it():
    from components import model_store
    from stacks import serving_spec
    cfg = config.parse({"model": {"id": "Org/Name", "revision": "r1"}})
    args = serving_spec.graph_spec(cfg)["services"]["VllmWorker"]["extraPodSpec"]["mainContainer"]["args"]
    expected = str(model_download.model_path(model_store.MODEL_MOUNT, "Org/Name", "r1"))
    assert args[args.index("--model") + 1] == expected == "/models/Org/Name/r1"


# --- what the ConfigMaps ship is enough to run ---------------------------------------------------
@pytest.mark.parametrize("entry", ["entrypoint", "export_to_s3", "model_download"])
def test_each_jobs_code_imports_from_its_configmap_alone(tmp_path, entry):
    package = tmp_path / job_code.PACKAGE
    package.mkdir()
    for name, source in job_code.code_files(entry, wheel_locks.AIPERF).items():
        (package / name).write_text(source)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", f"import jobs.{entry}"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_the_report_code_is_not_shipped_to_the_benchmarks():
    shipped = benchmark_jobs.shipped_code()
    assert "entrypoint.py" in shipped and "aiperf_argv.py" in shipped
    assert not any(name.startswith("report") for name in shipped)


def test_unreadable_worker_endpoints_leave_the_benchmark_running_without_them(tmp_path, real_summary,
                                                                              monkeypatch):
    def unreachable(namespace, graph):
        raise OSError("connection refused")

    aiperf = FakeAiperf(real_summary)
    plan = plan_for("agg", QUICK)
    monkeypatch.setattr(entrypoint, "require_aiperf", lambda version: None)
    monkeypatch.setattr(cluster_facts, "read_placement", lambda ns, graph, label: [])
    monkeypatch.setattr(cluster_facts, "read_worker_endpoints", unreachable)
    monkeypatch.setattr(cluster_facts, "read_dcgm_exporter_urls", lambda gpu_ns, ns, graph: unreachable(ns, graph))
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    assert entrypoint.main({"PLAN_FILE": str(plan_file), "RESULTS_ROOT": str(tmp_path / "results"),
                            "BENCH_MODE": "multi_turn", "JOB_UID": "u", "POD_NAMESPACE": "benchlab",
                            "GPU_OPERATOR_NAMESPACE": "gpu-operator", "ALLOCATE_RUN": "1"}, run=aiperf) == 0
    (argv,) = aiperf.calls
    assert "--server-metrics" not in argv and "--goodput" in argv  # the frontend's alone
    assert "--no-gpu-telemetry" in argv  # and no GPU telemetry, said in the log


def test_no_dcgm_exporter_means_no_gpu_telemetry_and_the_log_says_so(tmp_path, real_summary, monkeypatch,
                                                                      capsys):
    aiperf = FakeAiperf(real_summary)
    monkeypatch.setattr(entrypoint, "require_aiperf", lambda version: None)
    monkeypatch.setattr(cluster_facts, "read_placement", lambda ns, graph, label: [])
    monkeypatch.setattr(cluster_facts, "read_worker_endpoints", lambda ns, graph: ([], None))
    monkeypatch.setattr(cluster_facts, "read_dcgm_exporter_urls",
                        lambda gpu_ns, ns, graph: cluster_facts.dcgm_exporter_urls([], PODS, graph))
    plan_file = tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan_for("agg", QUICK)))
    assert entrypoint.main({"PLAN_FILE": str(plan_file), "RESULTS_ROOT": str(tmp_path / "results"),
                            "BENCH_MODE": "multi_turn", "JOB_UID": "u", "POD_NAMESPACE": "benchlab",
                            "GPU_OPERATOR_NAMESPACE": "gpu-operator", "ALLOCATE_RUN": "1"}, run=aiperf) == 0
    (argv,) = aiperf.calls
    assert "--no-gpu-telemetry" in argv and "--gpu-telemetry" not in argv
    assert "GPU telemetry not collected: no DCGM exporter on the workers' nodes" in capsys.readouterr().out
