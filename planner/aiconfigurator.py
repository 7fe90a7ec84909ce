"""The one place that runs AIConfigurator: experiments in, parsed results (or why not) out.

It is driven through its CLI (`aiconfigurator cli exp`), the interface its successor package
`aisimulate` keeps; the pin is local_lab/tool_venvs.py's AICONFIGURATOR. Facts relied on, all
seen with 0.12.0 here:
- the exit code is 0 even when experiments fail; each failure is logged as
  "Error running experiment <name>: <why>" and its CSVs are absent, so outputs are checked;
- results are saved one experiment after the other, and a disagg experiment whose prefill and
  decode systems differ stops the saving of every later one ("Generator artifacts currently
  require matching prefill/decode systems"): one heterogeneous disagg experiment per call, last;
- prefill and decode must name the same model path ("Hetero-model disagg is not supported").
Single points (the local lab twin's timing tables) go through its Python API in the tool venv,
`aiconfigurator.cli.api.cli_estimate` (static_ctx: one prefill; static_gen: one decode step),
a namespace `aisimulate` 0.12.0 keeps (the deprecation notice 0.12.0 prints).
"""
from __future__ import annotations

import csv
import json
import re
import subprocess
from math import gcd
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from local_lab import tool_venvs
from planner.inputs import BACKEND, GroupInput, PlanInputs

TOOL = tool_venvs.AICONFIGURATOR
TIMEOUT_SECONDS = 300
TOP_N = 20  # candidates kept per experiment; the lab's node-group budgets filter them
BEST_FILE, PARETO_FILE = "best_config_topn.csv", "pareto.csv"
QUANT_KEYS = ("gemm", "moe", "kvcache", "fmha")
_ERROR = re.compile(r"Error running experiment (\S+): (.*)")
_VERSION = re.compile(r"Loading AIConfigurator version: (\S+)")


class AicError(RuntimeError):
    """AIConfigurator could not be run at all (missing, crashed, timed out)."""


