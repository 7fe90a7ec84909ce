"""The typed stack config: defaults are Report 5's lab; every bad value is named, with what
is allowed, before any resource is registered."""
from __future__ import annotations

import dataclasses

import pytest

from cli import offline
from tests.conftest import EFA_IMAGE, REPO
from stacks import config
from facts.instances import INSTANCE_FACTS


def test_defaults_are_report_5_lab():
    cfg = config.parse({})
    assert cfg.kubernetes_version == "1.32"
    assert (cfg.node_groups.prefill.instance_type, cfg.node_groups.prefill.count) == ("p4d.24xlarge", 2)
    assert (cfg.node_groups.decode.instance_type, cfg.node_groups.decode.count) == ("g6e.12xlarge", 4)
    assert cfg.serving.mode == "agg"
    assert (cfg.serving.agg.tp, cfg.serving.agg.replicas) == (4, 4)
    assert (cfg.serving.prefill.tp, cfg.serving.decode.tp) == (4, 2)
    assert cfg.model.id == "Qwen/Qwen3-30B-A3B-FP8"
    assert cfg.versions.dynamo == "0.9.1" and cfg.versions.gpu_operator == "v24.9.0"
    assert cfg.versions.kube_prometheus_stack.startswith("65.")
    assert cfg.versions.aiperf == "0.9.0"


def test_dev_stack_file_parses_to_the_defaults(dev_config):
    dev = config.parse(dev_config)
    assert dev.owner == "ml-infra"
    # the shipped file accepts tags until `lock-images` (tests/test_image_pinning.py)
    assert dataclasses.replace(dev, owner=config.StackConfig().owner, public_access_cidrs=(),
                               image_policy=config.ImagePolicy()) == config.parse({})


def test_overrides_are_applied_and_typed():
    cfg = config.parse({"serving": {"mode": "disagg", "image": EFA_IMAGE, "decode": {"tp": 4, "replicas": 4}},
                        "nodeGroups": {"decode": {"instanceType": "g6e.12xlarge", "count": 4, "diskGib": 300}}})
    assert cfg.serving.mode == "disagg"
    assert cfg.serving.decode == config.Workers(tp=4, replicas=4)
    assert cfg.serving.prefill == config.Workers(tp=4, replicas=4)  # untouched default
    assert cfg.node_groups.decode.disk_gib == 300


def test_unused_gpu_group_is_scaled_to_zero_and_used_one_is_not():
    agg = config.parse({})
    assert (agg.desired_nodes("prefill"), agg.desired_nodes("decode")) == (2, 0)
    disagg = config.parse({"serving": {"mode": "disagg", "image": EFA_IMAGE}})
    assert (disagg.desired_nodes("prefill"), disagg.desired_nodes("decode")) == (2, 4)
    keep = config.parse({"serving": {"scaleUnusedGpuGroupToZero": False}})
    assert keep.desired_nodes("decode") == 4


