"""The four benchmark modes as data, with Report 5's parameters as defaults.

Shared by the cloud Jobs and the local lab: no Pulumi, no local-only concerns here.
`plan_from_mapping` reads the stack config `benchlab:bench` (camelCase keys) with the project's one
parser (`typed_mapping`), limits declared beside each field; `scaled` applies a run profile
(`full` = the report's parameters, `quick` = same shapes, shorter and smaller).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from jobs import typed_mapping
from jobs.names import MODES, PROFILES
from jobs.seq_dist import DISTRIBUTIONS
from jobs.typed_mapping import limits

# Seconds AIPerf waits for in-flight responses after a step's load window closes (its default).
GRACE_SECONDS = 30
# Upper bounds that catch typos (a context the served model cannot take, a day-long step).
MAX_TOKENS = 131072
MAX_SECONDS = 86400
MAX_CONCURRENCY = 4096
MAX_TURNS = 100
TOKENS = limits(low=1, high=MAX_TOKENS)
SECONDS = limits(low=1, high=MAX_SECONDS)
IN_FLIGHT = limits(low=1, high=MAX_CONCURRENCY)
# zero is allowed: count only what finished within the load window
GRACE = limits(low=0, high=MAX_SECONDS)

# AIPerf's own set-up and tear-down per run (one sweep level or one call); measured ~5-7 s
# on 2 cores (tokenizer load, dataset generation, service start), budgeted with headroom.
RUN_OVERHEAD_SECONDS = 10


@dataclass(frozen=True)
class ConcurrencySweep:
    name: ClassVar[str] = "concurrency_sweep"
    concurrency: tuple[int, ...] = field(default=(1, 2, 4, 8, 16, 32, 64),
                                         metadata=limits(low=1, high=MAX_CONCURRENCY, unique=True))
    isl: int = field(default=1024, metadata=TOKENS)
    osl: int = field(default=512, metadata=TOKENS)
    step_seconds: int = field(default=120, metadata=SECONDS)
    grace_seconds: int = field(default=GRACE_SECONDS, metadata=GRACE)

    @property
    def planned_seconds(self) -> int:
        return len(self.concurrency) * step_budget(self.step_seconds, self.grace_seconds)


@dataclass(frozen=True)
class MultiTurn:
    name: ClassVar[str] = "multi_turn"
    turns: int = field(default=5, metadata=limits(low=1, high=MAX_TURNS))
    conversations: int = field(default=8, metadata=IN_FLIGHT)  # conversations in flight at once
    isl: int = field(default=512, metadata=TOKENS)
    osl: int = field(default=256, metadata=TOKENS)
    duration_seconds: int = field(default=300, metadata=SECONDS)
    grace_seconds: int = field(default=GRACE_SECONDS, metadata=GRACE)

    @property
    def planned_seconds(self) -> int:
        return step_budget(self.duration_seconds, self.grace_seconds)


@dataclass(frozen=True)
class SequenceDistribution:
    name: ClassVar[str] = "sequence_distribution"
    distributions: tuple[str, ...] = field(default=DISTRIBUTIONS,
                                           metadata=limits(choices=DISTRIBUTIONS, unique=True))
    isl_min: int = field(default=128, metadata=TOKENS)
    isl_max: int = field(default=4096, metadata=TOKENS)
    osl_min: int = field(default=64, metadata=TOKENS)
    osl_max: int = field(default=2048, metadata=TOKENS)
    concurrency: int = field(default=16, metadata=IN_FLIGHT)
    step_seconds: int = field(default=120, metadata=SECONDS)
    grace_seconds: int = field(default=GRACE_SECONDS, metadata=GRACE)

    @property
    def planned_seconds(self) -> int:
        return len(self.distributions) * step_budget(self.step_seconds, self.grace_seconds)

    def cross_field_problems(self) -> list[tuple[str, str]]:
        return [(typed_mapping.camel(low), f"{getattr(self, low)} must be below "
                                           f"{typed_mapping.camel(high)} ({getattr(self, high)})")
                for low, high in (("isl_min", "isl_max"), ("osl_min", "osl_max"))
                if getattr(self, low) >= getattr(self, high)]


@dataclass(frozen=True)
class PrefixCache:
    name: ClassVar[str] = "prefix_cache"
    # percent of each prompt that is shared
    hit_ratios: tuple[int, ...] = field(default=(0, 25, 50, 75, 100),
                                        metadata=limits(low=0, high=100, unique=True))
    isl: int = field(default=2048, metadata=TOKENS)
    osl: int = field(default=512, metadata=TOKENS)
    concurrency: int = field(default=16, metadata=IN_FLIGHT)
    step_seconds: int = field(default=120, metadata=SECONDS)
    grace_seconds: int = field(default=GRACE_SECONDS, metadata=GRACE)

    @property
    def planned_seconds(self) -> int:
        return len(self.hit_ratios) * step_budget(self.step_seconds, self.grace_seconds)


Mode = ConcurrencySweep | MultiTurn | SequenceDistribution | PrefixCache
MAX_MILLISECONDS = MAX_SECONDS * 1000
# AIPerf's --num-profile-runs: "Must be between 1 and 10" (aiperf 0.9.0 `profile --help`).
MAX_REPEATS = 10


@dataclass(frozen=True)
class Slo:
    """The service-level objective goodput counts against: a request is good when it meets both."""
    # MLPerf Inference v5.0's interactive LLM scenario (Llama 2 70B, a dense model a little larger
    # than the lab's 32B) allows TTFT 450 ms at TPOT 40 ms: https://mlcommons.org/2025/04/llm-inference-v5
    # (4.4x below its server scenario's 2 s). Report 5's ITL target is stricter still.
    ttft_ms: int = field(default=450, metadata=limits(low=1, high=MAX_MILLISECONDS))
    # Report 5's question: is the average token generation under 20 ms?
    itl_ms: int = field(default=20, metadata=limits(low=1, high=MAX_MILLISECONDS))


@dataclass(frozen=True)
class BenchPlan:
    concurrency_sweep: ConcurrencySweep = ConcurrencySweep()
    multi_turn: MultiTurn = MultiTurn()
    sequence_distribution: SequenceDistribution = SequenceDistribution()
    prefix_cache: PrefixCache = PrefixCache()
    slo: Slo = Slo()
    # AIPerf runs of every step (its --num-profile-runs): > 1 gives a 95 % confidence interval
    repeats: int = field(default=1, metadata=limits(low=1, high=MAX_REPEATS))

    def modes(self) -> tuple[Mode, ...]:
        """The modes in the order they run (MODES)."""
        return tuple(getattr(self, name) for name in MODES)

    @property
    def planned_seconds(self) -> int:
        return sum(mode.planned_seconds for mode in self.modes()) * self.repeats


def step_budget(load_seconds: int, grace_seconds: int) -> int:
    """Wall seconds one AIPerf run is planned to take: load window, drain, own overhead."""
    return load_seconds + grace_seconds + RUN_OVERHEAD_SECONDS


# ---- stack config -------------------------------------------------------------------------

def plan_from_mapping(mapping: dict | None) -> BenchPlan:
    """Build a BenchPlan from `benchlab:bench`; every missing key keeps its default.

    Raises typed_mapping.MappingError (a ValueError) listing every bad value, each naming the
    key path (e.g. `bench.concurrencySweep.concurrency`), the value and what is allowed.
    """
    return typed_mapping.parse(BenchPlan, {} if mapping is None else mapping, "bench")


def plan_to_mapping(plan: BenchPlan) -> dict:
    """The plan as `benchlab:bench` spells it (camelCase): the cloud Jobs rebuild it with
    plan_from_mapping, so config and Jobs share one parser."""
    return typed_mapping.to_mapping(plan)


# ---- profiles -----------------------------------------------------------------------------

# `quick`: every mode keeps its shape (levels spanning the sweep, all turns, all three
# distributions, hit ratios from the lowest to the highest) but with short load windows and
# drains, three sweep levels and three hit ratios (each AIPerf call costs ~9 s of start-up
# here, more than its load window), and token lengths divided by 8 so a simulated request
# finishes in about a second.
QUICK_STEP_SECONDS = 3
QUICK_MULTI_TURN_SECONDS = 8
QUICK_TOKEN_DIVISOR = 8
QUICK_SWEEP_LEVELS = 3
QUICK_HIT_RATIOS = 3
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
            prefix, hit_ratios=_spread(prefix.hit_ratios, QUICK_HIT_RATIOS),
            isl=tokens(prefix.isl), osl=tokens(prefix.osl),
            step_seconds=min(prefix.step_seconds, QUICK_STEP_SECONDS), grace_seconds=grace),
        slo=plan.slo, repeats=plan.repeats,
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
