"""The GPU release CronJob: GPUs bill only while they measure.

`python -m jobs.gpu_release`, every few minutes in the cluster (a CronJob on the system nodes).
Each run reads this stack's two GPU node groups from EKS and decides:

- **lease**: a GPU node group that has been up (desired size > 0) longer than the lease since
  its last change is released, whatever still runs on it: a forgotten lab stops billing;
- **after the run**: once the results export of the current run has finished (its marker on
  the results volume: results safe in S3) and the grace period is over, every GPU node group
  still up is released, once per run (a lab brought back with `pulumi up --refresh` stays up
  until its lease);
- **after a failed run**: once one of the lab's Jobs has failed for good (its Failed condition:
  the model download, the graph's Ready wait, the KV transport check, a benchmark, the export;
  past its deadline or out of retries) and the same grace is over, every GPU node group that
  was up before the failure is released: nothing after a failed Job runs. A group brought back
  after the failure stays up until its lease.

Release = UpdateNodegroupConfig to min 0 / desired 0, the maximum kept. Pulumi's state still
holds the configured sizes: `pulumi up --refresh` sees the drift and restores them. Each
release leaves a record: a line in the run's manifest (`gpu_release`) and a Kubernetes Event.
An EKS error is retried; if it persists the Job fails with the error and leaves that node group
as it was.

The AWS identity is the CronJob's own IAM role (IRSA), allowed to describe and update exactly
this stack's two GPU node groups. No Pulumi import.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from jobs import kube_api, run_manifest, runs

RELEASE_KEY = "gpu_release"  # the manifest's record of a release
ATTEMPTS = 3
BACKOFF_SECONDS = 5.0  # then 10 s: a throttled or briefly failing EKS API recovers in seconds


class ReleaseError(RuntimeError):
    """The EKS API refused a release after every attempt; the node group is as it was."""


@dataclass(frozen=True)
class GroupState:
    name: str
    status: str  # EKS node group status: only an ACTIVE group can be updated
    desired: int
    min_size: int
    max_size: int
    changed_at: dt.datetime  # last change of the group (creation, scaling, a restore)


@dataclass(frozen=True)
class Decision:
    release: tuple[str, ...]  # node group names to scale to zero; empty: nothing to do
    reason: str
    cause: str = ""  # "lease" | "run" | "failure": what the record says


@dataclass(frozen=True)
class Failure:
    """A lab Job that failed for good: its Failed condition (batch/v1 JobStatus.conditions)."""
    job: str
    reason: str  # BackoffLimitExceeded, DeadlineExceeded, ...
    message: str
    at: dt.datetime


@dataclass(frozen=True)
class RunState:
    run_id: str | None
    graph_dir: Path | None
    exported_at: dt.datetime | None  # None: the export has not finished
    released: bool  # this run's GPUs were released once already
    failure: Failure | None = None  # the first of the lab's Jobs that failed for good


def decide(now: dt.datetime, groups: list[GroupState], run: RunState, grace: dt.timedelta,
           lease: dt.timedelta) -> Decision:
    """Which GPU node groups to release now, and why (pure: the tests' subject)."""
    up = [g for g in groups if g.desired > 0 and g.status == "ACTIVE"]
    if not up:
        busy = [f"{g.name} ({g.status})" for g in groups if g.desired > 0]
        return Decision((), "no GPU node group to release" + (f"; busy: {', '.join(busy)}" if busy else ""))
    expired = [g for g in up if now - g.changed_at >= lease]
    if expired:
        since = ", ".join(f"{g.name} up since {_iso(g.changed_at)}" for g in expired)
        return Decision(tuple(g.name for g in expired),
                        f"lease of {_hours(lease)} over ({since})", "lease")
    if grace <= dt.timedelta(0):
        return Decision((), "release after the run is off (graceMinutes: 0); lease only")
    if run.exported_at is None:
        if run.failure is not None:
            return _after_failure(now, up, run.failure, grace)
        return Decision((), f"run {run.run_id or '(none yet)'}: export not finished")
    if run.released:
        return Decision((), f"run {run.run_id}: released once already; lease only")
    remaining = run.exported_at + grace - now
    if remaining > dt.timedelta(0):
        return Decision((), f"run {run.run_id}: exported at {_iso(run.exported_at)}, grace not "
                            f"over ({math.ceil(remaining.total_seconds() / 60)} min left)")
    return Decision(tuple(g.name for g in up),
                    f"run {run.run_id} exported at {_iso(run.exported_at)}; grace of "
                    f"{int(grace.total_seconds() // 60)} min over", "run")


def _after_failure(now: dt.datetime, up: list[GroupState], failure: Failure,
                   grace: dt.timedelta) -> Decision:
    failed = (f"Job {failure.job} failed at {_iso(failure.at)} ({failure.reason}"
              + (f": {failure.message}" if failure.message else "") + ")")
    # A group scaled or restored after the failure was brought back on purpose.
    before = [g for g in up if g.changed_at <= failure.at]
    if not before:
        return Decision((), f"{failed}; the GPU node groups came back after it: lease only")
    remaining = failure.at + grace - now
    if remaining > dt.timedelta(0):
        return Decision((), f"{failed}; grace not over ({math.ceil(remaining.total_seconds() / 60)} min left)")
    return Decision(tuple(g.name for g in before),
                    f"run failed: {failed}; grace of {int(grace.total_seconds() // 60)} min over", "failure")


def read_failures(get: Callable[[str], dict], namespace: str) -> list[Failure]:
    """The lab's Jobs that failed for good, first first; the release's own CronJob runs aside.
    A Job's terminal failure is its condition type Failed, status True (reason BackoffLimitExceeded
    or DeadlineExceeded), what Pulumi's own Job wait fails on
    (pulumi/pulumi-kubernetes provider/pkg/await/checker/job/check.go collectJobConditionErrors)."""
    jobs = get(f"/apis/batch/v1/namespaces/{namespace}/jobs?labelSelector=app.kubernetes.io%2Fpart-of%3Dbenchlab")
    found = []
    for job in jobs["items"]:
        if any(o.get("kind") == "CronJob" for o in job["metadata"].get("ownerReferences") or []):
            continue
        for condition in (job.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Failed" and condition.get("status") == "True":
                found.append(Failure(job["metadata"]["name"], condition.get("reason", ""),
                                     condition.get("message", ""), _parse_time(condition["lastTransitionTime"])))
    return sorted(found, key=lambda f: f.at)


def read_groups(eks: Any, cluster: str, names: list[str]) -> list[GroupState]:
    states = []
    for name in names:
        group = _with_retries(lambda: eks.describe_nodegroup(clusterName=cluster, nodegroupName=name),
                              f"DescribeNodegroup {name}")["nodegroup"]
        scaling = group["scalingConfig"]
        states.append(GroupState(
            name=name, status=group["status"], desired=scaling["desiredSize"],
            min_size=scaling["minSize"], max_size=scaling["maxSize"],
            changed_at=max(group["createdAt"], group.get("modifiedAt", group["createdAt"]))))
    return states


def read_run(root: Path, config_hash: str, graph: str) -> RunState:
    try:
        run_id = runs.current(root, config_hash)
    except runs.RunError:
        return RunState(None, None, None, False)
    graph_dir = root / run_id / graph
    try:
        exported = run_manifest.read_exported(graph_dir)
    except run_manifest.ManifestError as err:  # unreadable: not a proof that the run is in S3
        print(f"export marker: {err}", flush=True)
        exported = None
    try:
        released = RELEASE_KEY in run_manifest.read_manifest(graph_dir).extra
    except run_manifest.ManifestError:
        released = False
    return RunState(run_id, graph_dir, exported, released)


def release(eks: Any, cluster: str, groups: list[GroupState], names: tuple[str, ...],
            sleep: Callable[[float], None] = time.sleep) -> dict[str, int]:
    """Scale the named groups to zero, keeping their maximum; return each one's size before.
    Raises ReleaseError naming the group that could not be released (it is unchanged)."""
    before = {}
    for group in (g for g in groups if g.name in names):
        _with_retries(lambda g=group: eks.update_nodegroup_config(
            clusterName=cluster, nodegroupName=g.name,
            scalingConfig={"minSize": 0, "desiredSize": 0, "maxSize": g.max_size}),
            f"UpdateNodegroupConfig {group.name}", sleep,
            unchanged=f"node group {group.name} is unchanged ({group.desired} nodes)"
                      + (f"; released before it: {', '.join(before)}" if before else ""))
        before[group.name] = group.desired
    return before


def _with_retries(call: Callable[[], Any], what: str, sleep: Callable[[float], None] = time.sleep,
                  unchanged: str = "") -> Any:
    from botocore.exceptions import BotoCoreError, ClientError

    for attempt in range(1, ATTEMPTS + 1):
        try:
            return call()
        except (BotoCoreError, ClientError) as err:
            if attempt == ATTEMPTS:
                raise ReleaseError(f"{what} failed {ATTEMPTS} times, last: {err}"
                                   + (f"; {unchanged}" if unchanged else "")) from None
            print(f"{what}: {err}; retrying", flush=True)
            sleep(BACKOFF_SECONDS * attempt)
    raise AssertionError("unreachable")


def record(run: RunState, decision: Decision, before: dict[str, int], now: dt.datetime) -> dict:
    """The release's record, added to the run's manifest (when there is a run)."""
    entry = {"released_at": _iso(now), "cause": decision.cause, "reason": decision.reason,
             "node_groups": before}
    if run.graph_dir is not None:
        try:
            manifest = run_manifest.read_manifest(run.graph_dir)
        except run_manifest.ManifestError as err:
            print(f"no manifest to record the release in: {err}", flush=True)
        else:
            run_manifest.write_manifest(run.graph_dir, run_manifest.with_extra(manifest, RELEASE_KEY, entry))
    return entry


def event(namespace: str, cronjob: str, message: str, now: dt.datetime) -> dict:
    """A Kubernetes Event on the CronJob: `kubectl get events -n <ns>` shows the release."""
    stamp = _iso(now)
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{cronjob}-", "namespace": namespace},
            "involvedObject": {"apiVersion": "batch/v1", "kind": "CronJob", "name": cronjob,
                               "namespace": namespace},
            "reason": "GpuNodesReleased", "message": message, "type": "Normal",
            "source": {"component": cronjob}, "firstTimestamp": stamp, "lastTimestamp": stamp,
            "count": 1}


def main(env: Mapping[str, str] = os.environ, eks: Any = None, now: dt.datetime | None = None,
         post: Callable[[str, dict], Any] = kube_api.post,
         sleep: Callable[[float], None] = time.sleep,
         get: Callable[[str], dict] = kube_api.get) -> int:
    now = now or dt.datetime.now(dt.timezone.utc)
    cluster, names = env["CLUSTER_NAME"], env["GPU_NODE_GROUPS"].split(",")
    if eks is None:
        import boto3  # installed by the Job at start

        eks = boto3.client("eks", region_name=env["AWS_REGION"])
    grace = dt.timedelta(minutes=int(env["GRACE_MINUTES"]))
    lease = dt.timedelta(hours=float(env["LEASE_HOURS"]))
    try:
        groups = read_groups(eks, cluster, names)
    except ReleaseError as err:
        print(f"error: {err}", flush=True)
        return 1
    run = read_run(Path(env["RESULTS_ROOT"]), env["CONFIG_HASH"], env["GRAPH"])
    try:
        failures = read_failures(get, env["POD_NAMESPACE"])
    except OSError as err:  # the export path and the lease do not need the Jobs
        print(f"could not list the lab's Jobs ({err}); release after a failure: next check", flush=True)
        failures = []
    run = dataclasses.replace(run, failure=failures[0] if failures else None)
    decision = decide(now, groups, run, grace, lease)
    print(f"{_iso(now)}: {decision.reason}", flush=True)
    if not decision.release:
        return 0
    try:
        before = release(eks, cluster, groups, decision.release, sleep)
    except ReleaseError as err:
        print(f"error: {err}", flush=True)
        return 1
    entry = record(run, decision, before, now)
    message = (f"GPU node groups scaled to 0 ({', '.join(f'{n}: {c} -> 0' for n, c in before.items())}): "
               f"{decision.reason}. Restore with `pulumi up --refresh`.")
    print(message, flush=True)
    namespace = env["POD_NAMESPACE"]
    try:
        post(f"/api/v1/namespaces/{namespace}/events", event(namespace, env["CRONJOB_NAME"], message, now))
    except OSError as err:  # the release stands, and its manifest line; the Event is a courtesy
        print(f"could not record the Event ({err}); the manifest has {json.dumps(entry)}", flush=True)
    return 0


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_time(stamp: str) -> dt.datetime:
    return dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)


def _hours(span: dt.timedelta) -> str:
    return f"{span.total_seconds() / 3600:g} h"


if __name__ == "__main__":
    sys.exit(main())
