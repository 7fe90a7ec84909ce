"""The KV transport check: between the serving graph's Ready and the first benchmark, prove the
path the KV cache takes, from the workers' own evidence.

`python -m jobs.kv_transport`, in the cluster, one Job. It sends a handful of real requests
through the frontend, long prompts sharing a prefix, and reads:
- each worker's NIXL counters on its /metrics, before and after (vLLM 0.14.1, the vLLM of the
  0.9.1 vllm-runtime image, nixl_connector.py NixlPromMetrics: vllm:nixl_bytes_transferred and
  vllm:nixl_xfer_time_seconds histograms, vllm:nixl_num_failed_transfers and
  vllm:nixl_num_failed_notifications counters; dynamo.vllm 0.9.1 main.py re-exports the
  `vllm:` series on the worker's system port);
- the NIXL backend each worker instantiated, from its log (nixl 0.9.0 _api.py, INFO:
  "Backend <name> was instantiated", WARNING: "Skipping backend registration <name> due to the
  missing plugin.");
- with the KV router, the frontend's log (dynamo 0.9.1, INFO): kv_router "Found N worker(s),
  starting KV event subscriber" (absent when the router only predicts the workers' caches from
  its own decisions, --no-kv-events: its index grows all the same) and kv_router::scheduler
  "Selected worker: ..., cached blocks: N, tree size: T, ...": an index that stays empty means
  no KV event arrived.
It fails (exit 1, the reasons printed) when no KV transfer happened, any failed, NIXL ran on
another backend than the config's (UCX where EFA was configured: a TCP-speed transport), a
plugin was missing, requests went unanswered, or the router saw no events. In agg mode it checks
that the graph answers and records that no KV transfer is involved. The record goes to the
results volume, where the benchmark Jobs put it into the run manifest.

Parsing and verdict are pure (tests feed them metric text and log lines); the rest reads the
Kubernetes API with the pod's service account, standard library only.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from jobs import kube_api, serving_probe

RECORD_DIR = "kv-transport"  # under the results root: <config_hash>.json
# NIXL backend per serving.kvTransport (stacks/serving_spec.py NIXL_BACKEND says why).
EXPECTED_BACKEND = {"efa": "LIBFABRIC", "tcp": "UCX"}
TRANSPORT_LABEL = {"efa": "EFA (NIXL LIBFABRIC)", "tcp": "TCP (NIXL UCX)"}
NO_TRANSFER = "none (aggregated: no KV transfer)"
# Requests sent, one at a time, while the KV router's index is still empty after the check's
# own (its events may arrive after the replies), and the wait after each before its log is read.
ROUTER_LATE_PROBES, ROUTER_LATE_PROBE_WAIT_SECONDS = 4, 2
# What the Dynamo operator puts on a graph's pods (ai-dynamo/dynamo
# deploy/operator/internal/consts/consts.go: KubeLabelDynamoGraphDeploymentName,
# KubeLabelDynamoComponentType ("worker" with a sub-component type for v1alpha1 graphs,
# "prefill"/"decode" for native ones), DynamoSystemPortName, MainContainerName).
GRAPH_LABEL = "nvidia.com/dynamo-graph-deployment-name"
COMPONENT_TYPE_LABEL = "nvidia.com/dynamo-component-type"
SUB_COMPONENT_LABEL = "nvidia.com/dynamo-sub-component-type"
WORKER_TYPES = ("worker", "prefill", "decode")
METRICS_PORT_NAME = "system"
MAIN_CONTAINER = "main"

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_BACKEND = re.compile(r"Backend (\w+) was instantiated")
_MISSING = re.compile(r"Skipping backend registration (\w+) due to the missing plugin")
_SUBSCRIBED = "starting KV event subscriber"
_DECISION = re.compile(r"Selected worker: worker_id=(\d+) dp_rank=\d+, logit: \S+, "
                       r"cached blocks: (\d+), tree size: (\d+)")


# --- parsing --------------------------------------------------------------------------------
def metric_sums(text: str) -> dict[str, float]:
    """Prometheus text exposition -> series name -> value summed over its label sets."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if not match or line.lstrip().startswith("#"):
            continue
        try:
            value = float(match.group(3))
        except ValueError:
            continue
        sums[match.group(1)] = sums.get(match.group(1), 0.0) + value
    return sums


