"""On-demand instance prices: the dated table in facts/instances.py, or a live lookup
through the AWS Pricing API (`benchlab cost --live`) for the stack's own region."""
from __future__ import annotations

import json
from dataclasses import dataclass

from botocore.exceptions import BotoCoreError, ClientError

from cli.cli import CliError
from facts.instances import PRICE_REGION, PRICES_AS_OF, facts

# The Pricing API is served from a few regions only; us-east-1 answers for every region.
PRICING_ENDPOINT_REGION = "us-east-1"
# One product per instance type: Linux, shared tenancy, no pre-installed software, on-demand.
PRODUCT_FILTERS = {"operatingSystem": "Linux", "tenancy": "Shared", "preInstalledSw": "NA",
                   "capacitystatus": "Used", "licenseModel": "No License required"}


@dataclass(frozen=True)
class InstancePrices:
    usd_per_hour: dict[str, float]
    source: str  # where the prices come from, printed with every figure
    live: bool = False  # today's, from the Pricing API (else the dated table)

    def __getitem__(self, instance_type: str) -> float:
        return self.usd_per_hour[instance_type]


def table_prices(instance_types: list[str]) -> InstancePrices:
    return InstancePrices({t: facts(t).on_demand_usd_per_hour for t in instance_types},
                          f"on-demand list prices, {PRICE_REGION}, as of {PRICES_AS_OF} "
                          "(facts/instances.py)")


def live_prices(pricing, instance_types: list[str], region: str) -> InstancePrices:
    """Today's on-demand prices in `region` from the Pricing API (`pricing` is a boto3
    client for service "pricing")."""
    prices = {}
    for itype in instance_types:
        filters = [{"Type": "TERM_MATCH", "Field": k, "Value": v}
                   for k, v in {"instanceType": itype, "regionCode": region, **PRODUCT_FILTERS}.items()]
        try:
            found = pricing.get_products(ServiceCode="AmazonEC2", Filters=filters, MaxResults=10)
        except (BotoCoreError, ClientError) as err:
            raise CliError(f"Pricing API: {err} (run without --live to use the dated table)") from None
        usd = {_on_demand_usd(json.loads(item)) for item in found["PriceList"]} - {None}
        if len(usd) != 1:
            raise CliError(f"Pricing API: expected one on-demand Linux price for {itype} in "
                           f"{region}, found {sorted(usd) or 'none'}")
        prices[itype] = usd.pop()
    return InstancePrices(prices, f"on-demand prices, {region}, live from the AWS Pricing API",
                          live=True)


def _on_demand_usd(product: dict) -> float | None:
    """The hourly USD price of a Pricing API product's on-demand term (None when it has none)."""
    for term in product.get("terms", {}).get("OnDemand", {}).values():
        for dimension in term.get("priceDimensions", {}).values():
            if dimension.get("unit") in ("Hrs", "Hours") and "USD" in dimension.get("pricePerUnit", {}):
                return float(dimension["pricePerUnit"]["USD"])
    return None


def pricing_client(profile: str | None = None):
    import boto3

    return boto3.Session(profile_name=profile, region_name=PRICING_ENDPOINT_REGION).client("pricing")
