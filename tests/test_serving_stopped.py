"""A server that stops answering is told apart from a failed step, in the cloud Job and in the
local lab (which restarts the graph once and runs the mode again, on the record).

The probe runs against real HTTP servers on 127.0.0.1: one that answers like Dynamo's
frontend, one that accepts and never replies; the local lab's runner runs with its graph and
AIPerf replaced by stand-ins, so only the restart logic is under test. For real (e2e): a frozen
Dynamo frontend is seen as stopped, and a graph started anew on the same ports serves."""
from __future__ import annotations

import http.server
import io
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from jobs import entrypoint, modes, run_manifest, serving_probe
from local_lab import runner, tokenizer
from local_lab.graph import Graph, GraphConfig
from local_lab.processes import ProcessGroup
from local_lab.progress import Progress
from report.render import build_report
from tests.test_entrypoint import FakeAiperf, real_summary, target  # noqa: F401 (fixture)
from tests.test_kv_router_local import TOOLS, _free_port


class Answering(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body = json.dumps({"choices": [{"message": {"content": "x"}}],
                           "model": request["model"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def answering_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answering)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture
def silent_url():
    """Accepts connections (the kernel does) and never replies: a wedged frontend."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_the_probe_tells_an_answering_server_from_a_silent_or_absent_one(answering_url, silent_url):
    assert serving_probe.answers(answering_url, "m") and serving_probe.still_serving(answering_url, "m")
    assert not serving_probe.answers(silent_url, "m", timeout=0.5)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{unused.getsockname()[1]}"
    assert not serving_probe.answers(closed, "m", timeout=0.5)


def test_a_server_that_misses_one_probe_but_answers_the_next_is_still_serving(monkeypatch):
    class SlowOnce(Answering):
        calls = []

        def do_POST(self):
            SlowOnce.calls.append(1)
            if len(SlowOnce.calls) == 1:
                time.sleep(1.0)  # past the probe's deadline: that probe gives up
            super().do_POST()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowOnce)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(serving_probe, "PROBE_TIMEOUT_SECONDS", 0.3)
    try:
        assert serving_probe.still_serving(f"http://127.0.0.1:{server.server_address[1]}", "m")
        assert len(SlowOnce.calls) == 2
    finally:
        server.shutdown()


# --- the cloud Job ---------------------------------------------------------------------------
def test_a_failed_step_on_a_server_that_still_answers_lets_the_later_steps_run(tmp_path, real_summary):
    aiperf = FakeAiperf(real_summary, fail_steps=("hit0",))
    status = entrypoint.run_mode(modes.PrefixCache(hit_ratios=(0, 50, 100)), tmp_path, target(),
                                 run=aiperf, probe=lambda: True)
    assert (status.status, status.error) == ("failed", "hit0: aiperf exited 2")
    assert len(aiperf.calls) == 3 and status.steps == ["hit0", "hit50", "hit100"]


def test_a_server_that_stopped_answering_ends_the_mode_and_says_so(tmp_path, real_summary):
    aiperf = FakeAiperf(real_summary, fail_steps=("hit0",))
    probes = []
    status = entrypoint.run_mode(modes.PrefixCache(hit_ratios=(0, 50, 100)), tmp_path, target(),
                                 run=aiperf, probe=lambda: probes.append(1) is not None)
    assert status.status == "failed" and len(aiperf.calls) == 1 and probes == [1]
    assert serving_probe.SERVING_STOPPED in status.error
    assert status.error.startswith("hit0: aiperf exited 2") and status.error.endswith(
        "not run: hit50, hit100")
    assert status.steps == ["hit0"]  # the export looks for the exports of steps that ran


def test_the_job_probes_its_target_by_default(tmp_path, real_summary, silent_url, monkeypatch):
    monkeypatch.setattr(serving_probe, "PROBE_TIMEOUT_SECONDS", 0.2)
    aiperf = FakeAiperf(real_summary, fail_steps=("turns5",))
    silent = entrypoint.aiperf_argv.Target(url=silent_url, model="m", tokenizer="/models/x")
    status = entrypoint.run_mode(modes.MultiTurn(), tmp_path, silent, run=aiperf)
    assert serving_probe.SERVING_STOPPED in status.error


# --- the local lab ---------------------------------------------------------------------------
class StandInGraph:
    """Starts nothing; counts its starts and the work directories it was given."""
    started: list[Path] = []

    def __init__(self, config, processes):
        self.config, self.kv_router = config, None

    def start(self, say=print) -> None:
        StandInGraph.started.append(self.config.work_dir)


ONE_STEP_EACH = modes.BenchPlan(  # each step costs the runner's 0.5 s poll at least
    concurrency_sweep=modes.ConcurrencySweep(concurrency=(1,)),
    sequence_distribution=modes.SequenceDistribution(distributions=("uniform",)),
    prefix_cache=modes.PrefixCache(hit_ratios=(0,)))


def _setup(tmp_path: Path, fail_flag: Path) -> runner.LabSetup:
    """A quick plan whose AIPerf stand-in fails the first multi-turn call (while `fail_flag`
    exists, which that call removes) and exits 0 otherwise."""
    aiperf = tmp_path / "aiperf"
    aiperf.write_text(f"#!{sys.executable}\n"
                      "import pathlib, sys\n"
                      f"flag = pathlib.Path({str(fail_flag)!r})\n"
                      "if '--conversation-turn-mean' in sys.argv and flag.exists():\n"
                      "    flag.unlink(); sys.exit(1)\n")
    aiperf.chmod(0o755)
    return runner.LabSetup(
        plan=ONE_STEP_EACH, profile="quick", graphs=("agg",),
        out_dir=tmp_path / "out", work_dir=tmp_path / "work", model_dir=tmp_path / "model",
        dynamo_python=Path(sys.executable), nats_server=Path("/bin/true"), aiperf=aiperf,
        frontend_port=18000, nats_port=14222, router_mode="kv", sweep_style="per_level")


@pytest.mark.parametrize("answers_after_failure, restarts", [(False, 1), (True, 0)])
def test_the_local_lab_restarts_a_graph_that_stopped_answering_once(
        tmp_path, monkeypatch, answers_after_failure, restarts):
    monkeypatch.setattr(runner, "Graph", StandInGraph)
    monkeypatch.setattr(runner.serving_probe, "still_serving", lambda *a: answers_after_failure)
    StandInGraph.started = []
    fail_flag = tmp_path / "fail-once"
    fail_flag.touch()
    run = runner.run_lab(_setup(tmp_path, fail_flag), Progress(60, stream=io.StringIO()))

    graph_dir = run.run_dir / "agg"
    manifest = run_manifest.read_manifest(graph_dir)
    recorded = manifest.extra.get(run_manifest.GRAPH_RESTARTS, [])
    assert len(recorded) == restarts and len(StandInGraph.started) == 1 + restarts
    if restarts:
        # a new work directory (the stopped graph's discovery store lists dead workers)
        assert StandInGraph.started[1] == StandInGraph.started[0] / "restart-1"
        assert recorded[0]["mode"] == "multi_turn" and serving_probe.SERVING_STOPPED in recorded[0]["reason"]
        failed = run_manifest.read_status(graph_dir / recorded[0]["failed_attempt"])
        assert failed.status == "failed" and serving_probe.SERVING_STOPPED in failed.error
        assert run.statuses["agg"] == {mode: "ok" for mode in run.statuses["agg"]}
        report = (build_report(run.run_dir, tmp_path / "report")).read_text()
        assert "the graph stopped answering during multi_turn and was restarted" in report
    else:
        assert run.statuses["agg"]["multi_turn"] == "failed"
        assert "aiperf step turns5 exited with code 1" in run_manifest.read_status(
            graph_dir / "multi_turn").error


def test_a_graph_that_stops_answering_twice_is_not_restarted_again(tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "Graph", StandInGraph)
    monkeypatch.setattr(runner.serving_probe, "still_serving", lambda *a: False)
    StandInGraph.started = []
    setup = _setup(tmp_path, tmp_path / "fail-once")
    setup.aiperf.write_text(f"#!{sys.executable}\nimport sys\n"
                            "sys.exit(1 if '--conversation-turn-mean' in sys.argv else 0)\n")
    run = runner.run_lab(setup, Progress(60, stream=io.StringIO()))
    assert len(StandInGraph.started) == 2  # one restart, then the failure stands
    assert run.statuses["agg"]["multi_turn"] == "failed"
    assert serving_probe.SERVING_STOPPED in run_manifest.read_status(
        run.run_dir / "agg" / "multi_turn").error


# --- for real: a frozen Dynamo frontend, and a graph restarted on the same ports -------------
@pytest.mark.e2e
def test_a_frozen_frontend_is_seen_as_stopped_and_a_restarted_graph_serves_again(tmp_path, monkeypatch):
    if not (TOOLS / "python").exists() or not (TOOLS / "nats-server").exists():
        pytest.skip(f"no Dynamo tool venv at {TOOLS} (./benchlab tools sets it up)")
    monkeypatch.setattr(serving_probe, "PROBE_TIMEOUT_SECONDS", 2.0)
    model = tokenizer.ensure_model_dir(tmp_path / "model")
    ports = {"frontend_port": _free_port(20100), "nats_port": _free_port(26100)}

    def start(work: Path) -> tuple[GraphConfig, ProcessGroup]:
        config = GraphConfig(name="agg", dynamo_python=TOOLS / "python", nats_server=TOOLS / "nats-server",
                             model_dir=model, work_dir=work, router_mode="round-robin",
                             recording=tmp_path / "event_plane.jsonl", **ports)
        processes = ProcessGroup(work / "logs")
        Graph(config, processes).start(say=lambda message: None)
        return config, processes

    config, processes = start(tmp_path / "first")
    try:
        assert serving_probe.still_serving(config.url, str(model))
        frontend = next(child for child in processes.children if child.name == "frontend")
        os.kill(frontend.popen.pid, signal.SIGSTOP)  # accepts connections, answers nothing
        assert not serving_probe.still_serving(config.url, str(model))
    finally:
        processes.stop_all()  # the frozen frontend too (SIGKILL)
    config, processes = start(tmp_path / "restart-1")  # what the local lab does next
    try:
        assert serving_probe.still_serving(config.url, str(model))
    finally:
        processes.stop_all()
