"""Server-side evidence from real captures: AIPerf's server-metrics exports (0.9.0 and 0.13.0),
its confidence aggregates, and the NATS event plane of a real Dynamo 0.9.1 graph."""
from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from jobs import event_plane
from jobs.event_plane import EventPlaneError
from jobs.exports import ExportError
from report import confidence, server_metrics

REPO = Path(__file__).resolve().parent.parent
ARCHIVE = REPO / "tests" / "fixtures" / "evidence-dynamo-0.9.1" / "exports.tar.gz"


@pytest.fixture(scope="module")
def captured(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("evidence")
    shutil.unpack_archive(ARCHIVE, target)
    return target


def _window(run_dir: Path) -> tuple[float, float]:
    starts, ends = [], []
    for line in (run_dir / "profile_export.jsonl").read_text().splitlines():
        meta = json.loads(line)["metadata"]
        starts.append(meta["request_start_ns"] / 1e9)
        ends.append(meta["request_end_ns"] / 1e9)
    return min(starts), max(ends)


@pytest.mark.parametrize("graph", ["agg", "disagg"])
def test_measured_hit_rate_is_zero_without_a_shared_prefix_and_rises_with_it(captured, graph):
    base = captured / "aiperf-0.9.0" / graph
    messages = event_plane.read_recording(base / event_plane.RECORDING)
    workers = event_plane.cache_workers(messages)
    assert len(workers) == 1  # agg: the worker; disagg: the prefill worker (decode publishes none)
    hit0, hit50 = (event_plane.step_evidence(messages, *_window(base / "prefix_cache" / step),
                                             workers) for step in ("hit0", "hit50"))
    assert hit0.routed > 0 and hit0.hit_rate_pct == 0.0
    assert 25 <= hit50.hit_rate_pct <= 50  # 64-token blocks, the chat template in front
    assert hit0.blocks_stored > 0 and hit0.blocks_removed == 0
    assert 0 < hit0.kv_active_blocks_peak <= 16384


def test_decode_only_worker_shows_no_overlap_so_it_is_left_out(captured):
    messages = event_plane.read_recording(captured / "aiperf-0.9.0" / "disagg" / "event_plane.jsonl")
    hits = [m.data for m in messages if m.subject.endswith(event_plane.HIT_RATE_SUFFIX)]
    others = {hit["worker_id"] for hit in hits} - event_plane.cache_workers(messages)
    assert others, "the decode worker's routing decisions are in the capture"
    assert all(hit["overlap_blocks"] == 0 for hit in hits if hit["worker_id"] in others)


def test_recorded_messages_decode_to_dynamos_formats(captured):
    messages = event_plane.read_recording(captured / "aiperf-0.13.0" / "agg" / "event_plane.jsonl")
    by_kind = {suffix: [m.data for m in messages if m.subject.endswith(suffix)] for suffix in
               (event_plane.HIT_RATE_SUFFIX, event_plane.LOAD_SUFFIX, event_plane.KV_EVENTS_SUFFIX)}
    assert set(by_kind[event_plane.HIT_RATE_SUFFIX][0]) == {"worker_id", "dp_rank", "isl_blocks",
                                                           "overlap_blocks"}
    assert set(by_kind[event_plane.LOAD_SUFFIX][0]) == {"worker_id", "dp_rank",
                                                        "active_decode_blocks",
                                                        "active_prefill_tokens"}
    assert "stored" in by_kind[event_plane.KV_EVENTS_SUFFIX][0]["event"]["data"]


def test_a_broken_recording_is_named_and_a_cut_last_line_is_dropped(captured, tmp_path):
    good = (captured / "aiperf-0.9.0" / "agg" / "event_plane.jsonl").read_text().splitlines()
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(good[:5]) + "\n" + good[5][:40])
    assert len(event_plane.read_recording(cut)) == 5
    broken = tmp_path / "broken.jsonl"
    broken.write_text(good[0] + "\n" + json.dumps({"t": 1, "subject": "namespace.x.kv-hit-rate",
                                                   "payload": base64.b64encode(b"\xc1").decode()})
                      + "\n")
    with pytest.raises(EventPlaneError, match="line 2: not an event-plane record"):
        event_plane.read_recording(broken)
    with pytest.raises(EventPlaneError, match="missing"):
        event_plane.read_recording(tmp_path / "absent.jsonl")


@pytest.mark.parametrize("path", ["aiperf-0.9.0/agg/prefix_cache/hit0",
                                  "aiperf-0.9.0/disagg/prefix_cache/hit50",
                                  "aiperf-0.13.0/agg/prefix_cache/hit0/profile_runs/run_0001"])
