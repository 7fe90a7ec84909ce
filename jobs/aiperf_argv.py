"""THE builder: one benchmark mode -> the AIPerf calls that run it.

Used unchanged by the cloud Jobs and the local lab. Every flag emitted here exists in
`aiperf profile --help` of the pinned AIPerf (tests check it against the saved help text).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from jobs import seq_dist
from jobs.modes import (ConcurrencySweep, Mode, MultiTurn, PrefixCache,
                              SequenceDistribution, Slo, step_budget)
from jobs.names import MODES

# `list`: one call sweeps every level (`--concurrency 1,2,4`; AIPerf >= 0.9 writes one
# `concurrency_<n>/` dir per level). `per_level`: one call per level, for the aiperf in the
# vllm-runtime image, which takes a single value.
SWEEP_STYLES = ("list", "per_level")
RANDOM_SEED = 42  # the same prompts for agg and disagg
# A seed per step, so no step is served from a cache an earlier step warmed (the same seed
# draws the same prompts: measured, a 0 % step after a same-seed step hit 40 %). Within a
# list-style sweep AIPerf seeds level i with seed + i (--parameter-sweep-same-seed off, its
# default: aiperf 0.9.0 `profile --help`); per-level calls do the same.
SEED_STRIDE_MODE, SEED_STRIDE_STEP = 10000, 100
# Unique prompts per run: enough that no prompt repeats at >= 0.5 s per request (a repeated
# prompt is a cache hit), capped to bound dataset generation (AIPerf builds the dataset before
# every run: ~1 s per 100 prompts on 2 cores).
PROMPTS_PER_SLOT_SECOND = 2
MAX_PROMPTS = 2000
# SLO keys of AIPerf's --goodput (metric tags, values in ms).
GOODPUT_TTFT, GOODPUT_ITL = "time_to_first_token", "inter_token_latency"


@dataclass(frozen=True)
class Target:
    url: str        # the frontend's base URL, e.g. http://127.0.0.1:8000
    model: str      # the served model id
    tokenizer: str  # tokenizer id or local directory


@dataclass(frozen=True)
class AiperfCall:
    step: str                # label, and the artifact directory's name under the mode's dir
    argv: tuple[str, ...]    # arguments after the `aiperf` executable
    planned_seconds: int


@dataclass(frozen=True)
class Evidence:
    """What every call measures beyond the client's view."""
    slo: Slo = Slo()  # goodput counts the requests that meet it
    repeats: int = 1  # AIPerf runs per step; > 1 adds a confidence aggregate
    server_metrics: bool = True  # scrape the frontend's /metrics (AIPerf's default) ...
    metrics_urls: tuple[str, ...] = ()  # ... and these Prometheus endpoints (the workers')
    gpu_telemetry_urls: tuple[str, ...] = ()  # DCGM exporters' /metrics; none: no GPU telemetry


def build_calls(mode: Mode, target: Target, mode_dir: str | PurePosixPath,
                sweep_style: str = "list", evidence: Evidence = Evidence()) -> list[AiperfCall]:
    """The AIPerf calls of one mode, in run order; artifacts go to `<mode_dir>/<step>`."""
    if sweep_style not in SWEEP_STYLES:
        raise ValueError(f"sweep style {sweep_style!r} unknown; allowed: {', '.join(SWEEP_STYLES)}")
    common = [*_common_flags(target), *_evidence_flags(evidence)]
    steps = _steps(mode, sweep_style)
    base_seed = RANDOM_SEED + SEED_STRIDE_MODE * MODES.index(mode.name)
    return [AiperfCall(step=label,
                       argv=("profile", *common, *flags,
                             "--random-seed", str(base_seed + seed_offset),
                             "--artifact-dir", str(PurePosixPath(mode_dir) / label)),
                       planned_seconds=planned * evidence.repeats)
            for label, flags, planned, seed_offset in steps]


def _steps(mode: Mode, sweep_style: str) -> list[tuple[str, list[str], int, int]]:
    """(label, mode flags, planned seconds, seed offset) per call."""
    if isinstance(mode, ConcurrencySweep):
        return _sweep_steps(mode, sweep_style)
    if isinstance(mode, MultiTurn):
        flags = [*_lengths(mode.isl, mode.osl), *_window(mode.duration_seconds, mode.grace_seconds),
                 "--concurrency", str(mode.conversations),
                 "--conversation-turn-mean", str(mode.turns), "--conversation-turn-stddev", "0"]
        return [(f"turns{mode.turns}", flags, mode.planned_seconds, 0)]
    if isinstance(mode, SequenceDistribution):
        planned = step_budget(mode.step_seconds, mode.grace_seconds)
        return [(name, ["--seq-dist", seq_dist.seq_dist_arg(name, (mode.isl_min, mode.isl_max),
                                                            (mode.osl_min, mode.osl_max)),
                        # lengths vary per bucket, so no fixed min_tokens: ignore_eos suffices
                        "--extra-inputs", "ignore_eos:true",
                        *_window(mode.step_seconds, mode.grace_seconds),
                        *_load(mode.concurrency, mode.step_seconds)], planned,
                 SEED_STRIDE_STEP * index)
                for index, name in enumerate(mode.distributions)]
    if isinstance(mode, PrefixCache):
        planned = step_budget(mode.step_seconds, mode.grace_seconds)
        return [(f"hit{ratio}", [*_prefix(mode.isl, ratio), *_osl(mode.osl),
                                 *_window(mode.step_seconds, mode.grace_seconds),
                                 *_load(mode.concurrency, mode.step_seconds)], planned,
                 SEED_STRIDE_STEP * index)
                for index, ratio in enumerate(mode.hit_ratios)]
    raise TypeError(f"not a benchmark mode: {mode!r}")


