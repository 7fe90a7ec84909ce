"""The lab's managed node groups: system (CPU) and the GPU groups (prefill, decode).

Each group gets its own launch template, which is what makes EFA testable and explicit: one
EFA interface per EFA-capable network card (from facts/instances.py), the security
groups, an encrypted gp3 root volume with explicit IOPS and throughput, the instance store
(NVMe) in RAID0 for kubelet and containerd where the type has one, IMDSv2, the cluster
placement group, and tags that reach the instances and volumes (the provider's default
tags stop at the launch template). pulumi-eks's `enable_efa_support` would do the same inside a
remote component, invisible to the offline tests and asking EC2 at deploy time instead.
"""
from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_eks as eks

from components.cluster import GPU_TAINT_KEY, GPU_TAINT_VALUE, NODE_GROUP_LABEL, ROLE_LABEL

GPU_AMI_TYPE = "AL2023_x86_64_NVIDIA"
CPU_AMI_TYPE = "AL2023_x86_64_STANDARD"
ROOT_DEVICE = "/dev/xvda"  # AL2023's root volume
# What a node itself needs: join the cluster and pull images. The VPC CNI has its own IRSA role
# (components/cluster.py); SSM (`ssm:GetParameter*` on every parameter) only on request.
NODE_POLICIES = ("AmazonEKSWorkerNodePolicy", "AmazonEC2ContainerRegistryReadOnly")
SSM_POLICY = "AmazonSSMManagedInstanceCore"
# One hop: the node's own processes (and hostNetwork pods: kubelet, aws-node, kube-proxy) reach
# IMDS, a pod in its own network namespace does not, so no pod gets the node role's credentials:
# https://docs.aws.amazon.com/eks/latest/best-practices/identity-and-access-management.html
# (the EBS CSI node driver then reads its metadata from the Kubernetes API instead:
# kubernetes-sigs/aws-ebs-csi-driver docs/install.md#metadata)
IMDS_HOP_LIMIT = 1
# gp3 performance, explicit: the included baseline (3000 IOPS, 125 MiB/s) where the instance
# store carries images and emptyDirs; gp3's maximum (16000 IOPS, 1000 MiB/s) where the root
# volume does: https://docs.aws.amazon.com/ebs/latest/userguide/general-purpose.html#gp3-performance
GP3_BASELINE = {"iops": 3000, "throughput": 125}
GP3_IMAGE_DISK = {"iops": 16000, "throughput": 1000}
# AL2023 nodeadm mounts the instance store NVMe disks as one RAID0 array and bind-mounts
# /var/lib/kubelet (emptyDirs), /var/lib/containerd (image layers) and /var/log/pods onto it
# (awslabs/amazon-eks-ami templates/al2023/runtime/bin/setup-local-disks), as the pulumi-eks
# EFA example does (pulumi/pulumi-eks examples/efa/index.ts). EKS merges this MIME part with
# its own NodeConfig: https://docs.aws.amazon.com/eks/latest/userguide/launch-templates.html
LOCAL_STORAGE_NODECONFIG = """apiVersion: node.eks.aws/v1alpha1
kind: NodeConfig
spec:
  instance:
    localStorage:
      strategy: RAID0
"""
MIME_BOUNDARY = "BENCHLAB"


def local_storage_user_data() -> str:
    """Launch-template user data (base64 MIME multi-part) with the RAID0 NodeConfig."""
    document = (f'MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="{MIME_BOUNDARY}"\n\n'
                f"--{MIME_BOUNDARY}\nContent-Type: application/node.eks.aws\n\n"
                f"{LOCAL_STORAGE_NODECONFIG}\n--{MIME_BOUNDARY}--\n")
    return base64.b64encode(document.encode()).decode()
EKS_NODE_GROUP_NAME_MAX = 63


@dataclass(frozen=True)
class NodeGroupSpec:
    role: str  # "system" | "prefill" | "decode": the ROLE_LABEL value
    instance_type: str
    desired_size: int
    max_size: int  # >= the configured count, so switching serving mode needs no replacement
    disk_gib: int
    gpu: bool
    efa_interfaces: int  # EFA-capable network cards; 0: no EFA
    subnet_ids: list[pulumi.Input[str]]
    zones: tuple[str, ...]  # of subnet_ids; part of the group's name (see group_name)
    instance_store: bool = False  # NVMe instance store: kubelet and containerd go there (RAID0)


