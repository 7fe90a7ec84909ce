"""The Dynamo serving graph on 127.0.0.1: NATS (JetStream), mocker workers, frontend.

agg = one mocker serving prefill and decode; disagg = a prefill mocker and a decode mocker
behind the frontend's prefill router. Discovery uses the file store (no etcd).

With the KV router, the graph proves the router receives the workers' KV events before any
benchmark: requests sharing a prefix, then the frontend's own routing decisions must show an
index built from events (jobs/kv_transport.py reads them, as the cloud's transport check does).
"""
from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from jobs import kv_transport, serving_probe
from local_lab.processes import ProcessFailed, ProcessGroup

ROUTER_MODES = ("round-robin", "random", "kv")
LOOPBACK = "127.0.0.1"
START_TIMEOUT_SECONDS = 90.0  # a mocker needs ~5 s alone; far more on a loaded 2-core machine
KV_ROUTER_PROBES = 3  # requests sharing a prefix: the later ones find it in the router's index
# seen in CI: 3 fast probes beat the KV events; up to 17 more, 0.5 s apart, give them 8 s or so
KV_ROUTER_LATE_PROBES, KV_ROUTER_WAIT_SECONDS = 17, 0.5
REPO_ROOT = Path(__file__).resolve().parents[1]  # the recorder runs as `python -m jobs.event_plane`

# (role, mocker flags) per graph; the role names the worker's log and its manifest entry.
WORKERS = {
    "agg": (("worker", ()),),
    "disagg": (("prefill", ("--is-prefill-worker",)), ("decode", ("--is-decode-worker",))),
}


class GraphError(RuntimeError):
    """The graph did not come up; the message says which part and where its log is."""


@dataclass(frozen=True)
class GraphConfig:
    name: str               # agg | disagg
    dynamo_python: Path
    nats_server: Path
    model_dir: Path         # also the served model id
    work_dir: Path          # kv store, JetStream store, process logs
    frontend_port: int
    nats_port: int
    router_mode: str
    recording: Path         # where the NATS event plane is recorded (jobs/event_plane.py)
    # role -> extra mocker flags: the twin's timing table, KV blocks and replicas (cli/local_command.py)
    worker_args: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.frontend_port}"

    @property
    def worker_metrics_urls(self) -> tuple[str, ...]:
        """Each worker's /metrics (its Dynamo system server), for AIPerf to scrape."""
        return tuple(f"http://{LOOPBACK}:{port}/metrics"
                     for port in worker_metrics_ports(self.name, self.frontend_port))


# Dynamo 0.9.1 reads DYN_SYSTEM_PORT as an i16 (the mocker exits with "invalid value ... expected
# i16 for key SYSTEM_PORT", seen here): a worker's system port must stay below 32768.
MAX_SYSTEM_PORT = 32767


def max_frontend_port() -> int:
    """The highest frontend port whose workers' system ports (the next ones) stay in range."""
    return MAX_SYSTEM_PORT - max(len(workers) for workers in WORKERS.values())


def worker_metrics_ports(graph: str, frontend_port: int) -> tuple[int, ...]:
    """The workers' system ports: the ones right after the frontend's."""
    return tuple(frontend_port + 1 + index for index in range(len(WORKERS[graph])))


def check_ports_free(ports: dict[str, int]) -> None:
    """Fail before starting anything if a port is taken; `ports` maps option -> port."""
    if len(set(ports.values())) != len(ports):
        raise GraphError(f"ports must differ: {', '.join(f'{k} {v}' for k, v in ports.items())}")
    for option, port in ports.items():
        with socket.socket() as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError as err:
                raise GraphError(f"port {port} on {LOOPBACK} ({option}) is busy: {err.strerror}; "
                                 f"free it or pick another with {option}") from None


