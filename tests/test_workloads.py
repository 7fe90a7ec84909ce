"""The workloads layer under mocks: model store, serving graph, benchmarks and results export.

What each creates, with which inputs (images, TP, replicas, node selectors, tolerations, EFA,
env, volumes, timeouts, waitFor), the order graph, the AIPerf command lines the cluster Jobs
will run, and that no secret is ever plain."""
from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from jobs import aiperf_argv, deadlines, modes, names, runs, seq_dist
from components import benchmark_jobs, job_code, model_store
from facts import images, wheel_locks
from stacks import serving_spec
from components.base import HF_TOKEN_KEY, HF_TOKEN_SECRET
from components.cluster import ROLE_LABEL
from cli import offline
from tests.conftest import REPO, serving_mode

JOB = "kubernetes:batch/v1:Job"
PVC = "kubernetes:core/v1:PersistentVolumeClaim"
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
DGD = f"kubernetes:{serving_spec.API_VERSION}:{serving_spec.KIND}"
RELEASE = "kubernetes:helm.sh/v3:Release"
NODE_GROUP = "eks:index:ManagedNodeGroup"
HF_TOKEN = "hf_TESTTOKEN_0123456789abcdef"
GRAFANA_PASSWORD = "grafana-TEST-password-42"
SECRETS = {"hfToken": HF_TOKEN, "grafanaAdminPassword": GRAFANA_PASSWORD}
MODE_ORDER = [name.replace("_", "-") for name in names.MODES]


@pytest.fixture(scope="module")
def lab_runs():
    """One mocked run per serving mode (plus variants), shared by the tests of this module."""
    dev = offline.stack_config(str(Path(__file__).resolve().parent.parent / "Pulumi.dev.yaml"))
    cache: dict[str, offline.Recording] = {}

    def get(mode: str, overrides: dict | None = None, secrets: dict | None = SECRETS) -> offline.Recording:
        key = json.dumps([mode, overrides, secrets], sort_keys=True)
        if key not in cache:
            config = {**dev, **(overrides or {})}
            config["serving"] = {**dev["serving"], **config.get("serving", {}), **serving_mode(mode)}
            cache[key] = offline.run_program(config, secrets)
        return cache[key]
    return get


def named(recording: offline.Recording, type_: str, suffix: str) -> offline.Resource:
    found = [r for r in recording.of_type(type_) if r.name.endswith(suffix)]
    assert len(found) == 1, f"{type_} *{suffix}: {[r.name for r in recording.of_type(type_)]}"
    return found[0]


def benchmark_job_resources(recording) -> list[offline.Resource]:
    return [named(recording, JOB, f"-bench-{mode}") for mode in MODE_ORDER]


def gpu_groups(recording) -> dict[str, offline.Resource]:
    return {role: named(recording, NODE_GROUP, f"-{role}") for role in ("prefill", "decode")}


def graph(recording) -> dict:
    (dgd,) = recording.of_type(DGD)
    return dgd.plain_inputs()


def container(job: offline.Resource) -> dict:
    (only,) = job.plain_inputs()["spec"]["template"]["spec"]["containers"]
    return only


def env_of(container_or_service: dict, key: str = "env") -> dict:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container_or_service.get(key, [])}


# --- order -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["agg", "disagg"])
def test_download_does_not_wait_for_gpu_nodes_but_for_what_it_needs(lab_runs, mode):
    rec = lab_runs(mode)
    download = named(rec, JOB, "-models-download")
    for group in gpu_groups(rec).values():
        assert not rec.waits_for(download, group)
    for release in rec.of_type(RELEASE):  # GPU Operator, Dynamo platform, monitoring: not needed
        assert not rec.waits_for(download, release), release.name
    assert rec.waits_for(download, named(rec, PVC, "-models-model-store"))
    assert rec.waits_for(download, named(rec, "kubernetes:core/v1:Secret", "-hf-token"))
    assert rec.waits_for(download, named(rec, "kubernetes:storage.k8s.io/v1:StorageClass", "-efs"))


@pytest.mark.parametrize("mode", ["agg", "disagg"])
def test_graph_waits_for_download_platform_gpu_operator_but_not_for_gpu_nodes(lab_runs, mode):
    rec = lab_runs(mode)
    (dgd,) = rec.of_type(DGD)
    assert rec.waits_for(dgd, named(rec, JOB, "-models-download"))
    releases = {r.name: r for r in rec.of_type(RELEASE)}
    platform = [r for name, r in releases.items() if "dynamo-platform" in name]
    operator = [r for name, r in releases.items() if "gpu-operator" in name]
    assert platform and operator
    assert all(rec.waits_for(dgd, r) for r in platform + operator)
    # destroy deletes the GPU node groups first; up waits for them in the graph's Ready wait
    assert not any(rec.waits_for(dgd, group) for group in gpu_groups(rec).values())
    efa = [r for name, r in releases.items() if "efa" in name]
    assert efa and all(rec.waits_for(dgd, r) == (mode == "disagg") for r in efa)


