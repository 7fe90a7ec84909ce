"""Who can reach the cluster, and what it records: the EKS API is closed unless the user lists
their CIDRs (a /0 only with the documented override), named IAM principals become cluster admins
(access entries), and the control plane logs api/audit/authenticator with a set retention."""
from __future__ import annotations

import pytest

from cli import offline
from stacks import config
from tests.conftest import REPO

EKS = "eks:index:Cluster"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
DEV = offline.stack_config(str(REPO / "Pulumi.dev.yaml"))
ADMINS = ["arn:aws:iam::123456789012:role/ci-deployer", "arn:aws:iam::123456789012:user/alice"]


@pytest.fixture(scope="module")
def dev():
    return offline.run_program(DEV)


@pytest.fixture(scope="module")
def configured():
    """The dev stack with every access setting away from its default."""
    return offline.run_program({**DEV, "clusterAccess": {"admins": ADMINS, "nodeSsmSessions": True},
                                "controlPlaneLogs": {"retentionDays": 90}})


def problems(raw: dict) -> list[str]:
    with pytest.raises(config.ConfigError) as err:
        config.parse(raw)
    return err.value.problems


# --- publicAccessCidrs (issue 17.2) -------------------------------------------------------
def test_no_default_cidr_opens_the_api():
    assert config.StackConfig().public_access_cidrs == ()


def test_the_program_requires_public_access_cidrs_before_any_resource():
    recording = offline.Recording()
    without = {k: v for k, v in DEV.items() if k != "publicAccessCidrs"}
    with pytest.raises(config.ConfigError) as err:
        offline.run_program(without, recording=recording)
    assert any(p.startswith("benchlab:publicAccessCidrs: required, no default") for p in err.value.problems)
    assert recording.resources == {}


def test_a_slash_zero_is_rejected_without_the_override():
    found = problems({"publicAccessCidrs": ["93.184.216.34/32", "0.0.0.0/0"]})
    assert len(found) == 1
    assert found[0].startswith("benchlab:publicAccessCidrs: ['93.184.216.34/32', '0.0.0.0/0'] together open") and "clusterAccess.allowApiFromAnywhere" in found[0]


def test_the_override_admits_a_slash_zero_knowingly():
    cfg = config.parse({"publicAccessCidrs": ["0.0.0.0/0"],
                        "clusterAccess": {"allowApiFromAnywhere": True}})
    assert cfg.public_access_cidrs == ("0.0.0.0/0",)


@pytest.mark.parametrize("stack_file", sorted(p.name for p in REPO.glob("Pulumi.*.yaml")))
def test_shipped_stack_files_do_not_open_the_api(stack_file):
    values = offline.stack_config(str(REPO / stack_file))
    assert values.get("publicAccessCidrs"), f"{stack_file} must carry a publicAccessCidrs placeholder"
    assert not config.is_open_to_internet(values["publicAccessCidrs"])
    assert not values.get("clusterAccess", {}).get("allowApiFromAnywhere")


# --- validation fails closed (issue 24.1) ---------------------------------------------------
@pytest.mark.parametrize("stack_file", sorted(p.name for p in REPO.glob("Pulumi.*.yaml")))
def test_pulumi_up_refuses_a_shipped_stack_file_as_it_stands_before_any_resource(stack_file):
    as_written = offline.stack_config(str(REPO / stack_file), test_cidr=False)
    recording = offline.Recording()
    with pytest.raises(config.ConfigError) as err:
        offline.run_program(as_written, stack=stack_file.split(".")[1], recording=recording)
    placeholder = as_written["publicAccessCidrs"][0]
    assert [p for p in err.value.problems if p.startswith(f"benchlab:publicAccessCidrs[0]: {placeholder!r}")
            and "documentation range (RFC 5737)" in p]
    assert recording.resources == {}


@pytest.mark.parametrize("cidr, why", [
    ("203.0.113.0/24", "documentation range"), ("198.51.100.7/32", "documentation range"),
    ("192.0.2.0/24", "documentation range"), ("192.168.1.10/32", "private use"),
    ("10.0.0.0/8", "private use"), ("172.20.0.0/16", "private use"),
    ("100.64.12.7/32", "shared address space"), ("127.0.0.1/32", "loopback"),
    ("169.254.169.254/32", "link local"), ("198.18.4.7/32", "benchmarking"),
])
def test_a_cidr_nobody_on_the_internet_comes_from_is_refused(cidr, why):
    found = problems({"publicAccessCidrs": ["93.184.216.34/32", cidr]})
    assert len(found) == 1 and found[0].startswith(f"benchlab:publicAccessCidrs[1]: {cidr!r} is in ")
    assert why in found[0] and "checkip.amazonaws.com" in found[0]


def test_a_public_cidr_is_admitted():
    assert config.parse({"publicAccessCidrs": ["93.184.216.34/32", "8.8.0.0/16"]}).public_access_cidrs == (
        "93.184.216.34/32", "8.8.0.0/16")


def test_offline_runs_put_the_test_cidr_in_the_placeholder_s_place_only():
    written = offline.stack_config(str(REPO / "Pulumi.dev.yaml"), test_cidr=False)
    assert written["publicAccessCidrs"] == ["203.0.113.0/24"]
    assert DEV["publicAccessCidrs"] == ["1.2.3.4/32"] == [offline.TEST_PUBLIC_ACCESS_CIDR]
    own = {**written, "publicAccessCidrs": ["93.184.216.34/32", "203.0.113.0/24"]}
    assert offline.with_test_cidr(own)["publicAccessCidrs"] == ["93.184.216.34/32", "1.2.3.4/32"]
    mine = {**written, "publicAccessCidrs": ["93.184.216.34/32"]}
    assert offline.with_test_cidr(mine) == mine


