"""`benchlab local`: run the lab's main job on this machine, no cloud and no GPU.

A real Dynamo graph (frontend + mocker engine) on 127.0.0.1, benchmarked by the real AIPerf
CLI in the four modes, aggregated then disaggregated, and the same report the cloud lab makes.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from jobs import aiperf_argv, modes
from cli.cli import CliError
from cli.plan_command import PLAN_JSON, default_out as default_plan_out
from local_lab import cloud_shape, isolation, tool_venvs
from jobs.names import GRAPHS, PROFILES
from local_lab.graph import ROUTER_MODES, GraphError, check_ports_free
from local_lab.progress import Progress
from local_lab.runner import LabSetup, run_lab
from local_lab.tokenizer import ensure_model_dir
from stacks.config import StackConfig

HELP = ("run the lab locally: Dynamo frontend + mocker (simulated GPUs) benchmarked by AIPerf "
        "in the four modes, agg then disagg; builds the report")
REPO_ROOT = Path(__file__).resolve().parents[1]
EXIT_INTERRUPTED = 130
# The twin's tables beside the tool that computed them: shared by every --work-dir, gone with it.
TWIN_TABLES = "twin-tables"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=PROFILES, default="quick",
                        help="quick: every mode's shape, short (<5 min on 2 cores); "
                             "full: Report 5's parameters (~80 min) (default: %(default)s)")
    parser.add_argument("--graphs", type=_graph_list, default=GRAPHS, metavar="LIST",
                        help=f"comma-separated, run in this order; allowed: {','.join(GRAPHS)} "
                             f"(default: {','.join(GRAPHS)})")
    parser.add_argument("--out", type=Path, default=Path("lab-results"), metavar="DIR",
                        help="results root; each run adds <DIR>/<run id>/ (default: %(default)s)")
    parser.add_argument("--stack", metavar="NAME",
                        help="take the benchmark parameters from `benchlab:bench` in "
                             "Pulumi.<NAME>.yaml (default: Report 5's parameters)")
    parser.add_argument("--frontend-port", type=_port, default=8000, metavar="PORT",
                        help="frontend HTTP port on 127.0.0.1 (default: %(default)s)")
    parser.add_argument("--nats-port", type=_port, default=4222, metavar="PORT",
                        help="NATS port on 127.0.0.1 (default: %(default)s)")
    parser.add_argument("--router-mode", choices=ROUTER_MODES, default="round-robin",
                        help="the frontend's router (default: %(default)s)")
    parser.add_argument("--sweep-style", choices=aiperf_argv.SWEEP_STYLES, default="list",
                        help="list: one AIPerf call per sweep; per_level: one per concurrency "
                             "(default: %(default)s)")
    parser.add_argument("--isolation", choices=isolation.ISOLATIONS, default="auto",
                        help="netns: a private network namespace with only loopback; host: "
                             "the machine's loopback (Dynamo 0.9.1 then also listens on the "
                             "primary address); auto: netns when possible (default: %(default)s)")
    parser.add_argument("--tools-dir", type=Path, default=REPO_ROOT / ".venvs", metavar="DIR",
                        help="where the dynamo and aiperf venvs live (default: .venvs)")
    parser.add_argument("--work-dir", type=Path, default=REPO_ROOT / ".lab-work", metavar="DIR",
                        help="model dir, process logs, stores (default: .lab-work)")
    parser.add_argument("--plan", type=Path, metavar="PLAN_JSON",
                        help="the `benchlab plan` whose predictions the runs record when their "
                             "graph matches (default: plan-out/<stack, or dev>/plan.json if present)")
    parser.add_argument("--twin", action=argparse.BooleanOptionalAction, default=None,
                        help="simulate the stack's hardware: each worker's timing from AIConfigurator "
                             "for its node group's GPU and TP, its KV blocks from the GPU memory, "
                             "its replicas; --no-twin: the mocker's built-in polynomial timing "
                             "(default: on when the aiconfigurator tool venv is or can be installed)")
    parser.add_argument("--no-install", action="store_true",
                        help="never create or update the tool venvs; fail if they are not ready")


def run(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` cleans up like Ctrl-C
    if not isolation.inside_namespace():
        _bench_plan(args.stack)  # a bad stack config fails before any install
        namespace = _namespace_prefix(args.isolation)
        if namespace is None:
            _check_ports(args)  # on the host's loopback a busy port fails before any install
        _prepare(args)
        if namespace is not None:
            isolation.reexec_in_namespace(namespace)  # does not return
    else:
        try:
            isolation.bring_up_loopback()
        except isolation.IsolationError as err:
            raise CliError(f"{err}; try --isolation host") from None
    return _run_inside(args)


def _prepare(args: argparse.Namespace) -> None:
    """Everything that needs the real network or is slow to repeat: done once, outside."""
    try:
        tool_venvs.ensure_tools(args.tools_dir.resolve(), install=not args.no_install)
    except tool_venvs.ToolSetupError as err:
        raise CliError(str(err)) from None
    ensure_model_dir(args.work_dir.resolve() / "model")
    _twin(args, install=not args.no_install)  # the tables, made once and cached


def _twin(args: argparse.Namespace, install: bool):
    """The twin of the graphs (None when off): AIConfigurator's tables for the stack's workers."""
    if args.twin is False:
        return None
    tools = args.tools_dir.resolve()
    try:
        tool_venvs.ensure_tools(tools, install=install, tools=(tool_venvs.AICONFIGURATOR,))
    except tool_venvs.ToolSetupError as err:
        if args.twin:
            raise CliError(f"--twin: {err}") from None
        print(f"benchlab local: twin off, the mocker's built-in timing ({err})", file=sys.stderr)
        return None
    from planner import aiconfigurator, twin
    from planner.inputs import PlanInputError
    try:
        return twin.lab_twin(_stack(args.stack), modes.scaled(_bench_plan(args.stack), args.profile),
                             args.graphs, tools / TWIN_TABLES, tools)
    except (PlanInputError, aiconfigurator.AicError) as err:
        if args.twin:
            raise CliError(f"--twin: {err}") from None
        print(f"benchlab local: twin off, the mocker's built-in timing: {err}", file=sys.stderr)
        return None


def _namespace_prefix(choice: str) -> list[str] | None:
    """The `unshare` prefix to re-execute with, or None to run on the host's loopback."""
    if choice == "host":
        return None
    prefix = isolation.unshare_argv()
    if choice == "netns" and prefix is None:
        raise CliError("--isolation netns: cannot create a network namespace here (needs "
                       "`unshare` and `ip`, and user namespaces when not root); "
                       "use --isolation host")
    if prefix is None:
        print("benchlab local: no network namespace available; running on the host's loopback "
              "(Dynamo 0.9.1's response listener also binds the primary address)",
              file=sys.stderr)
    return prefix


