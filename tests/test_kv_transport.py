"""The KV transport check's parsing and verdict, on metric text and log lines in the formats the
real processes write (tests/fixtures/kv-transport/README.txt): a transfer over EFA passes; no
transfer, failed transfers, TCP where EFA was configured, a missing plugin, unanswered requests
and a KV router without events each fail with a message that says so."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs import kv_transport
from jobs.kv_transport import NixlCounters, RouterEvidence, WorkerEvidence
from tests.test_entrypoint import real_summary  # noqa: F401  (fixture: a real AIPerf summary)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kv-transport"


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


def nixl_log(*messages: tuple[str, str, int, str]) -> str:
    """Lines as nixl 0.9.0's logger writes them (nixl/logging.py format)."""
    return "".join(f"2026-11-29 22:40:0{i} NIXL {level:<7} {file}:{line} {message}\n"
                   for i, (level, file, line, message) in enumerate(messages))


LIBFABRIC_UP = nixl_log(("INFO", "_api.py", 363, "Backend LIBFABRIC was instantiated"),
                        ("INFO", "_api.py", 253, "Initialized NIXL agent: 4f1c"))
UCX_UP = nixl_log(("INFO", "_api.py", 363, "Backend UCX was instantiated"))
LIBFABRIC_MISSING = nixl_log(
    ("WARNING", "_api.py", 223, "Skipping backend registration LIBFABRIC due to the missing plugin."))


def worker(role: str, log: str, before: str = "decode-before.prom", after: str = "decode-after.prom",
           pod: str | None = None) -> WorkerEvidence:
    backends, missing = kv_transport.nixl_backends(log)
    return WorkerEvidence(pod=pod or f"benchlab-disagg-vllm{role}worker-0", role=role,
                          backends=backends, missing_plugins=missing,
                          before=kv_transport.nixl_counters(fixture(before)),
                          after=kv_transport.nixl_counters(fixture(after)))


def efa_graph(**changes) -> list[WorkerEvidence]:
    workers = {"prefill": worker("prefill", LIBFABRIC_UP, after="decode-before.prom"),
               "decode": worker("decode", LIBFABRIC_UP)}
    workers.update(changes)
    return list(workers.values())


ROUTER_WITH_EVENTS = kv_transport.router_evidence(fixture("frontend-kv-router.log"))


def test_counters_read_from_vllm_series():
    after = kv_transport.nixl_counters(fixture("decode-after.prom"))
    assert after == NixlCounters(transfers=8, bytes=8 * 3 * 2**20, seconds=pytest.approx(0.032),
                                 failed=0, failed_notifications=0)
    failed = kv_transport.nixl_counters(fixture("decode-after-failed.prom"))
    assert (failed.failed, failed.failed_notifications) == (2, 1)
    assert kv_transport.nixl_counters("") == NixlCounters()


def test_counters_sum_over_label_sets():
    text = ('vllm:nixl_bytes_transferred_count{engine="0",model_name="m"} 3.0\n'
            'vllm:nixl_bytes_transferred_count{engine="1",model_name="m"} 2.0\n'
            '# HELP vllm:nixl_bytes_transferred_count ignored 9\n')
    assert kv_transport.nixl_counters(text).transfers == 5


def test_router_evidence_from_the_real_frontend_log():
    assert ROUTER_WITH_EVENTS == RouterEvidence(subscribed=True, decisions=3, max_tree_size=87,
                                                max_cached_blocks=85)
    # --no-kv-events: the index grows from the router's own predictions, no subscriber
    predicted = kv_transport.router_evidence(fixture("frontend-kv-router-no-events.log"))
    assert not predicted.subscribed and predicted.max_tree_size > 0


