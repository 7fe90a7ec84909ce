"""What a serving configuration costs: $/h of its GPU nodes from the dated price table, and the
$ per million output tokens that follows from a measured throughput."""
from __future__ import annotations

from jobs.run_manifest import RunManifest
from facts.instances import PRICE_REGION, PRICES_AS_OF, facts

SECONDS_PER_HOUR = 3600
PRICES_DATED = f"on-demand list prices, {PRICE_REGION}, as of {PRICES_AS_OF}"
PRICE_NOTE = (f"Prices: {PRICES_DATED}; GPU nodes of the serving graph only (system nodes, "
              "EKS control plane and NAT gateway excluded).")


def usd_per_hour(manifest: RunManifest) -> float:
    """$/h of the manifest's nodes; KeyError names an instance type the price table lacks."""
    return sum(group.count * facts(group.instance_type).on_demand_usd_per_hour
               for group in manifest.nodes)


def usd_per_million_tokens(hourly_usd: float, tokens_per_second: float) -> float | None:
    if tokens_per_second <= 0:
        return None
    return hourly_usd / (tokens_per_second * SECONDS_PER_HOUR) * 1e6
