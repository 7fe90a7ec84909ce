"""The lab's VPC: a public and a private subnet per availability zone, one NAT gateway.

Nodes live in the private subnets; the public ones only hold the NAT gateway and any
internet-facing load balancer. Subnets carry the tags the AWS load balancer controller and
the in-tree service controller use to pick subnets for load balancers.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

PUBLIC_ELB_TAG = "kubernetes.io/role/elb"
INTERNAL_ELB_TAG = "kubernetes.io/role/internal-elb"


@dataclass(frozen=True)
class NetworkArgs:
    cidr: str
    availability_zones: tuple[str, ...]
    cluster_name: str  # subnets are tagged as shared with this EKS cluster
    nat_zone: str  # the NAT gateway's zone: the GPU zone, where the heavy pulls happen


def subnet_cidrs(cidr: str, zones: int) -> tuple[list[str], list[str]]:
    """Split the VPC CIDR into equal blocks: the first `zones` for private subnets (pods take
    VPC addresses, so they need the room), the next `zones` for public ones."""
    network = ipaddress.IPv4Network(cidr)
    extra_bits = (2 * zones - 1).bit_length()
    blocks = [str(b) for b in network.subnets(prefixlen_diff=extra_bits)]
    return blocks[:zones], blocks[zones:2 * zones]


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    public_subnet_ids: list[pulumi.Output[str]]
    private_subnet_ids: list[pulumi.Output[str]]
    private_subnet_by_zone: dict[str, pulumi.Output[str]]

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

        private_cidrs, public_cidrs = subnet_cidrs(args.cidr, len(args.availability_zones))
        public, private = {}, {}
        for zone, private_cidr, public_cidr in zip(args.availability_zones, private_cidrs, public_cidrs):
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

        self.vpc_id = vpc.id
        self.public_subnet_ids = [s.id for s in public.values()]
        self.private_subnet_ids = [s.id for s in private.values()]
        self.private_subnet_by_zone = {zone: s.id for zone, s in private.items()}
        self.register_outputs({"vpcId": self.vpc_id, "publicSubnetIds": self.public_subnet_ids,
                               "privateSubnetIds": self.private_subnet_ids})
