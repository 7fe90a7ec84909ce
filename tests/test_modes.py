"""The four modes as data: Report 5's defaults, stack-config parsing, profiles."""
from __future__ import annotations

import pytest

from jobs import modes, names
from jobs.modes import BenchPlan, plan_from_mapping, scaled


def test_defaults_are_report_5_parameters():
    plan = BenchPlan()
    assert [m.name for m in plan.modes()] == list(names.MODES)
    sweep, turns = plan.concurrency_sweep, plan.multi_turn
    assert (sweep.concurrency, sweep.isl, sweep.osl, sweep.step_seconds) == (
        (1, 2, 4, 8, 16, 32, 64), 1024, 512, 120)
    assert (turns.turns, turns.conversations, turns.isl, turns.osl, turns.duration_seconds) == (
        5, 8, 512, 256, 300)
    dist = plan.sequence_distribution
    assert dist.distributions == ("uniform", "zipf", "lognormal")
    assert (dist.isl_min, dist.isl_max, dist.osl_min, dist.osl_max, dist.concurrency) == (
        128, 4096, 64, 2048, 16)
    prefix = plan.prefix_cache
    assert (prefix.hit_ratios, prefix.isl, prefix.osl, prefix.concurrency) == (
        (0, 25, 50, 75, 100), 2048, 512, 16)


def test_planned_seconds_count_every_step_with_drain_and_overhead():
    sweep = BenchPlan().concurrency_sweep
    per_step = 120 + modes.GRACE_SECONDS + modes.RUN_OVERHEAD_SECONDS
    assert sweep.planned_seconds == 7 * per_step
    assert BenchPlan().planned_seconds == sum(m.planned_seconds for m in BenchPlan().modes())


def test_mapping_overrides_only_the_keys_given():
    plan = plan_from_mapping({"concurrencySweep": {"concurrency": [1, 4], "stepSeconds": 30},
                              "prefixCache": {"hitRatios": [0, 50]}})
    assert plan.concurrency_sweep.concurrency == (1, 4)
    assert plan.concurrency_sweep.step_seconds == 30
    assert plan.concurrency_sweep.isl == 1024
    assert plan.prefix_cache.hit_ratios == (0, 50)
    assert plan.multi_turn == BenchPlan().multi_turn
    assert plan_from_mapping(None) == BenchPlan() == plan_from_mapping({})


@pytest.mark.parametrize("mapping, path, words", [
    ({"sweep": {}}, "bench.sweep", "allowed: concurrencySweep"),
    ({"concurrencySweep": {"levels": [1]}}, "bench.concurrencySweep.levels", "allowed: concurrency"),
    ({"concurrencySweep": {"concurrency": [0, 2]}}, "bench.concurrencySweep.concurrency", "1-4096"),
    ({"concurrencySweep": {"concurrency": []}}, "bench.concurrencySweep.concurrency", "non-empty"),
    ({"concurrencySweep": {"concurrency": [2, 2]}}, "bench.concurrencySweep.concurrency",
     "duplicates"),
    ({"concurrencySweep": {"isl": "1024"}}, "bench.concurrencySweep.isl", "'1024'"),
    ({"concurrencySweep": {"osl": True}}, "bench.concurrencySweep.osl", "True"),
    ({"multiTurn": {"turns": 1000}}, "bench.multiTurn.turns", "1-100"),
    ({"multiTurn": [1]}, "bench.multiTurn", "a mapping"),
    ({"sequenceDistribution": {"distributions": ["normal"]}},
     "bench.sequenceDistribution.distributions", "uniform, zipf, lognormal"),
    ({"sequenceDistribution": {"oslMin": 4096}}, "bench.sequenceDistribution.oslMin",
     "below oslMax"),
    ({"prefixCache": {"hitRatios": [0, 101]}}, "bench.prefixCache.hitRatios", "0-100"),
    ({"prefixCache": {"graceSeconds": -1}}, "bench.prefixCache.graceSeconds", "0-86400"),
    ({"prefixCache": {"graceSeconds": False}}, "bench.prefixCache.graceSeconds", "False"),
])
def test_bad_values_name_the_key_the_value_and_what_is_allowed(mapping, path, words):
    with pytest.raises(ValueError) as err:
        plan_from_mapping(mapping)
    assert str(err.value).startswith(path + ":")
    assert words in str(err.value)


def test_grace_may_be_zero():
    assert plan_from_mapping({"multiTurn": {"graceSeconds": 0}}).multi_turn.grace_seconds == 0


def test_full_profile_is_the_plan_itself():
    plan = plan_from_mapping({"concurrencySweep": {"concurrency": [2, 4]}})
    assert scaled(plan, "full") is plan


def test_quick_keeps_every_modes_shape_with_less_time():
    full, quick = BenchPlan(), scaled(BenchPlan(), "quick")
    assert quick.concurrency_sweep.concurrency == (1, 8, 64)  # spans the sweep
    assert quick.multi_turn.turns == full.multi_turn.turns
    assert quick.multi_turn.conversations == full.multi_turn.conversations
    assert quick.sequence_distribution.distributions == full.sequence_distribution.distributions
    assert quick.prefix_cache.hit_ratios == (0, 50, 100)  # spans the ratios: none, half, all
    for q, f in zip(quick.modes(), full.modes()):
        assert q.planned_seconds < f.planned_seconds / 4
    # token lengths shrink together, so ratios (ranges, prefix shares) are kept
    assert full.sequence_distribution.isl_max / full.sequence_distribution.isl_min == (
        quick.sequence_distribution.isl_max / quick.sequence_distribution.isl_min)


def test_quick_keeps_short_sweeps_whole():
    plan = plan_from_mapping({"concurrencySweep": {"concurrency": [4, 16]}})
    assert scaled(plan, "quick").concurrency_sweep.concurrency == (4, 16)


def test_unknown_profile_is_named():
    with pytest.raises(ValueError, match="'fast'.*allowed: full, quick"):
        scaled(BenchPlan(), "fast")


def test_plan_round_trips_through_its_config_mapping():
    plan = modes.plan_from_mapping({"prefixCache": {"hitRatios": [0, 50]},
                                    "concurrencySweep": {"concurrency": [2, 32], "stepSeconds": 60}})
    mapping = modes.plan_to_mapping(plan)
    assert mapping["prefixCache"]["hitRatios"] == [0, 50]
    assert modes.plan_from_mapping(mapping) == plan
