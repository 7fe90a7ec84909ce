"""`benchlab plan`: the stack -> AIConfigurator mapping, real AIConfigurator 0.12.0 runs for the
dev stack (agg on the A100s, disagg with A100 prefill and L40S decode), what it cannot model,
and bad input. The runs need the tool venv (`./benchlab tools`); without it they skip, in CI
they fail."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import yaml

from cli import stack_file
from cli.cli import main as lab_main
from facts.instances import INSTANCE_FACTS
from facts.models import MODEL_FACTS
from planner import aiconfigurator, recommend
from planner.inputs import SYSTEM_BY_GPU, PlanInputError, Slo, plan_inputs
from planner.plan import make_plan
from planner.render import markdown
from jobs.run_manifest import NodeGroup, WorkerSpec, write_manifest
from report.predictions import prediction_for
from report.render import build_report
from stacks.config import TENSOR_PARALLEL_SIZES
from tests.conftest import REPO, unpack_aiperf_exports
from tests.test_report import add_run, table
from tests.test_report import manifest as report_manifest

TOOLS = REPO / ".venvs"
AIC = TOOLS / "aiconfigurator"
SLO = Slo(1000.0, 20.0, "test")


def aic_or_skip() -> Path:
    if (AIC / "bin" / "aiconfigurator").is_file():
        return TOOLS
    message = f"{AIC} is missing; create it with: ./benchlab tools"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def installed(relative: str) -> Path:
    """A file of the installed aiconfigurator_core package (systems, model configs)."""
    found = sorted(AIC.glob(f"lib/python*/site-packages/aiconfigurator_core/{relative}"))
    assert found, f"{relative} not in the installed aiconfigurator_core"
    return found[0]


def dev():
    return stack_file.load("dev").config()


@pytest.fixture(scope="module")
def dev_plan():
    """One real plan of the dev stack (two AIConfigurator calls side by side, seconds)."""
    return make_plan(plan_inputs(dev(), SLO), "dev", aic_or_skip())


# --- the mapping ------------------------------------------------------------------------------
def test_dev_maps_to_a100_prefill_and_l40s_decode_with_the_deployable_tp_sizes():
    inputs = plan_inputs(dev(), SLO)
    prefill, decode = inputs.groups["prefill"], inputs.groups["decode"]
    assert (prefill.system.name, prefill.gpus, prefill.tp_sizes) == ("a100_sxm", 16, (1, 2, 4, 8))
    assert (decode.system.name, decode.gpus, decode.tp_sizes) == ("l40s", 16, (1, 2, 4))
    assert (inputs.isl, inputs.osl, inputs.concurrency) == (1024, 512, (1, 2, 4, 8, 16, 32, 64))
    assert inputs.serving == {"agg": {"agg": (4, 4)},
                              "disagg": {"prefill": (4, 4), "decode": (2, 4)}}


def test_fp8_on_a100_is_modelled_as_bf16_and_said_so_while_l40s_keeps_fp8():
    inputs = plan_inputs(dev(), SLO)
    assert inputs.groups["prefill"].quant_override == "bfloat16"
    assert inputs.groups["decode"].quant_override is None
    fp8 = [c for c in inputs.caveats if "FP8" in c]
    assert len(fp8) == 1 and fp8[0].startswith("prefill (p4d.24xlarge") and "BF16 variant" in fp8[0]
    experiments = aiconfigurator.search_experiments(inputs)
    assert {experiments["disagg"][f"prefill_{k}_quant_mode"] for k in aiconfigurator.QUANT_KEYS} == {"bfloat16"}
    assert not any(key.startswith("decode_") and key.endswith("quant_mode") for key in experiments["disagg"])


def test_p4d_40gb_against_aiconfigurators_80gb_a100_is_a_caveat():
    caveats = plan_inputs(dev(), SLO).caveats
    assert any("assumes 80 GiB" in c and "40 GiB" in c and "optimistic" in c for c in caveats)
    p4de = dataclasses.replace(dev(), node_groups=dataclasses.replace(
        dev().node_groups, prefill=dataclasses.replace(dev().node_groups.prefill, instance_type="p4de.24xlarge")))
    assert not any("GiB" in c for c in plan_inputs(p4de, SLO).caveats)


def test_the_smoke_stacks_a10g_has_no_data_every_group_named_with_the_supported_types(capsys):
    with pytest.raises(PlanInputError) as err:
        plan_inputs(stack_file.load("smoke").config(), SLO)
    assert len(err.value.problems) == 2
    for group in ("prefill", "decode"):
        assert any(f"benchlab:nodeGroups.{group}.instanceType='g5.12xlarge'" in p and "A10G" in p
                   for p in err.value.problems)
    supported = sorted(t for t, f in INSTANCE_FACTS.items() if f.gpu_model in SYSTEM_BY_GPU)
    assert f"supported: {', '.join(supported)}" in err.value.problems[0]
    assert lab_main(["plan", "--stack", "smoke", "--no-install"]) == 2
    stderr = capsys.readouterr().err
    assert "Pulumi.smoke.yaml: cannot plan this stack" in stderr and "Traceback" not in stderr


def test_a_model_without_facts_is_named():
    cfg = dataclasses.replace(dev(), model=dataclasses.replace(dev().model, id="org/unknown-7B"))
    with pytest.raises(PlanInputError, match=r"benchlab:model.id: no facts for model 'org/unknown-7B'"):
        plan_inputs(cfg, SLO)


@pytest.mark.parametrize("flag", ["--ttft-ms=0", "--itl-ms=-5", "--itl-ms=fast"])
def test_bad_slo_flags_are_refused_with_the_allowed_values(flag, capsys):
    with pytest.raises(SystemExit) as exit_:
        lab_main(["plan", flag])
    assert exit_.value.code == 2
    assert "allowed: a number of ms > 0" in capsys.readouterr().err


def test_the_disagg_unit_is_the_graphs_smallest_repeat():
    assert aiconfigurator.disagg_unit(4, 8) == (1, 2)
    assert aiconfigurator.disagg_unit(3, 8) == (3, 8)
    assert aiconfigurator.configured_experiments(plan_inputs(dev(), SLO))["disagg_as_configured"][
        "num_gpu_per_replica"] == [1 * 4 + 1 * 2]  # 4 x TP4 prefill, 4 x TP2 decode


# --- the tables beside the tool: checked against the installed package -------------------------
def test_system_table_matches_aiconfigurators_system_files():
    aic_or_skip()
    for system in set(SYSTEM_BY_GPU.values()):
        gpu = yaml.safe_load(installed(f"systems/{system.name}.yaml").read_text())["gpu"]
        assert gpu["mem_capacity"] / 2**30 == pytest.approx(system.gpu_memory_gib, abs=0.01), system
        assert (gpu.get("fp8_tc_flops", 0) > 0) == system.fp8, system


def test_model_facts_match_the_model_configs_aiconfigurator_bundles():
    aic_or_skip()
    for model_id, model in MODEL_FACTS.items():
        config = json.loads(installed(f"model_configs/{model_id.replace('/', '--')}_config.json").read_text())
        quant = (config.get("quantization_config") or {}).get("quant_method")
        assert (config["num_hidden_layers"], config["num_key_value_heads"], config["head_dim"]) == \
            (model.layers, model.kv_heads, model.head_dim), model_id
        assert (quant or config["torch_dtype"]) == model.weights, model_id


# --- real runs -----------------------------------------------------------------------------------
def test_dev_plan_recommends_deployable_agg_and_heterogeneous_disagg(dev_plan):
    assert dev_plan.failures == {}
    assert dev_plan.tool_version == "0.12.0"
    assert dev_plan.perf_db == {"a100_sxm/vllm": "0.14.0", "l40s/vllm": "0.24.0"}
    agg, disagg = (dev_plan.graphs[g].recommendation for g in ("agg", "disagg"))
    (choice,) = agg.roles.values()
    assert choice.tp in TENSOR_PARALLEL_SIZES and choice.tp * choice.replicas <= 16
    assert agg.meets_slo and agg.ttft_ms <= 1000 and agg.tpot_ms <= 20 and agg.tokens_per_s_per_gpu > 0
    assert set(disagg.roles) == {"prefill", "decode"}
    assert disagg.roles["prefill"].perf_db == "0.14.0" and disagg.roles["decode"].perf_db == "0.24.0"
    assert disagg.roles["decode"].tp <= 4 and disagg.roles["decode"].tp * disagg.roles["decode"].replicas <= 16
    assert disagg.roles["prefill"].tp * disagg.roles["prefill"].replicas <= 16
    lines = dev_plan.config_lines("agg")
    assert lines == [f"pulumi config set --stack dev --path serving.agg.tp {choice.tp}",
                     f"pulumi config set --stack dev --path serving.agg.replicas {choice.replicas}"]


def test_dev_plan_predicts_the_configured_graphs_at_every_sweep_level(dev_plan):
    for graph in ("agg", "disagg"):
        predictions = dev_plan.graphs[graph].predictions
        assert [p.concurrency for p in predictions] == [1, 2, 4, 8, 16, 32, 64], graph
        assert all(p.output_tokens_per_s > 0 and p.ttft_ms > 0 and p.tpot_ms > 0 for p in predictions)
        # more load, more throughput and no faster tokens: what a batch curve must show
        assert [p.output_tokens_per_s for p in predictions] == sorted(p.output_tokens_per_s for p in predictions)
        assert [p.tpot_ms for p in predictions] == sorted(p.tpot_ms for p in predictions)
    agg = dev_plan.graphs["agg"].predictions
    # c=1..4 on 4 replicas: one request per busy replica, so per-user speed is the same
    assert agg[0].tokens_per_s_per_user == agg[2].tokens_per_s_per_user
    assert agg[2].output_tokens_per_s == pytest.approx(4 * agg[0].output_tokens_per_s)
    assert agg[0].tokens_per_s_per_gpu == pytest.approx(agg[0].output_tokens_per_s / 16)


def test_a_slo_nothing_meets_gives_the_closest_with_a_clear_note(dev_plan, tmp_path):
    # the dev plan's disagg: AIConfigurator's L40S decode is above 20 ms per token at any batch
    disagg = dev_plan.graphs["disagg"]
    assert not disagg.recommendation.meets_slo and disagg.recommendation.tpot_ms > 20
    assert "no configuration meets the SLO" in disagg.note
    text = markdown(dev_plan)
    assert "SLO NOT met" in text and "SLO met" in text
    assert "modelled as the BF16 variant" in text


def test_plan_json_records_versions_slo_caveats_and_predictions(dev_plan):
    body = json.loads(json.dumps(dev_plan.to_json()))
    assert body["tool"] == {"name": "aiconfigurator", "version": "0.12.0",
                            "perf_db": {"a100_sxm/vllm": "0.14.0", "l40s/vllm": "0.24.0"}}
    assert body["slo"] == {"ttft_ms": 1000.0, "itl_ms": 20.0, "source": "test"}
    configured = body["graphs"]["disagg"]["as_configured"]
    assert configured["workers"] == {"prefill": {"tp": 4, "replicas": 4}, "decode": {"tp": 2, "replicas": 4}}
    assert configured["nodes"] == {"prefill": {"instance_type": "p4d.24xlarge", "count": 2},
                                   "decode": {"instance_type": "g6e.12xlarge", "count": 4}}
    assert len(configured["predictions"]) == 7
    assert body["graphs"]["agg"]["recommended"]["config_lines"] == dev_plan.config_lines("agg")


def test_a_failed_experiment_is_reported_although_aiconfigurator_exits_0(tmp_path):
    """FP8 compute on the A100 (no override): AIConfigurator logs the error, writes nothing for
    that experiment and still exits 0."""
    inputs = plan_inputs(dev(), SLO)
    no_override = dataclasses.replace(inputs.groups["prefill"], quant_override=None)
    inputs = dataclasses.replace(inputs, groups={**inputs.groups, "prefill": no_override})
    agg = {"agg": aiconfigurator.search_experiments(inputs)["agg"]}
    outcome = aiconfigurator.run([agg], tmp_path, aic_or_skip())
    assert outcome.best == {} and set(outcome.failures) == {"agg"}
    assert "fp8_tc_flops" in outcome.failures["agg"]


def test_recommendation_checks_the_slo_itself():
    """AIConfigurator returns its closest rows when none meets the SLO: the pick says so."""
    rows = [{"ttft": 100.0, "tpot": 30.0, "tp": 2.0, "pp": 1.0, "dp": 1.0, "moe_ep": 1.0, "version": "v",
             "tokens/s/gpu": 900.0, "tokens/s/user": 30.0, "concurrency": 8.0},
            {"ttft": 100.0, "tpot": 15.0, "tp": 4.0, "pp": 1.0, "dp": 1.0, "moe_ep": 1.0, "version": "v",
             "tokens/s/gpu": 500.0, "tokens/s/user": 60.0, "concurrency": 4.0}]
    prefill = plan_inputs(dev(), SLO).groups["prefill"]
    met = recommend.recommend_agg(rows, prefill, SLO)
    assert met.meets_slo and met.roles["agg"].tp == 4 and met.roles["agg"].replicas == 4
    missed = recommend.recommend_agg(rows[:1], prefill, SLO)
    assert not missed.meets_slo and missed.roles["agg"].replicas == 8


def test_cli_passes_the_flags_slo_and_writes_plan_md_and_json(dev_plan, tmp_path, capsys, monkeypatch):
    asked = []

    def planned(inputs, stack, tools):  # the real dev plan, not a second run
        asked.append((inputs.slo, stack))
        return dev_plan
    monkeypatch.setattr("cli.plan_command.make_plan", planned)
    code = lab_main(["plan", "--stack", "dev", "--out", str(tmp_path), "--tools-dir", str(aic_or_skip()),
                     "--no-install", "--itl-ms", "40"])
    out = capsys.readouterr().out
    assert code == 0 and asked == [(Slo(450.0, 40.0, "flags"), "dev")]
    assert (tmp_path / "plan.md").read_text() in out
    assert json.loads((tmp_path / "plan.json").read_text()) == json.loads(json.dumps(dev_plan.to_json()))
    assert "pulumi config set --stack dev --path serving.decode.replicas" in out


# --- prediction vs measurement in the report ---------------------------------------------------
DEV_SHAPE = {"agg": dict(nodes=[NodeGroup("prefill", "p4d.24xlarge", 2, 8)],
                         workers={"agg": WorkerSpec(4, 4)}),
             "disagg": dict(nodes=[NodeGroup("prefill", "p4d.24xlarge", 2, 8),
                                   NodeGroup("decode", "g6e.12xlarge", 4, 4)],
                            workers={"prefill": WorkerSpec(4, 4), "decode": WorkerSpec(4, 2)})}


def test_report_compares_a_recorded_and_a_given_plan_with_the_measured_sweep(dev_plan, tmp_path):
    """agg: simulated, its manifest records the plan (as the local lab does); disagg: a cloud-like
    run without a record, matched to the plan passed to the report (`--plan`)."""
    plan = json.loads(json.dumps(dev_plan.to_json()))
    run = add_run(tmp_path / "results", "run-1", unpack_aiperf_exports("0.9.0", tmp_path / "tree"),
                  "2026-11-29T10:00:00Z", {"agg": True, "disagg": False})
    for graph, shape in DEV_SHAPE.items():
        body = report_manifest("run-1", graph, "2026-11-29T10:00:00Z", graph == "agg", **shape)
        if graph == "agg":
            record = prediction_for(plan, body)
            assert record is not None
            body = dataclasses.replace(body, extra={"prediction": record})
        write_manifest(run / graph, body)
    report = build_report(run, tmp_path / "report", plan)
    rows = table(report, "prediction_vs_measurement")
    sweep = {(r["graph"], r["concurrency"]): r for r in table(report, "concurrency_sweep")}
    assert {r["graph"] for r in rows} == {"agg (simulated: the mocker's built-in timing)", "disagg"}
    assert {r["kind"] for r in rows if r["graph"] == "disagg"} == {"measurement vs prediction"}
    assert {r["kind"] for r in rows if r["graph"] != "disagg"} == {"simulation vs prediction"}
    for row in rows:
        graph = "agg" if row["graph"].startswith("agg") else "disagg"
        predicted = {p["concurrency"]: p for p in plan["graphs"][graph]["as_configured"]["predictions"]}
        expected, measured = predicted[row["concurrency"]], sweep[(row["graph"], row["concurrency"])]
        assert row["tps_gpu_predicted"] == expected["tokens_per_s_per_gpu"]
        assert row["tps_gpu_measured"] == measured["tokens_per_s_per_gpu"]
        assert row["tps_gpu_error_pct"] == pytest.approx(
            (measured["tokens_per_s_per_gpu"] - expected["tokens_per_s_per_gpu"]) / expected["tokens_per_s_per_gpu"] * 100)
        assert row["tpot_error_pct"] == pytest.approx((measured["itl_p50_ms"] - expected["tpot_ms"]) / expected["tpot_ms"] * 100)
    text = report.read_text()
    assert "## Prediction vs measurement" in text and "aiconfigurator 0.12.0 (perf DB a100_sxm/vllm 0.14.0" in text


def test_a_plan_for_another_shape_predicts_nothing(dev_plan):
    plan = json.loads(json.dumps(dev_plan.to_json()))
    other = report_manifest("run-1", "agg", "2026-11-29T10:00:00Z", True,
                            nodes=DEV_SHAPE["agg"]["nodes"], workers={"agg": WorkerSpec(2, 8)})
    assert prediction_for(plan, other) is None
    assert prediction_for(plan, report_manifest("run-1", "agg", "x", True, **DEV_SHAPE["agg"])) is not None


def test_the_local_lab_records_the_dev_plan_for_the_graphs_it_simulates(dev_plan, tmp_path, capsys):
    """The local lab stands for the default cloud graphs (= the dev stack): both match."""
    import argparse

    from cli.local_command import _predictions
    from jobs.run_manifest import read_manifest
    from stacks.config import StackConfig
    from local_lab import cloud_shape
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(dev_plan.to_json()))
    found = _predictions(argparse.Namespace(plan=path, stack=None, graphs=("agg", "disagg"), preset="quick"),
                         StackConfig())
    assert set(found) == {"agg", "disagg"}
    assert found["disagg"]["predictions"] == json.loads(path.read_text())["graphs"]["disagg"]["as_configured"]["predictions"]
    assert "agg: recording the predictions of" in capsys.readouterr().out
    write_manifest(tmp_path / "agg", cloud_shape.manifest("r", "agg", "quick", "m", "t", extra={"prediction": found["agg"]}))
    assert read_manifest(tmp_path / "agg").extra["prediction"] == found["agg"]


def test_report_plan_flag_refuses_what_is_not_a_plan(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "other.json").write_text('{"schema": 1}')
    assert lab_main(["report", str(tmp_path / "run"), "--plan", str(tmp_path / "other.json")]) == 2
    assert "not a `benchlab plan` plan.json (no `graphs`)" in capsys.readouterr().err
    assert lab_main(["report", str(tmp_path / "run"), "--plan", str(tmp_path / "absent.json")]) == 2
    assert "cannot read a plan.json" in capsys.readouterr().err
