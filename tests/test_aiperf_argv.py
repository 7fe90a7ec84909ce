"""The single AIPerf builder: calls, labels, flags, and that every flag exists in 0.9.0."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from jobs import aiperf_argv, modes, names
from jobs.aiperf_argv import Evidence, Target, build_calls
from jobs.modes import BenchPlan

TARGET = Target(url="http://127.0.0.1:8000", model="/models/m", tokenizer="/models/m")
AIPERF_PYTHON = Path(__file__).resolve().parent.parent / ".venvs" / "aiperf" / "bin" / "python"
DCGM_URLS = ("http://10.0.1.7:9400/metrics", "http://10.0.1.8:9400/metrics")


def _flag(argv, name):
    """Values of every occurrence of a flag."""
    return [argv[i + 1] for i, arg in enumerate(argv) if arg == name]


def test_list_sweep_is_one_call_over_every_level():
    sweep = BenchPlan().concurrency_sweep
    (call,) = build_calls(sweep, TARGET, "/results/run/agg/concurrency_sweep")
    assert call.step == "sweep"
    assert _flag(call.argv, "--concurrency") == ["1,2,4,8,16,32,64"]
    assert _flag(call.argv, "--artifact-dir") == ["/results/run/agg/concurrency_sweep/sweep"]
    assert call.planned_seconds == sweep.planned_seconds


def test_per_level_sweep_is_one_call_per_level():
    sweep = BenchPlan().concurrency_sweep
    calls = build_calls(sweep, TARGET, "/r", sweep_style="per_level")
    assert [c.step for c in calls] == ["c1", "c2", "c4", "c8", "c16", "c32", "c64"]
    assert [_flag(c.argv, "--concurrency") for c in calls] == [[str(c)] for c in sweep.concurrency]
    assert sum(c.planned_seconds for c in calls) == sweep.planned_seconds


def test_step_labels_and_plans_of_the_other_modes():
    plan = BenchPlan()
    labels = {m.name: [c.step for c in build_calls(m, TARGET, "/r")] for m in plan.modes()}
    assert labels["multi_turn"] == ["turns5"]
    assert labels["sequence_distribution"] == ["uniform", "zipf", "lognormal"]
    assert labels["prefix_cache"] == ["hit0", "hit25", "hit50", "hit75", "hit100"]
    for mode in plan.modes():
        assert sum(c.planned_seconds for c in build_calls(mode, TARGET, "/r")) == (
            mode.planned_seconds)


def test_every_request_streams_exactly_osl_tokens_counted_by_the_server():
    for mode in BenchPlan().modes():
        for call in build_calls(mode, TARGET, "/r"):
            assert "--streaming" in call.argv and "--use-server-token-count" in call.argv
            assert "ignore_eos:true" in _flag(call.argv, "--extra-inputs")
            osl = _flag(call.argv, "--osl")
            if osl:  # fixed output length: min_tokens pins it from below too
                assert f"min_tokens:{osl[0]}" in _flag(call.argv, "--extra-inputs")
            assert _flag(call.argv, "--model") == ["/models/m"]
            assert _flag(call.argv, "--url") == [TARGET.url]
            # no pooled connection: Nagle on the frontend's side would hold tokens back ~40 ms
            assert _flag(call.argv, "--connection-reuse-strategy") == ["never"]


def test_multi_turn_flags():
    (call,) = build_calls(BenchPlan().multi_turn, TARGET, "/r")
    assert _flag(call.argv, "--conversation-turn-mean") == ["5"]
    assert _flag(call.argv, "--conversation-turn-stddev") == ["0"]
    assert _flag(call.argv, "--concurrency") == ["8"]
    assert _flag(call.argv, "--benchmark-duration") == ["300"]
    assert (_flag(call.argv, "--isl"), _flag(call.argv, "--osl")) == (["512"], ["256"])


def test_prefix_share_of_each_prompt_matches_the_hit_ratio():
    calls = build_calls(BenchPlan().prefix_cache, TARGET, "/r")
    for call, ratio in zip(calls, (0, 25, 50, 75, 100)):
        unique = int(_flag(call.argv, "--isl")[0])
        shared = int((_flag(call.argv, "--prompt-prefix-length") or ["0"])[0])
        assert unique + shared == 2048
        assert abs(shared / 2048 - ratio / 100) <= 1 / 2048
        assert _flag(call.argv, "--prompt-prefix-pool-size") == (["1"] if shared else [])


def test_sequence_distribution_sends_the_buckets():
    dist = BenchPlan().sequence_distribution
    calls = build_calls(dist, TARGET, "/r")
    for call, name in zip(calls, dist.distributions):
        (arg,) = _flag(call.argv, "--seq-dist")
        assert arg.count(";") >= 9
        assert _flag(call.argv, "--concurrency") == ["16"]
        assert not _flag(call.argv, "--isl")


def test_unique_prompts_cover_the_run_so_cache_hits_are_deliberate():
    (call,) = build_calls(modes.scaled(BenchPlan(), "quick").prefix_cache, TARGET, "/r")[:1]
    assert _flag(call.argv, "--num-dataset-entries") == [str(16 * modes.QUICK_STEP_SECONDS * 2)]
    (full,) = build_calls(BenchPlan().prefix_cache, TARGET, "/r")[:1]
    assert _flag(full.argv, "--num-dataset-entries") == [str(aiperf_argv.MAX_PROMPTS)]
    (top,) = build_calls(BenchPlan().concurrency_sweep, TARGET, "/r")
    assert _flag(top.argv, "--num-dataset-entries") == [str(aiperf_argv.MAX_PROMPTS)]


def test_server_metrics_can_be_switched_off():
    (call,) = build_calls(BenchPlan().multi_turn, TARGET, "/r", evidence=Evidence(server_metrics=False))
    assert "--no-server-metrics" in call.argv
    (call,) = build_calls(BenchPlan().multi_turn, TARGET, "/r")
    assert "--no-server-metrics" not in call.argv


def test_workers_metrics_endpoints_are_scraped_beside_the_frontend():
    urls = ("http://10.0.0.5:9090/metrics", "http://10.0.0.6:9090/metrics")
    (call,) = build_calls(BenchPlan().multi_turn, TARGET, "/r", evidence=Evidence(metrics_urls=urls))
    at = call.argv.index("--server-metrics")
    assert call.argv[at + 1:at + 3] == urls
    assert call.argv[at + 3].startswith("--")


def test_gpu_telemetry_scrapes_the_dcgm_exporters_given_and_is_off_without_them():
    (call,) = build_calls(BenchPlan().multi_turn, TARGET, "/r", evidence=Evidence(gpu_telemetry_urls=DCGM_URLS))
    at = call.argv.index("--gpu-telemetry")
    assert call.argv[at + 1:at + 3] == DCGM_URLS and call.argv[at + 3].startswith("--")
    assert "--no-gpu-telemetry" not in call.argv
    (call,) = build_calls(BenchPlan().multi_turn, TARGET, "/r")
    assert "--no-gpu-telemetry" in call.argv and "--gpu-telemetry" not in call.argv


# What the pinned CLI makes of an argv: its own parser (cyclopts) and config model, nothing run.
CLI_PROBE = """
import json, sys
from aiperf.cli import app
command, bound, *_ = app.parse_args(sys.argv[1:], exit_on_error=False)
config = bound.arguments["cli_config"]
print(json.dumps({key: getattr(config, key) for key in
                  ("gpu_telemetry", "no_gpu_telemetry", "server_metrics", "goodput")}))
