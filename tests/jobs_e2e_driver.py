"""The cluster Jobs' code run as the Jobs would run it, with only Kubernetes missing: driven by
tests/test_jobs_e2e.py, inside a private network namespace (Dynamo binds the primary address).

`python -m tests.jobs_e2e_driver OUT CACHE` renders the stack offline (the dev stack with the
quick profile's shapes), writes each Job's ConfigMaps to disk as the kubelet would mount them,
runs each Job's install init container command (pip, hash-checking mode, the shipped lock)
with a bare Python 3.11 standing in for the client image, then the Job's own command with the
rendered environment: the four benchmark Jobs against the local lab's real Dynamo graph with
the real pinned AIPerf, then the export Job against moto's S3 server and a Pushgateway
stand-in. What landed in S3 is pulled and the report is built from it. OUT/summary.json says
what happened. The wheelhouse Job's command (pip download of the boto3 lock, from PyPI) runs
first, with the installs (`--install-only`, on the host's network); the export's install step
then takes its wheels from that wheelhouse alone, as in the cluster.

What stands in for Kubernetes: the volume mounts (container paths map to directories under
OUT), cluster DNS (an in-cluster Service's host is 127.0.0.1, its stand-in listening on the
Service's port), the downward API (Job uid, namespace), IRSA (static test credentials for
moto) and the API server (the pod -> node placement the first Job records is of the local
processes). And for the GPU graph the mocker, which serves the model under its directory's
path: the plan's model id is that path here. When a benchmark Job reports that serving had
stopped, the driver does what the README tells a user: restarts the graph and runs that Job
again (once; OUT/summary.json records it).
"""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import venv
from pathlib import Path

import boto3

from cli import offline, results
from facts import images, wheel_locks
from jobs import modes, names, run_manifest
from jobs.serving_probe import SERVING_STOPPED
from local_lab import isolation, tool_venvs
from local_lab.graph import Graph, GraphConfig
from local_lab.processes import ProcessGroup
from local_lab.tokenizer import ensure_model_dir
from report.render import build_report
from tests import lock_check

REPO = Path(__file__).resolve().parent.parent
JOB = "kubernetes:batch/v1:Job"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
LOOPBACK = "127.0.0.1"
NAMESPACE = "benchlab"
TLS_TRUST = ("SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "PIP_CERT")
# The first benchmark Job records where the graph's pods ran; here they are local processes.
PLACEMENT_SHIM = """
import runpy, sys
from jobs import cluster_facts
def local_placement(namespace, graph, role_label):
    pods = [{"metadata": {"name": f"{graph}-{role}-0"}, "spec": {"nodeName": "localhost"}}
            for role in ("frontend", "worker")]
    nodes = [{"metadata": {"name": "localhost", "labels": {
        "node.kubernetes.io/instance-type": "local", role_label: "local"}}}]
    return cluster_facts.placement(pods, nodes, graph, role_label)
cluster_facts.read_placement = local_placement
sys.argv = ["jobs.entrypoint"]
runpy.run_module("jobs.entrypoint", run_name="__main__", alter_sys=True)
"""


class Pushgateway(http.server.ThreadingHTTPServer):
    """Records each PUT /metrics/<grouping key> body, answers as the Pushgateway does (200)."""

    def __init__(self, port: int):
        super().__init__((LOOPBACK, port), PushHandler)
        self.pushed: dict[str, str] = {}


class PushHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_PUT(self):
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        self.server.pushed[self.path] = body
        self.send_response(200)
        self.end_headers()


def render() -> offline.Recording:
    """The dev stack with the quick profile's benchmark shapes, as `pulumi up` would build it."""
    config = offline.stack_config(str(REPO / "Pulumi.dev.yaml"))
    config["bench"] = modes.plan_to_mapping(modes.scaled(modes.BenchPlan(), "quick"))
    return offline.run_program(config, {"grafanaAdminPassword": "e2e-password"})


def job_named(rec: offline.Recording, suffix: str) -> dict:
    (job,) = [r for r in rec.of_type(JOB) if r.name.endswith(suffix)]
    return job.plain_inputs()


def config_map_data(rec: offline.Recording, auto_name: str) -> dict[str, str]:
    (found,) = [c for c in rec.of_type(CONFIG_MAP) if c.name == auto_name.rsplit("-", 1)[0]]
    return found.plain_inputs()["data"]


def cluster_dns(url: str) -> str:
    """An in-cluster Service URL -> its stand-in on loopback, same port."""
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=f"{LOOPBACK}:{parts.port}").geturl()


