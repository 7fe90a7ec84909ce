"""`benchlab local`: run the lab's main job on this machine, no cloud and no GPU.

A real Dynamo graph (frontend + mocker engine) on 127.0.0.1, benchmarked by the real AIPerf
CLI in the four modes, aggregated then disaggregated, and the same report the cloud lab makes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from jobs import aiperf_argv, modes
from cli.cli import CliError
from cli.plan_command import PLAN_JSON, default_out as default_plan_out
from local_lab import cloud_shape, fs_view, isolation, run_as, tool_venvs
from jobs.names import GRAPHS, PROFILES
from local_lab.graph import (ROUTER_MODES, GraphError, check_ports_free, max_frontend_port,
                             worker_metrics_ports)
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
    # --preset, not --profile: every other command's --profile is the AWS profile
    parser.add_argument("--preset", choices=PROFILES, default="quick",
                        help="how long the benchmarks run: quick: every mode's shape, short "
                             "(<5 min on 2 cores); full: Report 5's parameters (~80 min) "
                             "(default: %(default)s); recorded as the run's profile")
    parser.add_argument("--graphs", type=_graph_list, default=GRAPHS, metavar="LIST",
                        help=f"comma-separated, run in this order; allowed: {','.join(GRAPHS)} "
                             f"(default: {','.join(GRAPHS)})")
    parser.add_argument("--out", type=Path, default=Path("lab-results"), metavar="DIR",
                        help="results root; each run adds <DIR>/<run id>/ (default: %(default)s)")
    parser.add_argument("--stack", metavar="NAME",
                        help="take the benchmark parameters from `benchlab:bench` in "
                             "Pulumi.<NAME>.yaml (default: Report 5's parameters)")
    parser.add_argument("--frontend-port", type=_frontend_port, default=8000, metavar="PORT",
                        help="frontend HTTP port on 127.0.0.1; the workers' metrics take the next "
                             f"ones (default: %(default)s, at most {max_frontend_port()})")
    parser.add_argument("--nats-port", type=_port, default=4222, metavar="PORT",
                        help="NATS port on 127.0.0.1 (default: %(default)s)")
    parser.add_argument("--router-mode", choices=ROUTER_MODES,
                        help="the frontend's router, the same for both graphs; only kv "
                             "publishes the KV hit rates the report shows (default: the stack's "
                             "serving.routerMode, kv)")
    parser.add_argument("--sweep-style", choices=aiperf_argv.SWEEP_STYLES, default="list",
                        help="list: one AIPerf call per sweep; per_level: one per concurrency "
                             "(default: %(default)s)")
    parser.add_argument("--isolation", choices=isolation.ISOLATIONS, default="netns",
                        help="netns: private network and PID namespaces, only loopback, every "
                             "process ends with the lab; host: the machine's network, only when "
                             "asked for (Dynamo 0.9.1 then also listens on the primary address) "
                             "(default: %(default)s)")
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
    # Ctrl-C, `kill` and a hang-up stop the lab whatever it inherited: a shell's background job
    # ignores SIGINT, and Python then keeps it ignored (the signal module's docs).
    if isolation.inside_namespace():
        isolation.catch_stop_signals()  # first: the process outside holds them until then
        try:
            isolation.bring_up_loopback()
        except isolation.IsolationError as err:
            raise CliError(str(err)) from None
        return _run_inside(args, run_as.from_env())
    isolation.catch_stop_signals(_interrupt)
    try:
        stack = _stack(args.stack)  # a bad stack config fails before any install
        namespace = _namespace_prefix(args.isolation)
        if namespace is None:
            _check_ports(args)  # on the host's loopback a busy port fails before any install
        user = _prepare(args, stack, run_as.unprivileged_user(), namespace)
        isolation.catch_stop_signals()  # the lab starts: from now on a stop is only recorded
    except KeyboardInterrupt:
        pass  # _interrupt recorded it: answered below, like one whose KeyboardInterrupt was dropped
    if isolation.stop_requested():  # nothing of the lab runs yet
        print("benchlab local: interrupted during setup", file=sys.stderr)
        return EXIT_INTERRUPTED
    if namespace is None:
        return _run_inside(args, user)
    code = isolation.run_in_namespace(namespace, user.to_env() if user else None,
                                      ignore_at_start=True)
    return code if code >= 0 else 128 - code  # killed by a signal: the shell's convention


def _prepare(args: argparse.Namespace, stack: StackConfig, user: run_as.RunAs | None,
             namespace: list[str] | None) -> run_as.RunAs | None:
    """Everything that needs the real network or is slow to repeat: done once, outside.
    Returns whom the lab's processes run as."""
    tools = args.tools_dir.resolve()
    try:
        tool_venvs.ensure_tools(tools, install=not args.no_install)
    except tool_venvs.ToolSetupError as err:
        raise CliError(str(err)) from None
    ensure_model_dir(args.work_dir.resolve() / "model")
    _twin(args, stack, install=not args.no_install)  # the tables, made once and cached
    if user is None:
        return None
    for directory in (args.out.resolve(), args.work_dir.resolve()):
        directory.mkdir(parents=True, exist_ok=True)
    blocked = fs_view.plan(_needed_paths(args), user.uid, user.gid)
    if blocked and namespace is not None:  # tried inside, once the user sees what it needs
        return dataclasses.replace(user, view=True)
    try:
        run_as.check_runnable(user, _trials(args))
    except run_as.RunAsError as err:
        hint = (f"; or leave out --isolation host: in its namespaces the lab shows {user.name} "
                "only the paths it needs" if blocked else "")
        raise CliError(f"{err}{hint}") from None
    return user


