"""The AWS layer, as the whole mocked program registers it: the inputs of every AWS resource
that matters, and the order Pulumi will create them in (the recorded dependency graph)."""
from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

import pytest

from components import cluster as cluster_component
from components import node_groups, results_bucket
from components.network import subnet_cidrs
from cli import offline
from facts.instances import INSTANCE_FACTS
from tests.conftest import EFA_IMAGE

EKS = "eks:index:Cluster"
MNG = "eks:index:ManagedNodeGroup"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
SUBNET = "aws:ec2/subnet:Subnet"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
ADDON = "aws:eks/addon:Addon"
STORAGE_CLASS = "kubernetes:storage.k8s.io/v1:StorageClass"
ROLE = "aws:iam/role:Role"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"
K8S_PROVIDER = "pulumi:providers:kubernetes"
AWS_PROVIDER = "pulumi:providers:aws"
BUCKET = "aws:s3/bucket:Bucket"
PREFIX = "benchlab-dev"
DEV_STACK = Path(__file__).resolve().parent.parent / "Pulumi.dev.yaml"


def run(**overrides) -> offline.Recording:
    return offline.run_program({**offline.stack_config(str(DEV_STACK)), **overrides})


@pytest.fixture(scope="module")
def rec() -> offline.Recording:
    """The dev stack (agg serving), run once for the module."""
    return run()


@pytest.fixture(scope="module")
def disagg() -> offline.Recording:
    return run(serving={"mode": "disagg", "image": EFA_IMAGE})


def node_group(rec: offline.Recording, role: str) -> offline.Resource:
    return rec.one(MNG, f"{PREFIX}-{role}")


def template_of(rec: offline.Recording, role: str) -> dict:
    return rec.one(LAUNCH_TEMPLATE, f"{PREFIX}-{role}").plain_inputs()


def sg_id(name: str) -> str:
    return f"sg-{name}"  # the mocked id of security group `name` (cli/offline.py)


# --- the cluster ---------------------------------------------------------------------------
def test_cluster_is_eks_132_with_oidc_api_auth_and_restricted_endpoints(rec):
    cluster = rec.one(EKS, PREFIX)
    inputs = cluster.plain_inputs()
    assert inputs["name"] == PREFIX and inputs["version"] == "1.32"
    assert inputs["skipDefaultNodeGroup"] is True
    assert inputs["createOidcProvider"] is True
    assert inputs["authenticationMode"] == "API"
    assert inputs["endpointPrivateAccess"] is True and inputs["endpointPublicAccess"] is True
    # Pulumi.dev.yaml's placeholder, which validation refuses: the offline harness's test CIDR
    assert inputs["publicAccessCidrs"] == [offline.TEST_PUBLIC_ACCESS_CIDR]
    # the cluster's network interfaces in their own subnets, which no pod or node shares
    assert sorted(inputs["subnetIds"]) == sorted(
        f"subnet-{PREFIX}-control-plane-{z}" for z in ("us-east-1a", "us-east-1b"))
    assert "privateSubnetIds" not in inputs and "publicSubnetIds" not in inputs


def test_public_endpoint_follows_config():
    inputs = run(publicAccessCidrs=["93.184.216.34/32"]).one(EKS, PREFIX).plain_inputs()
    assert inputs["publicAccessCidrs"] == ["93.184.216.34/32"]


# --- tags ----------------------------------------------------------------------------------
def test_every_aws_resource_uses_the_tagged_provider(rec):
    provider = rec.one(AWS_PROVIDER, "aws")
    # provider inputs travel JSON-encoded
    assert json.loads(provider.plain_inputs()["defaultTags"])["tags"] == {
        "project": "benchlab", "stack": "dev", "owner": "ml-infra"}
    aws_resources = [r for r in rec.resources.values() if r.type.startswith("aws:")]
    assert len(aws_resources) > 40
    for res in aws_resources:
        assert res.provider.rsplit("::", 1)[0] == provider.urn, res.urn
    # pulumi-eks components create their AWS resources with the provider they are handed.
    for res in rec.of_type(EKS) + rec.of_type(MNG):
        assert res.options["providers"]["aws"].rsplit("::", 1)[0] == provider.urn, res.urn
        assert res.plain_inputs()["tags"]["owner"] == "ml-infra"