def test_efa_transfer_passes_and_is_recorded():
    result = kv_transport.verdict("benchlab-disagg", "efa", efa_graph(), 8, 8, ROUTER_WITH_EVENTS)
    assert result.ok, result.problems
    record = result.record
    assert record["transport"] == "EFA (NIXL LIBFABRIC)" and record["nixl_backend"] == "LIBFABRIC"
    assert (record["transfers"], record["bytes"], record["failed"]) == (8, 8 * 3 * 2**20, 0)
    assert record["mean_transfer_ms"] == pytest.approx(4.0)
    assert {w["role"]: w["transfers"] for w in record["workers"]} == {"prefill": 0, "decode": 8}
    assert record["kv_router"]["max_tree_size"] == 87
    assert kv_transport.describe(record) == "EFA (NIXL LIBFABRIC): 8 transfers, 24.0 MiB, 4.0 ms mean"


def test_no_transfer_fails():
    result = kv_transport.verdict("g", "efa", efa_graph(decode=worker("decode", LIBFABRIC_UP,
                                                                      after="decode-before.prom")),
                                  8, 8, None)
    assert not result.ok
    assert any(p.startswith("no KV transfer happened") for p in result.problems)


def test_failed_transfers_fail():
    result = kv_transport.verdict("g", "efa", efa_graph(
        decode=worker("decode", LIBFABRIC_UP, after="decode-after-failed.prom")), 8, 8, None)
    assert result.problems == ["2 KV transfer(s) and 1 notification(s) failed (vllm:nixl_num_failed_*)"]


def test_tcp_selected_while_efa_configured_fails():
    result = kv_transport.verdict("g", "efa", efa_graph(decode=worker("decode", UCX_UP, pod="d-0")),
                                  8, 8, None)
    (problem,) = result.problems
    assert problem.startswith("TCP selected: d-0 runs NIXL over UCX while serving.kvTransport is efa")


def test_missing_libfabric_plugin_fails():
    result = kv_transport.verdict("g", "efa", efa_graph(prefill=worker("prefill", LIBFABRIC_MISSING,
                                                                       pod="p-0")), 8, 8, None)
    assert "p-0: NIXL skipped backend(s) LIBFABRIC: plugin missing" in result.problems
    assert "p-0: NIXL instantiated no backend, not LIBFABRIC" in result.problems


def test_explicit_tcp_expects_ucx_and_records_tcp():
    workers = [worker("prefill", UCX_UP, after="decode-before.prom"), worker("decode", UCX_UP)]
    result = kv_transport.verdict("g", "tcp", workers, 8, 8, None)
    assert result.ok and result.record["transport"] == "TCP (NIXL UCX)"
    assert not kv_transport.verdict("g", "tcp", efa_graph(), 8, 8, None).ok


def test_agg_checks_the_graph_answers_and_records_no_transfer():
    result = kv_transport.verdict("benchlab-agg", "none", [], 8, 8, ROUTER_WITH_EVENTS)
    assert result.ok and result.record["transport"] == kv_transport.NO_TRANSFER
    assert kv_transport.describe(result.record) == kv_transport.NO_TRANSFER
    unanswered = kv_transport.verdict("benchlab-agg", "none", [], 5, 8, None)
    assert unanswered.problems == ["the benchlab-agg graph answered 5 of 8 requests"]


def test_a_router_without_events_fails():
    idle = RouterEvidence(subscribed=True, decisions=8, max_tree_size=0, max_cached_blocks=0)
    (problem,) = kv_transport.verdict("g", "none", [], 8, 8, idle).problems
    assert problem.startswith("the KV router received no KV events")
    predicted = kv_transport.router_evidence(fixture("frontend-kv-router-no-events.log"))
    (problem,) = kv_transport.verdict("g", "none", [], 8, 8, predicted).problems
    assert problem.startswith("the KV router does not subscribe to KV events")
    problems = kv_transport.verdict("g", "none", [], 8, 8, RouterEvidence(subscribed=True)).problems
    assert problems == ["the frontend logged no KV-router decision (\"Selected worker\") for the "
                        "check's requests"]


