"""THE builder: one benchmark mode -> the AIPerf calls that run it.

Used unchanged by the cloud Jobs and the local lab. Every flag emitted here exists in
`aiperf profile --help` of the pinned AIPerf (tests check it against the saved help text).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from jobs import seq_dist
from jobs.modes import (ConcurrencySweep, Mode, MultiTurn, PrefixCache,
                              SequenceDistribution, step_budget)

# `list`: one call sweeps every level (`--concurrency 1,2,4`; AIPerf >= 0.9 writes one
# `concurrency_<n>/` dir per level). `per_level`: one call per level, for the aiperf in the
# vllm-runtime image, which takes a single value.
SWEEP_STYLES = ("list", "per_level")
RANDOM_SEED = 42  # the same prompts for agg and disagg
# Unique prompts per run: enough that no prompt repeats at >= 1 s per request, so KV-cache
# hits come only from a mode's deliberate shared prefix; capped to bound dataset generation
# (AIPerf builds the dataset before every run: ~1 s per 100 prompts on 2 cores).
MAX_PROMPTS = 2000


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


def build_calls(mode: Mode, target: Target, mode_dir: str | PurePosixPath,
                sweep_style: str = "list", server_metrics: bool = True) -> list[AiperfCall]:
    """The AIPerf calls of one mode, in run order; artifacts go to `<mode_dir>/<step>`."""
    if sweep_style not in SWEEP_STYLES:
        raise ValueError(f"sweep style {sweep_style!r} unknown; allowed: {', '.join(SWEEP_STYLES)}")
    common = _common_flags(target, server_metrics)
    steps = _steps(mode, sweep_style)
    return [AiperfCall(step=label,
                       argv=("profile", *common, *flags,
                             "--artifact-dir", str(PurePosixPath(mode_dir) / label)),
                       planned_seconds=planned)
            for label, flags, planned in steps]


def _steps(mode: Mode, sweep_style: str) -> list[tuple[str, list[str], int]]:
    """(label, mode flags, planned seconds) per call."""
    if isinstance(mode, ConcurrencySweep):
        return _sweep_steps(mode, sweep_style)
    if isinstance(mode, MultiTurn):
        flags = [*_lengths(mode.isl, mode.osl), *_window(mode.duration_seconds, mode.grace_seconds),
                 "--concurrency", str(mode.conversations),
                 "--conversation-turn-mean", str(mode.turns), "--conversation-turn-stddev", "0"]
        return [(f"turns{mode.turns}", flags, mode.planned_seconds)]
    if isinstance(mode, SequenceDistribution):
        planned = step_budget(mode.step_seconds, mode.grace_seconds)
        return [(name, ["--seq-dist", seq_dist.seq_dist_arg(name, (mode.isl_min, mode.isl_max),
                                                            (mode.osl_min, mode.osl_max)),
                        # lengths vary per bucket, so no fixed min_tokens: ignore_eos suffices
                        "--extra-inputs", "ignore_eos:true",
                        *_window(mode.step_seconds, mode.grace_seconds),
                        *_load(mode.concurrency, mode.step_seconds)], planned)
                for name in mode.distributions]
    if isinstance(mode, PrefixCache):
        planned = step_budget(mode.step_seconds, mode.grace_seconds)
        return [(f"hit{ratio}", [*_prefix(mode.isl, ratio), *_osl(mode.osl),
                                 *_window(mode.step_seconds, mode.grace_seconds),
                                 *_load(mode.concurrency, mode.step_seconds)], planned)
                for ratio in mode.hit_ratios]
    raise TypeError(f"not a benchmark mode: {mode!r}")


def _sweep_steps(mode: ConcurrencySweep, sweep_style: str) -> list[tuple[str, list[str], int]]:
    fixed = [*_lengths(mode.isl, mode.osl), *_window(mode.step_seconds, mode.grace_seconds)]
    per_level = step_budget(mode.step_seconds, mode.grace_seconds)
    if sweep_style == "list":
        levels = ",".join(str(c) for c in mode.concurrency)
        return [("sweep", [*fixed, *_load(levels, mode.step_seconds, max(mode.concurrency))],
                 per_level * len(mode.concurrency))]
    return [(f"c{c}", [*fixed, *_load(c, mode.step_seconds)], per_level)
            for c in mode.concurrency]


def _common_flags(target: Target, server_metrics: bool) -> list[str]:
    flags = ["--model", target.model, "--tokenizer", target.tokenizer, "--url", target.url,
             "--endpoint-type", "chat", "--streaming",
             # the server's usage counts are exact; re-tokenizing random output miscounts OSL
             "--use-server-token-count",
             "--random-seed", str(RANDOM_SEED), "--ui-type", "none", "--no-gpu-telemetry"]
    if not server_metrics:
        flags.append("--no-server-metrics")
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
    prompts = min(top * seconds, MAX_PROMPTS)
    return ["--concurrency", str(concurrency), "--num-dataset-entries", str(prompts)]