class Pod:
    """One Job's pod on this machine: its filesystem as a directory tree (volumes mounted as the
    kubelet would: ConfigMaps as files, claims as links to the shared volumes, emptyDir as a
    directory), its environment and its commands with container paths made host paths."""

    def __init__(self, rec: offline.Recording, job: dict, root: Path, shared: dict[str, Path],
                 rewrite_plan):
        self.spec = job["spec"]["template"]["spec"]
        self.root = root
        self.fs = root / "fs"
        volumes = {v["name"]: v for v in self.spec["volumes"]}
        (self.container,) = self.spec["containers"]
        mounts = {m["mountPath"]: m for c in (*self.spec.get("initContainers", []), self.container)
                  for m in c["volumeMounts"]}  # the init container's wheelhouse too
        for mount in mounts.values():
            volume, path = volumes[mount["name"]], Path(self.host_path(mount["mountPath"]))
            path.parent.mkdir(parents=True, exist_ok=True)
            if "configMap" in volume:
                path.mkdir(exist_ok=True)
                for key, text in config_map_data(rec, volume["configMap"]["name"]).items():
                    (path / key).write_text(rewrite_plan(self, text) if key.endswith(".json") else text)
            elif "persistentVolumeClaim" in volume:
                path.symlink_to(shared[volume["persistentVolumeClaim"]["claimName"]])
            elif "emptyDir" in volume:
                path.mkdir(exist_ok=True)
            # the projected API token: no API server here (see PLACEMENT_SHIM)

    def host_path(self, value: str) -> str:
        """A container path (or a colon-separated list of them) on this machine."""
        if not value.startswith("/"):
            return value
        return ":".join(str(self.fs) + part for part in value.split(":"))

    def env(self, container: dict, extra: dict[str, str]) -> dict[str, str]:
        # this machine's PATH and TLS trust (its network may re-sign TLS), nothing else of it
        env = {"PATH": os.environ["PATH"], **extra,
               **{k: v for k, v in os.environ.items() if k in TLS_TRUST}}
        for item in container.get("env", []):
            if "value" in item:
                env[item["name"]] = self.host_path(item["value"])
            elif "metadata.namespace" in json.dumps(item["valueFrom"]):
                env[item["name"]] = NAMESPACE
            else:  # the Job's uid label
                env[item["name"]] = f"uid-{self.root.name}"
        return env

    def argv(self, command: list[str], python: Path) -> list[str]:
        assert command[0] == "python", command
        return [str(python), *(self.host_path(arg) for arg in command[1:])]


def client_python(cache: Path) -> Path:
    """A bare CPython 3.11 with the client image's pip and nothing else: its interpreter."""
    root = cache / "client-python"
    python, done = root / "bin" / "python", root / f"pip-{images.CLIENT_IMAGE_PIP}"
    if not done.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(root)
        lock = root / "pip.lock.txt"
        lock.write_text(f"pip=={images.CLIENT_IMAGE_PIP} --hash=sha256:{images.CLIENT_IMAGE_PIP_SHA256}\n")
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                        *wheel_locks.INSTALL_FLAGS, "-r", str(lock)], check=True, timeout=600,
                       env={**os.environ, "PIP_CONFIG_FILE": os.devnull})
        done.touch()
    return python


def install(pod: Pod, python: Path, cache: Path, log: dict) -> None:
    """The init container: its command as rendered, into a deps dir kept per lock digest and
    command (a second run of the same lock reuses what the first installed; an install from
    another source, PyPI or the wheelhouse, does not)."""
    (init,) = pod.spec["initContainers"]
    command = init["command"]
    lock_file = Path(pod.host_path(command[command.index("-r") + 1]))
    key = lock_file.read_bytes() + json.dumps(command).encode()
    deps = cache / "deps" / hashlib.sha256(key).hexdigest()[:16]
    done = deps.parent / f"{deps.name}.installed"
    if not done.exists():
        shutil.rmtree(deps, ignore_errors=True)  # an earlier install that did not finish
    deps.mkdir(parents=True, exist_ok=True)
    Path(pod.host_path(command[command.index("--target") + 1])).symlink_to(deps)  # /tmp/deps
    started, reused = time.monotonic(), done.exists()
    if not reused:
        env = pod.env(init, {"PIP_CONFIG_FILE": os.devnull})  # the image has no pip config
        Path(env["HOME"]).mkdir(parents=True, exist_ok=True)
        result = subprocess.run(pod.argv(command, python), env=env, capture_output=True, text=True,
                                timeout=1800)
        if result.returncode != 0:
            raise RuntimeError(f"install of {lock_file.name} failed:\n{result.stdout[-2000:]}"
                               f"\n{result.stderr[-3000:]}")
        (lock,) = [lock for lock in wheel_locks.LOCKS if lock.file_name == lock_file.name]
        wrong = lock_check.differences(deps, lock.versions(), lock.requirements)
        if wrong:
            raise RuntimeError(f"install of {lock_file.name} is not the lock: " + "; ".join(wrong))
        done.write_text(lock_file.read_text())
    log[lock_file.name] = {"seconds": round(time.monotonic() - started, 1), "reused": reused,
                           "deps": str(deps), "pip": images.CLIENT_IMAGE_PIP}