def test_record_round_trips_through_the_results_volume(tmp_path):
    assert kv_transport.read_record(tmp_path, "abc") == {}
    (tmp_path / kv_transport.RECORD_DIR).mkdir()
    (tmp_path / kv_transport.RECORD_DIR / "abc.json").write_text(json.dumps({"transport": "x"}))
    assert kv_transport.read_record(tmp_path, "abc") == {"transport": "x"}
    assert kv_transport.describe({}) == "not checked"


def _pod(name: str, component: str, sub: str | None = None, port: int | None = 9090) -> dict:
    labels = {kv_transport.GRAPH_LABEL: "benchlab-disagg", kv_transport.COMPONENT_TYPE_LABEL: component}
    if sub:
        labels[kv_transport.SUB_COMPONENT_LABEL] = sub
    ports = [{"name": "system", "containerPort": port}] if port else []
    return {"metadata": {"name": name, "labels": labels}, "status": {"podIP": f"ip-{name}"},
            "spec": {"containers": [{"name": "main", "ports": ports}]}}


@pytest.mark.parametrize("decode_log, code", [(LIBFABRIC_UP, 0), (UCX_UP, 1)], ids=["efa", "tcp-selected"])
def test_main_reads_the_graphs_pods_and_writes_the_record(tmp_path, monkeypatch, decode_log, code):
    pods = [_pod("fe", "frontend"), _pod("p", "worker", "prefill"), _pod("d", "worker", "decode")]
    scrapes = {"p": ["decode-before.prom"] * 2, "d": ["decode-before.prom", "decode-after.prom"]}
    asked = []

    def get_text(path: str) -> str:
        asked.append(path)
        pod = path.split("/pods/")[1].split("/")[0]
        return {"fe": fixture("frontend-kv-router.log"), "p": LIBFABRIC_UP, "d": decode_log}[pod]

    monkeypatch.setattr(kv_transport.kube_api, "get", lambda path: asked.append(path) or {"items": pods})
    monkeypatch.setattr(kv_transport.kube_api, "get_text", get_text)
    monkeypatch.setattr(kv_transport, "_text", lambda url: fixture(scrapes[url.split("ip-")[1].split(":")[0]].pop(0)))
    monkeypatch.setattr(kv_transport, "send", lambda url, model, prompt, timeout: True)
    env = {"POD_NAMESPACE": "benchlab", "GRAPH_NAME": "benchlab-disagg", "KV_TRANSPORT": "efa",
           "KV_ROUTER": "1", "REQUESTS": "4", "FRONTEND_URL": "http://fe:8000", "MODEL": "m",
           "RESULTS_ROOT": str(tmp_path), "CONFIG_HASH": "h1"}
    assert kv_transport.main(env, sleep=lambda s: None) == code
    assert asked[0] == ("/api/v1/namespaces/benchlab/pods?labelSelector="
                        "nvidia.com/dynamo-graph-deployment-name%3Dbenchlab-disagg")
    assert "/api/v1/namespaces/benchlab/pods/d/log?container=main" in asked
    record = kv_transport.read_record(tmp_path, "h1")
    assert record["ok"] is (code == 0) and record["graph"] == "benchlab-disagg"
    assert record["transfers"] == 8 and record["kv_router"]["max_tree_size"] == 87


def _early(log: str) -> str:
    """The real frontend log as it stood at its first routing decision: subscribed, index empty
    (the KV events of that request had not arrived yet)."""
    lines = log.splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if "Selected worker" in line)
    return "".join(lines[:first + 1])


