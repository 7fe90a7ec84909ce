"""The lab's VPC: a public and a private subnet per availability zone, one NAT gateway.

Nodes live in the private subnets; the public ones only hold the NAT gateway and any
internet-facing load balancer. Subnets carry the tags the AWS load balancer controller and
the in-tree service controller use to pick subnets for load balancers.

Two kinds of small subnets hold no pod, so a NetworkPolicy can name them by CIDR: the control
plane's (the EKS cluster's own subnets: its network interfaces, i.e. the API server and what
calls the webhooks, live there and nowhere else) and the AWS endpoints' (STS and EKS interface
endpoints). S3 is a gateway endpoint: a route to S3's prefix list, whose CIDRs it exposes.
Every flow of the VPC is logged to CloudWatch (encrypted with the lab's key), and the VPC's
default security group has no rule, so nothing falls back on it.
"""
from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

PUBLIC_ELB_TAG = "kubernetes.io/role/elb"
INTERNAL_ELB_TAG = "kubernetes.io/role/internal-elb"
# EKS places its cross-account network interfaces in the cluster's subnets; /28 each, as AWS
# advises for dedicated cluster subnets (up to 4 + 4 during upgrades):
# https://docs.aws.amazon.com/eks/latest/userguide/network-reqs.html,
# https://aws.github.io/aws-eks-best-practices/networking/subnets/
SMALL_SUBNET_PREFIX = 28
# What the credential-holding Jobs call: STS (IRSA's AssumeRoleWithWebIdentity) and the EKS API
# (the GPU release) through interface endpoints with private DNS, S3 through a gateway endpoint.
# https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sts_vpc_endpoint_create.html
# https://docs.aws.amazon.com/eks/latest/userguide/vpc-interface-endpoints.html
# STS's private DNS is the regional name, which boto3 calls by default since 1.40 (boto/boto3#4583).
# S3's gateway endpoint adds S3's prefix list to the route table (AWS::EC2::VPCEndpoint, type gateway):
# https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-ec2-vpcendpoint.html
INTERFACE_ENDPOINT_SERVICES = ("sts", "eks")
GATEWAY_ENDPOINT_SERVICE = "s3"
HTTPS_PORT = 443


@dataclass(frozen=True)
class NetworkArgs:
    cidr: str
    availability_zones: tuple[str, ...]
    cluster_name: str  # subnets are tagged as shared with this EKS cluster
    nat_zone: str  # the NAT gateway's zone: the GPU zone, where the heavy pulls happen
    region: str
    flow_log_retention_days: int
    log_key_arn: pulumi.Input[str]  # the lab's KMS key (components/lab_key.py)


@dataclass(frozen=True)
class SubnetPlan:
    private: list[str]  # one per zone, in zone order
    public: list[str]
    control_plane: list[str]
    endpoints: list[str]


def flow_log_group(name: str) -> str:
    return f"/aws/vpc/{name}/flow-logs"


