"""Every pod the stack schedules fits the node group it is pinned to, checked two ways: on the
config before any resource (stacks/pod_fit.scheduled_pods), and on every pod the rendered
program actually contains, so a new or changed pod cannot slip past the first."""
from __future__ import annotations

import itertools

import pytest

from cli import offline
from facts.node_capacity import allocatable, kube_reserved_cpu_millis
from stacks import config, pod_fit
from tests.conftest import REPO, serving_mode

STACK_FILES = sorted(p.name for p in REPO.glob("Pulumi.*.yaml"))
DEV = offline.stack_config(str(REPO / "Pulumi.dev.yaml"))


def rendered_objects(rec: offline.Recording):
    """(kind, name, spec) of every Kubernetes object the program registered."""
    for res in rec.resources.values():
        if not res.type.startswith("kubernetes:") or "helm.sh" in res.type:
            continue
        inputs = res.plain_inputs()
        if "spec" in inputs:
            name = (inputs.get("metadata") or {}).get("name") or res.name
            yield res.type.rsplit(":", 1)[1], name, inputs["spec"]


def rendered_pods(rec: offline.Recording) -> list[pod_fit.Pod]:
    return pod_fit.pods_from_objects(rendered_objects(rec))


def shape(pod: pod_fit.Pod) -> tuple:
    return pod.group, pod.cpu_millis, pod.memory_mib, round(pod.ephemeral_gib, 3), pod.job


@pytest.fixture(scope="module", params=[(f, m) for f in STACK_FILES for m in ("agg", "disagg")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def rendered(request):
    stack_file, mode = request.param
    values = offline.stack_config(str(REPO / stack_file))
    values["serving"] = {**values.get("serving", {}), **serving_mode(mode)}
    return config.parse(values), offline.run_program(values)


def test_the_check_reads_pods_from_the_rendered_program(rendered):
    _, rec = rendered
    pods = rendered_pods(rec)
    names = " ".join(p.name for p in pods)
    assert any(p.job for p in pods) and "Frontend" in names and "Worker" in names


def test_every_rendered_pod_is_pinned_and_declared_before_any_resource(rendered):
    cfg, rec = rendered
    declared = {shape(p) for p in pod_fit.scheduled_pods(cfg)}
    for pod in rendered_pods(rec):
        if pod.replicas == 0:  # a DaemonSet: its share must be in the DaemonSet tables
            assert pod.name in {**pod_fit.DAEMONSETS_EVERY_NODE, **pod_fit.DAEMONSETS_GPU_NODES}, pod
            continue
        assert pod.group in ("system", "prefill", "decode"), f"{pod.name} is pinned to no node group"
        assert shape(pod) in declared, (
            f"{pod.name} {shape(pod)} is not what stacks/pod_fit.scheduled_pods declares: "
            "the config-time check would not see it")


def test_every_rendered_pod_fits_its_node_group(rendered):
    cfg, rec = rendered
    assert pod_fit.problems(cfg, [*pod_fit.PLATFORM_PODS, *rendered_pods(rec)]) == []


def test_the_jobs_run_one_after_another(rendered):
    """The packing counts one Job at a time: true only while every Job waits for another."""
    _, rec = rendered
    jobs = rec.of_type("kubernetes:batch/v1:Job")
    assert len(jobs) >= 3
    for a, b in itertools.combinations(jobs, 2):
        assert rec.waits_for(a, b) or rec.waits_for(b, a), f"{a.name} and {b.name} may run at once"


# --- what the config-time check rejects ---------------------------------------------------
def test_a_too_small_system_instance_is_rejected_before_any_resource():
    recording = offline.Recording()
    small = {**DEV, "nodeGroups": {**DEV["nodeGroups"], "system": {
        "instanceType": "m5.xlarge", "count": 2, "diskGib": 100}}}
    with pytest.raises(config.ConfigError) as err:
        offline.run_program(small, recording=recording)
    [problem] = err.value.problems
    assert problem.startswith("benchlab:nodeGroups.system.instanceType: 'm5.xlarge' is too small "
                              "for pod benchmark: it requests 4000m CPU")
    assert recording.resources == {}


def test_too_few_system_nodes_for_everything_at_once_is_rejected():
    cfg = config.parse({"nodeGroups": {"system": {"instanceType": "m5.2xlarge", "count": 1, "diskGib": 100}}})
    found = pod_fit.problems(cfg, [*pod_fit.scheduled_pods(cfg), pod_fit.Pod("extra", "system", 3000, 1024)])
    assert len(found) == 2  # one per serving mode
    assert all(p.startswith("benchlab:nodeGroups.system.count: 1 x m5.2xlarge") for p in found)
    assert "agg lab" in found[0] and "disagg lab" in found[1]


def test_local_disk_demand_names_the_disk_key():
    cfg = config.parse({})
    [problem] = pod_fit.problems(cfg, [pod_fit.Pod("cache", "system", 100, 100, ephemeral_gib=500)])
    assert problem.startswith("benchlab:nodeGroups.system.diskGib: pod cache needs 500 GiB")


def test_unpinned_pod_is_reported():
    assert pod_fit.problems(config.parse({}), [pod_fit.Pod("stray", None, 1, 1)]) == [
        "pod stray is pinned to no node group (benchlab.io/role in system, prefill, decode)"]


# --- the numbers the check rests on -------------------------------------------------------
def test_nodeadm_cpu_reserve_and_the_issue_s_m5_xlarge_figure():
    # 6% of the first core, 1% of the second, 0.5% of cores 3-4, 0.25% above: 60+10+10 = 80m
    assert kube_reserved_cpu_millis(4) == 80
    assert kube_reserved_cpu_millis(96) == 60 + 10 + 10 + 230
    assert allocatable("m5.xlarge", 4, 16, 50).cpu_millis == 3920  # "about 3.9 allocatable"


def test_memory_reserve_follows_max_pods():
    # m5.xlarge: 4 ENIs x (15 - 1) + 2 = 58 pods -> 11 x 58 + 255 = 893 MiB, + 100 MiB eviction
    free = allocatable("m5.xlarge", 4, 16, 50)
    assert free.memory_mib == int(16 * 1024 * (1 - 0.075)) - 893 - 100


@pytest.mark.parametrize("quantity, millis", [("4", 4000), ("500m", 500), ("0.5", 500), (2, 2000)])
def test_cpu_quantities(quantity, millis):
    assert pod_fit.cpu_millis(quantity) == millis


@pytest.mark.parametrize("quantity, mib", [("8Gi", 8192), ("512Mi", 512), ("1G", 954), ("1048576", 1)])
def test_memory_quantities(quantity, mib):
    assert pod_fit.mib(quantity) == mib