def _needed_paths(args: argparse.Namespace) -> list[Path]:
    """What the lab's processes reach: the tool venvs, the Python they were made from, the
    lab's directories."""
    tools = args.tools_dir.resolve()
    return [*(path for tool in tool_venvs.TOOL_VENVS
              for path in fs_view.venv_paths(tool_venvs.tool_path(tool, tools, "python"))),
            args.out.resolve(), args.work_dir.resolve()]


def _trials(args: argparse.Namespace) -> dict[str, list[str]]:
    """What the lab's processes must be able to run and reach, each as a command to try."""
    tools = args.tools_dir.resolve()
    return {
        "the Dynamo venv": [str(tool_venvs.tool_path(tool_venvs.DYNAMO, tools, "python")), "-c",
                            "import dynamo.frontend, dynamo.mocker"],
        "nats-server": [str(tool_venvs.tool_path(tool_venvs.DYNAMO, tools, "nats-server")), "--version"],
        "AIPerf": [str(tool_venvs.tool_path(tool_venvs.AIPERF, tools, "aiperf")), "--version"],
        "the generated tokenizer": ["test", "-r", str(args.work_dir.resolve() / "model" / "tokenizer.json")],
        f"the results directory {args.out}": ["test", "-x", str(args.out.resolve())],
        f"the work directory {args.work_dir}": ["test", "-x", str(args.work_dir.resolve())],
    }


def _show_what_it_needs(args: argparse.Namespace, user: run_as.RunAs) -> None:
    """Inside the namespaces: cover the directories `user` may not enter, keeping in sight only
    what it needs (_needed_paths); then try what it must run."""
    try:
        covered = fs_view.make_reachable(_needed_paths(args), user.uid, user.gid)
        run_as.check_runnable(user, _trials(args))
    except (fs_view.ViewError, run_as.RunAsError) as err:
        raise CliError(str(err)) from None
    print(f"benchlab local: {user.name} may not enter {', '.join(map(str, covered))}; in the lab's "
          "namespaces it sees there only the tool venvs, their Python and the lab's directories")


def _twin(args: argparse.Namespace, stack: StackConfig, install: bool):
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
        return twin.lab_twin(stack, modes.scaled(stack.bench, args.preset),
                             args.graphs, tools / TWIN_TABLES, tools)
    except (PlanInputError, aiconfigurator.AicError) as err:
        if args.twin:
            raise CliError(f"--twin: {err}") from None
        print(f"benchlab local: twin off, the mocker's built-in timing: {err}", file=sys.stderr)
        return None


def _namespace_prefix(choice: str) -> list[str] | None:
    """The `unshare` prefix to run the lab with, or None when host networking was asked for."""
    if choice == "host":
        return None
    prefix = isolation.unshare_argv()
    if prefix is None:
        raise CliError("cannot create the lab's private network and PID namespaces here (needs "
                       "`unshare` and `ip`, and user namespaces when not root); to run on the "
                       "host's network instead, where Dynamo 0.9.1 also listens on the "
                       "machine's primary address, pass --isolation host")
    return prefix


