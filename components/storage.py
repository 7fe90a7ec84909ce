"""Cluster storage: EFS (shared, RWX: model store, results) and EBS gp3 (default, RWO).

Each CSI driver is an EKS add-on with its own IAM role (IRSA, trusted only by the driver's
controller service account). The add-ons wait for the system nodes: EKS reports an add-on
active only once its controller runs, and without a node it would time out. The storage
classes wait for their add-on, so no PVC is created before its provisioner exists.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from components.irsa import irsa_trust_policy

NFS_PORT = 2049
EFS_STORAGE_CLASS = "efs"
GP3_STORAGE_CLASS = "gp3"


@dataclass(frozen=True)
class CsiDriver:
    addon: str
    service_account: str  # the controller's, in kube-system: the only one the role trusts
    policy: str  # AWS managed policy, under service-role/


EFS_CSI = CsiDriver("aws-efs-csi-driver", "efs-csi-controller-sa", "AmazonEFSCSIDriverPolicy")
EBS_CSI = CsiDriver("aws-ebs-csi-driver", "ebs-csi-controller-sa", "AmazonEBSCSIDriverPolicy")


def tls_only_policy(file_system_arn: str) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": [
        {"Sid": "ClientsThroughMountTargets", "Effect": "Allow", "Principal": {"AWS": "*"},
         "Action": ["elasticfilesystem:ClientMount", "elasticfilesystem:ClientWrite",
                    "elasticfilesystem:ClientRootAccess"],
         "Resource": file_system_arn, "Condition": {"Bool": {"elasticfilesystem:AccessedViaMountTarget": "true"}}},
        {"Sid": "DenyWithoutTls", "Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "*",
         "Resource": file_system_arn, "Condition": {"Bool": {"aws:SecureTransport": "false"}}}]})


@dataclass(frozen=True)
class StorageArgs:
    cluster_name: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    node_subnet_ids: list[pulumi.Input[str]]  # one per zone: an EFS mount target in each
    node_security_group_ids: list[pulumi.Input[str]]  # NFS is admitted from these only
    oidc_provider_arn: pulumi.Input[str]
    oidc_provider_url: pulumi.Input[str]  # without https://
    system_nodes: pulumi.Resource
    k8s_provider: pulumi.ProviderResource
    volume_tags: dict[str, str]  # the lab's tags, for the EBS volumes the CSI driver creates


class Storage(pulumi.ComponentResource):
    file_system: aws.efs.FileSystem
    efs_storage_class: k8s.storage.v1.StorageClass
    gp3_storage_class: k8s.storage.v1.StorageClass

    def __init__(self, name: str, args: StorageArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("benchlab:aws:Storage", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self._partition = aws.get_partition_output(opts=pulumi.InvokeOutputOptions(parent=self)).partition

        self.file_system, mount_targets = self._efs(name, args, child)
        efs_addon = self._csi_addon(name, EFS_CSI, args)
        ebs_addon = self._csi_addon(name, EBS_CSI, args)

        k8s_opts = {"parent": self, "provider": args.k8s_provider}
        self.efs_storage_class = k8s.storage.v1.StorageClass(
            f"{name}-efs",
            metadata={"name": EFS_STORAGE_CLASS},
            provisioner="efs.csi.aws.com",
            # One access point per volume, each with its own directory and POSIX identity.
            # TLS on every mount, which the file system policy requires (unset is TLS too:
            # kubernetes-sigs/aws-efs-csi-driver examples/kubernetes/encryption_in_transit_dynamic/README.md).
            parameters={"provisioningMode": "efs-ap", "fileSystemId": self.file_system.id,
                        "directoryPerms": "700", "encryptInTransit": "true"},
            reclaim_policy="Delete",
            volume_binding_mode="Immediate",  # EFS is reachable from every zone
            # Mount targets too: a pod may mount the volume as soon as it is bound.
            opts=pulumi.ResourceOptions(**k8s_opts, depends_on=[efs_addon, *mount_targets]))
        self.gp3_storage_class = k8s.storage.v1.StorageClass(
            f"{name}-gp3",
            metadata={"name": GP3_STORAGE_CLASS,
                      "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            provisioner="ebs.csi.aws.com",
            # The CSI driver, not Pulumi, creates these volumes: tag them so that one left by
            # a destroy that raced the add-on's removal can still be found as the lab's.
            parameters={"type": "gp3", "encrypted": "true", "fsType": "ext4", **{
                f"tagSpecification_{i}": f"{key}={value}"
                for i, (key, value) in enumerate(sorted(args.volume_tags.items()), start=1)}},
            reclaim_policy="Delete",
            # An EBS volume lives in one zone: create it where the pod is scheduled.
            volume_binding_mode="WaitForFirstConsumer",
            allow_volume_expansion=True,
            opts=pulumi.ResourceOptions(**k8s_opts, depends_on=[ebs_addon]))

        self.register_outputs({"efsId": self.file_system.id,
                               "storageClasses": [EFS_STORAGE_CLASS, GP3_STORAGE_CLASS]})

    def _efs(self, name: str, args: StorageArgs, child: pulumi.ResourceOptions):
        security_group = aws.ec2.SecurityGroup(f"{name}-efs", vpc_id=args.vpc_id, opts=child,
                                               description="benchlab EFS: NFS from the nodes only")
        for i, node_sg in enumerate(args.node_security_group_ids):
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-efs-nfs-{i}", security_group_id=security_group.id, ip_protocol="tcp",
                from_port=NFS_PORT, to_port=NFS_PORT, referenced_security_group_id=node_sg,
                description="NFS from nodes", opts=child)
        file_system = aws.efs.FileSystem(
            f"{name}-efs", encrypted=True,
            # Elastic: a fresh, almost empty file system would get a trickle of burst credits,
            # and the model store is read at full speed by every worker at startup.
            throughput_mode="elastic", performance_mode="generalPurpose",
            tags={"Name": f"{name}-efs"}, opts=child)
        # No client without TLS; otherwise what EFS's default policy grants (every client through
        # a mount target), which a policy of our own replaces:
        # https://docs.aws.amazon.com/efs/latest/ug/iam-access-control-nfs-efs.html
        aws.efs.FileSystemPolicy(f"{name}-efs-tls-only", file_system_id=file_system.id, opts=child,
                                 policy=file_system.arn.apply(tls_only_policy))
        mount_targets = [aws.efs.MountTarget(
            f"{name}-efs-{i}", file_system_id=file_system.id, subnet_id=subnet_id,
            security_groups=[security_group.id], opts=child)
            for i, subnet_id in enumerate(args.node_subnet_ids)]
        return file_system, mount_targets

    def _csi_addon(self, name: str, driver: CsiDriver, args: StorageArgs) -> aws.eks.Addon:
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            f"{name}-{driver.addon}", opts=child,
            assume_role_policy=irsa_trust_policy(args.oidc_provider_arn, args.oidc_provider_url,
                                                 "kube-system", driver.service_account))
        attachment = aws.iam.RolePolicyAttachment(
            f"{name}-{driver.addon}", role=role.name, opts=child,
            policy_arn=self._partition.apply(
                lambda p: f"arn:{p}:iam::aws:policy/service-role/{driver.policy}"))
        return aws.eks.Addon(
            f"{name}-{driver.addon}", cluster_name=args.cluster_name, addon_name=driver.addon,
            service_account_role_arn=role.arn,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[args.system_nodes, attachment]))