def _sweep_steps(mode: ConcurrencySweep,
                 sweep_style: str) -> list[tuple[str, list[str], int, int]]:
    fixed = [*_lengths(mode.isl, mode.osl), *_window(mode.step_seconds, mode.grace_seconds)]
    per_level = step_budget(mode.step_seconds, mode.grace_seconds)
    if sweep_style == "list":
        levels = ",".join(str(c) for c in mode.concurrency)
        return [("sweep", [*fixed, *_load(levels, mode.step_seconds, max(mode.concurrency))],
                 per_level * len(mode.concurrency), 0)]
    return [(f"c{c}", [*fixed, *_load(c, mode.step_seconds)], per_level, index)
            for index, c in enumerate(mode.concurrency)]


def _common_flags(target: Target) -> list[str]:
    return ["--model", target.model, "--tokenizer", target.tokenizer, "--url", target.url,
            "--endpoint-type", "chat", "--streaming",
            # the server's usage counts are exact; re-tokenizing random output miscounts OSL
            "--use-server-token-count", "--ui-type", "none",
            # A fresh connection per request: the Dynamo frontend leaves Nagle on
            # (ai-dynamo/dynamo#14643), so on a pooled connection the client's delayed ACK holds
            # tokens back ~40 ms. Measured on the twin at c=1: TTFT p90 46 ms pooled, 7 ms fresh.
            "--connection-reuse-strategy", "never"]


def _evidence_flags(evidence: Evidence) -> list[str]:
    flags = ["--goodput", f"{GOODPUT_TTFT}:{evidence.slo.ttft_ms} "
                          f"{GOODPUT_ITL}:{evidence.slo.itl_ms}"]
    if not evidence.server_metrics:
        flags.append("--no-server-metrics")
    elif evidence.metrics_urls:
        flags += ["--server-metrics", *evidence.metrics_urls]
    # DCGM exporter URLs (aiperf 0.9.0 `profile --help`, GPU Telemetry); it also tries its defaults,
    # localhost:9400/9401, and keeps only those that answer (aiperf/gpu_telemetry/manager.py)
    flags += (["--gpu-telemetry", *evidence.gpu_telemetry_urls] if evidence.gpu_telemetry_urls
              else ["--no-gpu-telemetry"])
    if evidence.repeats > 1:
        # Trials with fresh prompts: a trial re-sending the previous one's prompts would be
        # served from the cache it warmed (AIPerf's default keeps one seed for all trials).
        flags += ["--num-profile-runs", str(evidence.repeats), "--confidence-level", "0.95",
                  "--vary-seed-per-trial"]
    return flags


def _lengths(isl: int, osl: int) -> list[str]:
    return ["--isl", str(isl), *_osl(osl)]


def _osl(osl: int) -> list[str]:
    """Exactly `osl` tokens per request: the server may not stop early at EOS."""
    return ["--osl", str(osl), "--extra-inputs", "ignore_eos:true",
            "--extra-inputs", f"min_tokens:{osl}"]


def _prefix(isl: int, hit_percent: int) -> list[str]:
    """A prompt whose first `hit_percent` % is one prefix shared by every request.

    AIPerf prepends the prefix to a unique prompt of `--isl` tokens; at 100 % one token
    stays unique so the prompt length is still `isl`.
    """
    shared = min(round(isl * hit_percent / 100), isl - 1)
    if shared == 0:
        return ["--isl", str(isl)]
    return ["--isl", str(isl - shared),
            "--prompt-prefix-pool-size", "1", "--prompt-prefix-length", str(shared)]


def _window(seconds: int, grace_seconds: int) -> list[str]:
    return ["--benchmark-duration", str(seconds), "--benchmark-grace-period", str(grace_seconds)]


def _load(concurrency: int | str, seconds: int, top_concurrency: int | None = None) -> list[str]:
    top = top_concurrency if top_concurrency is not None else int(concurrency)
    prompts = min(top * seconds * PROMPTS_PER_SLOT_SECOND, MAX_PROMPTS)
    return ["--concurrency", str(concurrency), "--num-dataset-entries", str(prompts)]
