"""The local lab's main job: for each graph, start it, run the four modes, stop it.

Writes the results contract (jobs/run_manifest.py) under `<out>/<run_id>/<graph>/`.
Whatever happens (a failed step, a dead graph, Ctrl-C) every started process is stopped and
every mode gets a status.json saying how far it got. A graph that stops answering (a failed
step, then no reply to a 1-token probe: jobs/serving_probe.py) is restarted once and the mode
runs again; the manifest records it and the failed attempt stays in `.attempts/`.
"""
from __future__ import annotations


import json
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from jobs import aiperf_argv, event_plane, run_manifest, serving_probe
from jobs.modes import BenchPlan, Mode
from local_lab import cloud_shape, isolation
from local_lab.graph import Graph, GraphConfig, GraphError
from local_lab.processes import ProcessFailed, ProcessGroup, StepTimedOut
from local_lab.run_as import RunAs
from local_lab.progress import Progress
from stacks.config import StackConfig

# A step's hard limit: its plan twice over plus start-up slack. Bounds a hung AIPerf.
STEP_TIMEOUT_FACTOR, STEP_TIMEOUT_SLACK_SECONDS = 2.0, 120.0
# AIPerf's end-of-run wait for a last server-metrics scrape (2 s a run) is skipped: the figures
# the report takes from them (total KV blocks, request counters) are read during the run; its
# tokenizer pre-warm (a subprocess, ~1 s a run) is for hub downloads: the tokenizer is local.
AIPERF_ENV = {"AIPERF_SERVER_METRICS_COLLECTION_FLUSH_PERIOD": "0",
              "AIPERF_TOKENIZER_SKIP_PRELOAD": "true"}


MAX_GRAPH_RESTARTS = 1  # per graph: a graph that stops answering twice is not a fluke


class ModeFailed(RuntimeError):
    pass


class ServingStopped(ModeFailed):
    """A step failed and the graph then answered no probe: a restart may bring it back."""


@dataclass(frozen=True)
class LabSetup:
    plan: BenchPlan
    profile: str
    graphs: tuple[str, ...]
    out_dir: Path
    work_dir: Path
    model_dir: Path
    dynamo_python: Path
    nats_server: Path
    aiperf: Path
    frontend_port: int
    nats_port: int
    router_mode: str
    sweep_style: str
    run_as: RunAs | None = None  # whom the processes run as when the lab is root
    stack: StackConfig = StackConfig()  # the cloud lab it stands for: node groups, workers
    # graph -> the `benchlab plan` prediction its manifest records (report/predictions.py)
    predictions: dict[str, dict] = field(default_factory=dict)
    # graph -> role -> mocker flags, and graph -> what the twin simulates (the manifest's `twin`)
    worker_args: dict[str, dict[str, tuple[str, ...]]] = field(default_factory=dict)
    twin: dict[str, dict] = field(default_factory=dict)


@dataclass
class LabRun:
    """What happened, for the caller's summary and the benchmark script."""
    run_id: str
    run_dir: Path
    statuses: dict[str, dict[str, str]] = field(default_factory=dict)  # graph -> mode -> status
    graph_start_seconds: dict[str, float] = field(default_factory=dict)
    step_seconds: dict[str, float] = field(default_factory=dict)  # "graph/mode/step" -> wall
    kv_routers: dict[str, dict] = field(default_factory=dict)  # graph -> the KV-router proof
    graph_restarts: dict[str, list[dict]] = field(default_factory=dict)  # graph -> why, when

    @property
    def interrupted(self) -> bool:
        """A stop signal came (its handler records it: local_lab/isolation.py)."""
        return isolation.stop_requested()

    @property
    def all_ok(self) -> bool:
        return not self.interrupted and all(
            status == "ok" for modes in self.statuses.values() for status in modes.values())


def new_run_id(out_dir: Path) -> str:
    """UTC timestamp; never reuses an existing run directory."""
    while True:
        run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        if not (out_dir / run_id).exists():
            return run_id
        time.sleep(1)


def run_lab(setup: LabSetup, progress: Progress) -> LabRun:
    run_id = new_run_id(setup.out_dir)
    run = LabRun(run_id, setup.out_dir / run_id)
    run.run_dir.mkdir(parents=True)
    progress.say(f"run {run_id}: graphs {', '.join(setup.graphs)}, profile {setup.profile} "
                 f"(planned <= {progress.planned_seconds / 60:.0f} min), results in {run.run_dir}")
    for graph in setup.graphs:
        _run_graph(setup, graph, run, progress)
        if run.interrupted:
            break
    _write_timings(setup.work_dir / run_id / "timings.json", run)
    return run


