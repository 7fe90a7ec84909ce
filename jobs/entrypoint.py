"""The benchmark Job's entrypoint: run one mode's AIPerf calls and record how it went.

`python -m jobs.entrypoint`, in the cluster, one Job per mode. It reads the run plan the
Pulumi program rendered (PLAN_FILE: target, bench plan, what the manifest records), gets the
run id (the first Job allocates it: jobs/runs.py), writes the run manifest (first Job),
runs the mode through THE shared builder (jobs/aiperf_argv.py, one call per concurrency
level: the cluster's aiperf takes one `--concurrency` value) and writes the mode's status.json.

Results layout (jobs/run_manifest.py): <root>/<run_id>/<graph>/<mode>/<step>/...
Nothing is overwritten: a mode already finished ok is skipped; the leftovers of an attempt
that died are moved to <graph>/.attempts/ before the mode runs again.

Exit codes: 0 when the mode ran, whether AIPerf succeeded or not (a failed mode is recorded in
status.json, and the later modes still run; the results-export Job fails the deployment at the
end if any mode failed); non-zero only when the Job itself could not work (no plan, no run id,
results volume unwritable, not the pinned AIPerf), which the Job's pod retries.

AIPerf comes from the Job's install init container (the hash-locked wheels of
facts/locks/aiperf.lock.txt). This entrypoint installs nothing: it checks that the AIPerf it
will run is the plan's pinned version and refuses to run any other.

No Pulumi import.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Mapping

from jobs import (aiperf_argv, cluster_facts, event_plane, kv_transport, model_download, modes,
                  run_manifest, runs, serving_probe)

PROFILE = "cloud"
SWEEP_STYLE = "per_level"
GPU_OPERATOR_NAMESPACE_ENV = "GPU_OPERATOR_NAMESPACE"  # where the DCGM exporters run


def now_iso(now: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))


class WrongAiperf(RuntimeError):
    """The AIPerf on the path is not the pinned one (or there is none)."""


def require_aiperf(version: str) -> None:
    """Fail unless the importable AIPerf is exactly `version`: never a silent fallback."""
    try:
        installed = importlib.metadata.version("aiperf")
    except importlib.metadata.PackageNotFoundError:
        installed = None
    if installed != version:
        raise WrongAiperf(f"aiperf {installed or '(none)'} is installed where {version} is pinned: "
                          "the Job's install step did not provide the locked AIPerf; running nothing")


def run_mode(mode: modes.Mode, graph_dir: Path, target: aiperf_argv.Target,
             run: Callable = subprocess.run, clock: Callable[[], float] = time.time,
             env: Mapping[str, str] | None = None,
             evidence: aiperf_argv.Evidence = aiperf_argv.Evidence(),
             nats_url: str | None = None,
             probe: Callable[[], bool] | None = None) -> run_manifest.ModeStatus:
    """Run every AIPerf call of `mode`, recording the NATS event plane meanwhile when
    `nats_url` is known; write and return its status. After a failed call, `probe` (by
    default 1-token requests to the target) tells a failed step from a server that stopped
    answering: then the mode's later steps are not run."""
    probe = probe or (lambda: serving_probe.still_serving(target.url, target.model))
    mode_dir = graph_dir / mode.name
    try:
        finished = run_manifest.read_status(mode_dir)
        if finished.status == "ok":
            print(f"{mode.name}: finished ok earlier in this run; nothing to do", flush=True)
            return finished
    except run_manifest.ManifestError:
        pass
    moved = run_manifest.set_aside(mode_dir)
    if moved:
        print(f"{mode.name}: an earlier attempt was left unfinished; moved to {moved}", flush=True)
    mode_dir.mkdir(parents=True)

    calls = aiperf_argv.build_calls(mode, target, mode_dir, SWEEP_STYLE, evidence)
    started, failures, ran = now_iso(clock()), [], []
    with _recording(nats_url, mode_dir / event_plane.RECORDING):
        for call in calls:
            print(f"{mode.name}/{call.step}: aiperf {' '.join(call.argv)}", flush=True)
            result = run([sys.executable, "-m", "aiperf", *call.argv], env=env)
            ran.append(call.step)
            if result.returncode == 0:
                continue
            if probe():
                failures.append(f"{call.step}: aiperf exited {result.returncode}")
                continue
            not_run = [later.step for later in calls[len(ran):]]
            failures.append(serving_probe.stopped_answering(call.step, result.returncode)
                            + (f"; not run: {', '.join(not_run)}" if not_run else ""))
            break
    status = run_manifest.ModeStatus(
        status="failed" if failures else "ok", error="; ".join(failures) or None,
        started=started, finished=now_iso(clock()),
        planned_seconds=mode.planned_seconds, steps=ran)
    run_manifest.write_status(mode_dir, status)
    print(f"{mode.name}: {status.status}" + (f" ({status.error})" if status.error else ""), flush=True)
    return status