def subnet_cidrs(cidr: str, zones: int) -> SubnetPlan:
    """Split the VPC CIDR into equal blocks: the first `zones` for private subnets (pods take
    VPC addresses, so they need the room), the next `zones` for public ones, each public one
    the first half of its block; the second half of the first public block holds the /28s of
    the control plane and of the AWS endpoints."""
    network = ipaddress.IPv4Network(cidr)
    extra_bits = (2 * zones - 1).bit_length()
    blocks = list(network.subnets(prefixlen_diff=extra_bits))
    halves = [list(b.subnets(prefixlen_diff=1)) for b in blocks[zones:2 * zones]]
    small = [str(s) for s in halves[0][1].subnets(new_prefix=SMALL_SUBNET_PREFIX)]
    return SubnetPlan(private=[str(b) for b in blocks[:zones]], public=[str(h[0]) for h in halves],
                      control_plane=small[:zones], endpoints=small[zones:2 * zones])


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    public_subnet_ids: list[pulumi.Output[str]]
    private_subnet_ids: list[pulumi.Output[str]]
    private_subnet_by_zone: dict[str, pulumi.Output[str]]
    control_plane_subnet_ids: list[pulumi.Output[str]]  # the EKS cluster's subnets
    plan: SubnetPlan
    s3_cidrs: pulumi.Output[list[str]]  # S3's prefix list, as the gateway endpoint exposes it

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("benchlab:aws:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cluster_tag = {f"kubernetes.io/cluster/{args.cluster_name}": "shared"}

        vpc = aws.ec2.Vpc(f"{name}-vpc", cidr_block=args.cidr, enable_dns_hostnames=True,
                          enable_dns_support=True, tags={"Name": f"{name}-vpc"}, opts=child)
        igw = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, tags={"Name": f"{name}-igw"},
                                      opts=child)
        public_rt = aws.ec2.RouteTable(
            f"{name}-public", vpc_id=vpc.id, tags={"Name": f"{name}-public"},
            routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": igw.id}], opts=child)

        self.plan = plan = subnet_cidrs(args.cidr, len(args.availability_zones))
        public, private = {}, {}
        for zone, private_cidr, public_cidr in zip(args.availability_zones, plan.private, plan.public):
            public[zone] = aws.ec2.Subnet(
                f"{name}-public-{zone}", vpc_id=vpc.id, cidr_block=public_cidr,
                availability_zone=zone, map_public_ip_on_launch=False,
                tags={"Name": f"{name}-public-{zone}", PUBLIC_ELB_TAG: "1", **cluster_tag}, opts=child)
            aws.ec2.RouteTableAssociation(f"{name}-public-{zone}", subnet_id=public[zone].id,
                                          route_table_id=public_rt.id, opts=child)
            private[zone] = aws.ec2.Subnet(
                f"{name}-private-{zone}", vpc_id=vpc.id, cidr_block=private_cidr,
                availability_zone=zone,
                tags={"Name": f"{name}-private-{zone}", INTERNAL_ELB_TAG: "1", **cluster_tag}, opts=child)

        # One NAT gateway, not one per zone: a lab lives for hours and a zone outage ends the
        # run anyway; the GPU nodes (the image and model pulls) sit in its zone.
        eip = aws.ec2.Eip(f"{name}-nat", domain="vpc", tags={"Name": f"{name}-nat"}, opts=child)
        nat = aws.ec2.NatGateway(
            f"{name}-nat", allocation_id=eip.id, subnet_id=public[args.nat_zone].id,
            tags={"Name": f"{name}-nat"}, opts=pulumi.ResourceOptions(parent=self, depends_on=[igw]))
        private_rt = aws.ec2.RouteTable(
            f"{name}-private", vpc_id=vpc.id, tags={"Name": f"{name}-private"},
            routes=[{"cidr_block": "0.0.0.0/0", "nat_gateway_id": nat.id}], opts=child)
        for zone, subnet in private.items():
            aws.ec2.RouteTableAssociation(f"{name}-private-{zone}", subnet_id=subnet.id,
                                          route_table_id=private_rt.id, opts=child)
        # No route of their own: the local route only (the control plane and the endpoints
        # need none to the internet).
        control_plane = [aws.ec2.Subnet(f"{name}-control-plane-{zone}", vpc_id=vpc.id, cidr_block=cidr,
                                        availability_zone=zone, tags={"Name": f"{name}-control-plane-{zone}"},
                                        opts=child)
                         for zone, cidr in zip(args.availability_zones, plan.control_plane)]
        endpoint_subnets = [aws.ec2.Subnet(f"{name}-endpoints-{zone}", vpc_id=vpc.id, cidr_block=cidr,
                                           availability_zone=zone, tags={"Name": f"{name}-endpoints-{zone}"},
                                           opts=child)
                            for zone, cidr in zip(args.availability_zones, plan.endpoints)]
        self._endpoints(name, args, vpc, endpoint_subnets, private_rt)
        self._flow_logs(name, args, vpc)
        # The default group gets no rule (AWS Config vpc-default-security-group-closed); the
        # provider adopts it and removes every rule not listed:
        # https://docs.aws.amazon.com/config/latest/developerguide/vpc-default-security-group-closed.html
        # https://www.pulumi.com/registry/packages/aws/api-docs/ec2/defaultsecuritygroup/
        aws.ec2.DefaultSecurityGroup(f"{name}-default", vpc_id=vpc.id, ingress=[], egress=[],
                                     tags={"Name": f"{name}-default-closed"}, opts=child)

        self.vpc_id = vpc.id
        self.public_subnet_ids = [s.id for s in public.values()]
        self.private_subnet_ids = [s.id for s in private.values()]
        self.private_subnet_by_zone = {zone: s.id for zone, s in private.items()}
        self.control_plane_subnet_ids = [s.id for s in control_plane]
        self.register_outputs({"vpcId": self.vpc_id, "publicSubnetIds": self.public_subnet_ids,
                               "privateSubnetIds": self.private_subnet_ids})

    def _endpoints(self, name: str, args: NetworkArgs, vpc: aws.ec2.Vpc, subnets: list[aws.ec2.Subnet],
                   private_rt: aws.ec2.RouteTable) -> None:
        child = pulumi.ResourceOptions(parent=self)
        group = aws.ec2.SecurityGroup(f"{name}-endpoints", vpc_id=vpc.id, opts=child,
                                      description="benchlab AWS endpoints: HTTPS from the VPC")
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-endpoints-https", security_group_id=group.id, ip_protocol="tcp",
            from_port=HTTPS_PORT, to_port=HTTPS_PORT, cidr_ipv4=args.cidr, description="HTTPS from the VPC",
            opts=child)
        for service in INTERFACE_ENDPOINT_SERVICES:
            aws.ec2.VpcEndpoint(
                f"{name}-{service}", vpc_id=vpc.id, vpc_endpoint_type="Interface",
                service_name=f"com.amazonaws.{args.region}.{service}", private_dns_enabled=True,
                subnet_ids=[s.id for s in subnets], security_group_ids=[group.id],
                tags={"Name": f"{name}-{service}"}, opts=child)
        s3 = aws.ec2.VpcEndpoint(
            f"{name}-{GATEWAY_ENDPOINT_SERVICE}", vpc_id=vpc.id, vpc_endpoint_type="Gateway",
            service_name=f"com.amazonaws.{args.region}.{GATEWAY_ENDPOINT_SERVICE}",
            route_table_ids=[private_rt.id], tags={"Name": f"{name}-{GATEWAY_ENDPOINT_SERVICE}"}, opts=child)
        self.s3_cidrs = s3.cidr_blocks

    def _flow_logs(self, name: str, args: NetworkArgs, vpc: aws.ec2.Vpc) -> None:
        """Every accepted and rejected flow to CloudWatch Logs, through a role only the flow
        logs service may assume (pulumi-aws aws.ec2.FlowLog, CloudWatch Logging example:
        https://www.pulumi.com/registry/packages/aws/api-docs/ec2/flowlog/)."""
        child = pulumi.ResourceOptions(parent=self)
        group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs", name=flow_log_group(name), retention_in_days=args.flow_log_retention_days,
            kms_key_id=args.log_key_arn, opts=child)
        role = aws.iam.Role(f"{name}-flow-logs", opts=child, assume_role_policy=json.dumps({
            "Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "vpc-flow-logs.amazonaws.com"},
                "Action": "sts:AssumeRole"}]}))
        policy = aws.iam.RolePolicy(f"{name}-flow-logs", role=role.id, opts=child, policy=group.arn.apply(
            lambda arn: json.dumps({"Version": "2012-10-17", "Statement": [
                {"Effect": "Allow", "Resource": [arn, f"{arn}:*"],
                 "Action": ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]},
                {"Effect": "Allow", "Resource": "*", "Action": "logs:DescribeLogGroups"}]})))
        aws.ec2.FlowLog(f"{name}-flow-logs", vpc_id=vpc.id, traffic_type="ALL",
                        log_destination_type="cloud-watch-logs", log_destination=group.arn,
                        iam_role_arn=role.arn,
                        opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]))
