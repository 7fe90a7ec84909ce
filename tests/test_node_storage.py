"""GPU nodes keep image layers and emptyDirs (the KVBM disk tier) on their NVMe instance store
(nodeadm's localStorage RAID0 in the launch template's user data), every root volume states its
gp3 performance, and the KVBM disk tier is validated against the disk it lands on."""
from __future__ import annotations

import base64
import email

import pytest
import yaml

from cli import offline
from components import node_groups
from facts.instances import INSTANCE_FACTS
from facts.node_capacity import NODE_LIMITS, ephemeral_disk_gib
from stacks import config
from tests.conftest import EFA_IMAGE, REPO

TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
DEV = offline.stack_config(str(REPO / "Pulumi.dev.yaml"))


def template(rec: offline.Recording, role: str) -> dict:
    return rec.one(TEMPLATE, f"benchlab-dev-{role}").plain_inputs()


def node_config(user_data: str) -> dict:
    """The NodeConfig part of a launch template's MIME multi-part user data."""
    message = email.message_from_bytes(base64.b64decode(user_data))
    assert message.is_multipart()
    [part] = [p for p in message.walk() if p.get_content_type() == "application/node.eks.aws"]
    return yaml.safe_load(part.get_payload())


@pytest.fixture(scope="module")
def dev():
    return offline.run_program(DEV)


def test_every_known_type_has_node_limits():
    assert set(NODE_LIMITS) == set(INSTANCE_FACTS)


def test_gpu_types_have_instance_store_and_cpu_types_do_not():
    for name, node in INSTANCE_FACTS.items():
        assert (NODE_LIMITS[name].instance_store_gb > 0) == bool(node.gpus), name


@pytest.mark.parametrize("role", ["prefill", "decode"])
def test_gpu_nodes_put_kubelet_and_containerd_on_the_instance_store(dev, role):
    doc = node_config(template(dev, role)["userData"])
    assert doc["apiVersion"] == "node.eks.aws/v1alpha1" and doc["kind"] == "NodeConfig"
    assert doc["spec"]["instance"]["localStorage"] == {"strategy": "RAID0"}


def test_system_nodes_without_instance_store_get_no_user_data(dev):
    assert "userData" not in template(dev, "system")


def test_root_volume_performance_is_explicit(dev):
    for role in ("system", "prefill", "decode"):
        [mapping] = template(dev, role)["blockDeviceMappings"]
        assert {"iops", "throughput"} <= set(mapping["ebs"]), role
    for profile in (node_groups.GP3_BASELINE, node_groups.GP3_IMAGE_DISK):
        assert profile["throughput"] <= profile["iops"] / 4  # gp3: at most 0.25 MiB/s per IOPS


def test_kvbm_disk_tier_fits_the_instance_store_not_the_root_volume():
    # p4d: 8 x 1000 GB NVMe = 7450 GiB; 2 TP4 prefill workers per node; 200 GiB stay for images
    disk = ephemeral_disk_gib("p4d.24xlarge", 500)
    assert round(disk) == 7451
    fits = {"serving": {"mode": "disagg", "image": EFA_IMAGE, "kvOffload": {"diskCacheGib": 2000}}}
    assert config.parse(fits).serving.kv_offload.disk_cache_gib == 2000  # > the 500 GiB root volume
    with pytest.raises(config.ConfigError) as err:
        config.parse({"serving": {"kvOffload": {"diskCacheGib": 4000}}})
    [problem] = err.value.problems
    assert problem.startswith("benchlab:serving.kvOffload.diskCacheGib: 4000 GiB x 2 prefill workers")
    assert "instance store" in problem