@pytest.mark.parametrize("logs, code, late", [
    (["early", "full"], 0, 1),  # the index fills after the check's requests: one late probe
    (["early"] * 10, 1, kv_transport.ROUTER_LATE_PROBES),  # it never does: the check fails
])
def test_the_router_check_waits_for_late_kv_events_but_not_forever(tmp_path, monkeypatch, logs, code, late):
    full = fixture("frontend-kv-router.log")
    assert kv_transport.router_evidence(_early(full)).max_tree_size == 0  # the premise
    frontend_logs = [{"early": _early(full), "full": full}[name] for name in logs]
    sent = []
    monkeypatch.setattr(kv_transport.kube_api, "get", lambda path: {"items": [_pod("fe", "frontend"),
                                                                              _pod("w", "worker")]})
    monkeypatch.setattr(kv_transport.kube_api, "get_text", lambda path: frontend_logs.pop(0))
    monkeypatch.setattr(kv_transport, "send", lambda url, model, prompt, timeout: sent.append(prompt) or True)
    env = {"POD_NAMESPACE": "benchlab", "GRAPH_NAME": "benchlab-agg", "KV_TRANSPORT": "none",
           "KV_ROUTER": "1", "REQUESTS": "4", "FRONTEND_URL": "http://fe:8000", "MODEL": "m",
           "RESULTS_ROOT": str(tmp_path), "CONFIG_HASH": "h1"}
    assert kv_transport.main(env, sleep=lambda s: None) == code
    assert len(sent) == 4 + late and len(set(sent)) == len(sent)  # each late probe a new prompt
    record = kv_transport.read_record(tmp_path, "h1")
    assert record["kv_router"]["decisions"] >= 1 and record["graph_answers"] is True
    if code:
        assert any("index stayed empty" in problem for problem in record["problems"])


# --- on the record: the run manifest and the report's sources table --------------------------------
def test_the_first_benchmark_job_puts_the_checks_record_into_the_manifest(tmp_path, real_summary,  # noqa: F811
                                                                         monkeypatch):
    from tests.test_entrypoint import FakeAiperf, QUICK, plan_for, run_campaign
    from jobs import run_manifest
    plan = plan_for("disagg", QUICK)
    record = kv_transport.verdict("benchlab-disagg", "efa", efa_graph(), 8, 8, ROUTER_WITH_EVENTS).record
    out = tmp_path / "results" / kv_transport.RECORD_DIR / f"{plan['config_hash']}.json"
    out.parent.mkdir(parents=True)
    out.write_text(json.dumps(record))
    run_id = run_campaign(tmp_path, plan, "uid", FakeAiperf(real_summary), monkeypatch)
    manifest = run_manifest.read_manifest(tmp_path / "results" / run_id / "disagg")
    assert manifest.extra["kv_transport"] == record


def test_every_sources_row_names_its_kv_path(tmp_path):
    from jobs import run_manifest
    from local_lab import cloud_shape
    from report.inputs import GraphRun, ReportInputs
    from report.render import _sources
    from report.selection import Selection
    cloud = cloud_shape.manifest("r1", "disagg", "cloud", "m", "2026-11-29T23:00:00Z")
    cloud = run_manifest.RunManifest(**{**cloud.__dict__, "simulated": False, "extra": {
        "kv_transport": kv_transport.verdict("g", "efa", efa_graph(), 8, 8, None).record}})
    simulated = cloud_shape.manifest("r2", "disagg", "quick", "m", "2026-11-29T23:00:00Z",
                                     kv_router=asdict_router(ROUTER_WITH_EVENTS))
    unchecked = cloud_shape.manifest("r3", "agg", "cloud", "m", "2026-11-29T23:00:00Z")
    unchecked = run_manifest.RunManifest(**{**unchecked.__dict__, "simulated": False, "extra": {}})
    runs = [GraphRun(m, tmp_path) for m in (cloud, simulated, unchecked)]
    (table,) = _sources(ReportInputs(runs=runs, problems=[], selection=Selection(chosen={})))
    rows = [line for line in table.splitlines() if line.startswith("|")]
    assert rows[0].endswith("| KV path |")
    assert rows[2].endswith("| EFA (NIXL LIBFABRIC): 8 transfers, 24.0 MiB, 4.0 ms mean |")
    assert rows[3].endswith(f"| {cloud_shape.MOCKER_KV_PATH} |")
    assert rows[4].endswith("| not checked |")


def asdict_router(router: RouterEvidence) -> dict:
    from dataclasses import asdict
    return asdict(router)