def run_job(pod: Pod, python: Path, extra_env: dict[str, str], shim: str | None = None) -> dict:
    env = pod.env(pod.container, extra_env)
    Path(env["HOME"]).mkdir(parents=True, exist_ok=True)
    argv = pod.argv(pod.container["command"], python)
    if shim is not None:
        assert argv[1:] == ["-m", "jobs.entrypoint"], argv
        argv = [argv[0], "-c", shim]
    started = time.monotonic()
    result = subprocess.run(argv, env=env, cwd=pod.root, capture_output=True, text=True,
                            timeout=pod.spec.get("activeDeadlineSeconds", 3600))
    (pod.root / "log.txt").write_text(result.stdout + result.stderr)
    return {"returncode": result.returncode, "seconds": round(time.monotonic() - started, 1),
            "log_tail": (result.stdout + result.stderr)[-1500:]}


def mode_error(results: Path, graph: str, mode: str) -> str | None:
    """The error a benchmark Job recorded for its mode (None when it ran ok)."""
    (run_dir,) = [p for p in results.iterdir() if not p.name.startswith(".")]
    try:
        return run_manifest.read_status(run_dir / graph / mode).error
    except run_manifest.ManifestError as err:  # the Job ended before it wrote one
        return str(err)


def main(out: Path, cache: Path, install_only: bool = False) -> int:
    """`install_only`: run the init containers' installs into the cache and stop; done outside
    the private network namespace (they need PyPI), so the run inside reuses them."""
    if isolation.inside_namespace():
        isolation.bring_up_loopback()
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    summary: dict = {"installs": {}, "jobs": {}}
    rec = render()
    bench = [job_named(rec, f"-bench-{mode.replace('_', '-')}") for mode in names.MODES]
    export = job_named(rec, "-export-job")
    plan = json.loads(config_map_data(rec, next(
        v for v in bench[0]["spec"]["template"]["spec"]["volumes"] if v["name"] == "plan")
        ["configMap"]["name"])["plan.json"])
    summary["plan"] = {"graph": plan["graph"], "config_hash": plan["config_hash"],
                       "target": plan["target"]}

    # The wheelhouse outlives the install-only pass, like the installs it feeds: in the cache, one
    # per boto3 lock (the only lock it holds), so a lock bump never finds the last one's wheels.
    wheelhouse_key = hashlib.sha256(wheel_locks.BOTO3.path.read_bytes()).hexdigest()[:16]
    shared = {"bench-results": out / "results", "model-store": out / "models",
              "wheelhouse": cache / "wheelhouse" / wheelhouse_key}
    for directory in shared.values():
        directory.mkdir(parents=True, exist_ok=True)
    # The model store as the download Job leaves it: the tokenizer where the plan points.
    model_dir = Path(str(shared["model-store"]) + plan["model_dir"][len("/models"):])
    model_dir.mkdir(parents=True, exist_ok=True)
    for source in ensure_model_dir(cache / "model").iterdir():
        (model_dir / source.name).write_bytes(source.read_bytes())

    def rewrite_plan(pod: Pod, text: str) -> str:
        """The plan ConfigMap as this pod sees it: Service URL and mounted paths resolved."""
        rendered = json.loads(text)
        rendered["target"]["url"] = cluster_dns(rendered["target"]["url"])
        # The mocker serves the model under its directory's path: offline, Dynamo 0.9.1's
        # frontend cannot register a hub id (it fetches the id's files from Hugging Face).
        rendered["target"]["model"] = str(model_dir)
        rendered["target"]["tokenizer"] = pod.host_path(rendered["target"]["tokenizer"])
        rendered["model_dir"] = pod.host_path(rendered["model_dir"])
        return json.dumps(rendered)

    python = client_python(cache)
    if install_only:
        # The wheelhouse Job first (it needs PyPI), as the export waits for it in the cluster.
        wheelhouse = Pod(rec, job_named(rec, "-wheelhouse-job"), out / "pods" / "wheelhouse", shared, rewrite_plan)
        fetched = run_job(wheelhouse, python, {"PIP_CONFIG_FILE": os.devnull})  # the image has no pip config
        if fetched["returncode"] != 0:
            raise RuntimeError(f"the wheelhouse Job failed:\n{fetched['log_tail']}")
        for name, job in (("bench", bench[0]), ("export", export)):
            install(Pod(rec, job, out / "pods" / name, shared, rewrite_plan), python, cache,
                    summary["installs"])
        return 0
    tools = REPO / ".venvs"
    tool_venvs.ensure_tools(tools, install=False, tools=(tool_venvs.DYNAMO,))  # AIPerf: the lock's
    port = urllib.parse.urlsplit(plan["target"]["url"]).port

    def start_graph(attempt: int) -> ProcessGroup:
        processes = ProcessGroup(out / f"graph-{attempt}" / "logs")
        Graph(GraphConfig(name=plan["graph"], dynamo_python=tool_venvs.tool_path(tool_venvs.DYNAMO, tools, "python"),
                          nats_server=tool_venvs.tool_path(tool_venvs.DYNAMO, tools, "nats-server"),
                          model_dir=model_dir, work_dir=out / f"graph-{attempt}", frontend_port=port,
                          nats_port=4222, router_mode="round-robin",
                          recording=out / f"graph-{attempt}" / "event_plane.jsonl"), processes).start()
        return processes

    summary["wheelhouse"] = {wheel.name: hashlib.sha256(wheel.read_bytes()).hexdigest()
                             for wheel in sorted(shared["wheelhouse"].rglob("*.whl"))}
    summary["graph_restarts"] = []
    processes = start_graph(0)
    try:
        for mode, job in zip(names.MODES, bench):
            pod = Pod(rec, job, out / "pods" / mode, shared, rewrite_plan)
            install(pod, python, cache, summary["installs"])
            summary["jobs"][mode] = run_job(pod, python, {}, shim=PLACEMENT_SHIM)
            error = mode_error(out / "results", plan["graph"], mode)
            if error and SERVING_STOPPED in error and not summary["graph_restarts"]:
                # What a user does when the Job reports it (README): restart the frontend, run
                # the Job again; the Job sets the failed attempt aside and runs the mode anew.
                summary["graph_restarts"].append({"mode": mode, "error": error})
                processes.stop_all()
                processes = start_graph(len(summary["graph_restarts"]))
                summary["jobs"][mode] = run_job(pod, python, {}, shim=PLACEMENT_SHIM)
    finally:
        processes.stop_all()

    from moto.server import ThreadedMotoServer
    s3_server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
    s3_server.start()
    pushgateway_url = next(e["value"] for e in export["spec"]["template"]["spec"]["containers"][0]["env"]
                           if e["name"] == "PUSHGATEWAY_URL")
    gateway = Pushgateway(urllib.parse.urlsplit(pushgateway_url).port)
    threading.Thread(target=gateway.serve_forever, daemon=True).start()
    try:
        endpoint = "http://%s:%d" % s3_server.get_host_and_port()
        credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        pod = Pod(rec, export, out / "pods" / "export", shared, rewrite_plan)
        bucket = pod.env(pod.container, {})["RESULTS_BUCKET"]
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        s3.create_bucket(Bucket=bucket)
        install(pod, python, cache, summary["installs"])
        pod.container = {**pod.container, "env": [
            {**e, "value": cluster_dns(e["value"])} if e["name"] == "PUSHGATEWAY_URL" else e
            for e in pod.container["env"]]}
        # IRSA's stand-in: test credentials, S3 at moto (the SDKs' service endpoint variable,
        # https://docs.aws.amazon.com/sdkref/latest/guide/feature-ss-endpoints.html)
        summary["jobs"]["export"] = run_job(pod, python, {**credentials, "AWS_ENDPOINT_URL_S3": endpoint})
        summary["s3_keys"] = sorted(o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=bucket) for o in page.get("Contents", []))
        summary["pulled"] = str(out / "pulled")
        results.pull(s3, bucket, out / "pulled")
    finally:
        gateway.shutdown()
        s3_server.stop()
    summary["pushed"] = gateway.pushed
    summary["report"] = str(build_report(out / "pulled", out / "report"))
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2]), install_only="--install-only" in sys.argv[3:]))
