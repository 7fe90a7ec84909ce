"""`benchlab cost`: the hourly figures follow the node groups and the serving mode, the campaign
follows the benchmark plan's durations, the floor is GPUs x benchmark time only, and the live
Pricing API path works (botocore Stubber: moto has no Pricing API)."""
from __future__ import annotations

import datetime as dt
import json

import pytest
from botocore.stub import Stubber

from cli import cli, cost, pricing
from cli.cli import CliError
from stacks import config
from facts import eks
from facts.instances import facts
from jobs import names

TYPES = ["g6e.12xlarge", "m7i.2xlarge", "p4d.24xlarge"]


def table(cfg):
    return pricing.table_prices(sorted({getattr(cfg.node_groups, r).instance_type for r in names.NODE_GROUPS}))


def total(lines: dict) -> float:
    return sum(lines.values())


def decode_usd_per_hour(cfg, graph: str) -> float:
    lines = cost.hourly(cfg, table(cfg), graph)
    return next(usd for name, usd in lines.items() if name.startswith("decode:"))


def test_the_idle_gpu_group_costs_nothing_unless_kept_up():
    assert decode_usd_per_hour(config.parse({}), "agg") == 0
    kept = config.parse({"serving": {"scaleUnusedGpuGroupToZero": False}})
    assert decode_usd_per_hour(kept, "agg") == decode_usd_per_hour(kept, "disagg") > 0


def test_disagg_costs_the_decode_group_more_per_hour():
    cfg = config.parse({})
    prices = table(cfg)
    decode = cfg.node_groups.decode
    decode_usd = decode.count * (facts(decode.instance_type).on_demand_usd_per_hour
                                 + decode.disk_gib * cost.EBS_GP3_USD_PER_GB_MONTH / cost.HOURS_PER_MONTH)
    difference = total(cost.hourly(cfg, prices, "disagg")) - total(cost.hourly(cfg, prices, "agg"))
    assert difference == pytest.approx(decode_usd)


def test_hourly_has_every_part_of_the_stack():
    cfg = config.parse({})
    names = " | ".join(cost.hourly(cfg, table(cfg), "disagg"))
    for part in ("system", "prefill", "decode", "EKS control plane", "NAT gateway", "EFS", "EBS"):
        assert part in names


def test_floor_is_gpu_price_times_benchmark_time_only():
    cfg = config.parse({})
    est = cost.estimate(cfg, table(cfg))
    hours = cfg.bench.planned_seconds / 3600
    p4d, g6e = facts("p4d.24xlarge").on_demand_usd_per_hour, facts("g6e.12xlarge").on_demand_usd_per_hour
    assert est.floor["agg"] == pytest.approx(2 * p4d * hours)
    assert est.floor["disagg"] == pytest.approx((2 * p4d + 4 * g6e) * hours)
    assert est.total_usd > est.floor_usd


def test_campaign_follows_the_planned_benchmark_durations():
    base = config.parse({})
    longer = config.parse({"bench": {"concurrencySweep": {"stepSeconds": 240}},
                           "gpuRelease": {"leaseHours": 7}})  # a longer run needs a longer lease
    extra_hours = (longer.bench.planned_seconds - base.bench.planned_seconds) / 3600
    assert extra_hours > 0
    prices = table(base)
    per_hour_while_benchmarking = total(cost.hourly(base, prices, "agg")) + total(cost.hourly(base, prices, "disagg"))
    grown = cost.estimate(longer, prices).total_usd - cost.estimate(base, prices).total_usd
    assert grown == pytest.approx(extra_hours * per_hour_while_benchmarking)


def test_campaign_timeline_holds_every_documented_overhead():
    cfg = config.parse({})
    est = cost.estimate(cfg, table(cfg))
    bench = cfg.bench.planned_seconds / 60 + len(cfg.bench.modes()) * cost.BENCH_JOB_OVERHEAD_MIN
    download = cost.model_gib(cfg) * 1024 / cost.MODEL_DOWNLOAD_MB_PER_S / 60
    overheads = (cost.CONTROL_PLANE_MIN + 2 * cost.NODE_GROUP_READY_MIN + cost.GPU_OPERATOR_READY_MIN
                 + max(cost.GPU_OPERATOR_READY_MIN, download) + 2 * cost.DGD_READY_MIN
                 + 2 * cost.RESULTS_EXPORT_MIN + 2 * cost.OPERATOR_TURNAROUND_MIN
                 + cost.DESTROY_NODES_MIN + cost.DESTROY_CLUSTER_MIN)
    assert est.total_minutes == pytest.approx(overheads + 2 * bench)


