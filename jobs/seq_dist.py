"""Length distributions discretized into AIPerf `--seq-dist` buckets.

AIPerf's synthetic generator draws lengths from a normal distribution only, but honours
weighted (ISL, OSL) buckets. Each distribution here is cut into equal-probability buckets
(quantile slices); a bucket's lengths are the distribution's mean over its slice, so the
buckets keep the distribution's mean exactly and its CDF within one bucket's mass. ISL and
OSL share the quantile slice: a long prompt comes with a long answer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Callable

DISTRIBUTIONS = ("uniform", "zipf", "lognormal")
BUCKETS = 20
# Zipf over lengths: density ~ length^-s (the continuous form of Zipf's law over a range of
# thousands of integers). s = 1.5 puts the median near 3x the minimum: mostly short requests.
ZIPF_EXPONENT = 1.5
# Lognormal centred (in log space) on the range, the range spanning +-2.5 sigma.
LOGNORMAL_SIGMAS_PER_RANGE = 5.0
_SLICE_SAMPLES = 64  # midpoints per quantile slice when averaging the quantile function


@dataclass(frozen=True)
class Bucket:
    isl: int
    osl: int
    percent: float


def quantile_function(distribution: str, low: float, high: float) -> Callable[[float], float]:
    """Q(u) for u in [0, 1] of the named distribution truncated to [low, high]."""
    if distribution == "uniform":
        return lambda u: low + u * (high - low)
    if distribution == "zipf":
        power = 1.0 - ZIPF_EXPONENT
        a, b = low ** power, high ** power
        return lambda u: (a + u * (b - a)) ** (1.0 / power)
    if distribution == "lognormal":
        mu = (math.log(low) + math.log(high)) / 2
        sigma = (math.log(high) - math.log(low)) / LOGNORMAL_SIGMAS_PER_RANGE
        normal = NormalDist()
        cdf_low = normal.cdf((math.log(low) - mu) / sigma)
        cdf_high = normal.cdf((math.log(high) - mu) / sigma)
        return lambda u: math.exp(mu + sigma * normal.inv_cdf(cdf_low + u * (cdf_high - cdf_low)))
    raise ValueError(f"distribution {distribution!r} unknown; allowed: {', '.join(DISTRIBUTIONS)}")


def buckets(distribution: str, isl_range: tuple[int, int], osl_range: tuple[int, int],
            count: int = BUCKETS) -> list[Bucket]:
    """Equal-probability buckets; identical neighbours (narrow ranges) are merged."""
    isl_q = quantile_function(distribution, *isl_range)
    osl_q = quantile_function(distribution, *osl_range)
    merged: dict[tuple[int, int], float] = {}
    for i in range(count):
        key = (round(_slice_mean(isl_q, i, count)), round(_slice_mean(osl_q, i, count)))
        merged[key] = merged.get(key, 0.0) + 1.0 / count
    return [Bucket(isl, osl, percent=100.0 * share) for (isl, osl), share in merged.items()]


def seq_dist_arg(distribution: str, isl_range: tuple[int, int], osl_range: tuple[int, int],
                 count: int = BUCKETS) -> str:
    """The `--seq-dist` value: `ISL,OSL:PERCENT;...`, percentages summing to exactly 100."""
    parts = _exact_percentages(buckets(distribution, isl_range, osl_range, count))
    return ";".join(f"{b.isl},{b.osl}:{percent}" for b, percent in parts)


def _slice_mean(quantile: Callable[[float], float], index: int, count: int) -> float:
    """Mean of the distribution over the quantile slice [index/count, (index+1)/count]."""
    width = 1.0 / (count * _SLICE_SAMPLES)
    start = index / count
    return sum(quantile(start + (k + 0.5) * width) for k in range(_SLICE_SAMPLES)) / _SLICE_SAMPLES


def _exact_percentages(bucket_list: list[Bucket]) -> list[tuple[Bucket, str]]:
    """Percentages in hundredths (largest remainder), so they sum to 100 with no float drift."""
    hundredths = [b.percent * 100 for b in bucket_list]
    floors = [math.floor(h) for h in hundredths]
    short = 10000 - sum(floors)
    by_remainder = sorted(range(len(floors)), key=lambda i: hundredths[i] - floors[i], reverse=True)
    for i in by_remainder[:short]:
        floors[i] += 1
    return [(b, f"{h / 100:g}") for b, h in zip(bucket_list, floors)]