def test_instances_and_their_volumes_are_tagged(rec):
    for role in ("system", "prefill", "decode"):
        specs = {s["resourceType"]: s["tags"] for s in template_of(rec, role)["tagSpecifications"]}
        assert set(specs) == {"instance", "volume", "network-interface"}
        for tags in specs.values():
            assert {"project": "benchlab", "stack": "dev", "owner": "ml-infra"}.items() <= tags.items()


# --- the network ---------------------------------------------------------------------------
def test_vpc_has_public_and_private_subnets_in_each_zone_with_load_balancer_tags(rec):
    assert rec.one("aws:ec2/vpc:Vpc", f"{PREFIX}-vpc").plain_inputs()["cidrBlock"] == "10.42.0.0/16"
    subnets = {r.name: r.plain_inputs() for r in rec.of_type(SUBNET)}
    assert len(subnets) == 8  # public, private, control plane, AWS endpoints; per zone
    for zone in ("us-east-1a", "us-east-1b"):
        public, private = subnets[f"{PREFIX}-public-{zone}"], subnets[f"{PREFIX}-private-{zone}"]
        assert public["availabilityZone"] == private["availabilityZone"] == zone
        assert public["tags"]["kubernetes.io/role/elb"] == "1"
        assert private["tags"]["kubernetes.io/role/internal-elb"] == "1"
        assert public.get("mapPublicIpOnLaunch") is False


def test_private_subnets_route_through_a_nat_in_a_public_subnet(rec):
    nat = rec.one("aws:ec2/natGateway:NatGateway").plain_inputs()
    assert nat["subnetId"] == f"subnet-{PREFIX}-public-us-east-1a"
    routes = {r.name: r.plain_inputs()["routes"] for r in rec.of_type("aws:ec2/routeTable:RouteTable")}
    assert routes[f"{PREFIX}-private"] == [{"cidrBlock": "0.0.0.0/0", "natGatewayId": f"{PREFIX}-nat-id"}]
    assert routes[f"{PREFIX}-public"][0]["gatewayId"] == f"{PREFIX}-igw-id"
    private_rt = rec.one("aws:ec2/routeTable:RouteTable", f"{PREFIX}-private").urn
    associations = rec.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
    associated = {r.plain_inputs()["subnetId"] for r in associations if private_rt in r.dependencies}
    assert associated == {f"subnet-{PREFIX}-private-us-east-1a", f"subnet-{PREFIX}-private-us-east-1b"}


@pytest.mark.parametrize("cidr, zones", [("10.42.0.0/16", 2), ("10.0.0.0/16", 3), ("172.16.0.0/20", 4)])
def test_subnet_cidrs_are_disjoint_and_inside_the_vpc(cidr, zones):
    plan = subnet_cidrs(cidr, zones)
    nets = [ipaddress.IPv4Network(c) for c in plan.private + plan.public + plan.control_plane + plan.endpoints]
    assert len(nets) == 4 * zones
    assert all(ipaddress.IPv4Network(c).prefixlen == 28 for c in plan.control_plane + plan.endpoints)
    assert all(n.subnet_of(ipaddress.IPv4Network(cidr)) for n in nets)
    assert all(not a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1:])


