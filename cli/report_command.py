"""`benchlab report RESULTS_DIR [--out DIR]`: the markdown report, tables and plots of a results tree."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.cli import CliError

HELP = ("Build report.md, CSV/JSON tables and PNG plots from AIPerf results: one run directory "
        "(<root>/<run_id>) or a root holding several runs (the newest agg/disagg pair that belongs "
        "together is compared; any mismatch is a warning at the top).")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results_dir", type=Path, metavar="RESULTS_DIR",
                        help="a run directory <root>/<run_id>, or a root holding several runs")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="where to write the report (default: RESULTS_DIR/report)")
    parser.add_argument("--plan", type=Path, metavar="PLAN_JSON",
                        help="a `benchlab plan` plan.json to compare the runs that did not record "
                             "one with (cloud runs): predicted vs measured at each concurrency")


def run(args: argparse.Namespace) -> int:
    if not args.results_dir.is_dir():
        raise CliError(f"results directory {args.results_dir} does not exist")
    # Imported here so that `benchlab --help`, which loads every command's options, skips matplotlib.
    from report.render import build_report
    from report.selection import NoRunsError

    try:
        path = build_report(args.results_dir, args.out or args.results_dir / "report",
                            _plan(args.plan) if args.plan else None)
    except NoRunsError as err:
        raise CliError(str(err)) from None
    print(f"report written to {path}")
    return 0


def _plan(path: Path) -> dict:
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CliError(f"--plan {path}: cannot read a plan.json ({err})") from None
    if not isinstance(body, dict) or not isinstance(body.get("graphs"), dict):
        raise CliError(f"--plan {path}: not a `benchlab plan` plan.json (no `graphs`)")
    return body