# Configs that preflight fails without any AWS call: `pulumi up` must refuse each before any
# resource (preflight alone stricter: a /0 admitted by clusterAccess.allowApiFromAnywhere).
CONFIG_ONLY_FAILURES = {
    "placeholder CIDR": {"publicAccessCidrs": ["203.0.113.0/24"]},
    "private CIDR": {"publicAccessCidrs": ["192.168.1.10/32"]},
    "no CIDR": {"publicAccessCidrs": []},
    "a pod fits no node": {"nodeGroups": {"system": {"instanceType": "m5.xlarge", "count": 2, "diskGib": 80}}},
}


@pytest.mark.parametrize("name", sorted(CONFIG_ONLY_FAILURES))
def test_what_preflight_fails_from_the_config_alone_pulumi_up_refuses_before_any_resource(name):
    from cli import preflight

    overrides = CONFIG_ONLY_FAILURES[name]
    cfg, _ = config.validate({**DEV, **overrides})
    assert [c for c in preflight.local_checks(cfg) if c.status == "fail" and c.name != "AWS CLI v2"]
    recording = offline.Recording()
    with pytest.raises(config.ConfigError):
        offline.run_program({**DEV, **overrides}, recording=recording)
    assert recording.resources == {}


# --- cluster admins (issue 9.4) -----------------------------------------------------------
def test_cluster_admins_become_cluster_admin_access_entries(configured):
    entries = configured.one(EKS).plain_inputs()["accessEntries"]
    assert sorted(e["principalArn"] for e in entries.values()) == sorted(ADMINS)
    for entry in entries.values():
        (policy,) = entry["accessPolicies"].values()
        assert policy["policyArn"] == "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
        assert policy["accessScope"] == {"type": "cluster"}


def test_access_entries_do_not_depend_on_the_list_order(configured):
    reordered = offline.run_program({**DEV, "clusterAccess": {"admins": ADMINS[::-1], "nodeSsmSessions": True},
                                     "controlPlaneLogs": {"retentionDays": 90}})
    assert (reordered.one(EKS).plain_inputs()["accessEntries"]
            == configured.one(EKS).plain_inputs()["accessEntries"])


def test_no_cluster_admins_no_access_entries(dev):
    inputs = dev.one(EKS).plain_inputs()
    assert not inputs.get("accessEntries")


@pytest.mark.parametrize("arn", ["arn:aws:sts::123456789012:assumed-role/ci/session",
                                 "arn:aws:iam::123456789012:group/admins", "alice"])
def test_cluster_admins_must_be_iam_role_or_user_arns(arn):
    found = problems({"clusterAccess": {"admins": ["arn:aws:iam::123456789012:role/ok", arn]}})
    assert len(found) == 1 and found[0].startswith("benchlab:clusterAccess.admins[1]: ")


# --- control-plane logging (issue 17.8) ---------------------------------------------------
def test_control_plane_logs_api_audit_authenticator_with_configured_retention(configured):
    rec = configured
    cluster = rec.one(EKS)
    assert sorted(cluster.plain_inputs()["enabledClusterLogTypes"]) == ["api", "audit", "authenticator"]
    group = rec.one(LOG_GROUP, "benchlab-dev-control-plane")
    assert group.plain_inputs()["name"] == "/aws/eks/benchlab-dev/cluster"
    assert group.plain_inputs()["retentionInDays"] == 90
    # Made before the cluster, or EKS creates the group itself, with no retention.
    assert rec.waits_for(cluster, group)


def test_log_retention_must_be_one_cloudwatch_offers():
    found = problems({"controlPlaneLogs": {"retentionDays": 10}})
    assert len(found) == 1 and found[0].startswith("benchlab:controlPlaneLogs.retentionDays: 10 ")


# --- no pod reaches the node role (issue 17.1) ---------------------------------------------
TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
MNG = "eks:index:ManagedNodeGroup"


def node_policies(rec: offline.Recording) -> set[str]:
    return {r.plain_inputs()["policyArn"].rsplit("/", 1)[1] for r in rec.of_type(ATTACHMENT)
            if r.name.startswith("benchlab-dev-node-")}


def test_imds_is_one_hop_away_so_pods_cannot_reach_it(dev):
    templates = dev.of_type(TEMPLATE)
    assert len(templates) == 3
    for template in templates:
        options = template.plain_inputs()["metadataOptions"]
        assert options["httpTokens"] == "required" and options["httpPutResponseHopLimit"] == 1


def test_node_role_has_no_ssm_or_cni_policy_unless_ssm_is_asked_for(dev, configured):
    assert node_policies(dev) == {"AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryReadOnly"}
    assert node_policies(configured) == {"AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryReadOnly",
                                       "AmazonSSMManagedInstanceCore"}


def test_vpc_cni_runs_with_its_own_irsa_role_installed_before_any_node(dev):
    import json

    addon = dev.one("aws:eks/addon:Addon", "benchlab-dev-vpc-cni")
    inputs = addon.plain_inputs()
    assert inputs["addonName"] == "vpc-cni"
    role = dev.one("aws:iam/role:Role", "benchlab-dev-vpc-cni")
    assert inputs["serviceAccountRoleArn"] == "arn:aws:iam::123456789012:role/benchlab-dev-vpc-cni"
    condition = json.loads(role.plain_inputs()["assumeRolePolicy"])["Statement"][0]["Condition"]
    assert "system:serviceaccount:kube-system:aws-node" in condition["StringEquals"].values()
    policy = dev.one(ATTACHMENT, "benchlab-dev-vpc-cni").plain_inputs()["policyArn"]
    assert policy == "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy"
    for group in dev.of_type(MNG):
        assert dev.waits_for(group, addon)