def test_server_metrics_exports_of_both_aiperf_versions_parse(captured, path):
    parsed = server_metrics.parse_server_metrics(captured / path / server_metrics.SERVER_METRICS_EXPORT)
    assert parsed.aiperf_version in ("0.9.0", "0.13.0")
    assert parsed.first("dynamo_frontend_model_total_kv_blocks", "avg") == 16384
    workers = {s.endpoint for s in parsed.metrics["dynamo_component_requests"]}
    assert len(workers) == (2 if "disagg" in path else 1)  # every mocker was scraped
    assert parsed.total("dynamo_component_requests", "total") > 0
    assert parsed.total("kvbm_offload_blocks_d2h", "total") is None  # the mocker has no KVBM


def test_malformed_server_metrics_are_named(tmp_path):
    for body, problem in (("{", "not valid JSON"), ('{"metrics": []}', "not an AIPerf server"),
                          ('{"summary": {}, "metrics": {"m": {"series": [1]}}}', "series\\[0\\]")):
        path = tmp_path / "server_metrics_export.json"
        path.write_text(body)
        with pytest.raises(ExportError, match=problem):
            server_metrics.parse_server_metrics(path)


@pytest.mark.parametrize("step", ["aiperf-0.9.0/repeats", "aiperf-0.13.0/agg/prefix_cache/hit0"])
def test_confidence_aggregates_of_both_aiperf_versions_parse(captured, step):
    trial = captured / step / "profile_runs" / "run_0001"
    path = confidence.aggregate_path(trial)
    assert path == captured / step / "aggregate" / confidence.AGGREGATE_EXPORT
    parsed = confidence.parse_confidence(path)
    assert parsed.trials == 2 and parsed.level == 0.95
    ttft = parsed.get("time_to_first_token", "p50")
    assert ttft.low <= ttft.mean <= ttft.high
    assert parsed.get("goodput", "avg") is not None


def test_a_sweep_trial_finds_its_levels_aggregate():
    trial = Path("/r/agg/concurrency_sweep/sweep/profile_runs/trial_0002/concurrency_8")
    assert confidence.aggregate_path(trial) == Path(
        "/r/agg/concurrency_sweep/sweep/aggregate/concurrency_8/profile_export_aiperf_aggregate.json")
    assert confidence.aggregate_path(Path("/r/agg/prefix_cache/hit0")) is None


def _requests(run_dir: Path) -> list[event_plane.Request]:
    requests = []
    for line in (run_dir / "profile_export.jsonl").read_text().splitlines():
        row = json.loads(line)
        start = row["metadata"]["request_start_ns"] / 1e9
        requests.append(event_plane.Request(
            start=start, first_token=start + row["metrics"]["time_to_first_token"]["value"] / 1e3,
            prompt_tokens=int(row["metrics"]["usage_prompt_tokens"]["value"])))
    return sorted(requests, key=lambda request: request.start)


@pytest.mark.parametrize("graph", ["agg", "disagg"])
def test_each_request_is_matched_to_its_routing_decision(captured, graph):
    """What the per-turn hit rates rest on: kv-hit-rate messages carry no request id."""
    base = captured / "aiperf-0.9.0" / graph
    messages = event_plane.read_recording(base / event_plane.RECORDING)
    workers = event_plane.cache_workers(messages)
    for step in ("hit0", "hit50"):
        requests = _requests(base / "prefix_cache" / step)
        hits = event_plane.request_hits(messages, workers, requests, block_size=64)
        matched = [hit for hit in hits if hit is not None]
        assert len(matched) >= 0.9 * len(requests), f"{step}: {hits}"
        overlap = sum(o for _, o in matched) / sum(i for i, _ in matched) * 100
        window = event_plane.step_evidence(messages, requests[0].start - 0.05,
                                           max(r.first_token for r in requests) + 5, workers)
        assert overlap == pytest.approx(window.hit_rate_pct, abs=5)


# --- the report built from the captures ---------------------------------------------------------

def _report(captured: Path, tmp_path: Path, version: str, graphs: tuple[str, ...]) -> Path:
    from tests.test_report import add_run  # the same results layout the report tests use
    from report.render import build_report

    run = add_run(tmp_path / "results", "run-1", captured / f"aiperf-{version}",
                  "2026-11-29T22:00:00Z", {"agg": True, "disagg": True}, graphs=graphs)
    return build_report(run, tmp_path / "report")


def _rows(report: Path, name: str) -> list[dict]:
    return json.loads((report.parent / "tables" / f"{name}.json").read_text())["rows"]


