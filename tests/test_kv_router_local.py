"""The local lab's KV router, for real: the Dynamo 0.9.1 frontend with `--router-mode kv` in
front of mocker workers must subscribe to their KV events and build its index from them before
the graph counts as started (local_lab/graph.py, read with jobs/kv_transport.py as the cloud's
transport check reads the cluster's frontend)."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from local_lab import tokenizer
from local_lab.graph import Graph, GraphConfig, max_frontend_port
from local_lab.processes import ProcessGroup

TOOLS = Path(__file__).resolve().parent.parent / ".venvs" / "dynamo" / "bin"


def _free_port(start: int) -> int:
    """A free port from `start`, below the ephemeral range: the workers' system ports follow the
    frontend's, and Dynamo 0.9.1 takes those as an i16 (local_lab/graph.py, MAX_SYSTEM_PORT)."""
    for port in range(start, max_frontend_port(), 7):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            if all(_bindable(port + n) for n in (1, 2)):
                return port
    raise RuntimeError("no free port below the i16 limit")


def _bindable(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@pytest.mark.e2e
@pytest.mark.parametrize("graph", ["agg", "disagg"])
def test_kv_router_builds_its_index_from_the_mockers_kv_events(tmp_path, graph):
    if not (TOOLS / "python").exists() or not (TOOLS / "nats-server").exists():
        pytest.skip(f"no Dynamo tool venv at {TOOLS} (./benchlab tools sets it up)")
    model = tokenizer.ensure_model_dir(tmp_path / "model")
    processes = ProcessGroup(tmp_path / "logs")
    served = Graph(GraphConfig(name=graph, dynamo_python=TOOLS / "python",
                               nats_server=TOOLS / "nats-server", model_dir=model,
                               work_dir=tmp_path / "work", frontend_port=_free_port(20000),
                               nats_port=_free_port(26000), router_mode="kv",
                               recording=tmp_path / "work" / "event_plane.jsonl"), processes)
    try:
        served.start(say=lambda message: None)
    finally:
        processes.stop_all()
    evidence = served.kv_router
    assert evidence is not None and evidence.subscribed
    assert evidence.decisions >= 3 and evidence.max_tree_size > 0
    assert evidence.max_cached_blocks > 0  # the probes' shared prefix was found in the index