class _recording:
    """The event plane recorded in a thread for as long as the block runs (nothing without a
    NATS address: the report then says the hit rate was not recorded)."""

    def __init__(self, nats_url: str | None, out: Path):
        self.stop = threading.Event()
        self.thread = (threading.Thread(target=event_plane.record, daemon=True,
                                        args=(nats_url, out, self.stop.is_set))
                       if nats_url else None)

    def __enter__(self):
        if self.thread:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.thread:
            self.thread.join(timeout=10)


def build_manifest(plan: dict, run_id: str, placement: list[dict], extra_versions: dict[str, str],
                   created: str, kv_record: dict) -> run_manifest.RunManifest:
    """`kv_record`: what the KV transport check found for this plan (jobs/kv_transport.py)."""
    recorded = plan["manifest"]
    return run_manifest.RunManifest(
        run_id=run_id, graph=plan["graph"], simulated=False, profile=PROFILE, created=created,
        versions={**recorded["versions"], **extra_versions},
        model=recorded["model"],
        nodes=[run_manifest.NodeGroup(**group) for group in recorded["nodes"]],
        workers={role: run_manifest.WorkerSpec(**spec) for role, spec in recorded["workers"].items()},
        extra={"config_hash": plan["config_hash"], "dgd_spec": recorded["dgd_spec"],
               "placement": placement, "kv_transport": kv_record},
    )


def job_versions(plan: dict) -> dict[str, str]:
    """What only the Job can see: the model commit it serves (from the download's marker)."""
    marker = model_download.completed(Path(plan["model_dir"]), plan["manifest"]["model"],
                                      plan["model_revision"])
    return {"model_commit": marker["commit"]} if marker else {}


def main(env: Mapping[str, str] = os.environ, run: Callable = subprocess.run) -> int:
    plan = json.loads(Path(env["PLAN_FILE"]).read_text())
    root = Path(env["RESULTS_ROOT"])
    bench = modes.plan_from_mapping(plan["bench"])
    mode = getattr(bench, env["BENCH_MODE"])
    require_aiperf(plan["aiperf_version"])

    if env.get("ALLOCATE_RUN") == "1":
        run_id = runs.allocate(root, plan["config_hash"], env["JOB_UID"])
    else:
        run_id = runs.current(root, plan["config_hash"])
    graph_dir = root / run_id / plan["graph"]
    print(f"run {run_id}, graph {plan['graph']}, mode {mode.name}", flush=True)

    if not (graph_dir / run_manifest.MANIFEST_FILE).exists():
        placement = cluster_facts.read_placement(env["POD_NAMESPACE"], plan["graph_name"],
                                                 plan["node_role_label"])
        manifest = build_manifest(plan, run_id, placement, job_versions(plan), now_iso(),
                                  kv_transport.read_record(root, plan["config_hash"]))
        run_manifest.write_manifest(graph_dir, manifest)

    # Server-side evidence: AIPerf scrapes every worker pod's /metrics itself (beside the
    # frontend's) and the DCGM exporters on their nodes (GPU utilisation, power), so the
    # figures cover exactly each run's window and land beside its exports, parsed like the
    # local lab's; the event plane comes from the platform's NATS.
    try:
        metrics_urls, nats_url = cluster_facts.read_worker_endpoints(env["POD_NAMESPACE"],
                                                                     plan["graph_name"])
    except (OSError, ValueError, KeyError) as err:  # the benchmark runs without the evidence
        print(f"worker endpoints unreadable ({type(err).__name__}: {err})", flush=True)
        metrics_urls, nats_url = [], None
    print(f"server metrics from {len(metrics_urls)} worker(s); event plane "
          f"{'from ' + nats_url if nats_url else 'not recorded (no NATS address on the workers)'}",
          flush=True)
    evidence = aiperf_argv.Evidence(slo=bench.slo, repeats=bench.repeats,
                                    metrics_urls=tuple(metrics_urls),
                                    gpu_telemetry_urls=tuple(_dcgm_exporters(env, plan)))
    target = aiperf_argv.Target(**plan["target"])
    run_mode(mode, graph_dir, target, run=run, env=dict(env), evidence=evidence, nats_url=nats_url)
    return 0


def _dcgm_exporters(env: Mapping[str, str], plan: dict) -> list[str]:
    """The DCGM exporters on the workers' nodes, for AIPerf's GPU telemetry; none found (or
    unreadable) means a benchmark without it, never a failed one."""
    try:
        urls = cluster_facts.read_dcgm_exporter_urls(env[GPU_OPERATOR_NAMESPACE_ENV],
                                                     env["POD_NAMESPACE"], plan["graph_name"])
    except (OSError, ValueError, KeyError) as err:
        print(f"DCGM exporters unreadable ({type(err).__name__}: {err})", flush=True)
        urls = []
    print(f"GPU telemetry from {len(urls)} DCGM exporter(s)" if urls else
          "GPU telemetry not collected: no DCGM exporter on the workers' nodes", flush=True)
    return urls


if __name__ == "__main__":
    sys.exit(main())
