"""`benchlab preflight`: will the stack come up? Read-only AWS checks before any money is spent.

First what `pulumi up`'s validation refuses, from the same functions (stacks/config.py), on the
stack file as written. For the stack's region and GPU zone: credentials, and whether they outlive
the planned campaign; the caller listed in clusterAccess.admins; the zones' IDs EKS accepts for a
control plane; each instance type offered where its node group goes; EFA on the GPU types;
on-demand vCPU quotas (P, G, Standard) against what the node groups need; the EKS version;
capacity reservations the GPU node groups could use.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from cli import stack_file
from cli.cost import nodes_up, timeline
from cli.leftovers import PROJECT
from jobs.names import GRAPHS, NODE_GROUPS
from stacks import pod_fit
from stacks import config
from stacks.config import StackConfig
from facts import eks as eks_facts
from facts.instances import facts, quota_family

HELP = "check credentials, GPU capacity, EFA, quotas and the EKS version before `pulumi up`"

Status = Literal["pass", "warn", "fail", "skip"]

# Service Quotas codes of the on-demand vCPU quotas (service code "ec2").
QUOTA_CODES = {
    "P": "L-417A185B",  # Running On-Demand P instances
    "G": "L-DB2E81BA",  # Running On-Demand G and VT instances
    "Standard": "L-1216C47A",  # Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances
}
# What a call to AWS can raise: refused (ClientError) or not made (no credentials, network).
_AWS_ERRORS = (BotoCoreError, ClientError)


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class AwsClients:
    sts: Any
    ec2: Any
    eks: Any
    quotas: Any
    credentials: Any = None  # botocore's, as the AWS CLI's `aws eks get-token` resolves them

    @classmethod
    def create(cls, region: str, profile: str | None = None) -> "AwsClients":
        import boto3

        session = boto3.Session(profile_name=profile, region_name=region)
        return cls(*(session.client(name) for name in ("sts", "ec2", "eks", "service-quotas")),
                   credentials=session.get_credentials())


# ---------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------
def run_checks(cfg: StackConfig, clients: AwsClients, stack: str) -> list[Check]:
    identity, caller = check_credentials(clients.sts)
    if identity.status == "fail":
        return [identity, Check("other checks", "skip", "they need working credentials")]
    return [identity, check_credential_lifetime(clients.credentials, campaign_minutes(cfg)),
            check_creator_not_listed(cfg, caller, clients.eks, f"{PROJECT}-{stack}"),
            *check_image_lock(cfg),
            *check_offerings(cfg, clients.ec2),
            check_control_plane_zones(cfg, clients.ec2),
            *check_efa(cfg, clients.ec2),
            *check_quotas(cfg, clients.quotas, clients.ec2),
            check_eks_version(cfg, clients.eks),
            check_capacity_reservations(cfg, clients.ec2),
            check_gpu_release(cfg)]


def local_checks(cfg: StackConfig) -> list[Check]:
    """What needs no AWS call: the tools `pulumi up` and kubectl use, and who the API admits."""
    return [check_aws_cli(), check_api_access(cfg), check_pod_fit(cfg), check_efa_image(cfg)]


def check_stack_config(refused: list[str]) -> Check:
    """What `pulumi up`'s validation refuses before any resource (the same functions,
    stacks/config.py validate and stack_problems)."""
    if refused:
        return Check("stack config", "fail", "`pulumi up` refuses it: " + "; ".join(refused),
                     "correct each key named (README, Config reference)")
    return Check("stack config", "pass", "`pulumi up`'s validation accepts it")


def check_efa_image(cfg: StackConfig) -> Check:
    """The campaign's switch to disagg over EFA needs libfabric in the serving image (validation
    refuses the stock one once serving.mode is disagg: here it is said while agg still runs)."""
    name = "EFA user space for disagg"
    if cfg.serving.kv_transport != "efa":
        return Check(name, "pass", "not needed: serving.kvTransport is tcp")
    if not cfg.stock_serving_image():
        return Check(name, "pass", f"from serving.image {cfg.serving.image}")
    return Check(name, "warn", f"{cfg.images()['serving']} carries no libfabric and the GPU nodes' "
                 "AMI has none: the switch to disagg will be refused",
                 "build the serving image with the EFA user space (README, The disagg KV path) and "
                 "set serving.image before switching serving.mode to disagg")


def check_pod_fit(cfg: StackConfig) -> Check:
    """The same check `pulumi up` makes first (stacks/pod_fit.py), here with the others."""
    unfit = pod_fit.problems(cfg)
    if unfit:
        return Check("pods fit their nodes", "fail", "; ".join(unfit),
                     "a larger instanceType or more nodes for the group named")
    return Check("pods fit their nodes", "pass", "every pod fits the node group it is pinned to")


def check_aws_cli() -> Check:
    """pulumi-eks's kubeconfig (and the Kubernetes provider) authenticate with `aws eks get-token`."""
    name, fix = "AWS CLI v2", "install it: https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html"
    if shutil.which("aws") is None:
        return Check(name, "fail", "`aws` is not on PATH; the kubeconfig runs `aws eks get-token`", fix)
    try:
        out = subprocess.run(["aws", "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        return Check(name, "fail", f"`aws --version` failed: {err}", fix)
    found = re.search(r"aws-cli/(\d+)\.\S+", out.stdout + out.stderr)
    if found is None or found.group(1) != "2":
        return Check(name, "fail", f"`aws --version` says {(out.stdout + out.stderr).strip()!r}, not 2.x", fix)
    return Check(name, "pass", found.group(0))


def check_api_access(cfg: StackConfig) -> Check:
    """`pulumi up`'s rules on publicAccessCidrs (stacks/config.py), except that the override
    clusterAccess.allowApiFromAnywhere does not silence an API open to the internet here."""
    name = "EKS API access"
    fix = ("set your own CIDRs: pulumi config set --path 'publicAccessCidrs[0]' "
           "\"$(curl -s https://checkip.amazonaws.com)/32\"")
    cidrs = cfg.public_access_cidrs
    if not cidrs:
        return Check(name, "fail", "publicAccessCidrs is not set: nobody could reach the API", fix)
    problems = config.public_access_problems(cidrs, allow_anywhere=False)
    if problems:
        return Check(name, "fail", "; ".join(problems), fix)
    return Check(name, "pass", f"only {', '.join(cidrs)}")


def check_image_lock(cfg: StackConfig) -> list[Check]:
    """Each image the stack's pods run: deployed by digest (locked) or by a tag that can move."""
    checks = []
    for reference in sorted(set(cfg.images().values())):
        if reference in cfg.image_digests:
            checks.append(Check(f"image {reference}", "pass",
                                f"locked: deployed as @{cfg.image_digests[reference]}"))
        else:
            # `pulumi up` refuses it for credential holders without the opt-in (stacks/config.py)
            refused = reference in cfg.unpinned_credential_images() and not cfg.image_policy.allow_unpinned_images
            checks.append(Check(f"image {reference}", "fail" if refused else "warn",
                                "not locked: deployed by tag, which the registry can move",
                                "./benchlab lock-images --stack <stack> (records its digest)"))
    stale = sorted(set(cfg.image_digests) - set(cfg.images().values()))
    if stale:
        checks.append(Check("image lock", "warn", f"digests of images the stack no longer runs: "
                            f"{', '.join(stale)}", "./benchlab lock-images --stack <stack>"))
    return checks


def check_credentials(sts) -> tuple[Check, str]:
    """The caller (sts get-caller-identity) and its ARN ("" when there is none)."""
    try:
        who = sts.get_caller_identity()
    except _AWS_ERRORS as err:
        return Check("credentials", "fail", str(err),
                     "configure AWS credentials (aws configure, AWS_PROFILE or --profile, "
                     "or aws sso login) for the account the lab goes into"), ""
    return Check("credentials", "pass", f"account {who['Account']} as {who['Arn']}"), who["Arn"]


def campaign_minutes(cfg: StackConfig) -> float:
    """The planned campaign, first `up` to the end of `destroy` (`benchlab cost`'s timeline)."""
    return sum(phase.minutes for phase in timeline(cfg))


# botocore credential providers whose credentials renew themselves (botocore/credentials.py: each
# returns RefreshableCredentials with a refresh_using that fetches new ones); "env" does not: its
# refresh re-reads the same variables (EnvProvider, AWS_CREDENTIAL_EXPIRATION).
SELF_REFRESHING = {"assume-role", "assume-role-with-web-identity", "sso", "custom-process",
                   "iam-role", "container-role", "login"}
LONGER_SESSION_FIX = ("use a profile whose credentials refresh (role_arn + source_profile, or "
                      "`aws configure sso`), or a session of at least {hours} h "
                      "(aws sts assume-role --duration-seconds, within the role's MaxSessionDuration)")


def check_credential_lifetime(credentials, minutes: float, now: dt.datetime | None = None) -> Check:
    """The whole campaign runs inside `pulumi up`, authenticated by `aws eks get-token` with these
    credentials: temporary ones that do not refresh must outlive it."""
    name = "credentials outlive the campaign"
    hours = math.ceil(minutes / 60)
    fix = LONGER_SESSION_FIX.format(hours=hours)
    method = getattr(credentials, "method", "")
    if credentials is None:
        return Check(name, "fail", "no credentials found", fix)
    if method in SELF_REFRESHING:
        return Check(name, "pass", f"they refresh themselves ({method}) through the "
                     f"{minutes:.0f}-minute campaign")
    # RefreshableCredentials(expiry_time=...) keeps it in _expiry_time (botocore/credentials.py);
    # for exported session credentials it comes from AWS_CREDENTIAL_EXPIRATION.
    expiry = getattr(credentials, "_expiry_time", None)
    if expiry is not None:
        left = (expiry - (now or dt.datetime.now(dt.timezone.utc))).total_seconds() / 60
        if left < minutes:
            return Check(name, "fail", f"they expire at {expiry.isoformat()}, in {max(left, 0):.0f} "
                         f"min; the campaign plans {minutes:.0f} min (`benchlab cost`)", fix)
        return Check(name, "pass", f"they expire in {left:.0f} min, after the {minutes:.0f}-minute campaign")
    if not credentials.token:
        return Check(name, "pass", f"long-term keys ({method}): no expiry")
    return Check(name, "warn", f"session credentials ({method}) of unknown expiry that do not "
                 f"refresh; the campaign plans {minutes:.0f} min",
                 fix + "; or export AWS_CREDENTIAL_EXPIRATION with them "
                 "(aws configure export-credentials --format env) so that preflight can check")


def principal_of(arn: str) -> str:
    """An STS assumed-role session as its IAM role (account and name; the role's path is not in
    the session ARN), an IAM user or role as itself without its path."""
    parts = arn.split(":", 5)
    if len(parts) != 6:
        return arn
    partition, account, (kind, _, rest) = parts[1], parts[4], parts[5].partition("/")
    if kind == "assumed-role":  # assumed-role/<role>/<session>
        return f"arn:{partition}:iam::{account}:role/{rest.split('/')[0]}"
    if kind in ("role", "user"):
        return f"arn:{partition}:iam::{account}:{kind}/{rest.rsplit('/', 1)[-1]}"
    return arn


def check_creator_not_listed(cfg: StackConfig, caller: str, eks, cluster: str) -> Check:
    """pulumi-eks makes the identity that creates the cluster its admin itself; an access entry of
    ours for the same principal collides with that one (EKS CreateAccessEntry: ResourceInUseException)."""
    name = "cluster admins"
    me = principal_of(caller)
    listed = [arn for arn in cfg.cluster_access.admins if principal_of(arn) == me]
    if not listed:
        return Check(name, "pass", f"{me} (you) is admin as the cluster's creator; "
                     f"{len(cfg.cluster_access.admins)} more in clusterAccess.admins")
    try:
        eks.describe_cluster(name=cluster)
    except eks.exceptions.ResourceNotFoundException:
        # pulumi/pulumi-eks nodejs/eks/cluster/cluster.ts createCore: accessConfig
        # bootstrapClusterCreatorAdminPermissions: true whenever authenticationMode is set
        return Check(name, "fail", f"clusterAccess.admins lists {', '.join(listed)}, which is you: "
                     "pulumi-eks already makes the creator admin (bootstrapClusterCreatorAdminPermissions), "
                     "so creating the cluster would fail on a second access entry for it",
                     f"remove {', '.join(listed)} from clusterAccess.admins (you are admin as its creator)")
    except _AWS_ERRORS as err:
        return _api_failure(name, err, "eks:DescribeCluster")
    return Check(name, "warn", f"cluster {cluster} exists and clusterAccess.admins lists you "
                 f"({', '.join(listed)}): fine if a teammate created it; if you did, its creator entry "
                 "already exists and a new one collides", "if you created the cluster, remove yourself")


def check_control_plane_zones(cfg: StackConfig, ec2) -> Check:
    """The cluster's subnets go in every zone of availabilityZones; EKS refuses some zone IDs, and
    which ID a zone name is differs per account."""
    name = "EKS control plane zones"
    try:
        zones = ec2.describe_availability_zones(AllAvailabilityZones=False)["AvailabilityZones"]
    except _AWS_ERRORS as err:
        return _api_failure(name, err, "ec2:DescribeAvailabilityZones")
    ids = {z["ZoneName"]: z["ZoneId"] for z in zones if z.get("ZoneType", "availability-zone") == "availability-zone"}
    mapping = ", ".join(f"{z} = {ids.get(z, '?')}" for z in cfg.availability_zones)
    unknown = [z for z in cfg.availability_zones if z not in ids]
    refused = [z for z in cfg.availability_zones if ids.get(z) in eks_facts.UNSUPPORTED_CONTROL_PLANE_ZONE_IDS]
    if not unknown and not refused:
        return Check(name, "pass", f"EKS accepts {mapping}")
    usable = sorted(z for z, i in ids.items() if i not in eks_facts.UNSUPPORTED_CONTROL_PLANE_ZONE_IDS)
    detail = "; ".join(
        ([f"{', '.join(refused)}: zone ID EKS refuses for a cluster (UnsupportedAvailabilityZoneException)"]
         if refused else []) + ([f"{', '.join(unknown)}: not a zone of {cfg.region} here"] if unknown else []))
    return Check(name, "fail", f"{detail} ({mapping})",
                 f"choose availabilityZones (and gpuAvailabilityZone) among {', '.join(usable)}")


def check_offerings(cfg: StackConfig, ec2) -> list[Check]:
    """Each node group's instance type offered in the zones its nodes go to."""
    types = _instance_types(cfg)
    try:
        zones_of = _offered_zones(ec2, sorted(set(types.values())))
    except _AWS_ERRORS as err:
        return [_api_failure("instance type offerings", err, "ec2:DescribeInstanceTypeOfferings")]
    gpu_types = _gpu_types(cfg)
    good_zones = sorted(set.intersection(*(zones_of[t] for t in gpu_types)))
    checks = []
    for role in NODE_GROUPS:
        itype = types[role]
        wanted = cfg.availability_zones if role == "system" else (cfg.gpu_availability_zone,)
        missing = [z for z in wanted if z not in zones_of[itype]]
        name = f"{role} {itype} offered"
        if not missing:
            checks.append(Check(name, "pass", f"in {', '.join(wanted)}"))
        elif role == "system":
            checks.append(Check(name, "fail", f"not offered in {', '.join(missing)}",
                                f"choose availabilityZones among {_zones(zones_of[itype])} "
                                "or another nodeGroups.system.instanceType"))
        else:
            fix = (f"set gpuAvailabilityZone to one of {', '.join(good_zones)} (zones offering "
                   f"{' and '.join(gpu_types)}) and list it in availabilityZones"
                   if good_zones else
                   f"no zone of {cfg.region} offers {' and '.join(gpu_types)}: choose another "
                   "region or instance type")
            checks.append(Check(name, "fail", f"not offered in {cfg.gpu_availability_zone} "
                                f"(offered in {_zones(zones_of[itype])})", fix))
    return checks


def _offered_zones(ec2, types: list[str]) -> dict[str, set[str]]:
    zones: dict[str, set[str]] = {t: set() for t in types}
    pages = ec2.get_paginator("describe_instance_type_offerings").paginate(
        LocationType="availability-zone", Filters=[{"Name": "instance-type", "Values": types}])
    for page in pages:
        for offer in page["InstanceTypeOfferings"]:
            zones[offer["InstanceType"]].add(offer["Location"])
    return zones


def check_efa(cfg: StackConfig, ec2) -> list[Check]:
    """EFA on every GPU type, with at least the interfaces the node group attaches."""
    gpu_types = _gpu_types(cfg)
    try:
        described = ec2.describe_instance_types(InstanceTypes=gpu_types)["InstanceTypes"]
    except _AWS_ERRORS as err:
        return [_api_failure("EFA support", err, "ec2:DescribeInstanceTypes")]
    network = {d["InstanceType"]: d.get("NetworkInfo", {}) for d in described}
    checks = []
    for itype in gpu_types:
        info = network.get(itype, {})
        most = (info.get("EfaInfo") or {}).get("MaximumEfaInterfaces", 0)
        wanted = facts(itype).efa_interfaces
        name = f"EFA on {itype}"
        if not info.get("EfaSupported"):
            checks.append(Check(name, "fail", "EFA not supported",
                                "choose an EFA-capable GPU type for the node group (NIXL KV "
                                "transfer between prefill and decode runs over EFA)"))
        elif most < wanted:
            checks.append(Check(name, "fail", f"at most {most} EFA interfaces, the node group "
                                f"attaches {wanted}", "correct efa_interfaces of "
                                f"{itype} in facts/instances.py"))
        else:
            checks.append(Check(name, "pass", f"supported, up to {most} interfaces "
                                f"(node group attaches {wanted})"))
    return checks


def vcpus_needed(cfg: StackConfig) -> dict[str, int]:
    """On-demand vCPUs per quota family at the campaign's peak: the larger of its two
    serving modes (the idle GPU group is at 0 nodes when scaleUnusedGpuGroupToZero)."""
    peak: dict[str, int] = {}
    for graph in GRAPHS:
        need: dict[str, int] = {}
        for role, nodes in nodes_up(cfg, graph).items():
            itype = getattr(cfg.node_groups, role).instance_type
            need[quota_family(itype)] = need.get(quota_family(itype), 0) + facts(itype).vcpus * nodes
        for family, vcpus in need.items():
            peak[family] = max(peak.get(family, 0), vcpus)
    return peak


def check_quotas(cfg: StackConfig, quotas, ec2) -> list[Check]:
    try:
        in_use = _running_vcpus(ec2)
    except _AWS_ERRORS as err:
        return [_api_failure("vCPU quotas", err, "ec2:DescribeInstances")]
    checks = []
    for family, need in sorted(vcpus_needed(cfg).items()):
        name = f"on-demand {family} vCPU quota"
        try:
            quota = _quota_value(quotas, QUOTA_CODES[family])
        except _AWS_ERRORS as err:
            checks.append(_api_failure(name, err, "servicequotas:GetServiceQuota"))
            continue
        used = in_use.get(family, 0)
        detail = f"quota {quota:g}, in use {used}, the lab needs {need}"
        if used + need <= quota:
            checks.append(Check(name, "pass", detail))
        else:
            checks.append(Check(name, "fail", detail,
                                f"request at least {used + need} vCPUs: aws service-quotas "
                                f"request-service-quota-increase --service-code ec2 --quota-code "
                                f"{QUOTA_CODES[family]} --desired-value {used + need} "
                                f"--region {cfg.region} (or stop instances using it)"))
    return checks


def _quota_value(quotas, code: str) -> float:
    """The account's applied quota; an account that never changed it has only the default."""
    try:
        return quotas.get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"]
    except quotas.exceptions.NoSuchResourceException:
        return quotas.get_aws_default_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"]


def _running_vcpus(ec2) -> dict[str, int]:
    """vCPUs of the account's running instances per quota family. Usage counts the instance
    type's default vCPUs, whatever CPU options an instance was started with."""
    running: dict[str, int] = {}
    pages = ec2.get_paginator("describe_instances").paginate(
        Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])
    for page in pages:
        for reservation in page["Reservations"]:
            for instance in reservation["Instances"]:
                running[instance["InstanceType"]] = running.get(instance["InstanceType"], 0) + 1
    used: dict[str, int] = {}
    if running:
        described = ec2.describe_instance_types(InstanceTypes=sorted(running))["InstanceTypes"]
        for d in described:
            family = quota_family(d["InstanceType"])
            vcpus = d["VCpuInfo"]["DefaultVCpus"] * running[d["InstanceType"]]
            used[family] = used.get(family, 0) + vcpus
    return used


def check_eks_version(cfg: StackConfig, eks) -> Check:
    version = cfg.kubernetes_version
    name = f"EKS {version}"
    try:
        found = eks.describe_cluster_versions(clusterVersions=[version])["clusterVersions"]
    except _AWS_ERRORS as err:
        return _api_failure(name, err, "eks:DescribeClusterVersions")
    status = found[0].get("versionStatus", "") if found else ""
    if status == "STANDARD_SUPPORT":
        return Check(name, "pass", f"available in {cfg.region}, standard support")
    if status == "EXTENDED_SUPPORT":
        return Check(name, "warn", eks_facts.describe(version, dt.date.today()),
                     "set kubernetesVersion to a version in standard support")
    return Check(name, "fail", f"not offered in {cfg.region} ({status or 'unknown version'})",
                 "set kubernetesVersion to a version EKS offers (aws eks describe-cluster-versions)")


def check_gpu_release(cfg: StackConfig) -> Check:
    """What guards the GPU hours: the release after each run and the lease (no AWS call)."""
    release = cfg.gpu_release
    lease = (f"lease {release.lease_hours} h: a GPU node group up that long since its last change "
             "is scaled to 0 whatever runs")
    if not release.grace_minutes:
        return Check("GPU release", "warn", f"off after a run (gpuRelease.graceMinutes 0); {lease}",
                     "set gpuRelease.graceMinutes (e.g. 10) so the GPUs stop once the results are in S3")
    return Check("GPU release", "pass", f"GPU node groups to 0 {release.grace_minutes} min after each "
                 f"results export; {lease}; `pulumi up --refresh` brings them back")


def check_capacity_reservations(cfg: StackConfig, ec2) -> Check:
    gpu_types = _gpu_types(cfg)
    name = "capacity reservations"
    try:
        found = ec2.describe_capacity_reservations(Filters=[
            {"Name": "instance-type", "Values": gpu_types},
            {"Name": "state", "Values": ["active", "scheduled"]}])["CapacityReservations"]
    except _AWS_ERRORS as err:
        return _api_failure(name, err, "ec2:DescribeCapacityReservations")
    usable = [r for r in found if r["AvailabilityZone"] == cfg.gpu_availability_zone
              and r.get("InstanceMatchCriteria") == "open"
              and r.get("ReservationType", "default") == "default" and r["State"] == "active"]
    if usable:
        return Check(name, "pass", "open reservations in the GPU zone, used automatically: "
                     + "; ".join(map(_describe_reservation, usable)))
    if found:
        return Check(name, "warn", "reservations the node groups will not use as configured: "
                     + "; ".join(map(_describe_reservation, found)),
                     "an open reservation in gpuAvailabilityZone is used automatically; a targeted "
                     "one or a Capacity Block must be named in the node groups' launch template")
    return Check(name, "warn", f"none for {', '.join(gpu_types)}: on-demand GPU capacity is not "
                 "guaranteed (InsufficientInstanceCapacity)",
                 "optional: an On-Demand Capacity Reservation or a Capacity Block in "
                 f"{cfg.gpu_availability_zone} makes the GPU node groups' start certain")


def _describe_reservation(r: dict) -> str:
    return (f"{r['CapacityReservationId']} {r['InstanceType']} in {r['AvailabilityZone']} "
            f"{r.get('AvailableInstanceCount', 0)}/{r.get('TotalInstanceCount', 0)} available, "
            f"{r.get('InstanceMatchCriteria', '?')}, {r.get('ReservationType', 'default')}, "
            f"{r['State']}")


def _instance_types(cfg: StackConfig) -> dict[str, str]:
    return {role: getattr(cfg.node_groups, role).instance_type for role in NODE_GROUPS}


def _gpu_types(cfg: StackConfig) -> list[str]:
    """Both GPU groups' types: a campaign runs agg and disagg, so both must be available."""
    return sorted({cfg.node_groups.prefill.instance_type, cfg.node_groups.decode.instance_type})


def _zones(zones: set[str]) -> str:
    return ", ".join(sorted(zones)) or "no zone of the region"


def _api_failure(name: str, err: Exception, action: str) -> Check:
    return Check(name, "fail", f"AWS refused or failed: {err}",
                 f"allow {action} for these credentials, then run preflight again")


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    stack_file.add_stack_argument(parser)
    parser.add_argument("--profile", help="AWS profile to use (default: the usual boto3 chain)")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")


def run(args: argparse.Namespace) -> int:
    # The file as `pulumi up` reads it (no test CIDR), checked by the same rules; the AWS
    # checks run too, so that every problem is reported at once.
    stack = stack_file.load(args.stack, test_cidr=False)
    cfg, refused = config.validate(stack.values)
    refused += config.stack_problems(stack.values, stack.secret_keys, stack.name)
    checks = [check_stack_config(refused), *local_checks(cfg),
              *run_checks(cfg, AwsClients.create(cfg.region, args.profile), stack.name)]
    if args.json:
        print(json.dumps([dataclasses.asdict(c) for c in checks], indent=2))
    else:
        print(f"preflight of stack {stack.name}: region {cfg.region}, "
              f"GPU zone {cfg.gpu_availability_zone}")
        print(render(checks))
    return 1 if any(c.status == "fail" for c in checks) else 0


def render(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{c.status.upper():<5} {c.name:<{width}}  {c.detail}")
        if c.fix:
            lines.append(f"{'':<5} {'':<{width}}  fix: {c.fix}")
    failed = sum(c.status == "fail" for c in checks)
    lines.append(f"{failed} check(s) failed" if failed else "all checks passed")
    return "\n".join(lines)
