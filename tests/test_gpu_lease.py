"""The GPU lease fits one slow but healthy run: every wait Pulumi makes from the GPU node groups'
creation to the export, as the program renders them (not as the lease check computes them)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from cli import offline
from stacks import config

DEV = offline.stack_config(str(Path(__file__).resolve().parent.parent / "Pulumi.dev.yaml"))
# The Jobs one `pulumi up` waits for, one after another, from the model download to the export.
RUN_JOBS = ("-models-download", "-serving-ready", "-kv-check-job", "-bench-concurrency-sweep",
            "-bench-multi-turn", "-bench-sequence-distribution", "-bench-prefix-cache", "-export-job")


def rendered_wait_minutes(values: dict) -> int:
    rec = offline.run_program(values)
    jobs = {r.name: r for r in rec.of_type("kubernetes:batch/v1:Job")}
    waits = []
    for suffix in RUN_JOBS:
        [job] = [j for name, j in jobs.items() if name.endswith(suffix)]
        waits.append(int(job.custom_timeouts["create"].removesuffix("m")))
    return sum(waits)


@pytest.mark.parametrize("overrides, pinned_minutes", [
    # 91 download + 66 Ready wait + 67 KV check + 35/19/21/28 benchmarks + 31 export
    ({}, 358),
    ({"model": {"downloadTimeoutMinutes": 200}}, 468),
])
def test_the_lease_covers_every_wait_of_one_run(overrides, pinned_minutes):
    values = {**DEV, **overrides}
    assert rendered_wait_minutes({**values, "gpuRelease": {"leaseHours": 12}}) == pinned_minutes
    hours = math.ceil(pinned_minutes / 60)
    config.parse({**values, "gpuRelease": {"leaseHours": hours}})
    with pytest.raises(config.ConfigError) as err:
        config.parse({**values, "gpuRelease": {"leaseHours": hours - 1}})
    assert f"{pinned_minutes} min" in str(err.value) and f"at least {hours}" in str(err.value)
    assert "model download" in str(err.value) and "KV transport check" in str(err.value)