class Graph:
    """Start with `start()`; `processes.stop_all()` (the caller's) stops it."""

    def __init__(self, config: GraphConfig, processes: ProcessGroup):
        self.config = config
        self.processes = processes
        self.kv_dir = config.work_dir / "kv"
        self.kv_router: kv_transport.RouterEvidence | None = None  # set by start() with router kv

    def start(self, say=print) -> None:
        cfg = self.config
        self.processes.writable(cfg.work_dir)  # the kv and JetStream stores go here
        self.processes.writable(cfg.recording.parent)  # the recorder runs as the lab's user too
        env = self._dynamo_env()
        say(f"starting NATS on {LOOPBACK}:{cfg.nats_port}")
        self.processes.start("nats", [str(cfg.nats_server), "--jetstream", "--addr", LOOPBACK,
                                      "--port", str(cfg.nats_port),
                                      "--store_dir", str(cfg.work_dir / "jetstream")], env)
        self._wait("NATS", lambda: _port_open(cfg.nats_port))
        # Before any worker: the recording sees every KV event from the first block on. The
        # recorder is standard-library code: the Dynamo venv's Python, which the lab's user was
        # tried with, runs it (the project's .venv may lie where that user cannot reach).
        self.processes.start("event-plane", [str(cfg.dynamo_python), "-m", "jobs.event_plane",
                                             "--nats", env["NATS_SERVER"],
                                             "--out", str(cfg.recording)],
                             {**env, "PYTHONPATH": str(REPO_ROOT)})
        roles = WORKERS[cfg.name]
        ports = worker_metrics_ports(cfg.name, cfg.frontend_port)
        for (role, flags), port in zip(roles, ports):
            say(f"starting mocker worker: {role} (metrics on {LOOPBACK}:{port})")
            self.processes.start(role, [str(cfg.dynamo_python), "-m", "dynamo.mocker",
                                        "--model-path", str(cfg.model_dir),
                                        "--store-kv", "file", *flags,
                                        *cfg.worker_args.get(role, ())],
                                 {**env, "DYN_SYSTEM_PORT": str(port)})
        # The frontend can read a card file before it is written and then never see the model:
        # start it only once every worker's card is complete.
        self._wait("worker model cards", lambda: self._complete_cards() >= len(roles))
        say(f"starting frontend on {cfg.url} (router {cfg.router_mode})")
        self.processes.start("frontend", [str(cfg.dynamo_python), "-m", "dynamo.frontend",
                                          "--http-host", LOOPBACK,
                                          "--http-port", str(cfg.frontend_port),
                                          "--store-kv", "file",
                                          "--router-mode", cfg.router_mode], env)
        self._wait("a served completion", self._serves_a_request)
        if cfg.router_mode == "kv":
            self.kv_router = self._prove_kv_router(say)

    def _prove_kv_router(self, say) -> kv_transport.RouterEvidence:
        """Probes sharing a prefix, then more while the router's index is still empty: the KV
        events reach it asynchronously (NATS), after the mocker's fast replies. The cloud's
        transport check reads its frontend the same way (jobs/kv_transport.py)."""
        frontend = next(c for c in self.processes.children if c.name == "frontend")
        texts = kv_transport.prompts(KV_ROUTER_PROBES + KV_ROUTER_LATE_PROBES)
        answered = sum(self._serves_a_request(text) for text in texts[:KV_ROUTER_PROBES])
        time.sleep(KV_ROUTER_WAIT_SECONDS)  # the frontend writes its log line by line
        evidence, late_sent, late_answered = kv_transport.router_after_events(
            lambda: frontend.log_path.read_text(errors="replace"), texts[KV_ROUTER_PROBES:],
            self._serves_a_request, time.sleep, wait=KV_ROUTER_WAIT_SECONDS)
        if answered + late_answered < KV_ROUTER_PROBES + late_sent:
            raise GraphError(f"{self.config.name} graph: a KV-router probe request failed")
        if not evidence.subscribed or evidence.max_tree_size == 0:
            raise GraphError(f"{self.config.name} graph: the KV router received no KV events "
                             f"(subscribed: {evidence.subscribed}, {evidence.decisions} routing "
                             f"decisions, index of {evidence.max_tree_size} blocks); log "
                             f"{frontend.log_path}")
        say(f"KV router: {evidence.decisions} decisions, index of {evidence.max_tree_size} blocks "
            f"built from KV events, best prefix overlap {evidence.max_cached_blocks} blocks")
        return evidence

    def _dynamo_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            # Every Dynamo listener on loopback, advertised as such.
            "DYN_TCP_RPC_HOST": LOOPBACK, "DYN_HTTP_RPC_HOST": LOOPBACK,
            "DYN_SYSTEM_HOST": LOOPBACK, "DYN_EVENT_PLANE_HOST": LOOPBACK,
            "NATS_SERVER": f"nats://{LOOPBACK}:{self.config.nats_port}",
            "DYN_FILE_KV": str(self.kv_dir),
            "HF_HUB_OFFLINE": "1",  # the model dir is local; never try the hub
        })
        return env

    def _complete_cards(self) -> int:
        complete = 0
        for card in (self.kv_dir / "v1" / "mdc").glob("*"):
            try:
                json.loads(card.read_text())
                complete += 1
            except (OSError, ValueError):
                pass  # still being written
        return complete

    def _serves_a_request(self, prompt: str = "ready?") -> bool:
        return serving_probe.answers(self.config.url, str(self.config.model_dir), prompt,
                                     timeout=10)

    def _wait(self, what: str, ready) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                self.processes.check_alive()
            except ProcessFailed as err:
                raise GraphError(f"{self.config.name} graph: waiting for {what}: {err}") from None
            if ready():
                return
            if time.monotonic() > deadline:
                logs = ", ".join(str(c.log_path) for c in self.processes.children)
                raise GraphError(f"{self.config.name} graph: no {what} after "
                                 f"{START_TIMEOUT_SECONDS:.0f} s; logs: {logs}")
            time.sleep(0.25)


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((LOOPBACK, port)) == 0