BAD_CONFIGS = {
    "typo at the top": ({"nodeGroup": {}}, ["benchlab:nodeGroup: unknown key", "nodeGroups"]),
    "typo nested": ({"nodeGroups": {"prefill": {"instanceTyp": "p4d.24xlarge"}}},
                    ["nodeGroups.prefill.instanceTyp: unknown key", "instanceType"]),
    "wrong type": ({"nodeGroups": {"prefill": {"count": "two"}}},
                   ["nodeGroups.prefill.count: 'two'", "an integer"]),
    "bool is not an int": ({"nodeGroups": {"decode": {"count": True}}}, ["nodeGroups.decode.count", "an integer"]),
    "zero nodes": ({"nodeGroups": {"prefill": {"count": 0}}}, ["nodeGroups.prefill.count: 0 must be at least 1"]),
    "negative nodes": ({"nodeGroups": {"system": {"count": -2}}}, ["nodeGroups.system.count: -2"]),
    "unknown GPU type": ({"nodeGroups": {"prefill": {"instanceType": "p9.mega"}}},
                         ["nodeGroups.prefill.instanceType: 'p9.mega'", "p4d.24xlarge"]),
    "CPU type for a GPU group": ({"nodeGroups": {"decode": {"instanceType": "m5.xlarge"}}},
                                 ["nodeGroups.decode.instanceType: 'm5.xlarge' is not a GPU"]),
    "serving mode": ({"serving": {"mode": "hybrid"}}, ["serving.mode: 'hybrid'", "'agg' | 'disagg'"]),
    "TP not a power of two": ({"serving": {"agg": {"tp": 3, "replicas": 4}}},
                              ["serving.agg.tp: 3 is not allowed; allowed: 1, 2, 4, 8"]),
    "TP larger than a node": ({"serving": {"mode": "disagg", "image": EFA_IMAGE, "decode": {"tp": 8, "replicas": 1}}},
                              ["serving.decode.tp: 8 is more than the 4 GPUs of one g6e.12xlarge"]),
    "replicas x TP larger than the group": ({"serving": {"agg": {"tp": 4, "replicas": 5}}},
                                            ["serving.agg: 5 replicas x TP4 = 20 GPUs, more than the 16 GPUs"]),
    "EKS version": ({"kubernetesVersion": "1.27"}, ["kubernetesVersion: '1.27' is not supported; allowed: 1.31, 1.32"]),
    "CIDR does not parse": ({"publicAccessCidrs": ["10.0.0.300/32"]}, ["publicAccessCidrs[0]: '10.0.0.300/32'"]),
    "VPC CIDR with host bits": ({"vpcCidr": "10.42.0.1/16"}, ["vpcCidr: '10.42.0.1/16' is not an IPv4 CIDR"]),
    "GPU zone outside the zones": ({"gpuAvailabilityZone": "us-east-1f"}, ["gpuAvailabilityZone: 'us-east-1f'"]),
    "zone of another region": ({"availabilityZones": ["us-west-2a", "us-east-1a"]},
                               ["availabilityZones[0]: 'us-west-2a' is not a zone of region 'us-east-1'"]),
    "one zone only": ({"availabilityZones": ["us-east-1a"]}, ["fewer than 2 distinct zones"]),
    "GPU disk too small": ({"nodeGroups": {"prefill": {"diskGib": 50}}}, ["nodeGroups.prefill.diskGib: 50 GiB is too small"]),
    "retention not a duration": ({"monitoring": {"retention": "forever"}}, ["monitoring.retention: 'forever'"]),
    "chart major outside 65.x": ({"versions": {"kubePrometheusStack": "66.1.0"}}, ["versions.kubePrometheusStack: '66.1.0'"]),
    "bool as string": ({"results": {"retainBucketOnDestroy": "yes"}},
                       ["results.retainBucketOnDestroy: 'yes'", "true or false"]),
    "model id": ({"model": {"id": "just-a-name"}}, ["model.id: 'just-a-name'"]),
    "model id that climbs out of the store": ({"model": {"id": "../.."}},
                                              ["model.id: '../..' is not a Hugging Face repo id"]),
    "model id with a dot at its edge": ({"model": {"id": "org/.hidden"}}, ["model.id: 'org/.hidden'"]),
    "model id too long": ({"model": {"id": "org/" + "x" * 93}}, ["at most 96 characters"]),
    "revision with '..'": ({"model": {"revision": "main/../x"}}, ["model.revision: 'main/../x' is not a branch"]),
    "revision with a space": ({"model": {"revision": "my branch"}}, ["model.revision: 'my branch'"]),
    "CIDRs that together cover the internet": (
        {"publicAccessCidrs": ["0.0.0.0/1", "128.0.0.0/1"]},
        ["publicAccessCidrs: ['0.0.0.0/1', '128.0.0.0/1'] together open the EKS API to the whole internet"]),
    "KV disk tier larger than the node's disk": (
        {"serving": {"mode": "disagg", "image": EFA_IMAGE, "kvOffload": {"diskCacheGib": 4000}}},
        ["serving.kvOffload.diskCacheGib: 4000 GiB x 2 prefill workers per node exceeds the 6504 GiB"]),
    "mapping expected": ({"serving": "agg"}, ["benchlab:serving: 'agg'", "a mapping"]),
    "router mode": ({"serving": {"routerMode": "least-loaded"}},
                    ["serving.routerMode: 'least-loaded'", "'kv' | 'round-robin' | 'random'"]),
    "fewer batched tokens than sequences": (
        {"serving": {"decode": {"tp": 2, "replicas": 4, "maxNumSeqs": 512, "maxNumBatchedTokens": 256}}},
        ["serving.decode.maxNumBatchedTokens: 256 is less than benchlab:serving.decode.maxNumSeqs (512)"]),
    "no sequences": ({"serving": {"agg": {"tp": 4, "replicas": 4, "maxNumSeqs": 0}}},
                     ["serving.agg.maxNumSeqs: 0 must be at least 1"]),
    "disagg over EFA on the stock image": (
        {"serving": {"mode": "disagg"}},
        ["serving.image: disagg over EFA needs libfabric", "vllm-runtime:0.9.1 has none",
         "or serving.kvTransport: tcp"]),
    "serving image not a tagged reference": ({"serving": {"image": "my image"}},
                                             ["serving.image: 'my image' is not a tagged image reference"]),
    "benchmark parameter": ({"bench": {"concurrencySweep": {"concurrency": [0, 4]}}},
                            ["bench.concurrencySweep.concurrency"]),
}


