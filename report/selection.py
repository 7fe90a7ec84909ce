"""Which runs a report compares: the newest agg/disagg pair that belongs together.

A results root holds many runs: complete ones, interrupted ones, single-graph ones, runs of other
profiles or versions. Comparing two graphs from runs that do not belong together misleads
without a word, so the choice is made here and explained: every way the chosen pair differs
(run, profile, versions, model, simulated or not) or falls short (a mode that did not finish) is a
warning the report shows at the top, and every newer run left out is named with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import product
from pathlib import Path

from jobs.names import GRAPHS, MODES
from jobs.run_manifest import MANIFEST_FILE, STATUS_FILE, ManifestError, RunManifest, read_status


class NoRunsError(ValueError):
    """Nothing to report on; the message says what was expected and, when it can, what to pass."""


@dataclass(frozen=True)
class Candidate:
    """One graph of one run, with how far its modes got."""
    directory: Path
    manifest: RunManifest
    unfinished: tuple[str, ...]  # "<mode> (<status>)" for every mode that did not end ok

    @property
    def complete(self) -> bool:
        return not self.unfinished

    @property
    def name(self) -> str:
        return f"{self.manifest.graph} of run {self.manifest.run_id}"


@dataclass
class Selection:
    chosen: dict[str, Candidate]  # graph -> candidate, in GRAPHS order
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def candidate(directory: Path, manifest: RunManifest) -> Candidate:
    unfinished = []
    for mode in MODES:
        try:
            status = read_status(directory / mode).status
        except ManifestError as err:
            status = "no status" if err.problem == "missing" else "unreadable status"
        if status != "ok":
            unfinished.append(f"{mode} ({status})")
    return Candidate(directory, manifest, tuple(unfinished))


def _identity(manifest: RunManifest) -> tuple:
    """What two runs must share to be compared: profile, versions, model, simulated or not."""
    return (manifest.profile, sorted(manifest.versions.items()), manifest.model,
            manifest.simulated)


def _belong_together(one: Candidate, other: Candidate) -> bool:
    return (one.manifest.run_id == other.manifest.run_id
            or _identity(one.manifest) == _identity(other.manifest))


def _newest(*candidates: Candidate) -> tuple[str, str]:
    return max((c.manifest.created, c.manifest.run_id) for c in candidates)


def choose(candidates: dict[str, list[Candidate]]) -> Selection:
    """The pair to compare: belonging together first, then the fewest unfinished modes, then
    one run rather than two, then the newest."""
    present = [graph for graph in GRAPHS if candidates.get(graph)]
    if len(present) == 2:
        pairs = product(*(candidates[graph] for graph in present))
        best = max(pairs, key=lambda pair: (
            _belong_together(*pair), -sum(len(c.unfinished) for c in pair),
            pair[0].manifest.run_id == pair[1].manifest.run_id, _newest(*pair)))
        chosen = dict(zip(present, best))
    else:
        chosen = {graph: max(candidates[graph], key=lambda c: (c.complete, _newest(c)))
                  for graph in present}
    selection = Selection(chosen)
    selection.warnings += _differences(list(chosen.values()))
    selection.warnings += [f"{c.name} is partial: {', '.join(c.unfinished)} did not finish; "
                           "its figures are what finished, and sections it lacks show the other "
                           "graph alone" for c in chosen.values() if not c.complete]
    for graph in GRAPHS:
        if graph not in chosen:
            selection.notes.append(f"No {graph} run found: the report shows "
                                   f"{' and '.join(chosen)} alone.")
    selection.notes += _left_out(candidates, chosen)
    return selection


def _differences(pair: list[Candidate]) -> list[str]:
    if len(pair) != 2:
        return []
    (one, other), found = pair, []
    a, b = one.manifest, other.manifest
    if a.run_id != b.run_id:
        found.append(f"the graphs come from different runs: {one.name} (created {a.created}) "
                     f"and {other.name} (created {b.created})")
    for what, left, right in (("profile", a.profile, b.profile),
                              ("versions", a.versions, b.versions),
                              ("model", a.model, b.model),
                              ("simulated", a.simulated, b.simulated)):
        if left != right:
            found.append(f"the graphs differ in {what}: {a.graph} {left}, {b.graph} {right}")
    return found


def _left_out(candidates: dict[str, list[Candidate]], chosen: dict[str, Candidate]) -> list[str]:
    """Runs newer than the chosen one of their graph, and why they were not used."""
    notes = []
    for graph, used in chosen.items():
        for other in candidates[graph]:
            if _newest(other) <= _newest(used):
                continue
            reasons = []
            if not other.complete:
                reasons.append(f"partial: {', '.join(other.unfinished)}")
            partner = [c for g, c in chosen.items() if g != graph]
            if partner and not _belong_together(other, partner[0]):
                reasons.append(f"does not belong with {partner[0].name} "
                               "(other run, and other profile, versions or model)")
            notes.append(f"Newer {other.name} (created {other.manifest.created}) not used: "
                         f"{'; '.join(reasons) or 'a pair from one run is preferred'}.")
    return notes


def no_runs_error(results_dir: Path, unreadable: list[str]) -> NoRunsError:
    """Why `results_dir` holds nothing to report on, with the directory to pass instead."""
    if (results_dir / MANIFEST_FILE).is_file() or results_dir.name in GRAPHS:
        hint = (f"this looks like a graph directory (<run>/<graph>); pass its parent, "
                f"{results_dir.resolve().parent}")
    elif (results_dir / STATUS_FILE).is_file() or results_dir.name in MODES:
        hint = (f"this looks like a mode directory (<run>/<graph>/<mode>); pass its run, "
                f"{results_dir.resolve().parent.parent}")
    elif unreadable:
        hint = "no graph directory has a usable manifest.json: " + "; ".join(unreadable)
    else:
        hint = ("expected <run id>/<agg|disagg>/manifest.json below it, as `benchlab local` "
                "(lab-results/) and `benchlab results pull` (cloud-results/) write them")
    return NoRunsError(f"no runs in {results_dir}: {hint}")