@pytest.mark.parametrize("mode", ["agg", "disagg"])
def test_benchmarks_run_one_after_another_then_the_export(lab_runs, mode):
    rec = lab_runs(mode)
    jobs = benchmark_job_resources(rec)
    (dgd,) = rec.of_type(DGD)
    assert rec.waits_for(jobs[0], dgd)
    for earlier, later in zip(jobs, jobs[1:]):
        assert rec.waits_for(later, earlier)
        assert not rec.waits_for(earlier, later)  # the order assertion can fail: direction matters
    export = named(rec, JOB, "-export-job")
    assert rec.waits_for(export, jobs[-1])
    assert not any(rec.waits_for(job, export) for job in jobs)


@pytest.mark.parametrize("mode", ["agg", "disagg"])
def test_every_object_in_the_lab_namespace_waits_for_it(lab_runs, mode):
    rec = lab_runs(mode)
    (namespace,) = [r for r in rec.of_type("kubernetes:core/v1:Namespace")
                    if r.inputs["metadata"]["name"] == "benchlab"]
    inside = [r for r in rec.resources.values() if r.type.startswith("kubernetes:")
              and (r.plain_inputs().get("metadata") or {}).get("namespace") == "benchlab"]
    assert len(inside) > 15
    assert [r.name for r in inside if not rec.waits_for(r, namespace)] == []


def test_benchmark_jobs_wait_for_their_service_account(lab_runs):
    rec = lab_runs("agg")
    account = named(rec, "kubernetes:core/v1:ServiceAccount", "-bench-runner")
    assert rec.waits_for(benchmark_job_resources(rec)[0], account)


# --- model store -------------------------------------------------------------------------------
def test_volumes_are_rwx_on_efs_with_sizes_from_config(lab_runs):
    rec = lab_runs("agg", {"model": {"id": "Qwen/Qwen3-30B-A3B-FP8", "storeGib": 321},
                           "results": {"storageGib": 77}})
    (efs_class,) = [r for r in rec.of_type("kubernetes:storage.k8s.io/v1:StorageClass")
                    if r.inputs["provisioner"] == "efs.csi.aws.com"]
    sizes = {}
    for claim in rec.of_type(PVC):
        spec = claim.plain_inputs()["spec"]
        assert spec["accessModes"] == ["ReadWriteMany"]
        assert spec["storageClassName"] == efs_class.inputs["metadata"]["name"]
        assert spec["resources"]["requests"]["storage"] == model_store.EFS_NOMINAL_REQUEST
        sizes[claim.inputs["metadata"]["name"]] = \
            claim.plain_inputs()["metadata"]["annotations"][model_store.EXPECTED_SIZE_ANNOTATION]
    assert sizes == {"model-store": "321Gi", "bench-results": "77Gi", "wheelhouse": "1Gi"}


def pvc_update_refusal(old: dict, new: dict, storage_class: dict) -> str | None:
    """What the API server says to an update of a bound claim, None when it accepts it: the spec
    is immutable but for resources.requests (kubernetes/kubernetes: pkg/apis/core/validation,
    ValidatePersistentVolumeClaimUpdate), a size change needs a StorageClass that allows
    expansion and never shrinks (plugin/pkg/admission/storage/persistentvolume/resize)."""
    rest = ({k: v for k, v in spec.items() if k != "resources"} for spec in (old, new))
    if next(rest) != next(rest):
        return "spec is immutable after creation except resources.requests for bound claims"
    before, after = (spec["resources"]["requests"]["storage"] for spec in (old, new))
    if before == after:
        return None
    if not storage_class.get("allowVolumeExpansion"):
        return ("only dynamically provisioned pvc can be resized and the storageclass that "
                "provisions the pvc must support resize")
    return None if int(after.rstrip("Gi")) >= int(before.rstrip("Gi")) else "field can not be less than previous value"


def test_changing_the_efs_volume_sizes_after_the_first_deploy_applies_cleanly(lab_runs):
    first = lab_runs("agg", {"model": {"id": "Qwen/Qwen3-30B-A3B-FP8", "storeGib": 200},
                             "results": {"storageGib": 50}})
    changed = lab_runs("agg", {"model": {"id": "Qwen/Qwen3-30B-A3B-FP8", "storeGib": 400},
                               "results": {"storageGib": 20}})
    (efs_class,) = [r.plain_inputs() for r in first.of_type("kubernetes:storage.k8s.io/v1:StorageClass")
                    if r.inputs["provisioner"] == "efs.csi.aws.com"]
    assert not efs_class.get("allowVolumeExpansion")  # the check below can refuse a resize
    assert pvc_update_refusal({"resources": {"requests": {"storage": "200Gi"}}},
                              {"resources": {"requests": {"storage": "400Gi"}}}, efs_class)
    claims = {r.name: r.plain_inputs() for r in first.of_type(PVC)}
    updated = {r.name: r.plain_inputs() for r in changed.of_type(PVC)}
    assert claims.keys() == updated.keys() and len(claims) == 3
    for name, old in claims.items():
        if name.endswith("-wheelhouse-claim"):  # no size in the config
            continue
        assert pvc_update_refusal(old["spec"], updated[name]["spec"], efs_class) is None, name
        assert old["metadata"]["annotations"] != updated[name]["metadata"]["annotations"]  # applied