@pytest.mark.parametrize("raw, expected", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config_is_rejected_with_a_clear_message(raw, expected):
    with pytest.raises(config.ConfigError) as err:
        config.parse(raw)
    for fragment in expected:
        assert fragment in str(err.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(config.ConfigError) as err:
        config.parse({"kubernetesVersion": "1.20", "serving": {"mode": "x"}, "typo": 1})
    assert len(err.value.problems) == 3


def test_gpu_facts_cover_the_default_lab():
    p4d, g6e = INSTANCE_FACTS["p4d.24xlarge"], INSTANCE_FACTS["g6e.12xlarge"]
    assert (p4d.gpus, p4d.gpu_model[:4], p4d.efa_interfaces) == (8, "A100", 4)
    assert (g6e.gpus, g6e.gpu_model, g6e.efa_interfaces) == (4, "L40S", 1)


def test_bad_config_registers_no_resource(dev_config):
    good = offline.run_program(dev_config)
    assert good.resources, "the same run with a good config registers the lab"
    recording = offline.Recording()
    with pytest.raises(config.ConfigError, match="serving.mode"):
        offline.run_program({**dev_config, "serving": {"mode": "both"}}, recording=recording)
    assert recording.resources == {}


def test_hf_token_must_be_set_as_secret(dev_config):
    with pytest.raises(config.ConfigError, match="hfToken: is a secret; set it with `pulumi config set --secret hfToken`"):
        offline.run_program({**dev_config, "hfToken": "hf_plain"})


@pytest.mark.parametrize("stack_file", sorted(p.name for p in REPO.glob("Pulumi.*.yaml")))
def test_every_stack_file_is_valid_and_builds_the_lab(stack_file):
    raw = offline.stack_config(str(REPO / stack_file))
    cfg = config.parse(raw)
    recording = offline.run_program(raw, stack=stack_file.split(".")[1])
    assert recording.of_type("kubernetes:nvidia.com/v1alpha1:DynamoGraphDeployment")
    assert cfg.node_groups.prefill.instance_type in {
        r.plain_inputs()["instanceTypes"][0] for r in recording.of_type("eks:index:ManagedNodeGroup")}


def test_bench_values_share_the_config_parser_and_are_all_reported():
    with pytest.raises(config.ConfigError) as err:
        config.parse({"bench": {"concurrencySweep": {"concurrency": [0], "isl": "long"},
                                "multiTurn": {"turns": 1000}}})
    assert len(err.value.problems) == 3
    assert [p.split(":")[1] for p in err.value.problems] == [
        "bench.concurrencySweep.concurrency", "bench.concurrencySweep.isl", "bench.multiTurn.turns"]


def test_the_gpu_lease_must_outlast_one_run_and_the_grace_may_be_zero():
    assert config.parse({"gpuRelease": {"graceMinutes": 0, "leaseHours": 6}}).gpu_release.grace_minutes == 0
    with pytest.raises(config.ConfigError) as err:
        config.parse({"gpuRelease": {"graceMinutes": -1, "leaseHours": 1}})
    text = str(err.value)
    assert "benchlab:gpuRelease.graceMinutes: -1" in text
    # one run's waits (tests/test_gpu_lease.py) -> at least 6 h
    assert "benchlab:gpuRelease.leaseHours: 1 h would release the GPUs during a slow but healthy run" in text
    assert "at least 6" in text


# --- what lands on a system node, the image lock, the AIPerf lock ------------------------------
def problems_of(raw: dict) -> list[str]:
    with pytest.raises(config.ConfigError) as err:
        config.parse(raw)
    return err.value.problems


def test_a_system_disk_too_small_for_the_frontends_image_is_rejected_naming_the_key():
    smallest = config.MIN_SYSTEM_DISK_GIB
    # the frontend's vllm-runtime pull alone fills the 50 GiB the smoke stack had
    assert config.SYSTEM_DISK_NEEDS_GIB["vllm-runtime pull (frontend)"] >= 50 and smallest > 50
    system = {"instanceType": "m7i.2xlarge", "count": 2}
    config.parse({"nodeGroups": {"system": {**system, "diskGib": smallest}}})
    (problem,) = problems_of({"nodeGroups": {"system": {**system, "diskGib": 50}}})
    assert problem.startswith("benchlab:nodeGroups.system.diskGib: 50 GiB is too small; "
                              f"at least {smallest} GiB (vllm-runtime pull (frontend) 50 GiB")


def test_image_digests_are_validated_and_every_bad_one_reported():
    good = {"docker.io/library/python:3.11-slim-bookworm": "sha256:" + "0" * 64,
            "nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.9.1": "sha256:" + "f" * 64}
    assert config.parse({"imageDigests": good}).image_digests == good
    problems = problems_of({"imageDigests": {
        "docker.io/library/python:3.11-slim-bookworm": "sha256:ABC",
        "nvcr.io/nvidia/ai-dynamo/vllm-runtime": "sha256:" + "1" * 64,
        "nvcr.io/x/y:1": "md5:" + "1" * 32}})
    assert problems == [
        "benchlab:imageDigests['docker.io/library/python:3.11-slim-bookworm']: 'sha256:ABC' is not "
        "an image digest; expected sha256: and 64 lowercase hex digits (`benchlab lock-images` writes them)",
        "benchlab:imageDigests['nvcr.io/nvidia/ai-dynamo/vllm-runtime']: not a tagged image reference "
        "(registry/repository:tag, e.g. docker.io/library/python:3.11-slim-bookworm)",
        f"benchlab:imageDigests['nvcr.io/x/y:1']: 'md5:{'1' * 32}' is not an image digest; expected "
        "sha256: and 64 lowercase hex digits (`benchlab lock-images` writes them)"]
    assert problems_of({"imageDigests": ["sha256:" + "0" * 64]}) == [
        f"benchlab:imageDigests: {['sha256:' + '0' * 64]!r} is not allowed; expected a mapping of str to str"]


def test_the_deployed_image_is_by_digest_only_when_the_lock_has_its_tag():
    digest = "sha256:" + "c" * 64
    cfg = config.parse({"imageDigests": {"nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.9.1": digest}})
    assert cfg.deployed_image("serving") == f"nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.9.1@{digest}"
    assert cfg.deployed_image("client") == "docker.io/library/python:3.11-slim-bookworm"
    # a new Dynamo version is a new tag: the old digest does not follow it
    bumped = config.parse({"imageDigests": cfg.image_digests, "versions": {"dynamo": "0.9.2"}})
    assert bumped.deployed_image("serving") == "nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.9.2"


def test_an_aiperf_version_other_than_the_jobs_lock_is_rejected():
    (problem,) = problems_of({"versions": {"aiperf": "0.13.0"}})
    assert problem.startswith("benchlab:versions.aiperf: '0.13.0' is not the AIPerf the benchmark "
                              "Jobs install; allowed: '0.9.0' (the hash lock facts/locks/aiperf.lock.txt")


def test_the_serving_image_runs_frontend_and_workers_and_is_locked_like_the_others():
    cfg = config.parse({"serving": {"mode": "disagg", "image": EFA_IMAGE}})
    assert cfg.images()["serving"] == EFA_IMAGE and not cfg.stock_serving_image()
    assert cfg.deployed_image("serving") == EFA_IMAGE  # by digest once `benchlab lock-images` ran
    digest = "sha256:" + "a" * 64
    locked = config.parse({"serving": {"image": EFA_IMAGE}, "imageDigests": {EFA_IMAGE: digest}})
    assert locked.deployed_image("serving").endswith("@" + digest)
    # agg and disagg over TCP need no libfabric: the stock image stays theirs
    assert config.parse({}).stock_serving_image()
    assert config.parse({"serving": {"mode": "disagg", "kvTransport": "tcp"}}).stock_serving_image()


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/1", "feature/kv-offload", "0" * 40])
def test_a_branch_tag_or_commit_is_a_revision(revision):
    assert config.parse({"publicAccessCidrs": ["93.184.216.0/24"], "model": {"revision": revision}}).model.revision == revision


def test_cidrs_that_leave_any_address_out_do_not_count_as_the_whole_internet():
    assert not config.is_open_to_internet(["0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/3", "224.0.0.0/4"])
    assert config.is_open_to_internet(["0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/2"])
