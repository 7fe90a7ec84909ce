"""The --seq-dist buckets reproduce each distribution's range, mean and shape."""
from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest

from jobs import seq_dist

ISL, OSL = (128, 4096), (64, 2048)
REPO = Path(__file__).resolve().parent.parent
AIPERF_PYTHON = REPO / ".venvs" / "aiperf" / "bin" / "python"


def _mean(buckets, attr):
    return sum(getattr(b, attr) * b.percent for b in buckets) / 100


def _analytic_mean(name, low, high, points=200_000):
    q = seq_dist.quantile_function(name, low, high)
    return sum(q((i + 0.5) / points) for i in range(points)) / points


def _cdf_at(buckets, attr, length):
    return sum(b.percent for b in buckets if getattr(b, attr) <= length) / 100


@pytest.mark.parametrize("name", seq_dist.DISTRIBUTIONS)
def test_buckets_stay_in_range_and_span_it(name):
    buckets = seq_dist.buckets(name, ISL, OSL)
    for attr, (low, high) in (("isl", ISL), ("osl", OSL)):
        lengths = sorted(getattr(b, attr) for b in buckets)
        assert low <= lengths[0] and lengths[-1] <= high
        # the outermost buckets sit in the outermost twentieths of the distribution
        q = seq_dist.quantile_function(name, low, high)
        assert lengths[0] <= q(1 / seq_dist.BUCKETS)
        assert lengths[-1] >= q(1 - 1 / seq_dist.BUCKETS)


@pytest.mark.parametrize("name", seq_dist.DISTRIBUTIONS)
def test_buckets_keep_the_mean(name):
    buckets = seq_dist.buckets(name, ISL, OSL)
    assert math.isclose(_mean(buckets, "isl"), _analytic_mean(name, *ISL), rel_tol=0.01)
    assert math.isclose(_mean(buckets, "osl"), _analytic_mean(name, *OSL), rel_tol=0.01)


@pytest.mark.parametrize("name", seq_dist.DISTRIBUTIONS)
def test_bucket_cdf_follows_the_distribution(name):
    """At every twentieth's edge the buckets' CDF is within one bucket of the true CDF."""
    buckets = seq_dist.buckets(name, ISL, OSL)
    q = seq_dist.quantile_function(name, *ISL)
    for i in range(1, seq_dist.BUCKETS):
        edge = q(i / seq_dist.BUCKETS)
        assert abs(_cdf_at(buckets, "isl", edge) - i / seq_dist.BUCKETS) <= 1 / seq_dist.BUCKETS


def test_shapes_differ_as_their_names_say():
    uniform, zipf, lognormal = (seq_dist.buckets(n, ISL, OSL) for n in seq_dist.DISTRIBUTIONS)
    gaps = [b.isl - a.isl for a, b in zip(uniform, uniform[1:])]
    assert max(gaps) - min(gaps) <= 2  # uniform: evenly spaced lengths
    assert _cdf_at(zipf, "isl", 512) > 0.5  # Zipf: mostly short requests (median < ISL/8)
    assert 0.4 <= _cdf_at(lognormal, "isl", math.sqrt(ISL[0] * ISL[1])) <= 0.6  # log-centred
    assert _cdf_at(lognormal, "isl", 256) < 0.1 and _cdf_at(lognormal, "isl", 2048) > 0.9


def test_long_prompts_come_with_long_answers():
    for name in seq_dist.DISTRIBUTIONS:
        buckets = seq_dist.buckets(name, ISL, OSL)
        assert [b.osl for b in buckets] == sorted(b.osl for b in buckets)
        assert [b.isl for b in buckets] == sorted(b.isl for b in buckets)


def test_argument_percentages_sum_to_exactly_100():
    for count in (3, 7, 20):
        arg = seq_dist.seq_dist_arg("zipf", ISL, OSL, count)
        hundredths = [round(float(part.split(":")[1]) * 100) for part in arg.split(";")]
        assert sum(hundredths) == 10000


def test_narrow_ranges_merge_identical_buckets():
    buckets = seq_dist.buckets("uniform", (10, 12), (5, 6))
    assert len({(b.isl, b.osl) for b in buckets}) == len(buckets) < seq_dist.BUCKETS
    assert math.isclose(sum(b.percent for b in buckets), 100)


def test_unknown_distribution_is_named():
    with pytest.raises(ValueError, match="'pareto'.*uniform, zipf, lognormal"):
        seq_dist.buckets("pareto", ISL, OSL)


@pytest.mark.parametrize("name", seq_dist.DISTRIBUTIONS)
def test_pinned_aiperf_parses_the_argument(name):
    """AIPerf's own parser accepts the string and sees the same expected lengths."""
    if not AIPERF_PYTHON.exists():
        pytest.skip(f"{AIPERF_PYTHON} absent: run `./benchlab local` once to create it")
    arg = seq_dist.seq_dist_arg(name, ISL, OSL)
    probe = ("import sys\n"
             "from aiperf.common.models.sequence_distribution import DistributionParser\n"
             "s = DistributionParser.parse(sys.argv[1]).get_statistics()\n"
             "print(s['expected_isl'], s['expected_osl'])\n")
    out = subprocess.run([str(AIPERF_PYTHON), "-c", probe, arg], capture_output=True,
                         text=True, timeout=120, check=True).stdout.split()
    buckets = seq_dist.buckets(name, ISL, OSL)
    assert math.isclose(float(out[-2]), _mean(buckets, "isl"), rel_tol=1e-3)
    assert math.isclose(float(out[-1]), _mean(buckets, "osl"), rel_tol=1e-3)