def test_download_job_runs_on_cpu_nodes_with_the_token_from_the_secret(lab_runs):
    rec = lab_runs("agg", {"model": {"id": "Qwen/Qwen3-30B-A3B-FP8", "revision": "abc123",
                                     "downloadTimeoutMinutes": 75}})
    job = named(rec, JOB, "-models-download")
    spec = job.plain_inputs()["spec"]
    pod = spec["template"]["spec"]
    assert pod["nodeSelector"] == {ROLE_LABEL: "system"}
    assert "tolerations" not in pod  # never on a (tainted) GPU node
    env = env_of(container(job))
    assert env["MODEL_ID"] == "Qwen/Qwen3-30B-A3B-FP8" and env["MODEL_REVISION"] == "abc123"
    # the token is a file in the download's own container, never an env var, never at install
    assert "HF_TOKEN" not in env and env["HF_TOKEN_FILE"] == model_store.HF_TOKEN_FILE
    (token_volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert token_volume["secret"] == {"secretName": HF_TOKEN_SECRET,
                                      "items": [{"key": HF_TOKEN_KEY, "path": "token"}]}
    mounts = {m["name"]: m for m in container(job)["volumeMounts"]}
    assert mounts[token_volume["name"]] == {"name": token_volume["name"], "readOnly": True,
                                            "mountPath": model_store.HF_TOKEN_DIR}
    (install,) = pod["initContainers"]
    assert token_volume["name"] not in {m["name"] for m in install["volumeMounts"]}
    assert not any("secretKeyRef" in json.dumps(e) for e in install.get("env", []))
    assert spec["activeDeadlineSeconds"] == 75 * 60
    # Pulumi waits a minute past the Job's own deadline, so Kubernetes' verdict is the one seen
    assert job.custom_timeouts == {"create": "76m", "update": "76m"}
    assert spec["backoffLimit"] >= 1 and "ttlSecondsAfterFinished" not in spec
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {"model-store"}


def test_public_model_without_token_gets_no_token_env(lab_runs):
    rec = lab_runs("agg", secrets={"grafanaAdminPassword": GRAFANA_PASSWORD})
    job = named(rec, JOB, "-models-download")
    assert "HF_TOKEN_FILE" not in env_of(container(job))
    assert not [v for v in job.plain_inputs()["spec"]["template"]["spec"]["volumes"] if "secret" in v]


# --- serving graph -----------------------------------------------------------------------------
def test_agg_graph(lab_runs):
    rec = lab_runs("agg", {"serving": {"agg": {"tp": 4, "replicas": 3}, "readyTimeoutMinutes": 45}})
    (dgd,) = rec.of_type(DGD)
    manifest = graph(rec)
    # Not awaited by Pulumi: its Ready wait is a Job that fails fast (tests/test_graph_ready.py).
    assert manifest["metadata"]["annotations"] == {"pulumi.com/skipAwait": "true"}
    assert named(rec, JOB, "-serving-ready").custom_timeouts == {"create": "51m", "update": "51m"}
    assert dgd.options["delete_before_replace"] is True
    services = manifest["spec"]["services"]
    assert set(services) == {"Frontend", "VllmWorker"}
    worker = services["VllmWorker"]
    assert worker["replicas"] == 3
    assert worker["resources"]["limits"] == {"gpu": "4"}
    main = worker["extraPodSpec"]["mainContainer"]
    assert main["image"] == "nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.9.1"
    assert _arg(main["args"], "--tensor-parallel-size") == "4"
    assert _arg(main["args"], "--model") == "/models/Qwen/Qwen3-30B-A3B-FP8/main"
    assert worker["extraPodSpec"]["nodeSelector"] == {ROLE_LABEL: "prefill"}
    assert worker["extraPodSpec"]["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    # agg moves no KV between workers: no EFA, no NIXL transport settings
    assert "custom" not in worker["resources"]["requests"]
    assert "FI_PROVIDER" not in env_of(worker, "envs") and "--kv-transfer-config" not in main["args"]
    frontend = services["Frontend"]
    assert frontend["extraPodSpec"]["nodeSelector"] == {ROLE_LABEL: "system"}
    # the same router as disagg (serving.routerMode), so the graphs' hit rates compare
    assert env_of(frontend, "envs")["DYN_ROUTER_MODE"] == "kv"
    # vLLM's batch limits set, never left to its per-GPU defaults
    assert (_arg(main["args"], "--max-num-seqs"), _arg(main["args"], "--max-num-batched-tokens")) == (
        "256", "2048")


def test_router_mode_and_batch_limits_come_from_config(lab_runs):
    rec = lab_runs("disagg", {"serving": {"routerMode": "round-robin",
                                          "decode": {"tp": 2, "replicas": 4, "maxNumSeqs": 64,
                                                     "maxNumBatchedTokens": 4096}}})
    services = graph(rec)["spec"]["services"]
    assert env_of(services["Frontend"], "envs")["DYN_ROUTER_MODE"] == "round-robin"
    args = {role: services[f"Vllm{role}Worker"]["extraPodSpec"]["mainContainer"]["args"]
            for role in ("Prefill", "Decode")}
    assert [_arg(args["Decode"], flag) for flag in ("--max-num-seqs", "--max-num-batched-tokens")] == [
        "64", "4096"]
    assert _arg(args["Prefill"], "--max-num-seqs") == "256"
    check = named(rec, JOB, "-kv-check-job")
    assert env_of(container(check))["KV_ROUTER"] == "0"  # no KV router: none to prove


def test_agg_default_fills_the_prefill_group(lab_runs):
    worker = graph(lab_runs("agg"))["spec"]["services"]["VllmWorker"]
    assert worker["replicas"] * int(worker["resources"]["limits"]["gpu"]) == 2 * 8  # 2 x p4d


def test_disagg_graph(lab_runs):
    rec = lab_runs("disagg", {"serving": {"kvOffload": {"cpuCacheGib": 48, "diskCacheGib": 150}}})
    services = graph(rec)["spec"]["services"]
    assert set(services) == {"Frontend", "VllmPrefillWorker", "VllmDecodeWorker"}
    assert env_of(services["Frontend"], "envs")["DYN_ROUTER_MODE"] == "kv"
    prefill, decode = services["VllmPrefillWorker"], services["VllmDecodeWorker"]
    # default: 2 x p4d = 4 x TP4 prefill; one TP2 decode per g6e.12xlarge (its one EFA interface)
    assert (prefill["replicas"], prefill["resources"]["limits"]["gpu"]) == (4, "4")
    assert (decode["replicas"], decode["resources"]["limits"]["gpu"]) == (4, "2")
    assert prefill["extraPodSpec"]["nodeSelector"] == {ROLE_LABEL: "prefill"}
    assert decode["extraPodSpec"]["nodeSelector"] == {ROLE_LABEL: "decode"}
    assert _arg(prefill["extraPodSpec"]["mainContainer"]["args"], "--tensor-parallel-size") == "4"
    assert _arg(decode["extraPodSpec"]["mainContainer"]["args"], "--tensor-parallel-size") == "2"
    assert "--is-prefill-worker" in prefill["extraPodSpec"]["mainContainer"]["args"]
    assert "--is-decode-worker" in decode["extraPodSpec"]["mainContainer"]["args"]
    # EFA: a p4d's 4 interfaces split between its 2 TP4 prefill workers
    assert prefill["resources"]["requests"]["custom"] == {"vpc.amazonaws.com/efa": "2"}
    assert prefill["resources"]["limits"]["custom"] == {"vpc.amazonaws.com/efa": "2"}
    for worker in (prefill, decode):
        assert worker["sharedMemory"] == {"size": "16Gi"}
    # KV offload GPU -> CPU -> disk through KVBM, sizes from config
    env = env_of(prefill, "envs")
    assert (env["DYN_KVBM_CPU_CACHE_GB"], env["DYN_KVBM_DISK_CACHE_GB"]) == ("48", "150")
    assert {"name": "kvbm-disk", "emptyDir": {"sizeLimit": "150Gi"}} in prefill["extraPodSpec"]["volumes"]
    assert {"name": "kvbm-disk", "mountPath": env["DYN_KVBM_DISK_CACHE_DIR"]} in (
        prefill["extraPodSpec"]["mainContainer"]["volumeMounts"])


def test_kvbm_metrics_are_served_and_scraped(lab_runs):
    """The KV-block-manager dashboard's series exist only when KVBM serves them (its own
    endpoint) and Prometheus scrapes that port: the prefill workers declare it, a PodMonitor
    in the lab namespace selects the workers on that port name."""
    rec = lab_runs("disagg")
    prefill = graph(rec)["spec"]["services"]["VllmPrefillWorker"]
    env = env_of(prefill, "envs")
    assert env["DYN_KVBM_METRICS"] == "true"
    (port,) = prefill["extraPodSpec"]["mainContainer"]["ports"]
    assert port["containerPort"] == int(env["DYN_KVBM_METRICS_PORT"])
    monitor = named(rec, "kubernetes:monitoring.coreos.com/v1:PodMonitor", "-kvbm-metrics").plain_inputs()
    assert monitor["metadata"]["namespace"] == graph(rec)["metadata"]["namespace"]
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == [port["name"]]
    assert monitor["spec"]["selector"]["matchLabels"] == {"nvidia.com/dynamo-component-type": "worker"}



def test_every_pod_of_the_graph_mounts_the_model_store(lab_runs):
    spec = graph(lab_runs("disagg"))["spec"]
    for name, service in spec["services"].items():
        pod = service["extraPodSpec"]
        # read-only on the volume and on the mount: no serving pod can alter the weights
        assert {"name": "model-store", "persistentVolumeClaim": {
            "claimName": "model-store", "readOnly": True}} in pod["volumes"], name
        assert {"name": "model-store", "mountPath": "/models", "readOnly": True} in (
            pod["mainContainer"]["volumeMounts"]), name
        assert env_of(service, "envs")["HF_HUB_OFFLINE"] == "1", name


def _arg(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


# --- benchmarks --------------------------------------------------------------------------------
def recorded_plan(rec) -> dict:
    plan_map = named(rec, CONFIG_MAP, "-bench-plan")
    return json.loads(plan_map.plain_inputs()["data"][benchmark_jobs.PLAN_FILE])


def test_benchmark_jobs_timeouts_follow_their_planned_durations(lab_runs):
    short = {"concurrencySweep": {"concurrency": [1, 2], "stepSeconds": 60}}
    for overrides in (None, {"bench": short}):
        rec = lab_runs("agg", overrides)
        plan = modes.plan_from_mapping(recorded_plan(rec)["bench"])
        for job, mode in zip(benchmark_job_resources(rec), plan.modes()):
            deadline = int(job.plain_inputs()["spec"]["activeDeadlineSeconds"])
            assert deadline == deadlines.benchmark_seconds(mode) > mode.planned_seconds
            assert job.custom_timeouts["create"] == f"{-(-deadline // 60) + 1}m"
    sweep = benchmark_job_resources(lab_runs("agg", {"bench": short}))[0]
    assert sweep.plain_inputs()["spec"]["activeDeadlineSeconds"] == deadlines.benchmark_seconds(
        modes.plan_from_mapping(short).concurrency_sweep)


def test_benchmark_jobs_run_the_entrypoint_on_cpu_nodes(lab_runs):
    rec = lab_runs("agg")
    for index, (job, mode) in enumerate(zip(benchmark_job_resources(rec), names.MODES)):
        pod = job.plain_inputs()["spec"]["template"]["spec"]
        main = container(job)
        env = env_of(main)
        assert env["BENCH_MODE"] == mode
        assert env["ALLOCATE_RUN"] == ("1" if index == 0 else "0")  # only the first makes a run id
        assert main["image"] == images.CLIENT_IMAGE  # never the ~20 GB serving image
        # AIPerf 0.9.0 cannot load the model store's tokenizer directory in HF offline mode
        assert not {"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"} & set(env)
        assert main["command"] == ["python", "-m", "jobs.entrypoint"]
        assert pod["serviceAccountName"] == benchmark_jobs.SERVICE_ACCOUNT
        assert pod["nodeSelector"] == {ROLE_LABEL: "system"} and "tolerations" not in pod
        mounts = {m["mountPath"]: m.get("readOnly", False) for m in main["volumeMounts"]}
        assert mounts["/results"] is False and mounts["/models"] is True


def test_every_job_runs_restricted_and_only_the_api_readers_hold_an_api_token(lab_runs):
    rec = lab_runs("agg")
    # the benchmarks (pod placement) and the KV transport check (pods and their logs)
    benchmark_names = {job.name for job in benchmark_job_resources(rec)} | {
        named(rec, JOB, "-kv-check-job").name, named(rec, JOB, "-serving-ready").name}
    for job in rec.of_type(JOB):
        pod = job.plain_inputs()["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
        assert container(job)["securityContext"]["readOnlyRootFilesystem"] is True
        assert container(job)["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert pod["automountServiceAccountToken"] is False
        tokens = [v for v in pod["volumes"] if "projected" in v]
        assert bool(tokens) == (job.name in benchmark_names), job.name


def test_manifest_reader_rbac_is_read_only(lab_runs):
    rec = lab_runs("agg")
    (role,) = [r for r in rec.of_type("kubernetes:rbac.authorization.k8s.io/v1:Role")
               if r.name.endswith("-bench-read-pods")]
    (cluster_role,) = [r for r in rec.of_type("kubernetes:rbac.authorization.k8s.io/v1:ClusterRole")
                       if r.name.endswith("-bench-read-nodes")]
    assert role.inputs["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    assert cluster_role.inputs["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]}]


def test_the_benchmarks_may_list_pods_in_the_gpu_operators_namespace_and_nothing_else_there(lab_runs):
    """To find the DCGM exporters on the workers' nodes (jobs/cluster_facts.py)."""
    rec = lab_runs("agg")
    there = [r for r in rec.resources.values() if r.type.startswith("kubernetes:rbac.authorization.k8s.io/v1:")
             and r.plain_inputs()["metadata"].get("namespace") == "gpu-operator"]
    role, binding = sorted(there, key=lambda r: r.type)
    assert role.type.endswith(":Role") and binding.type.endswith(":RoleBinding")
    assert role.plain_inputs()["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
    assert binding.plain_inputs()["roleRef"]["kind"] == "Role"
    assert binding.plain_inputs()["subjects"] == [{"kind": "ServiceAccount", "name": benchmark_jobs.SERVICE_ACCOUNT,
                                                   "namespace": "benchlab"}]
    for job in benchmark_job_resources(rec):  # and the Jobs are told where to look
        assert env_of(container(job))["GPU_OPERATOR_NAMESPACE"] == "gpu-operator"


def test_run_plan_records_the_graph_and_hashes_what_makes_a_run(lab_runs):
    agg, disagg = recorded_plan(lab_runs("agg")), recorded_plan(lab_runs("disagg"))
    assert agg["manifest"]["dgd_spec"] == graph(lab_runs("agg"))["spec"]
    assert agg["manifest"]["workers"] == {"agg": {"replicas": 4, "tp": 4}}
    assert [n["role"] for n in disagg["manifest"]["nodes"]] == ["decode", "prefill"]
    assert agg["config_hash"] != disagg["config_hash"]
    unrelated = recorded_plan(lab_runs("agg", {"monitoring": {"retention": "3d"}}))
    assert unrelated["config_hash"] == agg["config_hash"]  # nothing re-runs
    changed = recorded_plan(lab_runs("agg", {"bench": {"multiTurn": {"turns": 3}}}))
    assert changed["config_hash"] != agg["config_hash"]
    hashes = {job.plain_inputs()["spec"]["template"]["metadata"]["annotations"]["benchlab.io/config-hash"]
              for job in benchmark_job_resources(lab_runs("agg"))}
    assert hashes == {agg["config_hash"]}  # a new hash is a new pod template: new Jobs, a new run


# --- the AIPerf command lines the cluster runs --------------------------------------------------
def help_flags(text: str) -> set[str]:
    """Every option (with aliases) `aiperf profile --help` lists."""
    flags = set()
    for line in text.splitlines():
        match = re.match(r"^│ ((?:--?[\w-]+ ?)+)", line)
        if match:
            flags.update(match.group(1).split())
    return flags


def cluster_calls(rec) -> dict[str, list[aiperf_argv.AiperfCall]]:
    """What each Job's entrypoint will run: the plan it is given, through the shared builder."""
    plan = recorded_plan(rec)
    bench = modes.plan_from_mapping(plan["bench"])
    target = aiperf_argv.Target(**plan["target"])
    return {mode.name: aiperf_argv.build_calls(mode, target, f"/results/run/{plan['graph']}/{mode.name}",
                                               sweep_style="per_level")
            for mode in bench.modes()}


def flag_values(argv, flag) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == flag]


def test_every_emitted_flag_exists_in_the_pinned_aiperf(lab_runs, shared):
    known = help_flags(shared("aiperf/aiperf-0.9.0-profile-help.txt").read_text())
    assert {"--concurrency", "--seq-dist", "--streaming"} <= known
    for mode, calls in cluster_calls(lab_runs("disagg")).items():
        for call in calls:
            used = {arg for arg in call.argv if arg.startswith("--")}
            assert used <= known, f"{mode}/{call.step}: {sorted(used - known)}"


def test_the_help_parser_sees_an_unknown_flag(shared):
    known = help_flags(shared("aiperf/aiperf-0.9.0-profile-help.txt").read_text())
    assert "--concurency" not in known and "--isl" in known


def test_argv_values_are_report_5_parameters(lab_runs):
    rec = lab_runs("agg")
    plan = recorded_plan(rec)
    calls = cluster_calls(rec)
    for mode_calls in calls.values():
        for call in mode_calls:
            argv = call.argv
            assert argv[0] == "profile" and "--streaming" in argv
            assert flag_values(argv, "--url") == ["http://benchlab-agg-frontend:8000"]
            assert flag_values(argv, "--model") == ["Qwen/Qwen3-30B-A3B-FP8"]
            assert flag_values(argv, "--tokenizer") == [plan["model_dir"]]
            assert "ignore_eos:true" in flag_values(argv, "--extra-inputs")
            assert len(flag_values(argv, "--concurrency")) == 1  # the cluster's aiperf: one value
    sweep = calls["concurrency_sweep"]
    assert [flag_values(c.argv, "--concurrency")[0] for c in sweep] == ["1", "2", "4", "8", "16", "32", "64"]
    for call in sweep:
        assert (flag_values(call.argv, "--isl"), flag_values(call.argv, "--osl")) == (["1024"], ["512"])
        assert flag_values(call.argv, "--benchmark-duration") == ["120"]
        assert "min_tokens:512" in flag_values(call.argv, "--extra-inputs")
    (turns,) = calls["multi_turn"]
    assert flag_values(turns.argv, "--conversation-turn-mean") == ["5"]
    assert flag_values(turns.argv, "--concurrency") == ["8"]
    assert (flag_values(turns.argv, "--isl"), flag_values(turns.argv, "--osl")) == (["512"], ["256"])
    assert flag_values(turns.argv, "--benchmark-duration") == ["300"]
    dist = calls["sequence_distribution"]
    assert [c.step for c in dist] == ["uniform", "zipf", "lognormal"]
    for call in dist:
        assert flag_values(call.argv, "--concurrency") == ["16"]
        (buckets,) = flag_values(call.argv, "--seq-dist")
        pairs = [tuple(map(int, b.split(":")[0].split(","))) for b in buckets.split(";")]
        assert all(128 <= isl <= 4096 and 64 <= osl <= 2048 for isl, osl in pairs)
        assert buckets == seq_dist.seq_dist_arg(call.step, (128, 4096), (64, 2048))
    prefix = calls["prefix_cache"]
    assert [c.step for c in prefix] == ["hit0", "hit25", "hit50", "hit75", "hit100"]
    for call, ratio in zip(prefix, (0, 25, 50, 75, 100)):
        unique = int(flag_values(call.argv, "--isl")[0])
        shared_len = int((flag_values(call.argv, "--prompt-prefix-length") or ["0"])[0])
        assert unique + shared_len == 2048
        assert abs(shared_len - 2048 * ratio / 100) <= 1
        assert flag_values(call.argv, "--osl") == ["512"] and flag_values(call.argv, "--concurrency") == ["16"]


# --- results export ----------------------------------------------------------------------------
def test_export_role_is_limited_to_the_bucket_and_its_service_account(lab_runs):
    rec = lab_runs("agg")
    role = named(rec, "aws:iam/role:Role", "-export-role")
    trust = json.loads(role.plain_inputs()["assumeRolePolicy"])
    (statement,) = trust["Statement"]
    conditions = statement["Condition"]["StringEquals"]
    assert "system:serviceaccount:benchlab:results-export" in conditions.values()
    policy = json.loads(named(rec, "aws:iam/rolePolicy:RolePolicy", "-export-bucket").plain_inputs()["policy"])
    bucket = rec.stack_outputs["resultsBucket"]
    assert {a for s in policy["Statement"] for a in s["Action"]} == {
        "s3:ListBucket", "s3:PutObject", "s3:AbortMultipartUpload"}

    def allowed(action: str, resource: str, prefix: str | None = None) -> bool:
        """IAM's Allow with `*`/`?` wildcards in Resource and StringLike (fnmatch's, no `[`)."""
        for statement in policy["Statement"]:
            like = statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
            if (action in statement["Action"] and fnmatch.fnmatchcase(resource, statement["Resource"])
                    and (like is None or (prefix is not None
                                          and any(fnmatch.fnmatchcase(prefix, p) for p in like)))):
                return True
        return False
    arn = f"arn:aws:s3:::{bucket}"
    run_id = runs.new_run_id("c0ffee" * 10, now=0)
    for run in (run_id, f"{run_id}-1"):  # what the export lists and puts, retried runs too
        assert allowed("s3:ListBucket", arn, f"{run}/")
        assert allowed("s3:PutObject", f"{arn}/{run}/agg/concurrency_sweep/c4/profile_export_aiperf.json")
        assert allowed("s3:AbortMultipartUpload", f"{arn}/{run}/agg/manifest.json")
    # nothing outside the lab's run prefixes, no listing of the whole bucket, no other bucket
    assert not allowed("s3:PutObject", f"{arn}/elsewhere/x.json")
    assert not allowed("s3:ListBucket", arn) and not allowed("s3:ListBucket", arn, "elsewhere/")
    assert not allowed("s3:PutObject", f"arn:aws:s3:::other-bucket/{run_id}/x")
    account = named(rec, "kubernetes:core/v1:ServiceAccount", "-export-account").plain_inputs()
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(role.name)


def test_export_job_reads_the_run_plan_and_pushes_to_the_pushgateway(lab_runs):
    rec = lab_runs("agg")
    job = named(rec, JOB, "-export-job")
    env = env_of(container(job))
    assert env["RESULTS_BUCKET"] == rec.stack_outputs["resultsBucket"]
    assert env["PUSHGATEWAY_URL"].startswith("http://") and ":9091" in env["PUSHGATEWAY_URL"]
    pod = job.plain_inputs()["spec"]["template"]["spec"]
    plan_volume = next(v for v in pod["volumes"] if v["name"] == "plan")
    plan_map = named(rec, CONFIG_MAP, "-bench-plan")
    assert rec.waits_for(job, plan_map) and plan_volume["configMap"]["name"] is not None


# --- secrets -----------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["agg", "disagg"])
def test_no_secret_is_plain_in_any_rendered_object_or_output(lab_runs, mode):
    rec = lab_runs(mode)
    rendered = json.dumps([r.plain_inputs() for r in rec.resources.values()])
    outputs = json.dumps(offline.plain(rec.stack_outputs))
    for secret in SECRETS.values():
        assert secret not in rendered and secret not in outputs
    # and the token is there, as a secret, exactly where it belongs
    revealed = [r for r in rec.resources.values() if HF_TOKEN in json.dumps(r.plain_inputs(reveal=True))]
    assert [r.type for r in revealed] == ["kubernetes:core/v1:Secret"]


def test_every_job_is_replaced_when_its_spec_changes(lab_runs):
    # A Job's pod template is immutable, and a changed Job is new work: a new Job, not a patch.
    jobs = lab_runs("disagg").of_type(JOB)
    assert len(jobs) == 9  # wheelhouse, download, graph Ready wait, KV transport check, four benchmarks, export
    assert all(job.options["replace_on_changes"] == ["spec"] for job in jobs)


# --- client Jobs: a small image, hash-locked wheels, nothing else ------------------------------
CLIENT_JOBS = {"-models-download": wheel_locks.HUGGINGFACE_HUB, "-export-job": wheel_locks.BOTO3,
               **{f"-bench-{mode}": wheel_locks.AIPERF for mode in MODE_ORDER}}
FROM_WHEELHOUSE = {"-export-job"}  # holds AWS credentials: its wheels come from the wheelhouse claim


@pytest.mark.parametrize("suffix", sorted(CLIENT_JOBS))
def test_client_jobs_run_the_small_image_and_install_only_their_hash_locked_wheels(lab_runs, suffix):
    rec = lab_runs("agg")
    job = named(rec, JOB, suffix)
    pod = job.plain_inputs()["spec"]["template"]["spec"]
    lock = CLIENT_JOBS[suffix]
    (install,) = pod["initContainers"]
    assert {install["image"], container(job)["image"]} == {images.CLIENT_IMAGE}
    command = install["command"]
    assert command[:4] == ["python", "-m", "pip", "install"]
    assert {"--require-hashes", "--only-binary=:all:", "--no-cache-dir"} <= set(command)
    assert command[command.index("--target") + 1] == job_code.DEPS
    lock_path = command[command.index("-r") + 1]
    assert lock_path == f"{job_code.MOUNT_ROOT}/{job_code.PACKAGE}/{lock.file_name}"
    # the lock file is what the Job's code ConfigMap ships, byte for byte
    (code_volume,) = [v for v in pod["volumes"] if v["name"] == job_code.CODE_VOLUME]
    auto_named = code_volume["configMap"]["name"]  # <resource name>-<random suffix>
    (code_map,) = [c for c in rec.of_type(CONFIG_MAP) if c.name == auto_named.rsplit("-", 1)[0]]
    assert code_map.plain_inputs()["data"][lock.file_name] == lock.text()
    # the install step holds no secret, no API token and no AWS identity (IRSA's webhook skips it)
    assert {m["name"] for m in install["volumeMounts"]} == {
        job_code.CODE_VOLUME, "scratch", *([job_code.WHEELHOUSE_VOLUME] if suffix in FROM_WHEELHOUSE else [])}
    annotations = job.plain_inputs()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/skip-containers"] == install["name"]
    assert install["securityContext"] == job_code.RESTRICTED_CONTAINER
    # and the Job's own code never installs anything
    assert "pip" not in json.dumps(container(job)["command"])


def test_a_locked_image_is_deployed_by_digest_everywhere(lab_runs):
    digests = {images.CLIENT_IMAGE: "sha256:" + "a" * 64,
               images.vllm_runtime("0.9.1"): "sha256:" + "b" * 64}
    rec = lab_runs("agg", {"imageDigests": digests})
    for job in rec.of_type(JOB):
        pod = job.plain_inputs()["spec"]["template"]["spec"]
        for each in [*pod.get("initContainers", []), *pod["containers"]]:
            assert each["image"] == f"{images.CLIENT_IMAGE}@sha256:{'a' * 64}", job.name
    spec = json.dumps(graph(rec))
    assert f"vllm-runtime:0.9.1@sha256:{'b' * 64}" in spec and "vllm-runtime:0.9.1\"" not in spec
    unlocked = lab_runs("agg")
    assert "@sha256:" not in json.dumps([j.plain_inputs() for j in unlocked.of_type(JOB)])


def test_the_pinned_aiperf_loads_the_model_stores_tokenizer_in_the_benchmark_jobs_env(lab_runs, tmp_path):
    """The rendered environment of a benchmark Job, with the real AIPerf's tokenizer loader."""
    from local_lab import tool_venvs
    from local_lab.tokenizer import ensure_model_dir

    aiperf_python = tool_venvs.tool_path(tool_venvs.AIPERF, REPO / ".venvs", "python")
    if not aiperf_python.exists():
        pytest.skip(f"{aiperf_python} absent: `./benchlab tools` installs the pinned AIPerf")
    job_env = {k: v for k, v in env_of(container(benchmark_job_resources(lab_runs("agg"))[0])).items()
               if isinstance(v, str) and not v.startswith("/")}
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}, **job_env}
    model = ensure_model_dir(tmp_path / "model")
    probe = ("import sys; from aiperf.common.tokenizer import Tokenizer; "
             "Tokenizer.from_pretrained(sys.argv[1]); print('loaded')")
    result = subprocess.run([str(aiperf_python), "-c", probe, str(model)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "loaded" in result.stdout, result.stderr[-1500:]