# --- the node groups -----------------------------------------------------------------------
def test_node_groups_instance_types_ami_types_and_sizes(rec, disagg):
    expected = {"system": ("m7i.2xlarge", "AL2023_x86_64_STANDARD", 2, 2),
                "prefill": ("p4d.24xlarge", "AL2023_x86_64_NVIDIA", 2, 2),
                # agg leaves the decode GPUs idle: 0 nodes, but room for 4 without replacement
                "decode": ("g6e.12xlarge", "AL2023_x86_64_NVIDIA", 0, 4)}
    for role, (instance_type, ami, desired, maximum) in expected.items():
        inputs = node_group(rec, role).plain_inputs()
        assert inputs["instanceTypes"] == [instance_type]
        assert inputs["amiType"] == ami
        assert inputs["version"] == "1.32"
        scaling = inputs["scalingConfig"]
        assert (scaling["desiredSize"], scaling["maxSize"]) == (desired, maximum)
        assert scaling["minSize"] <= desired
    assert node_group(disagg, "decode").plain_inputs()["scalingConfig"]["desiredSize"] == 4
    # the same group (same name) in both modes: switching mode only resizes it
    assert (node_group(disagg, "decode").plain_inputs()["nodeGroupName"]
            == node_group(rec, "decode").plain_inputs()["nodeGroupName"])


def test_gpu_groups_are_tainted_and_labelled_by_role_and_group(rec):
    for role in ("prefill", "decode"):
        inputs = node_group(rec, role).plain_inputs()
        assert inputs["taints"] == [{"key": "nvidia.com/gpu", "value": "true", "effect": "NO_SCHEDULE"}]
        assert inputs["labels"] == {cluster_component.ROLE_LABEL: role,
                                    cluster_component.NODE_GROUP_LABEL: inputs["nodeGroupName"]}
    system = node_group(rec, "system").plain_inputs()
    assert "taints" not in system
    assert system["labels"][cluster_component.ROLE_LABEL] == "system"


def test_gpu_groups_are_pinned_to_the_gpu_zone_and_system_nodes_span_every_zone(rec):
    for role in ("prefill", "decode"):
        assert node_group(rec, role).plain_inputs()["subnetIds"] == [f"subnet-{PREFIX}-private-us-east-1a"]
    assert sorted(node_group(rec, "system").plain_inputs()["subnetIds"]) == [
        f"subnet-{PREFIX}-private-us-east-1a", f"subnet-{PREFIX}-private-us-east-1b"]
    other_zone = run(gpuAvailabilityZone="us-east-1b")
    assert node_group(other_zone, "prefill").plain_inputs()["subnetIds"] == [
        f"subnet-{PREFIX}-private-us-east-1b"]


@pytest.mark.parametrize("role, instance_type", [("prefill", "p4d.24xlarge"), ("decode", "g6e.12xlarge")])
def test_gpu_launch_templates_have_one_efa_interface_per_efa_card(rec, role, instance_type):
    interfaces = template_of(rec, role)["networkInterfaces"]
    assert len(interfaces) == INSTANCE_FACTS[instance_type].efa_interfaces
    assert [i["networkCardIndex"] for i in interfaces] == list(range(len(interfaces)))
    assert interfaces[0]["deviceIndex"] == 0 and interfaces[0]["interfaceType"] == "efa"
    for secondary in interfaces[1:]:
        assert (secondary["deviceIndex"], secondary["interfaceType"]) == (1, "efa-only")
    for interface in interfaces:
        # EKS adds no security group when the template names them: the cluster's must be there
        assert interface["securityGroups"] == [f"sg-{PREFIX}-cluster", sg_id(f"{PREFIX}-gpu")]


def test_each_gpu_role_has_its_own_cluster_placement_group_and_system_nodes_none(rec):
    groups = {g.name: g for g in rec.of_type("aws:ec2/placementGroup:PlacementGroup")}
    assert sorted(groups) == [f"{PREFIX}-decode", f"{PREFIX}-prefill"]
    for role in ("prefill", "decode"):
        assert groups[f"{PREFIX}-{role}"].plain_inputs()["strategy"] == "cluster"
        assert template_of(rec, role)["placement"] == {"groupName": f"{PREFIX}-{role}"}
    system = template_of(rec, "system")
    assert "placement" not in system and "networkInterfaces" not in system
    assert system["vpcSecurityGroupIds"] == [f"sg-{PREFIX}-cluster", sg_id(f"{PREFIX}-system")]