def _check_ports(args: argparse.Namespace) -> None:
    try:
        ports = {"--frontend-port": args.frontend_port, "--nats-port": args.nats_port}
        workers = {port for graph in args.graphs
                   for port in worker_metrics_ports(graph, args.frontend_port)}
        ports |= {f"--frontend-port + {port - args.frontend_port} (a worker's metrics)": port
                  for port in sorted(workers)}
        check_ports_free(ports)
    except GraphError as err:
        raise CliError(str(err)) from None


def _run_inside(args: argparse.Namespace, user: run_as.RunAs | None) -> int:
    tools = args.tools_dir.resolve()
    if user is not None and user.view:
        _show_what_it_needs(args, user)
    try:
        tool_venvs.ensure_tools(tools, install=False)
    except tool_venvs.ToolSetupError as err:
        raise CliError(str(err)) from None
    _check_ports(args)
    stack = _stack(args.stack)
    plan = modes.scaled(stack.bench, args.preset)
    lab_twin = _twin(args, stack, install=False)
    for graph, record in (lab_twin.records if lab_twin else {}).items():
        print(f"benchlab local: {graph}: twin of {record['summary']} ({record['timing']})"
              + "".join(f"; modelled instead: {caveat}" for caveat in record["modelled_instead"]))
    setup = LabSetup(
        plan=plan, profile=args.preset, graphs=args.graphs, out_dir=args.out.resolve(),
        work_dir=args.work_dir.resolve(), model_dir=ensure_model_dir(args.work_dir.resolve() / "model"),
        dynamo_python=tool_venvs.tool_path(tool_venvs.DYNAMO, tools, "python"),
        nats_server=tool_venvs.tool_path(tool_venvs.DYNAMO, tools, "nats-server"),
        aiperf=tool_venvs.tool_path(tool_venvs.AIPERF, tools, "aiperf"),
        frontend_port=args.frontend_port, nats_port=args.nats_port,
        router_mode=args.router_mode or stack.serving.router_mode, sweep_style=args.sweep_style,
        run_as=user, predictions=_predictions(args, stack), stack=stack,
        worker_args=lab_twin.worker_args if lab_twin else {},
        twin=lab_twin.records if lab_twin else {})
    progress = Progress(plan.planned_seconds * len(args.graphs))
    run = run_lab(setup, progress)  # a stop signal ends it early (run.interrupted)
    report = _build_report(run.run_dir, progress)
    _summarize(run, report, progress)
    if run.interrupted:
        return EXIT_INTERRUPTED
    return 0 if run.all_ok and report else 1


def _predictions(args: argparse.Namespace, stack: StackConfig) -> dict[str, dict]:
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
    found = {graph: prediction_for(body, cloud_shape.manifest("", graph, args.preset, "", "", stack=stack))
             for graph in args.graphs}
    for graph, record in found.items():
        print(f"benchlab local: {graph}: " + (f"recording the predictions of {path}" if record else
              f"{path} predicts another shape; nothing recorded"))
    return {graph: record for graph, record in found.items() if record}


def _stack(stack: str | None) -> StackConfig:
    """The cloud lab the run stands for: the stack file's, or the default (= dev)."""
    if stack is None:
        return StackConfig()
    from cli import stack_file  # reads Pulumi config files: only when asked
    return stack_file.load(stack).config()


def _build_report(run_dir: Path, progress: Progress) -> Path | None:
    """The report of the run just made, never of an older one beside it."""
    try:
        from report.render import build_report
    except ImportError:
        progress.say("report: the report package is not available; results are kept as they are")
        return None
    progress.say("report: building")
    try:
        return build_report(run_dir, run_dir / "report")
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
    """During set-up nothing of the lab runs: stop wherever it is (a pip install too), once."""
    isolation.catch_stop_signals()  # a second signal is only recorded
    isolation.record_stop(signum, frame)
    raise KeyboardInterrupt


def _graph_list(value: str) -> tuple[str, ...]:
    graphs = tuple(part.strip() for part in value.split(",") if part.strip())
    bad = [g for g in graphs if g not in GRAPHS]
    if bad or not graphs or len(set(graphs)) != len(graphs):
        raise argparse.ArgumentTypeError(
            f"{value!r}: allowed graphs are {', '.join(GRAPHS)}, comma-separated, each once")
    return graphs


def _port(value: str, highest: int = 65535) -> int:
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 1024 <= port <= highest:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port; allowed: 1024-{highest}")
    return port


def _frontend_port(value: str) -> int:
    # the workers' system ports follow it, and Dynamo 0.9.1 takes those as an i16
    return _port(value, max_frontend_port())
