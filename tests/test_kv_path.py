"""The disagg KV path in the rendered graph and in validation: every worker of the default
disagg lab holds EFA interfaces of its own and NIXL is told to use them (LIBFABRIC, the node's
libfabric, the EFA provider pinned); a config that would leave a worker without an EFA
interface is refused unless `serving.kvTransport: tcp` says so; the serving pods run without
privilege escalation, capabilities or API token, the model store read-only."""
from __future__ import annotations

import json
import subprocess

import pytest

from components import job_code
from stacks import config, serving_spec
from tests.test_dgd_schema import problems, validator  # noqa: F401  (fixture)
from tests.conftest import EFA_IMAGE, serving_mode

EFA = serving_spec.EFA_RESOURCE


def services(overrides: dict) -> dict:
    return serving_spec.graph_manifest(config.parse(overrides))["spec"]["services"]


def env(service: dict) -> dict:
    return {e["name"]: e["value"] for e in service["envs"]}


def transfer_config(service: dict) -> dict:
    args = service["extraPodSpec"]["mainContainer"]["args"]
    return json.loads(args[args.index("--kv-transfer-config") + 1])


def nixl_entry(service: dict) -> dict:
    cfg = transfer_config(service)
    if cfg["kv_connector"] == "PdConnector":
        (kvbm, nixl) = cfg["kv_connector_extra_config"]["connectors"]
        assert kvbm["kv_connector"] == "DynamoConnector"
        return nixl
    return cfg


DISAGG = {"serving": {"mode": "disagg", "image": EFA_IMAGE}}
TCP = {"serving": {"mode": "disagg", "image": EFA_IMAGE, "kvTransport": "tcp"}}


def test_default_disagg_gives_every_worker_its_own_efa_interfaces():
    graph = services(DISAGG)
    prefill, decode = graph["VllmPrefillWorker"], graph["VllmDecodeWorker"]
    # p4d.24xlarge: 4 interfaces for its 2 TP4 prefill workers; g6e.12xlarge: its 1 for 1 TP2 decode
    assert prefill["resources"]["limits"]["custom"] == {EFA: "2"}
    assert decode["resources"]["limits"]["custom"] == {EFA: "1"}
    for worker in (prefill, decode):
        assert worker["resources"]["requests"]["custom"] == worker["resources"]["limits"]["custom"]
    assert (decode["replicas"], decode["resources"]["limits"]["gpu"]) == (4, "2")
    # one decode worker per node: it gets the whole node's CPU/memory share
    assert decode["resources"]["requests"]["cpu"] == str(int(48 * serving_spec.HOST_SHARE_USED))


def test_efa_workers_select_libfabric_with_the_efa_provider_and_the_nodes_libfabric():
    for name, worker in services(DISAGG).items():
        if name == "Frontend":
            continue
        main = worker["extraPodSpec"]["mainContainer"]
        assert nixl_entry(worker) == {"kv_connector": "NixlConnector", "kv_role": "kv_both",
                                      "kv_connector_extra_config": {"backends": ["LIBFABRIC"]}}
        # --connector defaults to nixl and refuses an explicit --kv-transfer-config beside it
        assert main["args"][main["args"].index("--connector") + 1] == "none"
        values = env(worker)
        assert values["FI_PROVIDER"] == "efa" and values["FI_EFA_ENABLE_SHM_TRANSFER"] == "0"
        assert values["FI_EFA_USE_DEVICE_RDMA"] == "1" and values["NIXL_LOG_LEVEL"] == "INFO"
        assert "UCX_TLS" not in values
        # libfabric comes with the image: no hostPath into the node
        assert not [v for v in worker["extraPodSpec"]["volumes"] if "hostPath" in v]
        assert main["command"] == ["sh", "-c", serving_spec.EFA_LAUNCH, "dynamo.vllm"]
        assert main["env"] == [serving_spec.SIDE_CHANNEL_HOST]


