"""`benchlab plan`: model the stack offline with AIConfigurator before spending money: the best
agg and disagg TP/replicas for its node groups under an SLO, predicted throughput and latency,
the `pulumi config set` lines that apply them; writes plan.md and plan.json."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cli import stack_file
from cli.cli import CliError
from local_lab import tool_venvs
from planner import aiconfigurator
from planner.inputs import PlanInputError, Slo, plan_inputs
from planner.plan import make_plan
from planner.render import markdown

HELP = ("predict the stack's best agg and disagg configurations with AIConfigurator (offline, "
        "seconds); prints and writes plan.md / plan.json")
REPO_ROOT = Path(__file__).resolve().parents[1]
PLAN_JSON, PLAN_MD = "plan.json", "plan.md"
# The SLO when the stack sets none: ITL 20 ms (Report 5's question: tokens under 20 ms); TTFT
# 450 ms, MLPerf Inference v5.0's interactive LLM scenario (TTFT 450 ms at TPOT 40 ms):
# https://mlcommons.org/2025/04/llm-inference-v5


def default_out(stack: str) -> Path:
    return Path("plan-out") / stack


def add_arguments(parser: argparse.ArgumentParser) -> None:
    stack_file.add_stack_argument(parser)
    parser.add_argument("--ttft-ms", type=_positive, metavar="MS",
                        help="SLO: time to first token, ms (default: the stack's bench.slo.ttftMs)")
    parser.add_argument("--itl-ms", type=_positive, metavar="MS",
                        help="SLO: inter-token latency (AIConfigurator's TPOT), ms "
                             "(default: the stack's bench.slo.itlMs)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="where plan.md and plan.json go (default: plan-out/<stack>)")
    parser.add_argument("--tools-dir", type=Path, default=REPO_ROOT / ".venvs", metavar="DIR",
                        help="where the aiconfigurator venv lives (default: .venvs)")
    parser.add_argument("--no-install", action="store_true",
                        help="never install aiconfigurator; fail if its venv is not ready")


def run(args: argparse.Namespace) -> int:
    cfg = stack_file.load(args.stack).config()
    given = args.ttft_ms is not None or args.itl_ms is not None
    # One SLO for the plan and the benchmarks' goodput: the stack's, unless flags override it.
    slo = Slo(args.ttft_ms or cfg.bench.slo.ttft_ms, args.itl_ms or cfg.bench.slo.itl_ms,
              "flags" if given else f"the stack's bench.slo (Pulumi.{args.stack}.yaml)")
    try:
        inputs = plan_inputs(cfg, slo)
    except PlanInputError as err:
        raise CliError(f"Pulumi.{args.stack}.yaml: {err}") from None
    tools = args.tools_dir.resolve()
    try:
        tool_venvs.ensure_tools(tools, install=not args.no_install, tools=(tool_venvs.AICONFIGURATOR,))
    except tool_venvs.ToolSetupError as err:
        raise CliError(str(err)) from None
    started = time.monotonic()
    try:
        plan = make_plan(inputs, args.stack, tools)
    except aiconfigurator.AicError as err:
        raise CliError(str(err)) from None
    out = args.out or default_out(args.stack)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(plan)
    (out / PLAN_MD).write_text(text)
    (out / PLAN_JSON).write_text(json.dumps(plan.to_json(), indent=2) + "\n")
    print(text)
    print(f"plan: {out / PLAN_MD}, {out / PLAN_JSON} (AIConfigurator ran {time.monotonic() - started:.0f} s)")
    return 1 if plan.failures else 0


def _positive(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = 0.0
    if not number > 0:
        raise argparse.ArgumentTypeError(f"{value!r}: allowed: a number of ms > 0")
    return number
