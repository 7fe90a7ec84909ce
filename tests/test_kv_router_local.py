"""The local lab's KV router, for real: the Dynamo 0.9.1 frontend with `--router-mode kv` in
front of mocker workers must subscribe to their KV events and build its index from them before
the graph counts as started (local_lab/graph.py, read with jobs/kv_transport.py as the cloud's
transport check reads the cluster's frontend)."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest

from local_lab import tokenizer
from local_lab.graph import Graph, GraphConfig
from local_lab.processes import ProcessGroup

TOOLS = Path(__file__).resolve().parent.parent / ".venvs" / "dynamo" / "bin"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.e2e
@pytest.mark.parametrize("graph", ["agg", "disagg"])
def test_kv_router_builds_its_index_from_the_mockers_kv_events(tmp_path, graph):
    if not (TOOLS / "python").exists() or not (TOOLS / "nats-server").exists():
        pytest.skip(f"no Dynamo tool venv at {TOOLS} (./benchlab tools sets it up)")
    model = tokenizer.ensure_model_dir(tmp_path / "model")
    processes = ProcessGroup(tmp_path / "logs")
    served = Graph(GraphConfig(name=graph, dynamo_python=TOOLS / "python",
                               nats_server=TOOLS / "nats-server", model_dir=model,
                               work_dir=tmp_path / "work", frontend_port=_free_port(),
                               nats_port=_free_port(), router_mode="kv",
                               recording=tmp_path / "work" / "event_plane.jsonl"), processes)
    try:
        served.start(say=lambda message: None)
    finally:
        processes.stop_all()
    evidence = served.kv_router
    assert evidence is not None and evidence.subscribed
    assert evidence.decisions >= 3 and evidence.max_tree_size > 0
    assert evidence.max_cached_blocks > 0  # the probes' shared prefix was found in the index