"""


@pytest.mark.parametrize("gpu_urls", [DCGM_URLS, ()])
def test_the_pinned_aiperf_cli_reads_the_telemetry_urls_as_given(gpu_urls):
    if not AIPERF_PYTHON.exists():
        pytest.skip(f"{AIPERF_PYTHON} absent: `./benchlab tools` installs the pinned AIPerf")
    workers = ("http://10.0.1.7:9090/metrics",)
    (call,) = build_calls(BenchPlan().multi_turn, TARGET, "/r",
                          evidence=Evidence(metrics_urls=workers, gpu_telemetry_urls=gpu_urls))
    result = subprocess.run([str(AIPERF_PYTHON), "-c", CLI_PROBE, *call.argv],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    parsed = json.loads(result.stdout.splitlines()[-1])
    assert parsed["server_metrics"] == list(workers)
    assert parsed["gpu_telemetry"] == (list(gpu_urls) or None)
    assert parsed["no_gpu_telemetry"] is not bool(gpu_urls)
    slo = modes.Slo()  # the argument after the URLs is read as itself, not as one more URL
    assert parsed["goodput"] == {aiperf_argv.GOODPUT_TTFT: slo.ttft_ms, aiperf_argv.GOODPUT_ITL: slo.itl_ms}


def test_every_step_draws_its_own_prompts():
    """A step re-sending an earlier step's prompts would be served from the cache it warmed."""
    seeds = []
    for style in aiperf_argv.SWEEP_STYLES:
        for mode in BenchPlan().modes():
            for call in build_calls(mode, TARGET, "/r", style):
                (seed,) = _flag(call.argv, "--random-seed")
                seeds.append(int(seed))
                if call.step == "sweep":  # AIPerf seeds its levels seed, seed + 1, ...
                    seeds += [int(seed) + i for i in range(1, len(mode.concurrency))]
    per_style = len(seeds) // 2
    list_style, per_level = seeds[:per_style], seeds[per_style:]
    assert len(set(list_style)) == len(list_style), "two steps share a seed"
    assert sorted(list_style) == sorted(per_level), "sweep styles draw different prompts"