def test_a_gpu_role_without_efa_gets_no_placement_group():
    no_efa = node_groups.NodeGroupSpec("decode", "g6e.12xlarge", 1, 1, 500, True, 0, [], ("us-east-1a",))
    assert node_groups.placement_roles((prefill_spec(), no_efa)) == ["prefill"]


def test_root_volumes_are_encrypted_gp3_of_the_configured_size(rec):
    for role, size in (("system", 100), ("prefill", 500), ("decode", 500)):
        [mapping] = template_of(rec, role)["blockDeviceMappings"]
        assert mapping["deviceName"] == "/dev/xvda"
        assert mapping["ebs"] == {"volumeSize": size, "volumeType": "gp3", "encrypted": "true",
                                  "deleteOnTermination": "true", "iops": 3000, "throughput": 125}
    bigger = run(nodeGroups={"prefill": {"instanceType": "p4d.24xlarge", "count": 2, "diskGib": 900}})
    assert template_of(bigger, "prefill")["blockDeviceMappings"][0]["ebs"]["volumeSize"] == 900


def test_node_role_has_the_worker_policies_and_every_group_uses_it(rec):
    role = rec.one(ROLE, f"{PREFIX}-node")
    trust = json.loads(role.plain_inputs()["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    policies = {r.plain_inputs()["policyArn"].rsplit("/", 1)[1] for r in rec.of_type(ATTACHMENT)
                if r.name.startswith(f"{PREFIX}-node-")}
    assert policies == set(node_groups.NODE_POLICIES)
    for mng in rec.of_type(MNG):
        assert mng.plain_inputs()["nodeRoleArn"] == f"arn:aws:iam::123456789012:role/{PREFIX}-node"


def prefill_spec(instance_type="p4d.24xlarge", desired=2, disk=500, zone="us-east-1a"):
    return node_groups.NodeGroupSpec("prefill", instance_type, desired, 2, disk, True, 4, [], (zone,))


def test_node_group_names_change_exactly_when_eks_must_replace_the_group():
    spec = prefill_spec()
    name = node_groups.group_name(PREFIX, spec)
    assert re.fullmatch(rf"{PREFIX}-prefill-[0-9a-f]{{6}}", name)
    assert node_groups.group_name(PREFIX, prefill_spec(desired=0, disk=900)) == name
    for changed in (prefill_spec(instance_type="p4de.24xlarge"), prefill_spec(zone="us-east-1b")):
        assert node_groups.group_name(PREFIX, changed) != name
    long_name = node_groups.group_name("benchlab-" + "x" * 80, spec)
    assert len(long_name) == 63 and long_name.endswith(name[len(PREFIX):])


# --- security group rules ------------------------------------------------------------------
def rules(rec: offline.Recording, type_: str, group: str) -> list[dict]:
    return [r.plain_inputs() for r in rec.of_type(type_)
            if r.plain_inputs()["securityGroupId"] == sg_id(group)]


def test_efa_traffic_is_open_among_gpu_nodes_only(rec):
    gpu = f"{PREFIX}-gpu"
    for type_ in (INGRESS, EGRESS):
        [rule] = rules(rec, type_, gpu)
        assert rule["ipProtocol"] == "-1"
        assert rule["referencedSecurityGroupId"] == sg_id(gpu)
        assert "cidrIpv4" not in rule


def test_node_to_node_reach_is_the_cluster_security_group_s(rec):
    """Every node carries EKS's cluster security group (all traffic among its members), so
    port rules between node groups (etcd 2379, NATS 4222) would restrict nothing: there are
    none; pod-level reach is NetworkPolicy's (tests/test_network_policies.py)."""
    assert rules(rec, INGRESS, f"{PREFIX}-system") == []
    cluster_sg = f"sg-{PREFIX}-cluster"  # the mocked cluster's (cli/offline.py)
    for template in rec.of_type(LAUNCH_TEMPLATE):
        inputs = template.plain_inputs()
        groups = inputs.get("vpcSecurityGroupIds") or inputs["networkInterfaces"][0]["securityGroups"]
        assert cluster_sg in groups, template.name


# --- storage -------------------------------------------------------------------------------
def test_efs_is_encrypted_mounted_in_every_node_subnet_and_admits_nfs_from_nodes_only(rec):
    efs = rec.one("aws:efs/fileSystem:FileSystem").plain_inputs()
    assert efs["encrypted"] is True
    targets = [r.plain_inputs() for r in rec.of_type("aws:efs/mountTarget:MountTarget")]
    assert sorted(t["subnetId"] for t in targets) == [
        f"subnet-{PREFIX}-private-us-east-1a", f"subnet-{PREFIX}-private-us-east-1b"]
    assert all(t["securityGroups"] == [sg_id(f"{PREFIX}-efs")] for t in targets)
    nfs = rules(rec, INGRESS, f"{PREFIX}-efs")
    assert {(r["ipProtocol"], r["fromPort"], r["toPort"]) for r in nfs} == {("tcp", 2049, 2049)}
    assert {r["referencedSecurityGroupId"] for r in nfs} == {
        sg_id(f"{PREFIX}-system"), sg_id(f"{PREFIX}-gpu")}
    assert not any("cidrIpv4" in r for r in nfs)


@pytest.mark.parametrize("addon, service_account, policy", [
    ("aws-efs-csi-driver", "efs-csi-controller-sa", "AmazonEFSCSIDriverPolicy"),
    ("aws-ebs-csi-driver", "ebs-csi-controller-sa", "AmazonEBSCSIDriverPolicy")])
def test_csi_addons_have_their_own_role_trusted_by_their_controller_only(rec, addon, service_account, policy):
    inputs = rec.one(ADDON, f"{PREFIX}-{addon}").plain_inputs()
    role = rec.one(ROLE, f"{PREFIX}-{addon}")
    assert inputs["addonName"] == addon and inputs["clusterName"] == PREFIX
    assert inputs["serviceAccountRoleArn"] == f"arn:aws:iam::123456789012:role/{role.name}"
    [statement] = json.loads(role.plain_inputs()["assumeRolePolicy"])["Statement"]
    issuer = f"oidc.eks.us-east-1.amazonaws.com/id/{PREFIX}"
    assert statement["Principal"] == {"Federated": f"arn:aws:iam::123456789012:oidc-provider/{issuer}"}
    assert statement["Condition"] == {"StringEquals": {
        f"{issuer}:sub": f"system:serviceaccount:kube-system:{service_account}",
        f"{issuer}:aud": "sts.amazonaws.com"}}
    attachment = rec.one(ATTACHMENT, f"{PREFIX}-{addon}").plain_inputs()
    assert attachment["policyArn"] == f"arn:aws:iam::aws:policy/service-role/{policy}"


def test_storage_classes(rec):
    efs = rec.one(STORAGE_CLASS, f"{PREFIX}-efs").plain_inputs()
    assert efs["metadata"]["name"] == "efs" and efs["provisioner"] == "efs.csi.aws.com"
    assert efs["parameters"] == {"provisioningMode": "efs-ap", "fileSystemId": f"fs-{PREFIX}-efs",
                                 "directoryPerms": "700", "encryptInTransit": "true"}
    gp3 = rec.one(STORAGE_CLASS, f"{PREFIX}-gp3").plain_inputs()
    assert gp3["metadata"] == {
        "name": "gp3", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}}
    assert gp3["provisioner"] == "ebs.csi.aws.com"
    assert gp3["parameters"]["type"] == "gp3" and gp3["parameters"]["encrypted"] == "true"
    assert gp3["volumeBindingMode"] == "WaitForFirstConsumer"
    tag_specs = {v for k, v in gp3["parameters"].items() if k.startswith("tagSpecification_")}
    assert tag_specs == {"project=benchlab", "stack=dev", "owner=ml-infra"}
    defaults = [r for r in rec.of_type(STORAGE_CLASS)
                if (r.plain_inputs()["metadata"].get("annotations") or {}).get(
                    "storageclass.kubernetes.io/is-default-class") == "true"]
    assert defaults == [rec.one(STORAGE_CLASS, f"{PREFIX}-gp3")]