def _write_manifest(setup: LabSetup, run: LabRun, graph: str) -> None:
    """The graph's manifest: the cloud lab it stands for, the twin, the plan's prediction, and
    what the run learnt so far (the KV-router proof, restarts)."""
    restarts = run.graph_restarts.get(graph)
    run_manifest.write_manifest(run.run_dir / graph, cloud_shape.manifest(
        run.run_id, graph, setup.profile, str(setup.model_dir), _now(), stack=setup.stack,
        extra={"twin": setup.twin.get(graph, {"timing": "built-in polynomial"}),
               **({"prediction": setup.predictions[graph]} if graph in setup.predictions else {}),
               **({run_manifest.GRAPH_RESTARTS: restarts} if restarts else {})},
        kv_router=run.kv_routers.get(graph)))


def _run_graph(setup: LabSetup, graph: str, run: LabRun, progress: Progress) -> None:
    graph_dir = run.run_dir / graph
    _write_manifest(setup, run, graph)
    statuses = run.statuses.setdefault(graph, {})
    processes = _process_group(setup, graph, run)
    try:
        graph_error = _start_graph(setup, graph, run, processes, progress)
        for mode in setup.plan.modes():
            if graph_error or run.interrupted:
                statuses[mode.name] = _skip(graph_dir / mode.name, mode, graph_error or
                                            "interrupted before this mode")
                continue
            statuses[mode.name], graph_error, stopped = _run_mode(setup, graph, mode, run,
                                                                   processes, progress)
            restarts = run.graph_restarts.setdefault(graph, [])
            if stopped and not run.interrupted and len(restarts) < MAX_GRAPH_RESTARTS:
                processes.stop_all()
                processes = _restart_graph(setup, graph, mode, run, progress, stopped)
                graph_error = _start_graph(setup, graph, run, processes, progress)
                statuses[mode.name], graph_error, _ = (
                    _run_mode(setup, graph, mode, run, processes, progress) if graph_error is None
                    else (_skip(graph_dir / mode.name, mode, graph_error), graph_error, None))
    finally:
        progress.say(f"{graph}: stopping {len(processes.children)} processes")
        processes.stop_all()


def _restart_graph(setup: LabSetup, graph: str, mode: Mode, run: LabRun, progress: Progress,
                   why: str) -> ProcessGroup:
    """After the graph stopped answering during `mode`: set its failed attempt aside and put the
    restart on the record; returns the process group the new graph starts in (the stopped
    graph's logs stay where they are)."""
    progress.say(f"{graph}: the graph stopped answering during {mode.name}: "
                 f"restarting it and running {mode.name} again")
    graph_dir = run.run_dir / graph
    attempt = run_manifest.set_aside(graph_dir / mode.name)
    run.graph_restarts[graph].append({"mode": mode.name, "at": _now(), "reason": why,
                                      "failed_attempt": attempt.relative_to(graph_dir).as_posix()})
    _write_manifest(setup, run, graph)
    return _process_group(setup, graph, run)


def _start_graph(setup: LabSetup, graph: str, run: LabRun, processes: ProcessGroup,
                 progress: Progress) -> str | None:
    """Start the graph; returns why it did not start, or None."""
    started = time.monotonic()
    progress.say(f"{graph}: starting the graph")
    served = Graph(_graph_config(setup, graph, run), processes)
    try:
        served.start(say=lambda msg: progress.say(f"{graph}: {msg}"))
    except GraphError as err:
        progress.say(f"{graph}: graph did not start: {err}")
        return f"graph did not start: {err}"
    except isolation.Interrupted:
        return "interrupted while the graph started"
    run.graph_start_seconds[graph] = time.monotonic() - started
    progress.say(f"{graph}: graph ready in {run.graph_start_seconds[graph]:.1f} s")
    if served.kv_router is not None:  # on the record, as the cloud's transport check puts it
        run.kv_routers[graph] = asdict(served.kv_router)
        _write_manifest(setup, run, graph)
    return None


