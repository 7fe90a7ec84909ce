"""What the report reads: the agg/disagg pair report/selection.py chooses below a results
directory, with every AIPerf export of every mode parsed, and every file that could not be used
named as a problem."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from jobs import exports
from jobs.exports import ExportError, ProfileExport, RequestRecord
from report.confidence import Confidence, combine_trials
from report.problems import Problem
from jobs.names import GRAPHS, MODES
from jobs.run_manifest import ManifestError, ModeStatus, RunManifest, read_manifest, read_status
from report.selection import Candidate, Selection, candidate, choose, no_runs_error

# Per-request records feed only the per-turn figures; other modes need the summaries alone.
MODES_WITH_RECORDS = ("multi_turn",)


@dataclass(frozen=True)
class StepResult:
    """One AIPerf run of a mode: its step label, its summary, and (multi-turn) its requests."""
    step: str
    export: ProfileExport  # with repeats: the trials' mean
    records: list[RequestRecord] | None = None
    confidence: Confidence | None = None  # repeats > 1: AIPerf's confidence aggregate
    trials: tuple[ProfileExport, ...] = ()  # every trial's own export (one without repeats)

    @property
    def run_dirs(self) -> tuple[Path, ...]:
        return tuple(trial.path.parent for trial in self.trials) or (self.export.path.parent,)


@dataclass
class GraphRun:
    manifest: RunManifest
    directory: Path
    results: dict[str, list[StepResult]] = field(default_factory=dict)  # mode -> step results
    statuses: dict[str, ModeStatus] = field(default_factory=dict)

    @property
    def graph(self) -> str:
        return self.manifest.graph

    @property
    def label(self) -> str:
        """How the graph is named in every table and plot: simulated runs say what they simulated."""
        return f"{self.graph} (simulated: {simulated_as(self.manifest)})" if self.manifest.simulated \
            else self.graph


BUILT_IN_TIMING = "the mocker's built-in timing"


def simulated_as(manifest: RunManifest) -> str:
    """What a simulated run stood for: the twin's workers and timing source (local lab's manifest)."""
    twin = manifest.extra.get("twin") or {}
    return f"{twin['summary']} from {twin['timing']}" if "summary" in twin else BUILT_IN_TIMING


@dataclass
class ReportInputs:
    runs: list[GraphRun]  # at most one per graph, in GRAPHS order
    problems: list[Problem]
    selection: Selection  # why these runs, and how they fall short of a like-for-like pair
    # (twin, real) per graph: the newest real run and the newest simulated run of its shape
    twins: list[tuple[GraphRun, GraphRun]] = field(default_factory=list)


def load_results(results_dir: Path) -> ReportInputs:
    """The pair of runs to compare (report/selection.py); NoRunsError when there is none."""
    problems: list[Problem] = []
    candidates = {graph: _candidates(_graph_dirs(results_dir, graph), problems)
                  for graph in GRAPHS}
    if not any(candidates.values()):
        raise no_runs_error(results_dir, [f"{p.path}: {p.problem}" for p in problems])
    selection = choose(candidates)
    runs = [_load_graph((chosen.directory, chosen.manifest), problems)
            for chosen in selection.chosen.values()]
    return ReportInputs(runs=runs, problems=problems, selection=selection,
                        twins=_twins(candidates, problems))


def _shape(manifest: RunManifest) -> tuple:
    """What a twin must share with the real run it stands for: workload and hardware."""
    return (manifest.graph, manifest.profile, manifest.model, sorted(manifest.workers.items()),
            sorted((group.role, group.instance_type, group.count) for group in manifest.nodes))


def _twins(candidates: dict[str, list[Candidate]],
           problems: list[Problem]) -> list[tuple[GraphRun, GraphRun]]:
    pairs = []
    for found in candidates.values():
        reals = [c for c in found if not c.manifest.simulated]
        if not reals:
            continue
        real = max(reals, key=lambda c: c.manifest.created)
        twins = [c for c in found if c.manifest.simulated and _shape(c.manifest) == _shape(real.manifest)]
        if twins:
            twin = max(twins, key=lambda c: c.manifest.created)
            fresh: list[Problem] = []
            pair = tuple(_load_graph((c.directory, c.manifest), fresh) for c in (twin, real))
            seen = {problem.path for problem in problems}  # a chosen run's problems are named once
            problems.extend(problem for problem in fresh if problem.path not in seen)
            pairs.append(pair)
    return pairs


def _graph_dirs(results_dir: Path, graph: str) -> list[Path]:
    """`results_dir` is one run (`<run_id>/<graph>`) or a root holding several runs."""
    if (results_dir / graph).is_dir():
        return [results_dir / graph]
    return sorted(path for path in results_dir.glob(f"*/{graph}") if path.is_dir())


def _candidates(graph_dirs: list[Path], problems: list[Problem]) -> list[Candidate]:
    found = []
    for graph_dir in graph_dirs:
        try:
            found.append(candidate(graph_dir, read_manifest(graph_dir)))
        except ManifestError as err:
            problems.append(Problem(err.path, f"{err.problem}; this graph's results are skipped: "
                                              "without a manifest they cannot be labelled"))
    return found


def _load_graph(chosen: tuple[Path, RunManifest], problems: list[Problem]) -> GraphRun:
    graph_dir, manifest = chosen
    run = GraphRun(manifest=manifest, directory=graph_dir)
    for mode in MODES:
        mode_dir = graph_dir / mode
        if not mode_dir.is_dir():
            continue
        steps = sorted(path.name for path in mode_dir.iterdir() if path.is_dir())
        try:
            status = read_status(mode_dir)
            run.statuses[mode] = status
            steps = sorted(set(steps) | set(status.steps))
        except ManifestError as err:
            problems.append(Problem(err.path, err.problem))
        run.results[mode] = [result for step in steps
                             for result in _load_step(mode, mode_dir / step, problems)]
    return run


def _load_step(mode: str, step_dir: Path, problems: list[Problem]) -> list[StepResult]:
    try:
        run_dirs = exports.find_run_dirs(step_dir)
    except ExportError as err:
        problems.append(Problem(err.path, err.problem))
        return []
    summaries, failed = [], []
    for run_dir in run_dirs:
        try:
            summaries.append(exports.parse_profile_export(run_dir / exports.PROFILE_EXPORT))
        except ExportError as err:
            failed.append(err)
    stand_ins = _sweep_aggregate_levels(step_dir, failed, problems)
    for err in failed:
        level = exports.concurrency_from_dir_name(err.path.parent)
        fate = ("figures of this level taken from the sweep aggregate" if level in stand_ins
                else "skipped")
        problems.append(Problem(err.path, f"{err.problem}; {fate}"))
    return [StepResult(step_dir.name, group.export,
                       _trial_records(group.trials, problems) if mode in MODES_WITH_RECORDS
                       else None, group.confidence, group.trials)
            for group in combine_trials(summaries + list(stand_ins.values()), problems)]


def _sweep_aggregate_levels(step_dir: Path, failed: list[ExportError],
                            problems: list[Problem]) -> dict[int, ProfileExport]:
    """A list-style sweep's aggregate stands in for levels whose own summary is unusable."""
    wanted = {exports.concurrency_from_dir_name(err.path.parent) for err in failed} - {None}
    found: dict[int, ProfileExport] = {}
    for path in sorted(step_dir.rglob(exports.SWEEP_AGGREGATE)) if wanted else []:
        try:
            found |= {level.concurrency: level for level in exports.parse_sweep_aggregate(path)
                      if level.concurrency in wanted}
        except ExportError as err:
            problems.append(Problem(err.path, err.problem))
    return found


def _trial_records(trials: tuple[ProfileExport, ...],
                   problems: list[Problem]) -> list[RequestRecord] | None:
    """Every trial's requests together (a step run once has one trial)."""
    found = [_records(trial, problems) for trial in trials]
    return None if any(records is None for records in found) else \
        [record for records in found for record in records]


def _records(summary: ProfileExport, problems: list[Problem]) -> list[RequestRecord] | None:
    try:
        return exports.parse_request_records(summary.path.parent / exports.REQUEST_RECORDS)
    except ExportError as err:
        problems.append(Problem(err.path,
                                f"{err.problem}; per-turn figures of this run are absent"))
        return None