def _check_ports(args: argparse.Namespace) -> None:
    try:
        check_ports_free({"--frontend-port": args.frontend_port, "--nats-port": args.nats_port})
    except GraphError as err:
        raise CliError(str(err)) from None


def _run_inside(args: argparse.Namespace) -> int:
    tools = args.tools_dir.resolve()
    try:
        tool_venvs.ensure_tools(tools, install=False)
    except tool_venvs.ToolSetupError as err:
        raise CliError(str(err)) from None
    _check_ports(args)
    plan = modes.scaled(_bench_plan(args.stack), args.profile)
    lab_twin = _twin(args, install=False)
    for graph, record in (lab_twin.records if lab_twin else {}).items():
        print(f"benchlab local: {graph}: twin of {record['summary']} ({record['timing']})")
    setup = LabSetup(
        plan=plan, profile=args.profile, graphs=args.graphs, out_dir=args.out.resolve(),
        work_dir=args.work_dir.resolve(), model_dir=ensure_model_dir(args.work_dir.resolve() / "model"),
        dynamo_python=tool_venvs.tool_path(tool_venvs.DYNAMO, tools, "python"),
        nats_server=tool_venvs.tool_path(tool_venvs.DYNAMO, tools, "nats-server"),
        aiperf=tool_venvs.tool_path(tool_venvs.AIPERF, tools, "aiperf"),
        frontend_port=args.frontend_port, nats_port=args.nats_port,
        router_mode=args.router_mode, sweep_style=args.sweep_style,
        predictions=_predictions(args), stack=_stack(args.stack),
        worker_args=lab_twin.worker_args if lab_twin else {},
        twin=lab_twin.records if lab_twin else {})
    progress = Progress(plan.planned_seconds * len(args.graphs))
    try:
        run = run_lab(setup, progress)
        report = _build_report(setup.out_dir, run.run_dir, progress)
    except KeyboardInterrupt:  # past the graphs (each stops its own processes): nothing runs
        progress.say("interrupted")
        return EXIT_INTERRUPTED
    _summarize(run, report, progress)
    if run.interrupted:
        return EXIT_INTERRUPTED
    return 0 if run.all_ok and report else 1