def test_no_decode_boot_phase_when_the_decode_group_stays_up():
    kept = config.parse({"serving": {"scaleUnusedGpuGroupToZero": False}})
    boot = [p for p in cost.timeline(kept) if "decode nodes boot" in p.name]
    assert [p.minutes for p in boot] == [0]


def test_nat_gateways_match_the_program(run_lab):
    assert len(run_lab().of_type("aws:ec2/natGateway:NatGateway")) == cost.NAT_GATEWAYS


# ---- live prices -------------------------------------------------------------------------
def product(itype: str, usd: str, unit: str = "Hrs") -> str:
    return json.dumps({"product": {"attributes": {"instanceType": itype}}, "terms": {"OnDemand": {
        "T1": {"priceDimensions": {"D1": {"unit": unit, "pricePerUnit": {"USD": usd}}}}}}})


def expected_filters(itype: str, region: str) -> list[dict]:
    values = {"instanceType": itype, "regionCode": region, **pricing.PRODUCT_FILTERS}
    return [{"Type": "TERM_MATCH", "Field": k, "Value": v} for k, v in values.items()]


@pytest.fixture
def pricing_stub():
    client = pricing.pricing_client()
    with Stubber(client) as stub:
        yield client, stub


def test_live_prices_come_from_the_pricing_api_for_the_stack_region(pricing_stub):
    client, stub = pricing_stub
    for i, itype in enumerate(TYPES):
        stub.add_response("get_products", {"PriceList": [product(itype, f"{i + 1}.5")]},
                          {"ServiceCode": "AmazonEC2", "Filters": expected_filters(itype, "us-west-2"),
                           "MaxResults": 10})
    prices = pricing.live_prices(client, TYPES, "us-west-2")
    assert prices.usd_per_hour == {"g6e.12xlarge": 1.5, "m7i.2xlarge": 2.5, "p4d.24xlarge": 3.5}
    assert "live" in prices.source and "us-west-2" in prices.source
    stub.assert_no_pending_responses()


def test_live_price_missing_or_ambiguous_is_an_error(pricing_stub):
    client, stub = pricing_stub
    stub.add_response("get_products", {"PriceList": []})
    with pytest.raises(CliError, match="expected one on-demand Linux price for p4d.24xlarge"):
        pricing.live_prices(client, ["p4d.24xlarge"], "us-east-1")
    stub.add_response("get_products", {"PriceList": [product("p4d.24xlarge", "1"), product("p4d.24xlarge", "2")]})
    with pytest.raises(CliError, match=r"found \[1.0, 2.0\]"):
        pricing.live_prices(client, ["p4d.24xlarge"], "us-east-1")


def test_live_price_api_refusal_is_an_error(pricing_stub):
    client, stub = pricing_stub
    stub.add_client_error("get_products", "AccessDeniedException")
    with pytest.raises(CliError, match="run without --live"):
        pricing.live_prices(client, ["p4d.24xlarge"], "us-east-1")


# ---- CLI -------------------------------------------------------------------------------------
def test_cli_prints_hourly_campaign_floor_and_ratio(capsys):
    assert cli.main(["cost", "--stack", "dev"]) == 0
    out = capsys.readouterr().out
    cfg = config.parse({})
    est = cost.estimate(cfg, table(cfg))
    assert "as of" in out and "serving.mode=disagg" in out
    assert f"{est.total_usd:.2f}" in out and f"{est.floor_usd:.2f}" in out
    assert (f"campaign / floor: {est.total_usd / est.floor_usd:.2f}x release off, "
            f"{est.total_usd_released / est.floor_usd:.2f}x release on") in out
    assert "GPU release: node groups to 0 10 min after each results export; lease 6 h" in out
    assert "EKS 1.32: " in out