def test_report_shows_the_measured_hit_rate_beside_the_asked_ratio(captured, tmp_path):
    report = _report(captured, tmp_path, "0.9.0", ("agg", "disagg"))
    prefix = {(row["graph"], row["hit_ratio_pct"]): row["measured_hit_pct"]
              for row in _rows(report, "prefix_cache")}
    for graph in ("agg (simulated: the mocker's built-in timing)", "disagg (simulated: the mocker's built-in timing)"):
        assert prefix[(graph, 0)] == 0 and 25 <= prefix[(graph, 50)] <= 50
    evidence = _rows(report, "server_evidence")
    assert {row["worker_requests"] for row in evidence} >= {28}  # agg hit0: every request seen
    for row in evidence:  # what the mocker does not publish is said, never estimated
        assert "not exposed by the mocker (simulated: no KVBM)" in row["not_exposed"]
        assert "NIXL transfer time, bytes: not exposed by the mocker" in row["not_exposed"]
        assert row["kvbm_offload_blocks"] is None and row["nixl_series"] is None
    markdown = report.read_text()
    assert "measured KV hit (%)" in markdown and "## Findings" in markdown


def test_repeated_steps_show_the_trials_mean_and_its_interval(captured, tmp_path):
    report = _report(captured, tmp_path, "0.13.0", ("agg",))
    (row,) = _rows(report, "prefix_cache")
    aggregate = json.loads((captured / "aiperf-0.13.0" / "agg" / "prefix_cache" / "hit0" /
                            "aggregate" / confidence.AGGREGATE_EXPORT).read_text())
    ttft = aggregate["metrics"]["time_to_first_token_p50"]
    assert row["ttft_p50_ms"] == ttft["mean"]
    assert (row["ttft_p50_ms_ci_low"], row["ttft_p50_ms_ci_high"]) == (ttft["ci_low"], ttft["ci_high"])
    (evidence,) = _rows(report, "server_evidence")
    assert evidence["measured_hit_pct"] == 0.0  # fresh prompts per trial: trial 2 hit nothing
    assert evidence["worker_requests"] == 56  # both trials' 28 requests


# --- the recorder against a real nats-server ----------------------------------------------------

def test_recorder_writes_what_nats_delivers_with_and_without_headers(captured, tmp_path):
    import socket
    import subprocess
    import threading
    import time

    from local_lab import tool_venvs

    nats = tool_venvs.tool_path(tool_venvs.DYNAMO, REPO / ".venvs", "nats-server")
    if not nats.exists():
        pytest.skip(f"{nats} is missing; create it with: ./benchlab tools")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(nats), "--addr", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stop = threading.Event()
    out = tmp_path / "recording.jsonl"
    recorder = threading.Thread(target=event_plane.record,
                                args=(f"nats://127.0.0.1:{port}", out, stop.is_set))
    try:
        recorder.start()
        real = [json.loads(line) for line in
                (captured / "aiperf-0.9.0" / "agg" / "event_plane.jsonl").read_text().splitlines()]
        hit = next(row for row in real if row["subject"].endswith("kv-hit-rate"))
        kv_event = next(row for row in real if row["subject"].endswith("kv-events"))
        deadline = time.monotonic() + 15
        wanted = {hit["subject"], kv_event["subject"]}
        while not out.exists() or not wanted <= {json.loads(line)["subject"] for line in
                                                  out.read_text().splitlines()}:
            assert time.monotonic() < deadline, "the recording lacks a subject"
            time.sleep(0.3)
            try:
                publisher = socket.create_connection(("127.0.0.1", port))
            except ConnectionRefusedError:
                continue  # the server is still starting
            with publisher:
                headers = b"NATS/1.0\r\nNats-Msg-Id: 1\r\n\r\n"
                for subject, payload, with_headers in ((hit["subject"], hit["payload"], False),
                                                       (kv_event["subject"], kv_event["payload"], True),
                                                       ("unrelated.subject", hit["payload"], False)):
                    body = base64.b64decode(payload)
                    line = (f"HPUB {subject} {len(headers)} {len(headers) + len(body)}\r\n".encode()
                            + headers if with_headers else f"PUB {subject} {len(body)}\r\n".encode())
                    publisher.sendall(b'CONNECT {"headers":true}\r\n' + line + body + b"\r\nPING\r\n")
                publisher.recv(4096)  # PONG: the server has the messages
    finally:
        stop.set()
        recorder.join(timeout=5)
        server.terminate()
        server.wait(timeout=5)
    messages = event_plane.read_recording(out)
    assert {m.subject for m in messages} == wanted  # and nothing it did not subscribe to
    assert next(m for m in messages if m.subject == hit["subject"]).data["isl_blocks"] > 0
    assert next(m for m in messages if m.subject == kv_event["subject"]).data["event"]["data"]