def _predictions(args: argparse.Namespace) -> dict[str, dict]:
    """graph -> what `benchlab plan` predicted for the cloud graph this run simulates."""
    path = args.plan or default_plan_out(args.stack or "dev") / PLAN_JSON
    if not path.is_file():
        if args.plan:
            raise CliError(f"--plan {path}: no such file")
        return {}
    from report.predictions import prediction_for
    try:
        body = json.loads(path.read_text())
    except ValueError as err:
        raise CliError(f"{path}: not JSON ({err})") from None
    stack = _stack(args.stack)
    found = {graph: prediction_for(body, cloud_shape.manifest("", graph, args.profile, "", "", stack=stack))
             for graph in args.graphs}
    for graph, record in found.items():
        print(f"benchlab local: {graph}: " + (f"recording the predictions of {path}" if record else
              f"{path} predicts another shape; nothing recorded"))
    return {graph: record for graph, record in found.items() if record}


def _stack(stack: str | None) -> StackConfig:
    """The cloud lab the run stands for: the stack file's, or the default (= dev)."""
    if stack is None:
        return StackConfig()
    from cli import stack_file
    return stack_file.load(stack).config()


def _bench_plan(stack: str | None) -> modes.BenchPlan:
    if stack is None:
        return modes.BenchPlan()
    from cli import stack_file  # reads Pulumi config files: only when asked
    return stack_file.load(stack).config().bench


def _build_report(out_dir: Path, run_dir: Path, progress: Progress) -> Path | None:
    try:
        from report.render import build_report
    except ImportError:
        progress.say("report: the report package is not available; results are kept as they are")
        return None
    progress.say("report: building")
    try:
        return build_report(out_dir, run_dir / "report")
    except Exception as err:  # noqa: BLE001 - a report bug must not hide the finished run
        progress.say(f"report: failed ({type(err).__name__}: {err}); results are kept")
        return None


def _summarize(run, report: Path | None, progress: Progress) -> None:
    for graph, statuses in run.statuses.items():
        progress.say(f"{graph}: " + ", ".join(f"{mode} {status}" for mode, status in statuses.items()))
    if run.interrupted:
        progress.say("interrupted: every process the lab started is stopped; "
                     "finished modes are kept")
    progress.say(f"results: {run.run_dir}")
    if report:
        progress.say(f"report: {report}")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _graph_list(value: str) -> tuple[str, ...]:
    graphs = tuple(part.strip() for part in value.split(",") if part.strip())
    bad = [g for g in graphs if g not in GRAPHS]
    if bad or not graphs or len(set(graphs)) != len(graphs):
        raise argparse.ArgumentTypeError(
            f"{value!r}: allowed graphs are {', '.join(GRAPHS)}, comma-separated, each once")
    return graphs


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 1024 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port; allowed: 1024-65535")
    return port
