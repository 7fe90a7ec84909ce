"""The four benchmark modes as data, with Report 5's parameters as defaults.

Shared by the cloud Jobs and the local lab: no Pulumi, no local-only concerns here.
`plan_from_mapping` reads the stack config `benchlab:bench` (camelCase keys); `scaled` applies a
run profile (`full` = the report's parameters, `quick` = same shapes, shorter and smaller).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from bench_jobs.seq_dist import DISTRIBUTIONS

MODE_NAMES = ("concurrency_sweep", "multi_turn", "sequence_distribution", "prefix_cache")
PROFILES = ("full", "quick")

# Seconds AIPerf waits for in-flight responses after a step's load window closes (its default).
GRACE_SECONDS = 30
# AIPerf's own set-up and tear-down per run (one sweep level or one call); measured ~5-7 s
# on 2 cores (tokenizer load, dataset generation, service start), budgeted with headroom.
RUN_OVERHEAD_SECONDS = 10


@dataclass(frozen=True)
class ConcurrencySweep:
    name: ClassVar[str] = "concurrency_sweep"
    concurrency: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    isl: int = 1024
    osl: int = 512
    step_seconds: int = 120
    grace_seconds: int = GRACE_SECONDS

    @property
    def planned_seconds(self) -> int:
        return len(self.concurrency) * step_budget(self.step_seconds, self.grace_seconds)


@dataclass(frozen=True)
class MultiTurn:
    name: ClassVar[str] = "multi_turn"
    turns: int = 5
    conversations: int = 8  # conversations in flight at once
    isl: int = 512
    osl: int = 256
    duration_seconds: int = 300
    grace_seconds: int = GRACE_SECONDS

    @property
    def planned_seconds(self) -> int:
        return step_budget(self.duration_seconds, self.grace_seconds)


@dataclass(frozen=True)
class SequenceDistribution:
    name: ClassVar[str] = "sequence_distribution"
    distributions: tuple[str, ...] = DISTRIBUTIONS
    isl_min: int = 128
    isl_max: int = 4096
    osl_min: int = 64
    osl_max: int = 2048
    concurrency: int = 16
    step_seconds: int = 120
    grace_seconds: int = GRACE_SECONDS

    @property
    def planned_seconds(self) -> int:
        return len(self.distributions) * step_budget(self.step_seconds, self.grace_seconds)


@dataclass(frozen=True)
class PrefixCache:
    name: ClassVar[str] = "prefix_cache"
    hit_ratios: tuple[int, ...] = (0, 25, 50, 75, 100)  # percent of each prompt that is shared
    isl: int = 2048
    osl: int = 512
    concurrency: int = 16
    step_seconds: int = 120
    grace_seconds: int = GRACE_SECONDS

    @property
    def planned_seconds(self) -> int:
        return len(self.hit_ratios) * step_budget(self.step_seconds, self.grace_seconds)


Mode = ConcurrencySweep | MultiTurn | SequenceDistribution | PrefixCache


@dataclass(frozen=True)
class BenchPlan:
    concurrency_sweep: ConcurrencySweep = ConcurrencySweep()
    multi_turn: MultiTurn = MultiTurn()
    sequence_distribution: SequenceDistribution = SequenceDistribution()
    prefix_cache: PrefixCache = PrefixCache()

    def modes(self) -> tuple[Mode, ...]:
        """The modes in the order they run (MODE_NAMES)."""
        return tuple(getattr(self, name) for name in MODE_NAMES)

    @property
    def planned_seconds(self) -> int:
        return sum(mode.planned_seconds for mode in self.modes())


def step_budget(load_seconds: int, grace_seconds: int) -> int:
    """Wall seconds one AIPerf run is planned to take: load window, drain, own overhead."""
    return load_seconds + grace_seconds + RUN_OVERHEAD_SECONDS


# ---- stack config -------------------------------------------------------------------------

_MODE_KEYS = {
    "concurrencySweep": ConcurrencySweep,
    "multiTurn": MultiTurn,
    "sequenceDistribution": SequenceDistribution,
    "prefixCache": PrefixCache,
}
# Upper bounds that catch typos (a context the served model cannot take, a day-long step).
MAX_TOKENS = 131072
MAX_SECONDS = 86400
MAX_CONCURRENCY = 4096
MAX_TURNS = 100


def plan_from_mapping(mapping: dict | None) -> BenchPlan:
    """Build a BenchPlan from `benchlab:bench`; every missing key keeps its default.

    Raises ValueError naming the key path (e.g. `bench.concurrencySweep.concurrency`),
    the bad value and what is allowed.
    """
    mapping = {} if mapping is None else mapping
    _require_mapping("bench", mapping)
    _reject_unknown("bench", mapping, _MODE_KEYS)
    fields = {}
    for key, cls in _MODE_KEYS.items():
        if key in mapping:
            fields[cls.name] = _mode_from_mapping(f"bench.{key}", cls, mapping[key])
    return BenchPlan(**fields)


def plan_to_mapping(plan: BenchPlan) -> dict:
    """The plan as `benchlab:bench` spells it (camelCase): the cloud Jobs rebuild it with
    plan_from_mapping, so config and Jobs share one parser."""
    return {_camel(mode.name): {_camel(f.name): list(value) if isinstance(value, tuple) else value
                                for f in dataclasses.fields(mode)
                                for value in [getattr(mode, f.name)]}
            for mode in plan.modes()}


def _mode_from_mapping(path: str, cls: type, mapping: Any):
    _require_mapping(path, mapping)
    by_camel = {_camel(f.name): f for f in dataclasses.fields(cls)}
    _reject_unknown(path, mapping, by_camel)
    values = {by_camel[key].name: _coerce(f"{path}.{key}", by_camel[key], value)
              for key, value in mapping.items()}
    mode = cls(**values)
    _check_mode(path, mode)
    return mode


def _coerce(path: str, field: dataclasses.Field, value: Any):
    if field.name == "grace_seconds":  # zero is allowed: count only what finished in time
        return _int_in(path, value, 0, MAX_SECONDS)
    if field.type == "int":
        return _positive_int(path, value, _int_limit(field.name))
    if field.name == "distributions":
        items = _list(path, value, "a list of distribution names")
        for item in items:
            if item not in DISTRIBUTIONS:
                raise ValueError(f"{path}: {item!r} is not a distribution; "
                                 f"allowed: {', '.join(DISTRIBUTIONS)}")
        return _unique(path, tuple(items))
    if field.name == "hit_ratios":
        items = _list(path, value, "a list of percentages 0-100")
        for item in items:
            if not _is_int(item) or not 0 <= item <= 100:
                raise ValueError(f"{path}: {item!r} is not a percentage; allowed: integers 0-100")
        return _unique(path, tuple(items))
    items = _list(path, value, "a list of positive integers")  # concurrency levels
    return _unique(path, tuple(_positive_int(path, item, MAX_CONCURRENCY) for item in items))


def _int_limit(name: str) -> int:
    if name.endswith("_seconds"):
        return MAX_SECONDS
    if name in ("concurrency", "conversations"):
        return MAX_CONCURRENCY
    if name == "turns":
        return MAX_TURNS
    return MAX_TOKENS


def _check_mode(path: str, mode) -> None:
    """Cross-field rules one key alone cannot express."""
    if isinstance(mode, SequenceDistribution):
        for low, high in (("isl_min", "isl_max"), ("osl_min", "osl_max")):
            if getattr(mode, low) >= getattr(mode, high):
                raise ValueError(
                    f"{path}.{_camel(low)}: {getattr(mode, low)} must be below "
                    f"{_camel(high)} ({getattr(mode, high)})")


def _positive_int(path: str, value: Any, limit: int) -> int:
    return _int_in(path, value, 1, limit)


def _int_in(path: str, value: Any, low: int, high: int) -> int:
    if not _is_int(value) or not low <= value <= high:
        raise ValueError(f"{path}: {value!r} is not allowed; expected an integer {low}-{high}")
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _list(path: str, value: Any, expected: str) -> list:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{path}: {value!r} is not allowed; expected {expected} (non-empty)")
    return list(value)


def _unique(path: str, items: tuple) -> tuple:
    if len(set(items)) != len(items):
        raise ValueError(f"{path}: {list(items)!r} has duplicates; each value may appear once")
    return items


def _require_mapping(path: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{path}: {value!r} is not allowed; expected a mapping")


def _reject_unknown(path: str, mapping: dict, allowed) -> None:
    for key in mapping:
        if key not in allowed:
            raise ValueError(f"{path}.{key}: unknown key; allowed: {', '.join(allowed)}")


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)


# ---- profiles -----------------------------------------------------------------------------

# `quick`: every mode keeps its shape (levels spanning the sweep, all turns, all three
# distributions, all five hit ratios) but with short load windows and drains, three sweep
# levels, and token lengths divided by 8 so a simulated request finishes in about a second.
QUICK_STEP_SECONDS = 3
QUICK_MULTI_TURN_SECONDS = 8
QUICK_TOKEN_DIVISOR = 8
QUICK_SWEEP_LEVELS = 3
QUICK_GRACE_SECONDS = 5


def scaled(plan: BenchPlan, profile: str) -> BenchPlan:
    """The plan a profile runs; `full` is the plan itself."""
    if profile not in PROFILES:
        raise ValueError(f"profile: {profile!r} is not a profile; allowed: {', '.join(PROFILES)}")
    if profile == "full":
        return plan
    tokens = _tokens_divided_by(QUICK_TOKEN_DIVISOR)
    grace = QUICK_GRACE_SECONDS
    sweep, turns = plan.concurrency_sweep, plan.multi_turn
    dist, prefix = plan.sequence_distribution, plan.prefix_cache
    return BenchPlan(
        concurrency_sweep=dataclasses.replace(
            sweep, concurrency=_spread(sweep.concurrency, QUICK_SWEEP_LEVELS),
            isl=tokens(sweep.isl), osl=tokens(sweep.osl),
            step_seconds=min(sweep.step_seconds, QUICK_STEP_SECONDS), grace_seconds=grace),
        multi_turn=dataclasses.replace(
            turns, isl=tokens(turns.isl), osl=tokens(turns.osl),
            duration_seconds=min(turns.duration_seconds, QUICK_MULTI_TURN_SECONDS),
            grace_seconds=grace),
        sequence_distribution=dataclasses.replace(
            dist, isl_min=tokens(dist.isl_min), isl_max=tokens(dist.isl_max),
            osl_min=tokens(dist.osl_min), osl_max=tokens(dist.osl_max),
            step_seconds=min(dist.step_seconds, QUICK_STEP_SECONDS), grace_seconds=grace),
        prefix_cache=dataclasses.replace(
            prefix, isl=tokens(prefix.isl), osl=tokens(prefix.osl),
            step_seconds=min(prefix.step_seconds, QUICK_STEP_SECONDS), grace_seconds=grace),
    )


def _tokens_divided_by(divisor: int):
    return lambda tokens: max(tokens // divisor, 1)


def _spread(levels: tuple[int, ...], count: int) -> tuple[int, ...]:
    """`count` levels evenly spread over `levels`, always keeping the first and the last."""
    if len(levels) <= count:
        return levels
    last = len(levels) - 1
    picks = sorted({round(i * last / (count - 1)) for i in range(count)})
    return tuple(levels[i] for i in picks)
