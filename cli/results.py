"""`benchlab results`: the benchmark runs in the results bucket, and copies of them on this machine.

The bucket holds `<run_id>/<graph>/...`, as the results-export Job uploads it
(jobs/export_to_s3.py, layout in jobs/run_manifest.py); `pull` mirrors that layout
under `--out`, a root `benchlab report` reads. A pull can be repeated or
interrupted: files already complete are skipped, and a partial download
(`<file>.<etag>.part`) continues from where it stopped, provided the object is unchanged.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from botocore.exceptions import BotoCoreError, ClientError

from cli import pulumi_cli
from cli.cli import CliError
from jobs.run_manifest import MANIFEST_FILE

HELP = "list the benchmark runs in the results bucket, or pull them for `benchlab report`"
PART_SUFFIX = ".part"
CHUNK_BYTES = 1 << 20


@dataclass
class PullSummary:
    downloaded: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes: int = 0


def list_runs(s3, bucket: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Delimiter="/")
    return sorted(p["Prefix"].rstrip("/") for page in pages for p in page.get("CommonPrefixes", []))


def describe_runs(s3, bucket: str) -> list[dict]:
    """Per run and graph: profile and creation time from its manifest (None when it has none)."""
    described = []
    for run_id in list_runs(s3, bucket):
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{run_id}/",
                                                              Delimiter="/")
        graphs = sorted(p["Prefix"][len(run_id) + 1:].rstrip("/")
                        for page in pages for p in page.get("CommonPrefixes", []))
        for graph in graphs:
            manifest = _manifest(s3, bucket, f"{run_id}/{graph}/{MANIFEST_FILE}")
            described.append({"run_id": run_id, "graph": graph,
                              "profile": manifest.get("profile"),
                              "created": manifest.get("created"),
                              "simulated": manifest.get("simulated")})
    return described


def _manifest(s3, bucket: str, key: str) -> dict:
    try:
        body = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as err:
        if err.response["Error"]["Code"] not in ("NoSuchKey", "404"):
            raise
        return {}
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def render_runs(described: list[dict]) -> str:
    header = ("run id", "graph", "profile", "created")
    rows = [header] + [tuple(str(run[key] if run[key] is not None else "—")
                             for key in ("run_id", "graph", "profile", "created"))
                       for run in described]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in rows)


def pull(s3, bucket: str, out: Path, run_id: str | None = None) -> PullSummary:
    """Download one run (or every run) under `out`, keeping the bucket's layout."""
    runs = list_runs(s3, bucket)
    if not runs:
        raise CliError(f"no runs in s3://{bucket}: has a results export run yet?")
    if run_id is not None and run_id not in runs:
        raise CliError(f"no run {run_id!r} in s3://{bucket}; runs there: {', '.join(runs)}")
    summary = PullSummary()
    for obj in _objects(s3, bucket, f"{run_id}/" if run_id else ""):
        relative = obj["Key"]
        if relative.endswith("/"):  # a "folder" placeholder some tools create
            continue
        target = _local_path(out, relative)
        if target.is_file() and target.stat().st_size == obj["Size"]:
            summary.skipped.append(relative)
            continue
        resumed = _download(s3, bucket, obj, target)
        (summary.resumed if resumed else summary.downloaded).append(relative)
        summary.bytes += obj["Size"]
    return summary


def _objects(s3, bucket: str, prefix: str):
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def _local_path(out: Path, relative: str) -> Path:
    """`out/relative`, refusing keys that would land outside `out` (`..`, absolute)."""
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or ".." in parts:
        raise CliError(f"refusing object key {relative!r}: it would be written outside {out}")
    return out.joinpath(*parts)


