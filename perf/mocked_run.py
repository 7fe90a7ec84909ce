"""Time and peak memory of one whole-program mocked run (the dev stack), in a cold process.

    .venv/bin/python perf/mocked_run.py            # this process: imports + one run
    .venv/bin/python perf/mocked_run.py --runs 5   # 5 fresh processes, one run each

Target: under 3 s on the lab's 2-core machine. Wall time runs from before the imports
(pulumi, pulumi_aws and pulumi_kubernetes are large; every `benchlab synth` and test session pays
them once) to the end of the run; peak RSS is the process's high-water mark.
"""
from __future__ import annotations

import time

STARTED = time.perf_counter()  # before the heavy imports

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def one_run() -> dict:
    sys.path.insert(0, str(REPO))
    from cli import offline

    recording = offline.run_program(offline.stack_config(str(REPO / "Pulumi.dev.yaml")))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"wall_s": round(time.perf_counter() - STARTED, 3), "resources": len(recording.resources),
            # CPU seconds: what the run costs when other processes share the cores
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            # ru_maxrss is in KiB on Linux
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def cold_runs(runs: int) -> list[dict]:
    results = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, __file__, "--json"], cwd=REPO, check=True,
                             capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=0, help="fresh processes to run (default: this one)")
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    args = parser.parse_args()
    if args.runs:
        results = cold_runs(args.runs)
        for i, r in enumerate(results, 1):
            print(f"run {i}: {r['wall_s']:.2f} s wall, {r['cpu_s']:.2f} s CPU, peak RSS {r['peak_rss_mib']:.0f} MiB, "
                  f"{r['resources']} resources")
        walls = [r["wall_s"] for r in results]
        print(f"median {statistics.median(walls):.2f} s wall, max {max(walls):.2f} s, "
              f"max peak RSS {max(r['peak_rss_mib'] for r in results):.0f} MiB")
        return
    result = one_run()
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['wall_s']:.2f} s wall, {result['cpu_s']:.2f} s CPU, peak RSS {result['peak_rss_mib']:.0f} MiB, "
              f"{result['resources']} resources")


if __name__ == "__main__":
    main()