@pytest.mark.parametrize("present, found", [
    (("lib64", "lib"), "lib64"),  # where the EFA installer puts it on x86_64
    (("lib",), "lib"),
    ((), None),                   # the stock image: refuse to start
])
def test_the_launcher_puts_the_images_libfabric_first_or_refuses_to_start(tmp_path, present, found):
    for directory in present:
        (tmp_path / "efa" / directory).mkdir(parents=True)
        (tmp_path / "efa" / directory / "libfabric.so.1").touch()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text('#!/bin/sh\necho "LD=$LD_LIBRARY_PATH ARGS=$*"\n')
    (bin_dir / "python3").chmod(0o755)
    done = subprocess.run(["sh", "-c", serving_spec.efa_launch(str(tmp_path / "efa")), "dynamo.vllm",
                           "--model", "/m"], capture_output=True, text=True,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin", "LD_LIBRARY_PATH": "/cuda"})
    if found is None:
        assert done.returncode == 78 and "serving.image" in done.stderr
    else:
        assert done.returncode == 0
        assert done.stdout.strip() == f"LD={tmp_path / 'efa' / found}:/cuda ARGS=-m dynamo.vllm --model /m"


def test_prefill_keeps_kvbm_in_front_of_nixl():
    cfg = transfer_config(services(DISAGG)["VllmPrefillWorker"])
    assert cfg["kv_connector"] == "PdConnector"
    assert cfg["kv_connector_module_path"] == "kvbm.vllm_integration.connector"


@pytest.mark.parametrize("overrides, key, slots", [
    # the old default: 8 TP2 decode workers on 4 g6e.12xlarge (1 EFA interface each)
    ({"serving": {"mode": "disagg", "image": EFA_IMAGE, "decode": {"tp": 2, "replicas": 8}}}, "serving.decode.replicas: 8", 4),
    # 16 TP1 prefill workers on 2 p4d.24xlarge (4 EFA interfaces each)
    ({"serving": {"mode": "disagg", "image": EFA_IMAGE, "prefill": {"tp": 1, "replicas": 16},
                  "kvOffload": {"diskCacheGib": 30}}}, "serving.prefill.replicas: 16", 8),
])
def test_a_worker_without_an_efa_interface_is_refused_unless_tcp_is_chosen(overrides, key, slots):
    with pytest.raises(config.ConfigError) as err:
        config.parse(overrides)
    (problem,) = err.value.problems
    assert key in problem and "serving.kvTransport: tcp" in problem and f"holds {slots};" in problem
    tcp = {**overrides, "serving": {**overrides["serving"], "kvTransport": "tcp"}}
    assert config.parse(tcp).serving.kv_transport == "tcp"
    # checked whatever the mode: a campaign's switch to disagg must not be where it fails
    agg = {**overrides, "serving": {**overrides["serving"], "mode": "agg"}}
    with pytest.raises(config.ConfigError, match="kvTransport: tcp"):
        config.parse(agg)


def test_an_unknown_kv_transport_is_refused():
    with pytest.raises(config.ConfigError) as err:
        config.parse({"serving": {"kvTransport": "rdma"}})
    assert "serving.kvTransport" in str(err.value) and "'efa'" in str(err.value)


def test_explicit_tcp_requests_no_efa_and_no_capability():
    for name, worker in services(TCP).items():
        if name == "Frontend":
            continue
        main = worker["extraPodSpec"]["mainContainer"]
        assert "custom" not in worker["resources"]["requests"]
        assert nixl_entry(worker)["kv_connector_extra_config"] == {"backends": ["UCX"]}
        assert env(worker)["UCX_TLS"] == "tcp,cuda_copy" and "FI_PROVIDER" not in env(worker)
        assert main["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert main["command"] == ["python3", "-m", "dynamo.vllm"]
        assert all("hostPath" not in v for v in worker["extraPodSpec"]["volumes"])
    # tcp packs the nodes' GPUs again: 8 TP2 decode workers on 4 g6e.12xlarge
    assert config.parse({"serving": {"mode": "disagg", "image": EFA_IMAGE, "kvTransport": "tcp",
                                     "decode": {"tp": 2, "replicas": 8}}})


@pytest.mark.parametrize("overrides", [DISAGG, TCP, {"serving": {"mode": "agg"}}])
def test_serving_pods_are_unprivileged_without_api_token(overrides):
    efa = overrides == DISAGG
    for name, service in services(overrides).items():
        pod = service["extraPodSpec"]
        context = pod["mainContainer"]["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["capabilities"]["drop"] == ["ALL"], name
        added = context["capabilities"].get("add", [])
        # IPC_LOCK only where RDMA pins memory: EFA workers
        assert added == (["IPC_LOCK"] if efa and name != "Frontend" else []), name
        assert "privileged" not in context, name
        assert pod["automountServiceAccountToken"] is False, name
        mount = next(m for m in pod["mainContainer"]["volumeMounts"] if m["name"] == "model-store")
        assert mount["readOnly"] is True, name


@pytest.mark.parametrize("overrides", [DISAGG, TCP])
def test_both_transports_validate_against_the_crd(validator, overrides):  # noqa: F811
    manifest = serving_spec.graph_manifest(config.parse(overrides), namespace="lab")
    assert problems(validator, manifest) == []


# --- the transport check in the program -----------------------------------------------------------
JOB = "kubernetes:batch/v1:Job"
DGD = f"kubernetes:{serving_spec.API_VERSION}:{serving_spec.KIND}"


def job(recording, suffix: str):
    (found,) = [r for r in recording.of_type(JOB) if r.name.endswith(suffix)]
    return found


@pytest.mark.parametrize("mode, transport, router", [("agg", "none", "1"), ("disagg", "efa", "1")])
def test_order_graph_is_dgd_then_transport_check_then_first_benchmark(run_lab, mode, transport, router):
    rec = run_lab(overrides={"serving": serving_mode(mode)})
    (dgd,) = rec.of_type(DGD)
    check, first = job(rec, "-kv-check-job"), job(rec, "-bench-concurrency-sweep")
    assert rec.waits_for(check, dgd) and rec.waits_for(first, check)
    assert not rec.waits_for(check, first) and not rec.waits_for(dgd, check)
    spec = check.plain_inputs()["spec"]
    assert spec["backoffLimit"] == 0
    (container,) = spec["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert (env["KV_TRANSPORT"], env["KV_ROUTER"], env["GRAPH_NAME"]) == (transport, router, f"benchlab-{mode}")
    assert container["command"] == job_code.run_module("kv_transport") == ["python", "-m", "jobs.kv_transport"]
    # the record is named by the same hash the benchmark Jobs' plan carries
    plan_map = [r for r in rec.of_type("kubernetes:core/v1:ConfigMap") if r.name.endswith("-bench-plan")][0]
    assert json.loads(next(iter(plan_map.plain_inputs()["data"].values())))["config_hash"] == env["CONFIG_HASH"]


def test_transport_check_reads_pods_and_logs_only(run_lab):
    rec = run_lab(overrides={"serving": {"mode": "disagg", "image": EFA_IMAGE}})
    (role,) = [r for r in rec.of_type("kubernetes:rbac.authorization.k8s.io/v1:Role")
               if r.name.endswith("-kv-check-read-pods")]
    assert role.inputs["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
                                    {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}]


def test_the_labs_namespaces_warn_and_audit_against_the_restricted_profile(run_lab):
    rec = run_lab(overrides={"serving": {"mode": "disagg", "image": EFA_IMAGE}})
    labels = {ns.inputs["metadata"]["name"]: ns.inputs["metadata"]["labels"]
              for ns in rec.of_type("kubernetes:core/v1:Namespace")}
    assert set(labels) == {"gpu-operator", "monitoring", "dynamo-system", "benchlab"}
    # host access (GPU Operator), IPC_LOCK on the EFA workers (lab): privileged, said explicitly
    assert {name: values["pod-security.kubernetes.io/enforce"] for name, values in labels.items()} == {
        "gpu-operator": "privileged", "benchlab": "privileged", "monitoring": "baseline",
        "dynamo-system": "baseline"}
    for name, values in labels.items():
        if values["pod-security.kubernetes.io/enforce"] != "privileged":
            assert values["pod-security.kubernetes.io/warn"] == "restricted", name
            assert values["pod-security.kubernetes.io/audit"] == "restricted", name


def test_synth_of_the_dev_stacks_disagg_graph_gives_every_worker_efa(run_lab):
    from cli import synth
    rec = run_lab(overrides={"serving": {"mode": "disagg", "image": EFA_IMAGE}})  # Pulumi.dev.yaml, disagg
    (dgd,) = rec.of_type(DGD)
    workers = {name: service for name, service in synth.redact(dgd.inputs)["spec"]["services"].items()
               if service["componentType"] == "worker"}
    assert set(workers) == {"VllmPrefillWorker", "VllmDecodeWorker"}
    for name, worker in workers.items():
        assert int(worker["resources"]["limits"]["custom"][EFA]) >= 1, name
        assert nixl_entry(worker)["kv_connector_extra_config"] == {"backends": ["LIBFABRIC"]}, name
