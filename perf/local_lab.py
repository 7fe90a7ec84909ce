#!/usr/bin/env python3
"""Wall time of the local lab, and how much of it is AIPerf's own start-up and tear-down.

    .venv/bin/python perf/local_lab.py                  # runs the quick profile (~5 min)
    .venv/bin/python perf/local_lab.py --preset full    # runs the full profile (~80 min)

It runs `benchlab local` as a user would, then splits the wall time using the lab's timings file
(per-graph start, per-step wall) and AIPerf's exports (each run's `benchmark_duration`: load
window plus drain). A step's wall minus its runs' benchmark durations is AIPerf's overhead:
process start, tokenizer and dataset set-up, service start and shutdown, export.
Prints the full profile's planned time alongside, from the modes' own plans.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from jobs import modes  # noqa: E402
from jobs.names import GRAPHS, PROFILES  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=PROFILES, default="quick")
    parser.add_argument("--keep", type=Path, metavar="DIR",
                        help="keep results and work files under DIR (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        base = args.keep or Path(scratch)
        figures = measure(args.preset, base)
    print(json.dumps(figures, indent=2))
    return 0 if figures["exit_code"] == 0 else 1


def measure(profile: str, base: Path) -> dict:
    out, work = base / "out", base / "work"
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "cli", "local", "--preset", profile,
                             "--out", str(out), "--work-dir", str(work)],
                            cwd=REPO, stdout=sys.stderr)  # stdout carries only the figures
    wall = time.monotonic() - started
    (run_dir,) = out.iterdir()
    timings = json.loads((work / run_dir.name / "timings.json").read_text())
    steps_wall = sum(timings["step_seconds"].values())
    load = sum(_benchmark_seconds(run_dir / step) for step in timings["step_seconds"])
    runs = sum(len(list((run_dir / step).rglob("profile_export_aiperf.json")))
               for step in timings["step_seconds"])
    overhead = steps_wall - load
    plan = modes.scaled(modes.BenchPlan(), profile)
    full = modes.BenchPlan()
    return {
        "profile": profile, "exit_code": result.returncode, "run_id": run_dir.name,
        "wall_seconds": round(wall, 1),
        "graph_start_seconds": {g: round(s, 1) for g, s in timings["graph_start_seconds"].items()},
        "aiperf_calls": len(timings["step_seconds"]), "aiperf_runs": runs,
        "aiperf_step_wall_seconds": round(steps_wall, 1),
        "aiperf_load_and_drain_seconds": round(load, 1),
        "aiperf_overhead_seconds": round(overhead, 1),
        "aiperf_overhead_per_run_seconds": round(overhead / runs, 1) if runs else None,
        "aiperf_overhead_share_of_wall": round(overhead / wall, 3),
        "lab_other_seconds": round(wall - steps_wall, 1),  # setup, graph start/stop, report
        "planned_seconds": plan.planned_seconds * len(GRAPHS),
        "full_profile_planned_seconds": full.planned_seconds * len(GRAPHS),
    }


def _benchmark_seconds(step_dir: Path) -> float:
    """Sum of AIPerf's benchmark_duration over the runs of one call (one per sweep level)."""
    total = 0.0
    for export in step_dir.rglob("profile_export_aiperf.json"):
        total += json.loads(export.read_text())["benchmark_duration"]["avg"]
    return total


if __name__ == "__main__":
    sys.exit(main())