@dataclass(frozen=True)
class NixlCounters:
    transfers: float = 0.0
    bytes: float = 0.0
    seconds: float = 0.0  # summed transfer durations
    failed: float = 0.0
    failed_notifications: float = 0.0

    def minus(self, before: "NixlCounters") -> "NixlCounters":
        return NixlCounters(*(a - b for a, b in zip(asdict(self).values(), asdict(before).values())))


def nixl_counters(metrics_text: str) -> NixlCounters:
    """A worker's cumulative NIXL counters (prometheus_client names a histogram's series
    <name>_count/_sum and a counter's <name>_total)."""
    sums = metric_sums(metrics_text)
    return NixlCounters(transfers=sums.get("vllm:nixl_bytes_transferred_count", 0.0),
                        bytes=sums.get("vllm:nixl_bytes_transferred_sum", 0.0),
                        seconds=sums.get("vllm:nixl_xfer_time_seconds_sum", 0.0),
                        failed=sums.get("vllm:nixl_num_failed_transfers_total", 0.0),
                        failed_notifications=sums.get("vllm:nixl_num_failed_notifications_total", 0.0))


def nixl_backends(log: str) -> tuple[list[str], list[str]]:
    """(backends NIXL instantiated, backends it skipped for a missing plugin), from a worker log."""
    return sorted(set(_BACKEND.findall(log))), sorted(set(_MISSING.findall(log)))


@dataclass(frozen=True)
class RouterEvidence:
    subscribed: bool = False  # the router listens to the workers' KV events
    decisions: int = 0
    max_tree_size: int = 0  # blocks in the router's index, built from the workers' KV events
    max_cached_blocks: int = 0  # best prefix overlap the router found for a request


def router_evidence(frontend_log: str) -> RouterEvidence:
    plain = _ANSI.sub("", frontend_log)
    found = [(int(cached), int(tree)) for _, cached, tree in _DECISION.findall(plain)]
    return RouterEvidence(subscribed=_SUBSCRIBED in plain, decisions=len(found),
                          max_tree_size=max((tree for _, tree in found), default=0),
                          max_cached_blocks=max((cached for cached, _ in found), default=0))


# --- verdict --------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerEvidence:
    pod: str
    role: str  # prefill | decode | worker
    backends: list[str]
    missing_plugins: list[str]
    before: NixlCounters
    after: NixlCounters


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    record: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems


