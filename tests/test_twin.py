"""The local lab twin's inputs: KV capacity per worker from the GPU facts, and timing tables from
AIConfigurator in the mocker's own NPZ format, checked with the ai-dynamo 0.9.1 package itself."""
from __future__ import annotations

import json
import subprocess

import pytest

from cli import stack_file
from facts.models import model_facts
from planner import aiconfigurator, twin
from planner.inputs import Slo, plan_inputs
from tests.conftest import REPO
from tests.test_plan import aic_or_skip

DYNAMO_PYTHON = REPO / ".venvs" / "dynamo" / "bin" / "python"


def dev_inputs():
    return plan_inputs(stack_file.load("dev").config(), Slo(1000.0, 20.0, "test"))


def test_kv_capacity_of_the_dev_workers_by_hand():
    model = model_facts("Qwen/Qwen3-30B-A3B-FP8")
    kv_bytes = 2 * 48 * 4 * 128 * 2  # K and V x layers x KV heads x head dim x BF16
    weights = 30.5e9 * 1  # FP8: a byte a parameter
    decode = twin.kv_capacity(48, 2, model)  # g6e.12xlarge: L40S 48 GiB, TP2
    assert decode.tokens == int((48 * 2 * 0.9 * 2**30 - weights - 3.5 * 2 * 2**30) // kv_bytes) == 556997
    assert decode.blocks == 556997 // 64 == 8703
    prefill = twin.kv_capacity(40, 4, model)  # p4d.24xlarge: A100 40 GiB, TP4
    assert prefill.tokens == int((40 * 4 * 0.9 * 2**30 - weights - 3.5 * 4 * 2**30) // kv_bytes) == 1109684
    assert "= 1109684 tokens = 17338 blocks of 64" in prefill.arithmetic
    assert twin.kv_capacity(24, 1, model).tokens == 0  # a model that does not fit leaves no KV


def test_grids_cover_the_workload_within_capacity_and_batch_limit():
    assert twin.isl_grid(1024) == [16, 32, 64, 128, 256, 512, 1024]
    assert twin.isl_grid(1500)[-1] == 2048
    points = twin.decode_grid(6144, 300_000, 256)
    assert sorted({c for _, c in points}) == [256, 1024, 4096, 16384]
    assert all(b * c <= 300_000 and b <= 256 for b, c in points)
    assert (1, 16384) in points and (256, 1024) in points and (64, 16384) not in points
    assert max(b for b, _ in twin.decode_grid(6144, 300_000, 64)) == 64  # the worker's own limit


@pytest.fixture(scope="module")
def small_table(tmp_path_factory):
    """A real table for the dev decode worker (L40S TP2), on a small grid to stay fast."""
    tools = aic_or_skip()
    group = dev_inputs().groups["decode"]
    capacity = twin.kv_capacity(group.gpu_memory_gib, 2, model_facts("Qwen/Qwen3-30B-A3B-FP8"))
    cache = tmp_path_factory.mktemp("twin-cache")
    path = twin.timing_tables(group, 2, 256, "Qwen/Qwen3-30B-A3B-FP8", capacity, 64, 256, cache, tools)
    return path, capacity


def test_the_table_is_the_mocker_format_and_holds_what_aiconfigurator_estimated(small_table):
    if not DYNAMO_PYTHON.is_file():
        pytest.skip(f"{DYNAMO_PYTHON} is missing; create it with: ./benchlab tools")
    path, capacity = small_table
    probe = ("import json, sys, numpy as np\n"
             "from pathlib import Path\n"
             "from dynamo.mocker.utils.planner_profiler_perf_data_converter import is_mocker_format_npz\n"
             "z = np.load(sys.argv[1])\n"
             "print(json.dumps({'format': is_mocker_format_npz(Path(sys.argv[1])),"
             " **{k: z[k].tolist() for k in z.files}}))\n")
    done = subprocess.run([str(DYNAMO_PYTHON), "-c", probe, str(path)], capture_output=True, text=True,
                          timeout=120, check=True)
    table = json.loads(done.stdout.splitlines()[-1])
    points = json.loads((path.parent / twin.POINTS_FILE).read_text())["points"]
    assert table["format"] is True
    assert table["prefill_isl"] == [16, 32, 64]
    assert table["prefill_ttft_ms"] == [ttft for _, ttft in points["prefill"]]
    assert table["decode_context_length"] == [256]
    kv = table["decode_active_kv_tokens"]
    assert kv[0] == 256 and kv[-1] == pytest.approx(capacity.tokens)
    column = [row[0] for row in table["decode_itl"]]
    steps = {batch: itl for batch, _, itl in points["decode"]}
    assert column[0] == pytest.approx(steps[1])  # one 256-token sequence = batch 1
    assert column[-1] == pytest.approx(steps[max(steps)])  # beyond the largest batch: its edge
    assert all(value > 0 for value in column) and column == sorted(column)


def test_a_cached_table_is_not_estimated_again(small_table, monkeypatch):
    path, capacity = small_table

    def again(*args):
        raise AssertionError("estimated again")
    monkeypatch.setattr(aiconfigurator, "estimate_tables", again)
    group = dev_inputs().groups["decode"]
    assert twin.timing_tables(group, 2, 256, "Qwen/Qwen3-30B-A3B-FP8", capacity, 64, 256,
                              path.parent.parent, REPO / ".venvs") == path


def test_the_lab_twin_gives_each_role_its_table_kv_blocks_and_replicas(small_table, monkeypatch):
    """The dev stack's graphs as the local lab starts them (the table itself: tests above)."""
    from jobs.modes import BenchPlan
    table, _ = small_table
    made = []

    def tables(group, tp, max_num_seqs, model_id, capacity, longest_isl, longest_context, cache_dir,
               tools_dir):
        made.append((group.system.name, tp, capacity.blocks, longest_context))
        return table
    monkeypatch.setattr(twin, "timing_tables", tables)
    cfg = stack_file.load("dev").config()
    lab = twin.lab_twin(cfg, BenchPlan(), ("agg", "disagg"), REPO / "unused", REPO / ".venvs")
    assert made == [("a100_sxm", 4, 17338, 6144), ("a100_sxm", 4, 17338, 6144), ("l40s", 2, 8703, 6144)]
    assert lab.worker_args["agg"]["worker"] == (
        "--planner-profile-data", str(table), "--num-gpu-blocks-override", "17338",
        "--block-size", "64", "--num-workers", "4",
        "--max-num-seqs", "256", "--max-num-batched-tokens", "2048")  # vLLM's, as the cloud worker's
    assert lab.worker_args["disagg"]["decode"][7] == "4"
    assert lab.records["disagg"]["summary"] == "4 x a100_sxm TP4 (prefill) + 4 x l40s TP2 (decode)"
    assert lab.records["agg"]["roles"]["worker"]["kv_blocks"] == 17338
    assert any("BF16 variant" in c for c in lab.records["agg"]["modelled_instead"])
    assert lab.records["agg"]["timing"] == "aiconfigurator==0.12.0 static estimates"
    assert twin.longest_context(BenchPlan()) == 4096 + 2048  # the sequence distribution's longest