def _download(s3, bucket: str, obj: dict, target: Path) -> bool:
    """Fetch `obj` into `target` through a part file named after the object's ETag, so only
    a part of this very object is continued; True when it continued one."""
    etag = "".join(ch for ch in obj["ETag"] if ch.isalnum())[:16]
    part = target.with_name(f"{target.name}.{etag}{PART_SUFFIX}")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Compared by name, never globbed: a key's `[`, `*` or `?` must not match other files.
    for stale in target.parent.iterdir():
        if (stale.name.startswith(f"{target.name}.") and stale.name.endswith(PART_SUFFIX)
                and stale != part):  # a part of an earlier version of the object
            stale.unlink()
    have = part.stat().st_size if part.is_file() else 0
    request = {"Bucket": bucket, "Key": obj["Key"], "IfMatch": obj["ETag"]}
    if 0 < have < obj["Size"]:
        request["Range"] = f"bytes={have}-"
    else:
        have = 0
    try:
        body = s3.get_object(**request)["Body"]
    except ClientError as err:
        if err.response["Error"]["Code"] not in ("PreconditionFailed", "412"):
            raise
        raise CliError(f"s3://{bucket}/{obj['Key']} changed while pulling; run the pull again") from None
    with open(part, "ab" if have else "wb") as f:
        for chunk in iter(lambda: body.read(CHUNK_BYTES), b""):
            f.write(chunk)
    if part.stat().st_size != obj["Size"]:
        raise CliError(f"s3://{bucket}/{obj['Key']}: got {part.stat().st_size} of {obj['Size']} "
                       "bytes; run the pull again to continue")
    os.replace(part, target)
    return have > 0


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, helptext in (("list", "list the run ids in the bucket"),
                           ("pull", "download a run (or all runs) to a local directory")):
        action = sub.add_parser(name, help=helptext, description=helptext)
        action.add_argument("--stack", metavar="NAME",
                            help="read the bucket and region from this stack's outputs "
                                 "(`pulumi stack output`; default: the selected stack)")
        action.add_argument("--bucket", help="the results bucket (default: the stack output "
                                             "resultsBucket; needs the pulumi CLI)")
        action.add_argument("--region", help="the bucket's region (default: the stack output "
                                             "region, or the usual boto3 chain)")
        action.add_argument("--profile", help="AWS profile to use")
        if name == "list":
            action.add_argument("--json", action="store_true", help="print the runs as JSON")
        if name == "pull":
            action.add_argument("--run", metavar="RUN_ID", help="pull only this run (default: all)")
            action.add_argument("--out", type=Path, default=Path("cloud-results"),
                                help="local directory `benchlab report` reads (default: %(default)s)")


def s3_client(region: str | None, profile: str | None):
    import boto3

    return boto3.Session(profile_name=profile, region_name=region).client("s3")


def bucket_and_region(args: argparse.Namespace) -> tuple[str, str | None]:
    """--bucket/--region, else the stack's outputs resultsBucket/region (cli/pulumi_cli.py)."""
    if args.bucket:
        return args.bucket, args.region
    stack = args.stack or pulumi_cli.selected_stack()
    outputs = pulumi_cli.stack_outputs(stack)
    if not outputs.get("resultsBucket"):
        raise CliError(f"stack {stack} has no output resultsBucket (not deployed yet?); "
                       "pass --bucket")
    return outputs["resultsBucket"], args.region or outputs.get("region")


def run(args: argparse.Namespace) -> int:
    args.bucket, region = bucket_and_region(args)
    s3 = s3_client(region, args.profile)
    try:
        if args.action == "list":
            described = describe_runs(s3, args.bucket)
            if args.json:
                print(json.dumps(described, indent=2))
            else:
                print(render_runs(described) if described else f"no runs in s3://{args.bucket}")
            return 0
        summary = pull(s3, args.bucket, args.out, args.run)
    except (BotoCoreError, ClientError) as err:
        raise CliError(f"s3://{args.bucket}: {err}") from None
    print(f"pulled into {args.out}: {len(summary.downloaded)} downloaded, {len(summary.resumed)} "
          f"resumed ({summary.bytes:,} bytes), {len(summary.skipped)} already present")
    return 0