@dataclass(frozen=True)
class NodeGroupsArgs:
    cluster: eks.Cluster
    cluster_name: str
    kubernetes_version: str
    vpc_id: pulumi.Input[str]
    cluster_security_group_id: pulumi.Input[str]
    groups: tuple[NodeGroupSpec, ...]
    ssm_sessions: bool  # attach SSM_POLICY to the node role
    joins_after: list[pulumi.Resource]  # what must exist before a node joins (the VPC CNI add-on)
    tags: dict[str, str]


def group_name(cluster_name: str, spec: NodeGroupSpec) -> str:
    """The EKS node group name: role plus a digest of what forces EKS to replace a group
    (instance type, AMI type, zones). A change gives a new name, so Pulumi can create the
    replacement before deleting the old group instead of failing on a name clash."""
    ami = GPU_AMI_TYPE if spec.gpu else CPU_AMI_TYPE
    digest = hashlib.sha256("|".join([spec.instance_type, ami, *spec.zones]).encode()).hexdigest()[:6]
    suffix = f"-{spec.role}-{digest}"
    return cluster_name[:EKS_NODE_GROUP_NAME_MAX - len(suffix)] + suffix


def placement_roles(groups: tuple[NodeGroupSpec, ...]) -> list[str]:
    """The roles that get a cluster placement group of their own: GPU groups with EFA."""
    return [spec.role for spec in groups if spec.gpu and spec.efa_interfaces]


def efa_network_interfaces(cards: int, security_group_ids: list[pulumi.Input[str]]) -> list[dict]:
    """One EFA interface per network card. The primary (card 0) carries IP traffic; the others
    are EFA-only, so they take no VPC address and cannot confuse routing (EC2's guidance)."""
    return [{
        "network_card_index": card,
        "device_index": 0 if card == 0 else 1,
        "interface_type": "efa" if card == 0 else "efa-only",
        "security_groups": security_group_ids,
        "delete_on_termination": "true",
    } for card in range(cards)]