def test_goodput_counts_against_the_configured_slo():
    plan = modes.plan_from_mapping({"slo": {"ttftMs": 300, "itlMs": 15}})
    for mode in plan.modes():
        for call in build_calls(mode, TARGET, "/r", evidence=Evidence(slo=plan.slo)):
            assert _flag(call.argv, "--goodput") == [
                "time_to_first_token:300 inter_token_latency:15"]


def test_repeats_run_every_step_that_often_with_fresh_prompts_per_trial():
    sweep = BenchPlan().concurrency_sweep
    (once,) = build_calls(sweep, TARGET, "/r")
    assert not _flag(once.argv, "--num-profile-runs")
    (thrice,) = build_calls(sweep, TARGET, "/r", evidence=Evidence(repeats=3))
    assert _flag(thrice.argv, "--num-profile-runs") == ["3"]
    assert _flag(thrice.argv, "--confidence-level") == ["0.95"]
    assert "--vary-seed-per-trial" in thrice.argv
    assert thrice.planned_seconds == 3 * once.planned_seconds


def test_unknown_sweep_style_is_named():
    with pytest.raises(ValueError, match="'grid'.*list, per_level"):
        build_calls(BenchPlan().concurrency_sweep, TARGET, "/r", sweep_style="grid")


def test_every_flag_exists_in_the_pinned_aiperf_help(shared):
    help_text = shared("aiperf/aiperf-0.9.0-profile-help.txt").read_text()
    known = set(re.findall(r"(--[a-z0-9][a-z0-9-]*)", help_text))
    emitted = set()
    for profile in names.PROFILES:
        for mode in modes.scaled(BenchPlan(), profile).modes():
            for style in aiperf_argv.SWEEP_STYLES:
                for evidence in (Evidence(server_metrics=False),
                                 Evidence(metrics_urls=("http://w:9090/metrics",), repeats=2,
                                          gpu_telemetry_urls=DCGM_URLS)):
                    for call in build_calls(mode, TARGET, "/r", style, evidence):
                        assert call.argv[0] == "profile"
                        emitted |= {arg for arg in call.argv if arg.startswith("--")}
    assert emitted, "the builder emitted no flags"
    assert emitted <= known, f"not in aiperf 0.9.0 help: {sorted(emitted - known)}"