def verdict(graph: str, transport: str, workers: list[WorkerEvidence], answered: int, sent: int,
            router: RouterEvidence | None) -> Verdict:
    """`transport`: the config's serving.kvTransport for disagg, "none" for agg; `router`: the
    frontend's evidence when it routes by KV (None: not a KV router)."""
    result = Verdict()
    if answered < sent:
        result.problems.append(f"the {graph} graph answered {answered} of {sent} requests")
    if router is not None:
        result.record["kv_router"] = asdict(router)
        if not router.subscribed:
            result.problems.append("the KV router does not subscribe to KV events (no \""
                                   f"{_SUBSCRIBED}\" in the frontend log): it only predicts the "
                                   "workers' caches from its own decisions")
        if router.decisions == 0:
            result.problems.append("the frontend logged no KV-router decision (\"Selected worker\") "
                                   "for the check's requests")
        elif router.subscribed and router.max_tree_size == 0:
            result.problems.append(
                f"the KV router received no KV events: its index stayed empty (tree size 0) over "
                f"{router.decisions} routing decisions; prefill/agg workers publish them when "
                "prefix caching is on (dynamo.vllm's default)")
    if transport == "none":
        result.record.update(transport=NO_TRANSFER, graph_answers=answered == sent)
        return result

    expected = EXPECTED_BACKEND[transport]
    per_worker, total = [], NixlCounters()
    for worker in workers:
        moved = worker.after.minus(worker.before)
        total = NixlCounters(*(a + b for a, b in zip(asdict(total).values(), asdict(moved).values())))
        per_worker.append({"pod": worker.pod, "role": worker.role, "backends": worker.backends,
                           **_summary(moved)})
        if worker.missing_plugins:
            result.problems.append(f"{worker.pod}: NIXL skipped backend(s) "
                                   f"{', '.join(worker.missing_plugins)}: plugin missing")
        if transport == "efa" and "UCX" in worker.backends:
            result.problems.append(
                f"TCP selected: {worker.pod} runs NIXL over UCX while serving.kvTransport is efa "
                "(UCX between EFA pods lands on a TCP-speed transport)")
        elif expected not in worker.backends:
            result.problems.append(f"{worker.pod}: NIXL instantiated "
                                   f"{', '.join(worker.backends) or 'no backend'}, not {expected}")
    if total.transfers == 0:
        result.problems.append(f"no KV transfer happened: no worker's vllm:nixl_bytes_transferred "
                               f"count moved over {sent} disaggregated requests")
    if total.failed or total.failed_notifications:
        result.problems.append(f"{total.failed:.0f} KV transfer(s) and {total.failed_notifications:.0f} "
                               "notification(s) failed (vllm:nixl_num_failed_*)")
    result.record.update(transport=TRANSPORT_LABEL[transport], nixl_backend=expected,
                         requests=sent, **_summary(total), workers=per_worker)
    return result


def _summary(moved: NixlCounters) -> dict:
    mean_ms = moved.seconds / moved.transfers * 1000 if moved.transfers else None
    return {"transfers": int(moved.transfers), "bytes": int(moved.bytes),
            "mean_transfer_ms": None if mean_ms is None else round(mean_ms, 3),
            "failed": int(moved.failed + moved.failed_notifications)}


def describe(record: dict) -> str:
    """One line for the report: the path a run's KV cache took."""
    if not record:
        return "not checked"
    if record.get("transport") == NO_TRANSFER or "transfers" not in record:
        return str(record.get("transport", "not checked"))
    mean = record.get("mean_transfer_ms")
    return (f"{record['transport']}: {record['transfers']} transfers, "
            f"{record['bytes'] / 2**20:.1f} MiB" + (f", {mean:.1f} ms mean" if mean is not None else ""))


# --- in the cluster ---------------------------------------------------------------------------
def prompts(count: int) -> list[str]:
    """Long prompts (many KV blocks) sharing a prefix, so transfers are real and the router can
    find an overlap."""
    prefix = " ".join(f"benchlab kv transport check sentence {i}." for i in range(200))
    return [f"{prefix} Question {i}: name a prime number." for i in range(count)]


def send(url: str, model: str, prompt: str, timeout: float = 300.0) -> bool:
    return serving_probe.answers(url, model, prompt, timeout, max_tokens=8,
                                 on_error=lambda err: print(f"request failed: {err}", flush=True))