def _run_mode(setup: LabSetup, graph: str, mode: Mode, run: LabRun, processes: ProcessGroup,
              progress: Progress) -> tuple[str, str | None, str | None]:
    """Run one mode; returns (its status, an error that ends this graph or None, why the
    graph stopped answering or None)."""
    mode_dir = run.run_dir / graph / mode.name
    target = aiperf_argv.Target(url=f"http://127.0.0.1:{setup.frontend_port}",
                                model=str(setup.model_dir), tokenizer=str(setup.model_dir))
    evidence = aiperf_argv.Evidence(slo=setup.plan.slo, repeats=setup.plan.repeats,
                                    metrics_urls=_graph_config(setup, graph, run)
                                    .worker_metrics_urls)
    calls = aiperf_argv.build_calls(mode, target, mode_dir, setup.sweep_style, evidence)
    started, done, error, graph_error, stopped = _now(), [], None, None, None
    try:
        for index, call in enumerate(calls, 1):
            isolation.check_stop()
            where = f"{graph}/{mode.name}/{call.step}"
            progress.step(where, index, len(calls), call.planned_seconds)
            step_started = time.monotonic()
            _run_call(setup, call, mode_dir, processes)
            run.step_seconds[where] = time.monotonic() - step_started
            progress.say(f"{where}: done in {run.step_seconds[where]:.1f} s")
            done.append(call.step)
    except ServingStopped as err:
        error, stopped = str(err), str(err).splitlines()[0]
    except (ModeFailed, StepTimedOut) as err:
        error = str(err)
    except ProcessFailed as err:  # a graph process died: the graph's remaining modes skip
        error = graph_error = str(err)
    except isolation.Interrupted:
        error = "interrupted"
    status = "ok" if error is None else "failed"
    if error:
        progress.say(f"{graph}/{mode.name}: failed: {error.splitlines()[0]}")
    run_manifest.write_status(mode_dir, run_manifest.ModeStatus(
        status=status, error=error, started=started, finished=_now(),
        planned_seconds=mode.planned_seconds, steps=done))
    return status, graph_error, stopped


def _run_call(setup: LabSetup, call: aiperf_argv.AiperfCall, mode_dir: Path,
              processes: ProcessGroup) -> None:
    env = {key: value for key, value in os.environ.items()
           if key != "HF_HUB_OFFLINE"}  # AIPerf cannot load a local tokenizer path with it set
    env.update(AIPERF_ENV)
    timeout = call.planned_seconds * STEP_TIMEOUT_FACTOR + STEP_TIMEOUT_SLACK_SECONDS
    processes.writable(mode_dir)  # AIPerf writes its artifacts below it
    code = processes.run_to_end(f"aiperf-{mode_dir.name}-{call.step}",
                                [str(setup.aiperf), *call.argv], env, timeout,
                                others_alive=processes.check_alive)
    if code != 0:
        log = processes.log_dir / f"aiperf-{mode_dir.name}-{call.step}.log"
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        if not serving_probe.still_serving(f"http://127.0.0.1:{setup.frontend_port}",
                                           str(setup.model_dir)):
            raise ServingStopped(f"{serving_probe.stopped_answering(call.step, code)}; log {log}:\n{tail}")
        raise ModeFailed(f"aiperf step {call.step} exited with code {code}; log {log}:\n{tail}")


def _skip(mode_dir: Path, mode: Mode, reason: str) -> str:
    now = _now()
    run_manifest.write_status(mode_dir, run_manifest.ModeStatus(
        status="skipped", error=reason, started=now, finished=now,
        planned_seconds=mode.planned_seconds, steps=[]))
    return "skipped"


def _graph_config(setup: LabSetup, graph: str, run: LabRun) -> GraphConfig:
    """A restarted graph works in a new directory: the stopped one's discovery store would
    still list its workers, and its logs show why it stopped."""
    restarts = len(run.graph_restarts.get(graph, ()))
    work_dir = setup.work_dir / run.run_id / graph
    return GraphConfig(name=graph, dynamo_python=setup.dynamo_python,
                       nats_server=setup.nats_server, model_dir=setup.model_dir,
                       work_dir=work_dir / f"restart-{restarts}" if restarts else work_dir,
                       frontend_port=setup.frontend_port, nats_port=setup.nats_port,
                       router_mode=setup.router_mode, worker_args=setup.worker_args.get(graph, {}),
                       recording=setup.out_dir / run.run_id / graph / event_plane.RECORDING)


def _process_group(setup: LabSetup, graph: str, run: LabRun) -> ProcessGroup:
    return ProcessGroup(_graph_config(setup, graph, run).work_dir / "logs", setup.run_as)


def _write_timings(path: Path, run: LabRun) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"run_id": run.run_id,
                                "graph_start_seconds": run.graph_start_seconds,
                                "step_seconds": run.step_seconds}, indent=2) + "\n")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