@dataclass
class Outcome:
    """What one call produced: each experiment's rows, or why it has none."""
    version: str | None = None
    best: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    pareto: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def search_experiments(inputs: PlanInputs) -> dict[str, dict[str, Any]]:
    """The best agg on the prefill group and the best disagg over both groups, within the TP
    sizes the lab can deploy. The lab's graphs set only TP: vLLM shards experts by TP unless
    --enable-expert-parallel is given (docs.vllm.ai/en/latest/serving/expert_parallel_deployment/),
    so DP and EP stay 1 and MoE TP = TP."""
    prefill, decode = inputs.groups["prefill"], inputs.groups["decode"]
    return {
        "agg": {**_workload(inputs, prefill.gpus), "serving_mode": "agg",
                **_worker(inputs, "", prefill), **_candidates("agg_", prefill.tp_sizes)},
        "disagg": {**_workload(inputs, prefill.gpus + decode.gpus), "serving_mode": "disagg",
                   **_worker(inputs, "prefill_", prefill), **_worker(inputs, "decode_", decode),
                   **_candidates("prefill_", prefill.tp_sizes), **_candidates("decode_", decode.tp_sizes),
                   "max_prefill_workers": prefill.gpus // min(prefill.tp_sizes),
                   "max_decode_workers": decode.gpus // min(decode.tp_sizes)},
    }


def configured_experiments(inputs: PlanInputs) -> dict[str, dict[str, Any]]:
    """The stack's graphs as configured, pinned: their batch-size curves are the predictions
    at the sweep's concurrency levels. A disagg graph is pinned as its smallest repeating unit
    (x prefill + y decode workers), which AIConfigurator calls a replica."""
    prefill, decode = inputs.groups["prefill"], inputs.groups["decode"]
    (agg_tp, agg_replicas), = inputs.serving["agg"].values()
    p_tp, p_replicas = inputs.serving["disagg"]["prefill"]
    d_tp, d_replicas = inputs.serving["disagg"]["decode"]
    x, y = disagg_unit(p_replicas, d_replicas)
    return {
        "agg_as_configured": {**_workload(inputs, agg_tp * agg_replicas), "serving_mode": "agg",
                              **_worker(inputs, "", prefill), **_candidates("agg_", (agg_tp,))},
        "disagg_as_configured": {
            **_workload(inputs, p_tp * p_replicas + d_tp * d_replicas), "serving_mode": "disagg",
            **_worker(inputs, "prefill_", prefill), **_worker(inputs, "decode_", decode),
            **_candidates("prefill_", (p_tp,)), **_candidates("decode_", (d_tp,)),
            "num_gpu_per_replica": [x * p_tp + y * d_tp],
            "max_prefill_workers": x, "max_decode_workers": y,
            # no decode worker holds more than the sweep's top level: a shorter batch sweep
            "decode_max_batch_size": max(inputs.concurrency)},
    }


def disagg_unit(prefill_replicas: int, decode_replicas: int) -> tuple[int, int]:
    """(prefill, decode) workers of the smallest unit the graph repeats: 4P + 8D = 4 x (1P + 2D)."""
    g = gcd(prefill_replicas, decode_replicas)
    return prefill_replicas // g, decode_replicas // g


def run(experiments: list[dict[str, dict[str, Any]]], work_dir: Path, tools_dir: Path) -> Outcome:
    """Run each experiment set as one `aiconfigurator cli exp` call, the calls side by side
    (one core each), and merge what they wrote."""
    exe = tool_venvs.tool_path(TOOL, tools_dir, "aiconfigurator")
    if not exe.exists():
        raise AicError(f"{exe} is missing; run `./benchlab tools` (or `benchlab plan` without "
                       f"--no-install) to install {' '.join(TOOL.requirements())}")
    calls = []
    for index, exps in enumerate(experiments):
        call_dir = work_dir / f"call{index}"
        call_dir.mkdir(parents=True, exist_ok=True)
        # heterogeneous disagg last: see the module docstring
        ordered = sorted(exps, key=lambda name: exps[name]["serving_mode"] == "disagg")
        (call_dir / "experiments.yaml").write_text(
            yaml.safe_dump({"exps": ordered, **exps}, sort_keys=False))
        log = open(call_dir / "aiconfigurator.log", "w")
        argv = [str(exe), "cli", "exp", "--yaml-path", str(call_dir / "experiments.yaml"),
                "--save-dir", str(call_dir / "out"), "--top-n", str(TOP_N), "--no-color"]
        calls.append((call_dir, list(exps), log, subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=call_dir)))
    outcome = Outcome()
    try:
        for call_dir, names, log, process in calls:
            try:
                process.wait(timeout=TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                raise AicError(f"aiconfigurator did not finish in {TIMEOUT_SECONDS} s; "
                               f"log: {call_dir / 'aiconfigurator.log'}") from None
            log.close()
            _collect(call_dir, names, process.returncode, outcome)
    finally:
        for _, _, log, process in calls:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()
    return outcome


# Runs in the tool venv: the perf DB loads once, then one estimate per point. Writes the
# mocker's own NPZ (dynamo/mocker/utils/planner_profiler_perf_data_converter.py: prefill_isl,
# prefill_ttft_ms; decode_active_kv_tokens, decode_context_length, decode_itl[kv_idx, ctx_idx],
# looked up with batch = active kv tokens / context). Not Dynamo's profiler format: converting
# that needs scipy, which ai-dynamo 0.9.1 does not install. Each cell takes the step time of the
# batch it stands for, clamped to the batches estimated: the edge holds, never zero.
_ESTIMATOR = """
import json, logging, os, sys, warnings
warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)
import numpy as np
from aiconfigurator.cli.api import cli_estimate
spec = json.load(sys.stdin)
worker = spec["worker"]
prefill = [cli_estimate(mode="static_ctx", isl=n, osl=2, batch_size=1, **worker) for n in spec["isl"]]
ttft = [result.ttft for result in prefill]
itl = [cli_estimate(mode="static_gen", isl=c, osl=2, batch_size=b, **worker).tpot for b, c in spec["decode"]]
contexts = sorted({c for _, c in spec["decode"]})
kv = np.geomspace(contexts[0], spec["max_kv_tokens"], spec["kv_points"])
table = np.zeros((len(kv), len(contexts)))
for j, context in enumerate(contexts):
    batches = [b for b, c in spec["decode"] if c == context]
    steps = [t for (b, c), t in zip(spec["decode"], itl) if c == context]
    wanted = np.clip(kv / context, batches[0], batches[-1])
    table[:, j] = np.interp(np.log2(wanted), np.log2(batches), steps)
os.makedirs(spec["out"], exist_ok=True)
np.savez(os.path.join(spec["out"], "perf_data.npz"), prefill_isl=np.array(spec["isl"], dtype=float),
         prefill_ttft_ms=np.array(ttft), decode_active_kv_tokens=kv,
         decode_context_length=np.array(contexts, dtype=float), decode_itl=table)
print(json.dumps({"perf_db": prefill[0].backend_version,
                  "prefill": [list(p) for p in zip(spec["isl"], ttft)],
                  "decode": [[b, c, t] for (b, c), t in zip(spec["decode"], itl)]}))
"""


def estimate_tables(spec: dict[str, Any], tools_dir: Path) -> dict[str, list[list[float]]]:
    """Prefill latency by ISL and decode step time by (batch, context) for one worker, written
    as the mocker's perf_data.npz under spec["out"]; returns the estimated points."""
    python = tool_venvs.tool_path(TOOL, tools_dir, "python")
    if not python.exists():
        raise AicError(f"{python} is missing; run `./benchlab tools`")
    try:
        done = subprocess.run([str(python), "-c", _ESTIMATOR], input=json.dumps(spec),
                              capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise AicError(f"aiconfigurator estimates did not finish in {TIMEOUT_SECONDS} s") from None
    if done.returncode != 0:
        raise AicError("aiconfigurator estimates failed:\n" + "\n".join(done.stderr.splitlines()[-15:]))
    return json.loads(done.stdout.splitlines()[-1])  # the last line: the tool may print above it


def _collect(call_dir: Path, names: list[str], returncode: int, outcome: Outcome) -> None:
    text = (call_dir / "aiconfigurator.log").read_text(errors="replace")
    found = _VERSION.search(text)
    outcome.version = outcome.version or (found.group(1) if found else None)
    errors = {match.group(1): match.group(2).strip() for match in _ERROR.finditer(text)}
    for name in names:
        best = _find(call_dir / "out", name, BEST_FILE)
        pareto = _find(call_dir / "out", name, PARETO_FILE)
        if best is None or pareto is None:
            why = errors.get(name) or (f"exit code {returncode}" if returncode else
                                       "no results written")
            outcome.failures[name] = f"{why} (log: {call_dir / 'aiconfigurator.log'})"
            continue
        outcome.best[name], outcome.pareto[name] = _rows(best), _rows(pareto)


def _find(out_dir: Path, experiment: str, file: str) -> Path | None:
    # <save-dir>/<model id>/<model>_<system>_..._<run tag>/<experiment>/<file>
    found = sorted(out_dir.glob(f"**/{experiment}/{file}"))
    return found[-1] if found else None


def _rows(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as handle:
        return [{key: _number(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def _number(value: str) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _workload(inputs: PlanInputs, total_gpus: int) -> dict[str, Any]:
    return {"isl": inputs.isl, "osl": inputs.osl, "ttft": float(inputs.slo.ttft_ms),
            "tpot": float(inputs.slo.itl_ms), "total_gpus": total_gpus}


def _worker(inputs: PlanInputs, prefix: str, group: GroupInput) -> dict[str, Any]:
    keys = {f"{prefix}model_path": inputs.model, f"{prefix}system_name": group.system.name,
            f"{prefix}backend_name": BACKEND}
    if group.quant_override:
        keys.update({f"{prefix}{kind}_quant_mode": group.quant_override for kind in QUANT_KEYS})
        keys[f"{prefix}comm_quant_mode"] = "half"  # its 16-bit choice (`--comm-quant-mode`)
    return keys


def _candidates(prefix: str, tp_sizes: tuple[int, ...]) -> dict[str, list[int]]:
    sizes = list(tp_sizes)
    return {f"{prefix}num_gpu_candidates": sizes, f"{prefix}tp_candidates": sizes,
            f"{prefix}pp_candidates": [1], f"{prefix}dp_candidates": [1],
            f"{prefix}moe_tp_candidates": sizes, f"{prefix}moe_ep_candidates": [1]}