def test_cli_live_uses_the_pricing_api(monkeypatch, pricing_stub, capsys):
    client, stub = pricing_stub
    monkeypatch.setattr(pricing, "pricing_client", lambda profile=None: client)
    for itype in TYPES:
        stub.add_response("get_products", {"PriceList": [product(itype, "1.0")]})
    assert cli.main(["cost", "--live"]) == 0
    assert "live from the AWS Pricing API" in capsys.readouterr().out


def test_table_prices_in_another_region_carry_a_note():
    cfg = config.parse({"region": "us-west-2", "availabilityZones": ["us-west-2a", "us-west-2b"],
                        "gpuAvailabilityZone": "us-west-2a"})
    prices = table(cfg)
    assert "use --live" in cost.render(cost.estimate(cfg, prices), prices, cfg)


# ---- EKS control plane, GPU release and lease ------------------------------------------------
def control_plane_line(cfg, on):
    return {name: usd for name, usd in cost.fixed_usd_per_hour(cfg, on).items() if "EKS" in name}


def test_the_control_plane_price_follows_the_version_support_calendar():
    cfg = config.parse({})  # 1.32: standard support ended 2026-03-23
    assert control_plane_line(cfg, dt.date(2026, 3, 23)) == {"EKS control plane (1.32, standard support)": 0.10}
    assert control_plane_line(cfg, dt.date(2026, 3, 24)) == {"EKS control plane (1.32, extended support)": 0.60}
    newer = config.parse({"kubernetesVersion": "1.35"})
    assert list(control_plane_line(newer, dt.date(2026, 11, 29)).values()) == [0.10]
    assert "extended support since 2026-03-23" in eks.describe("1.32", dt.date(2026, 11, 29))
    assert "support ended" in eks.describe("1.31", dt.date(2026, 11, 29))


def test_every_allowed_eks_version_has_a_support_calendar():
    assert config.SUPPORTED_EKS_VERSIONS == tuple(eks.CALENDAR)
    assert config.StackConfig().kubernetes_version == "1.32"
    with pytest.raises(config.ConfigError, match="kubernetesVersion: '1.30' is not supported"):
        config.parse({"kubernetesVersion": "1.30"})


def gpu_usd_per_minute(cfg, graph):
    """GPU nodes with their root volumes (both go when a node group scales to zero)."""
    return cost.gpu_nodes_usd_per_hour(cfg, table(cfg), graph) / 60


def test_the_release_bills_gpus_for_the_grace_only_while_a_person_waits():
    cfg = config.parse({})
    prices = table(cfg)
    on = dt.date(2026, 11, 29)
    planned = cost.estimate(cfg, prices, on)
    assert planned.total_usd_released == pytest.approx(planned.total_usd)  # waits shorter than the grace
    wait, grace = 120, cfg.gpu_release.grace_minutes
    longer = cost.estimate(cfg, prices, on, wait)
    saved = (wait - grace) * (gpu_usd_per_minute(cfg, "agg") + gpu_usd_per_minute(cfg, "disagg"))
    assert longer.total_usd - longer.total_usd_released == pytest.approx(saved)
    off = config.parse({"gpuRelease": {"graceMinutes": 0}})
    assert cost.estimate(off, prices, on, wait).total_usd_released == pytest.approx(longer.total_usd)


def test_destroy_bills_the_gpus_only_while_their_node_groups_go():
    cfg = config.parse({})
    destroy = [p for p in cost.timeline(cfg) if p.name.startswith("destroy")]
    gpu_minutes = sum(p.minutes for p in destroy if p.nodes["prefill"] or p.nodes["decode"])
    assert gpu_minutes == cost.GPU_NODE_GROUP_DELETE_MIN < cost.DESTROY_NODES_MIN


def test_a_forgotten_lab_is_capped_by_the_lease_and_the_release():
    cfg = config.parse({"gpuRelease": {"graceMinutes": 10, "leaseHours": 6}})
    forgotten = cost.estimate(cfg, table(cfg), dt.date(2026, 11, 29)).forgotten
    never, lease, release = forgotten.values()
    gpus = cost.gpu_nodes_usd_per_hour(cfg, table(cfg), "disagg")
    assert gpus > cost.gpu_usd_per_hour(cfg, table(cfg), "disagg")  # root volumes go too
    assert never - lease == pytest.approx((cost.FORGOTTEN_HOURS - 6) * gpus)
    assert lease - release == pytest.approx((6 - 10 / 60) * gpus)
