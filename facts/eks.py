"""EKS control-plane facts: the Kubernetes versions the lab allows, each one's support calendar,
and what a cluster-hour costs in standard and in extended support.

No Pulumi import: config validation, `benchlab cost` and `benchlab preflight` read this.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

# Per cluster-hour: $0.10 in standard support, $0.60 in extended support:
# https://aws.amazon.com/blogs/containers/amazon-eks-extended-support-for-kubernetes-versions-pricing/
# Zone IDs EKS refuses for a cluster's subnets (UnsupportedAvailabilityZoneException); zone names
# map to different IDs per account: https://docs.aws.amazon.com/eks/latest/userguide/network-reqs.html#network-requirements-subnets
UNSUPPORTED_CONTROL_PLANE_ZONE_IDS = ("use1-az3", "usw1-az2", "cac1-az3")
STANDARD_USD_PER_HOUR = 0.10
EXTENDED_USD_PER_HOUR = 0.60


@dataclass(frozen=True)
class Support:
    standard_ends: dt.date
    extended_ends: dt.date


# End of standard / extended support, from EKS's release calendar
# (https://docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html, as recorded in
# endoflife-date/endoflife.date:products/eks.md). Every version here has an EKS-optimized AL2023
# NVIDIA AMI (the GPU node groups' AL2023_x86_64_NVIDIA), e.g.
# amazon-eks-node-al2023-x86_64-nvidia-1.35-v20260423: https://github.com/awslabs/amazon-eks-ami/releases
CALENDAR = {
    "1.31": Support(dt.date(2025, 11, 26), dt.date(2026, 11, 26)),
    "1.32": Support(dt.date(2026, 3, 23), dt.date(2027, 3, 23)),
    "1.33": Support(dt.date(2026, 7, 29), dt.date(2027, 7, 29)),
    "1.34": Support(dt.date(2026, 12, 2), dt.date(2027, 12, 2)),
    "1.35": Support(dt.date(2027, 3, 27), dt.date(2028, 3, 27)),
}
VERSIONS = tuple(CALENDAR)


def phase(version: str, on: dt.date) -> str:
    """"standard", "extended" (billed at the extended price) or "ended" (EKS no longer creates
    such a cluster and upgrades existing ones)."""
    support = CALENDAR[version]
    if on <= support.standard_ends:
        return "standard"
    return "extended" if on <= support.extended_ends else "ended"


def control_plane_usd_per_hour(version: str, on: dt.date) -> float:
    return STANDARD_USD_PER_HOUR if phase(version, on) == "standard" else EXTENDED_USD_PER_HOUR


def describe(version: str, on: dt.date) -> str:
    """One line for `cost` and `preflight`: the version's support phase on `on` and its price."""
    support = CALENDAR[version]
    current = phase(version, on)
    if current == "standard":
        return (f"EKS {version}: standard support until {support.standard_ends} "
                f"(${STANDARD_USD_PER_HOUR:.2f}/h), then extended (${EXTENDED_USD_PER_HOUR:.2f}/h)")
    if current == "extended":
        return (f"EKS {version}: extended support since {support.standard_ends}, billed "
                f"${EXTENDED_USD_PER_HOUR:.2f}/h instead of ${STANDARD_USD_PER_HOUR:.2f}/h "
                f"(until {support.extended_ends}); a newer version costs less: "
                f"{', '.join(v for v in VERSIONS if phase(v, on) == 'standard') or 'none in standard support'}")
    return (f"EKS {version}: support ended {support.extended_ends}; EKS creates no such cluster. "
            f"Choose one of {', '.join(v for v in VERSIONS if phase(v, on) != 'ended')}")