def _text(url: str, timeout: float = 30.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode("utf-8", "replace")


def _metrics_url(pod: dict) -> str:
    for container in pod["spec"]["containers"]:
        for port in container.get("ports", []):
            if port.get("name") == METRICS_PORT_NAME:
                return f"http://{pod['status']['podIP']}:{port['containerPort']}/metrics"
    raise RuntimeError(f"{pod['metadata']['name']}: no container port named {METRICS_PORT_NAME!r}")


def _log(namespace: str, pod: dict) -> str:
    names = [c["name"] for c in pod["spec"]["containers"]]
    container = MAIN_CONTAINER if MAIN_CONTAINER in names else names[0]
    return kube_api.get_text(f"/api/v1/namespaces/{namespace}/pods/"
                                  f"{pod['metadata']['name']}/log?container={container}")


def main(env: Mapping[str, str] = os.environ, sleep: Callable[[float], None] = time.sleep) -> int:
    namespace, graph, transport = env["POD_NAMESPACE"], env["GRAPH_NAME"], env["KV_TRANSPORT"]
    pods = kube_api.get(f"/api/v1/namespaces/{namespace}/pods"
                                  f"?labelSelector={GRAPH_LABEL}%3D{graph}")["items"]
    kind = {p["metadata"]["name"]: p["metadata"].get("labels", {}) for p in pods}
    workers = [p for p in pods if kind[p["metadata"]["name"]].get(COMPONENT_TYPE_LABEL) in WORKER_TYPES]
    moving = workers if transport != "none" else []  # agg: no KV transfer to read
    frontends = [p for p in pods if kind[p["metadata"]["name"]].get(COMPONENT_TYPE_LABEL) == "frontend"]
    if not workers or not frontends:
        print(f"no worker or frontend pod labelled {GRAPH_LABEL}={graph} in {namespace}", file=sys.stderr)
        return 1
    before = {p["metadata"]["name"]: nixl_counters(_text(_metrics_url(p))) for p in moving}
    sent = int(env.get("REQUESTS", "8"))
    texts = prompts(sent + ROUTER_LATE_PROBES)
    timeout = float(env.get("REQUEST_TIMEOUT_SECONDS", "300"))
    ask = lambda text: send(env["FRONTEND_URL"], env["MODEL"], text, timeout)  # noqa: E731
    answered = sum(ask(text) for text in texts[:sent])
    sleep(10)  # vLLM publishes connector stats with its periodic stats
    router = None
    if env.get("KV_ROUTER") == "1":  # the whole log: the subscriber starts with the frontend
        router, late_sent, late_answered = router_after_events(
            lambda: "".join(_log(namespace, p) for p in frontends), texts[sent:], ask, sleep)
        sent, answered = sent + late_sent, answered + late_answered
    evidence = []
    for pod in moving:
        name = pod["metadata"]["name"]
        backends, missing = nixl_backends(_log(namespace, pod))
        labels = kind[name]
        evidence.append(WorkerEvidence(
            pod=name, role=labels.get(SUB_COMPONENT_LABEL, labels[COMPONENT_TYPE_LABEL]),
            backends=backends, missing_plugins=missing, before=before[name],
            after=nixl_counters(_text(_metrics_url(pod)))))
    result = verdict(graph, transport, evidence, answered, sent, router)
    record = {"graph": graph, "checked": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "ok": result.ok, "problems": result.problems, **result.record}
    out = Path(env["RESULTS_ROOT"]) / RECORD_DIR / f"{env['CONFIG_HASH']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, sort_keys=True))
    print(json.dumps(record, indent=2, sort_keys=True), flush=True)
    if not result.ok:
        print("KV transport check FAILED, no benchmark will run:\n  - " + "\n  - ".join(result.problems),
              file=sys.stderr, flush=True)
        return 1
    print(f"KV transport check passed: {describe(result.record)}", flush=True)
    return 0


def router_after_events(frontend_log: Callable[[], str], late_prompts: list[str],
                        ask: Callable[[str], bool], sleep: Callable[[float], None],
                        wait: float = ROUTER_LATE_PROBE_WAIT_SECONDS) -> tuple[RouterEvidence, int, int]:
    """The KV router's evidence, and the late probes (sent, answered) it took. KV events reach
    the router over NATS after the replies, so its first decisions may see an empty index (the
    local twin, replying in milliseconds, did in CI): while it is empty, another request, `wait`
    seconds apart, gives it a decision made after the events arrived. A router that never
    receives any stays empty; one that does not subscribe is not asked again."""
    evidence, sent, answered = router_evidence(frontend_log()), 0, 0
    for prompt in late_prompts:
        if evidence.max_tree_size > 0 or not evidence.subscribed:
            break
        sent, answered = sent + 1, answered + ask(prompt)
        sleep(wait)
        evidence = router_evidence(frontend_log())
    return evidence, sent, answered


def read_record(results_root: Path, config_hash: str) -> dict:
    """The check's record for a run plan, or {} when there is none."""
    path = results_root / RECORD_DIR / f"{config_hash}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":
    sys.exit(main())