# --- the results bucket --------------------------------------------------------------------
def bucket_and_settings(rec: offline.Recording) -> list[offline.Resource]:
    bucket = rec.one(BUCKET)
    return [bucket] + [r for r in rec.children(bucket.parent) if r is not bucket]


def test_results_bucket_is_private_encrypted_versioned_and_kept_on_destroy(rec):
    bucket = rec.one(BUCKET)
    inputs = bucket.plain_inputs()
    assert inputs["bucketPrefix"] == f"{PREFIX}-results-"
    assert inputs["forceDestroy"] is False
    settings = {r.type.split(":")[-1]: r.plain_inputs() for r in bucket_and_settings(rec)}
    assert len(settings) == 7
    for name, setting in settings.items():
        if name != "Bucket":
            assert setting["bucket"] == rec.stack_outputs["resultsBucket"], name
    assert settings["BucketPublicAccessBlock"] == {
        "bucket": rec.stack_outputs["resultsBucket"], "blockPublicAcls": True,
        "blockPublicPolicy": True, "ignorePublicAcls": True, "restrictPublicBuckets": True}
    assert settings["BucketVersioning"]["versioningConfiguration"] == {"status": "Enabled"}
    [rule] = settings["BucketServerSideEncryptionConfiguration"]["rules"]
    assert rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"
    assert settings["BucketOwnershipControls"]["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
    # TLS only, for every principal, on the bucket and every object
    [deny] = json.loads(settings["BucketPolicy"]["policy"])["Statement"]
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", "s3:*")
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    arn = f"arn:aws:s3:::{rec.stack_outputs['resultsBucket']}"
    assert sorted(deny["Resource"]) == [arn, arn + "/*"]
    # old versions and unfinished multipart uploads expire, for every object
    rules = {r["id"]: r for r in settings["BucketLifecycleConfiguration"]["rules"]}
    assert rules["expire-old-versions"]["noncurrentVersionExpiration"] == {
        "noncurrentDays": results_bucket.NONCURRENT_VERSION_DAYS}
    assert rules["abort-unfinished-uploads"]["abortIncompleteMultipartUpload"] == {
        "daysAfterInitiation": results_bucket.UNFINISHED_UPLOAD_DAYS}
    assert all(r["status"] == "Enabled" and r["filter"] == {"prefix": ""} for r in rules.values())
    lifecycle = next(r for r in bucket_and_settings(rec) if r.type.endswith("BucketLifecycleConfiguration"))
    assert rec.waits_for(lifecycle, next(r for r in bucket_and_settings(rec) if r.type.endswith("BucketVersioning")))
    # the bucket and every setting on it survive `pulumi destroy`
    assert all(r.options["retain_on_delete"] for r in bucket_and_settings(rec))


def test_results_bucket_is_destroyed_with_its_objects_when_config_says_so():
    dropped = run(results={"retainBucketOnDestroy": False})
    assert dropped.one(BUCKET).plain_inputs()["forceDestroy"] is True
    assert not any(r.options["retain_on_delete"] for r in bucket_and_settings(dropped))


@pytest.mark.parametrize("stack_name", ["benchlab-dev", "benchlab-My_Stack.2", "benchlab-" + "a" * 60])
def test_bucket_prefix_is_a_valid_s3_prefix(stack_name):
    prefix = results_bucket.bucket_prefix(stack_name)
    assert len(prefix) <= 37 and prefix.endswith("-results-")
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", prefix)


# --- the Kubernetes provider ---------------------------------------------------------------
def test_kubernetes_provider_uses_the_cluster_kubeconfig_with_server_side_apply(rec):
    provider = rec.one(K8S_PROVIDER, f"{PREFIX}-k8s")
    inputs = provider.inputs
    assert isinstance(inputs["kubeconfig"], offline.Secret)
    assert json.loads(inputs["kubeconfig"].value)["clusters"][0]["name"] == PREFIX
    assert inputs["enableServerSideApply"] in (True, "true")
    # No deleteUnreachable in the state: a refresh or destroy that cannot reach the API fails
    # instead of forgetting the objects; PULUMI_K8S_DELETE_UNREACHABLE, read only when the key is
    # absent, stays the way out once the cluster is really gone.
    assert "deleteUnreachable" not in inputs
    k8s_resources = [r for r in rec.resources.values() if r.type.startswith("kubernetes:")]
    assert k8s_resources and all(r.provider.rsplit("::", 1)[0] == provider.urn for r in k8s_resources)


# --- order ---------------------------------------------------------------------------------
def assert_node_groups_wait_for_the_cluster(rec: offline.Recording) -> None:
    cluster = rec.one(EKS, PREFIX)
    for role in ("system", "prefill", "decode"):
        assert rec.waits_for(node_group(rec, role), cluster), \
            f"{role} node group does not wait for the cluster"


def test_node_groups_wait_for_the_cluster(rec):
    assert_node_groups_wait_for_the_cluster(rec)


def test_node_groups_wait_for_their_role_policies(rec):
    for attachment in [r for r in rec.of_type(ATTACHMENT) if r.name.startswith(f"{PREFIX}-node-")]:
        for role in ("system", "prefill", "decode"):
            assert rec.waits_for(node_group(rec, role), attachment)


def test_kubernetes_provider_waits_for_the_cluster(rec):
    assert rec.waits_for(rec.one(K8S_PROVIDER, f"{PREFIX}-k8s"), rec.one(EKS, PREFIX))


def test_storage_classes_wait_for_their_csi_addon_and_addons_for_system_nodes(rec):
    efs_sc, gp3_sc = rec.one(STORAGE_CLASS, f"{PREFIX}-efs"), rec.one(STORAGE_CLASS, f"{PREFIX}-gp3")
    efs_addon = rec.one(ADDON, f"{PREFIX}-aws-efs-csi-driver")
    ebs_addon = rec.one(ADDON, f"{PREFIX}-aws-ebs-csi-driver")
    assert rec.waits_for(efs_sc, efs_addon) and rec.waits_for(gp3_sc, ebs_addon)
    assert not rec.waits_for(gp3_sc, efs_addon)  # independent: neither slows the other
    for target in rec.of_type("aws:efs/mountTarget:MountTarget"):
        assert rec.waits_for(efs_sc, target)
    for addon in (efs_addon, ebs_addon):
        assert rec.waits_for(addon, node_group(rec, "system"))


def test_nothing_in_the_aws_layer_waits_for_the_gpu_nodes(rec):
    """Critical path: storage, the bucket and the system nodes must not wait for GPU nodes
    (they boot for many minutes and cost the most)."""
    gpu_groups = [node_group(rec, role) for role in ("prefill", "decode")]
    independent = [node_group(rec, "system"), *rec.of_type(ADDON), *rec.of_type(STORAGE_CLASS),
                   rec.one(K8S_PROVIDER, f"{PREFIX}-k8s"), rec.one(BUCKET)]
    for res in independent:
        for gpu in gpu_groups:
            assert not rec.waits_for(res, gpu), f"{res.name} waits for {gpu.name}"


# --- exports -------------------------------------------------------------------------------
def test_stack_exports(rec):
    out = rec.stack_outputs
    assert out["clusterName"] == PREFIX and out["region"] == "us-east-1"
    assert out["nodeGroups"] == {role: node_group(rec, role).plain_inputs()["nodeGroupName"]
                                 for role in ("system", "prefill", "decode")}
    assert out["efsId"] == f"fs-{PREFIX}-efs"
    assert out["resultsBucket"].startswith(f"{PREFIX}-results-")
    assert isinstance(out["kubeconfig"], offline.Secret)
    assert "certificate-authority-data" not in json.dumps(offline.plain(out))
