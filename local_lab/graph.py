"""The Dynamo serving graph on 127.0.0.1: NATS (JetStream), mocker workers, frontend.

agg = one mocker serving prefill and decode; disagg = a prefill mocker and a decode mocker
behind the frontend's prefill router. Discovery uses the file store (no etcd).
"""
from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from local_lab.processes import ProcessFailed, ProcessGroup

ROUTER_MODES = ("round-robin", "random", "kv")
LOOPBACK = "127.0.0.1"
START_TIMEOUT_SECONDS = 90.0  # a mocker needs ~5 s alone; far more on a loaded 2-core machine

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
    # role -> extra mocker flags: the twin's timing table, KV blocks and replicas (cli/local_command.py)
    worker_args: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.frontend_port}"


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

    def start(self, say=print) -> None:
        cfg = self.config
        env = self._dynamo_env()
        say(f"starting NATS on {LOOPBACK}:{cfg.nats_port}")
        self.processes.start("nats", [str(cfg.nats_server), "--jetstream", "--addr", LOOPBACK,
                                      "--port", str(cfg.nats_port),
                                      "--store_dir", str(cfg.work_dir / "jetstream")], env)
        self._wait("NATS", lambda: _port_open(cfg.nats_port))
        roles = WORKERS[cfg.name]
        for role, flags in roles:
            say(f"starting mocker worker: {role}")
            self.processes.start(role, [str(cfg.dynamo_python), "-m", "dynamo.mocker",
                                        "--model-path", str(cfg.model_dir),
                                        "--store-kv", "file", *flags,
                                        *cfg.worker_args.get(role, ())], env)
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

    def _serves_a_request(self) -> bool:
        body = json.dumps({"model": str(self.config.model_dir), "max_tokens": 1,
                           "messages": [{"role": "user", "content": "ready?"}]}).encode()
        request = urllib.request.Request(f"{self.config.url}/v1/chat/completions", data=body,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return bool(json.load(response).get("choices"))
        except (OSError, ValueError, urllib.error.URLError):
            return False

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