class NodeGroups(pulumi.ComponentResource):
    groups: dict[str, eks.ManagedNodeGroup]  # role -> node group
    names: dict[str, str]  # role -> EKS node group name
    system_security_group_id: pulumi.Output[str]
    gpu_security_group_id: pulumi.Output[str]
    placement_groups: dict[str, aws.ec2.PlacementGroup]  # GPU role with EFA -> its own group

    def __init__(self, name: str, args: NodeGroupsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("benchlab:aws:NodeGroups", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        role, attachments = self._node_role(name, args.ssm_sessions, child)
        system_sg, gpu_sg = self._security_groups(name, args.vpc_id, child)
        # A cluster placement group per GPU role that uses EFA, none for a role without: one
        # group shared by roles that scale at different times (p4d and g6e) invites
        # InsufficientInstanceCapacity when the second role launches into the first one's spot:
        # https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/placement-strategies.html#placement-groups-cluster
        self.placement_groups = {
            role: aws.ec2.PlacementGroup(f"{name}-{role}", strategy="cluster", opts=child)
            for role in placement_roles(args.groups)}

        self.groups, self.names = {}, {}
        for spec in args.groups:
            security_groups = [args.cluster_security_group_id, gpu_sg.id if spec.gpu else system_sg.id]
            template = self._launch_template(name, spec, security_groups, args.tags, child)
            node_group_name = group_name(args.cluster_name, spec)
            self.names[spec.role] = node_group_name
            self.groups[spec.role] = eks.ManagedNodeGroup(
                f"{name}-{spec.role}",
                cluster=args.cluster,
                node_group_name=node_group_name,
                node_role_arn=role.arn,
                version=args.kubernetes_version,
                ami_type=GPU_AMI_TYPE if spec.gpu else CPU_AMI_TYPE,
                instance_types=[spec.instance_type],
                scaling_config={"desired_size": spec.desired_size, "min_size": spec.desired_size,
                                "max_size": spec.max_size},
                subnet_ids=spec.subnet_ids,
                launch_template={"id": template.id,
                                 "version": template.latest_version.apply(str)},
                labels={ROLE_LABEL: spec.role, NODE_GROUP_LABEL: node_group_name},
                taints=[{"key": GPU_TAINT_KEY, "value": GPU_TAINT_VALUE, "effect": "NO_SCHEDULE"}]
                if spec.gpu else None,
                tags=args.tags,
                # Nodes cannot join before their role may pull images and run the CNI.
                opts=pulumi.ResourceOptions(parent=self, depends_on=[*attachments, *args.joins_after]),
            )

        self.system_security_group_id = system_sg.id
        self.gpu_security_group_id = gpu_sg.id
        self.register_outputs({"names": self.names, "placementGroups": {
            role: group.name for role, group in self.placement_groups.items()}})

    def _node_role(self, name: str, ssm_sessions: bool, child: pulumi.ResourceOptions):
        partition = aws.get_partition_output(opts=pulumi.InvokeOutputOptions(parent=self)).partition
        role = aws.iam.Role(f"{name}-node", opts=child, assume_role_policy=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                           "Principal": {"Service": "ec2.amazonaws.com"}}]}))
        attachments = [aws.iam.RolePolicyAttachment(
            f"{name}-node-{policy}", role=role.name, opts=child,
            policy_arn=partition.apply(lambda p, policy=policy: f"arn:{p}:iam::aws:policy/{policy}"))
            for policy in (*NODE_POLICIES, *([SSM_POLICY] if ssm_sessions else []))]
        return role, attachments

    def _security_groups(self, name: str, vpc_id: pulumi.Input[str], child: pulumi.ResourceOptions):
        """Node security groups beside EKS's cluster group (which every node also carries)."""
        system_sg = aws.ec2.SecurityGroup(f"{name}-system", vpc_id=vpc_id, opts=child,
                                          description="benchlab system nodes")
        gpu_sg = aws.ec2.SecurityGroup(f"{name}-gpu", vpc_id=vpc_id, opts=child,
                                       description="benchlab GPU nodes (EFA)")
        # EFA needs all traffic to and from the group itself, both directions.
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-gpu-efa-in", security_group_id=gpu_sg.id, ip_protocol="-1",
            referenced_security_group_id=gpu_sg.id, description="EFA among GPU nodes", opts=child)
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-gpu-efa-out", security_group_id=gpu_sg.id, ip_protocol="-1",
            referenced_security_group_id=gpu_sg.id, description="EFA among GPU nodes", opts=child)
        # No etcd/NATS (2379/4222) rules from GPU to system nodes: every node also carries EKS's
        # cluster security group, which admits all traffic among its members
        # (https://docs.aws.amazon.com/eks/latest/userguide/sec-group-reqs.html), so such rules
        # would restrict nothing. Which pods reach etcd and NATS is NetworkPolicy's job.
        return system_sg, gpu_sg

    def _launch_template(self, name: str, spec: NodeGroupSpec, security_groups: list,
                         tags: dict[str, str], child: pulumi.ResourceOptions) -> aws.ec2.LaunchTemplate:
        instance_tags = {**tags, "Name": f"{name}-{spec.role}"}
        network = ({"network_interfaces": efa_network_interfaces(spec.efa_interfaces, security_groups)}
                   if spec.efa_interfaces else {"vpc_security_group_ids": security_groups})
        return aws.ec2.LaunchTemplate(
            f"{name}-{spec.role}",
            description=f"benchlab {spec.role} nodes ({spec.instance_type})",
            block_device_mappings=[{"device_name": ROOT_DEVICE, "ebs": {
                "volume_size": spec.disk_gib, "volume_type": "gp3", "encrypted": "true",
                "delete_on_termination": "true",
                **(GP3_IMAGE_DISK if spec.gpu and not spec.instance_store else GP3_BASELINE)}}],
            user_data=local_storage_user_data() if spec.instance_store else None,
            metadata_options={"http_endpoint": "enabled", "http_tokens": "required",
                              "http_put_response_hop_limit": IMDS_HOP_LIMIT},
            placement={"group_name": self.placement_groups[spec.role].name}
            if spec.role in self.placement_groups else None,
            tag_specifications=[{"resource_type": kind, "tags": instance_tags}
                                for kind in ("instance", "volume", "network-interface")],
            opts=child,
            **network,
        )
