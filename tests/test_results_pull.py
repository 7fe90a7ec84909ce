"""`benchlab results list|pull` against moto's S3, the bucket filled by the results-export Job's
own upload: the run layout mirrored locally, repeat pulls skip what is there, interrupted
downloads continue, errors are clear."""
from __future__ import annotations

import json
import os
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from jobs import export_to_s3, run_manifest
from cli import cli, results
from cli.cli import CliError

BUCKET = "benchlab-dev-results"


def manifest(run_id: str, graph: str) -> run_manifest.RunManifest:
    return run_manifest.RunManifest(
        run_id=run_id, graph=graph, simulated=False, profile="cloud", created="2025-06-20T10:00:00Z",
        versions={"dynamo": "0.9.1"}, model="Qwen/Qwen3-30B-A3B-FP8",
        nodes=[run_manifest.NodeGroup("prefill", "p4d.24xlarge", 2, 8)],
        workers={"agg": run_manifest.WorkerSpec(replicas=4, tp=4)})


def make_run(root: Path, run_id: str, graph: str) -> None:
    """A run as the export Job leaves it: manifest, a mode status, an AIPerf artifact."""
    graph_dir = root / run_id / graph
    run_manifest.write_manifest(graph_dir, manifest(run_id, graph))
    mode_dir = graph_dir / "concurrency_sweep"
    run_manifest.write_status(mode_dir, run_manifest.ModeStatus(
        "ok", None, "2025-06-20T10:00:00Z", "2025-06-20T10:20:00Z", 1120.0, ["c1"]))
    (mode_dir / "c1").mkdir()
    (mode_dir / "c1" / "profile_export_aiperf.json").write_bytes(
        (f'{{"run": "{run_id}/{graph}"}}' + " " * 3000).encode())


def export(s3, root: Path) -> dict[str, bytes]:
    """Upload every run under `root` the way the results-export Job does; -> files by key."""
    for run in sorted(p.name for p in root.iterdir()):
        export_to_s3.upload_run(root, run, BUCKET, s3)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def local_files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


@pytest.fixture
def bucket(s3, tmp_path):
    """Two runs: r1 (agg and disagg) and r2 (agg); returns the uploaded files by key."""
    source = tmp_path / "source"
    make_run(source, "r1", "agg")
    make_run(source, "r1", "disagg")
    make_run(source, "r2", "agg")
    return export(s3, source)


def get_object_calls(s3) -> list[dict]:
    calls: list[dict] = []
    s3.meta.events.register("provide-client-params.s3.GetObject",
                            lambda params, **_: calls.append(dict(params)))
    return calls


def test_list_runs(s3, bucket):
    assert results.list_runs(s3, BUCKET) == ["r1", "r2"]


def test_pull_all_mirrors_the_bucket_and_report_can_read_it(s3, bucket, tmp_path):
    out = tmp_path / "results"
    summary = results.pull(s3, BUCKET, out)
    assert local_files(out) == bucket
    assert len(summary.downloaded) == len(bucket) and summary.bytes == sum(map(len, bucket.values()))
    read = run_manifest.read_manifest(out / "r1" / "disagg")
    assert (read.run_id, read.graph) == ("r1", "disagg")
    assert run_manifest.read_status(out / "r2" / "agg" / "concurrency_sweep").status == "ok"


def test_pull_one_run_only(s3, bucket, tmp_path):
    out = tmp_path / "results"
    results.pull(s3, BUCKET, out, run_id="r2")
    assert local_files(out) == {k: v for k, v in bucket.items() if k.startswith("r2/")}


def test_second_pull_skips_everything_and_downloads_nothing(s3, bucket, tmp_path):
    out = tmp_path / "results"
    results.pull(s3, BUCKET, out)
    calls = get_object_calls(s3)
    summary = results.pull(s3, BUCKET, out)
    assert sorted(summary.skipped) == sorted(bucket) and not summary.downloaded
    assert calls == []


def test_a_truncated_local_file_is_fetched_again(s3, bucket, tmp_path):
    out = tmp_path / "results"
    results.pull(s3, BUCKET, out)
    key = "r1/agg/manifest.json"
    (out / key).write_bytes(bucket[key][:5])
    summary = results.pull(s3, BUCKET, out)
    assert summary.downloaded == [key]
    assert (out / key).read_bytes() == bucket[key]


def test_an_interrupted_download_continues_where_it_stopped(s3, bucket, tmp_path):
    out = tmp_path / "results"
    key = "r1/agg/concurrency_sweep/c1/profile_export_aiperf.json"
    etag = s3.head_object(Bucket=BUCKET, Key=key)["ETag"].strip('"')[:16]
    part = out / f"{key}.{etag}{results.PART_SUFFIX}"
    part.parent.mkdir(parents=True)
    part.write_bytes(bucket[key][:1000])
    calls = get_object_calls(s3)
    summary = results.pull(s3, BUCKET, out, run_id="r1")
    assert summary.resumed == [key]
    assert [c.get("Range") for c in calls if c["Key"] == key] == ["bytes=1000-"]
    assert (out / key).read_bytes() == bucket[key]
    assert not part.exists()


def test_a_part_of_an_older_version_is_discarded(s3, bucket, tmp_path):
    out = tmp_path / "results"
    key = "r1/agg/manifest.json"
    stale = out / f"{key}.0123456789abcdef{results.PART_SUFFIX}"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"garbage")
    summary = results.pull(s3, BUCKET, out, run_id="r1")
    assert key in summary.downloaded and not stale.exists()
    assert (out / key).read_bytes() == bucket[key]


def test_a_key_with_glob_characters_discards_only_its_own_parts(s3, tmp_path):
    out = tmp_path / "results"
    s3.put_object(Bucket=BUCKET, Key="r1/agg/[ab]*.json", Body=b"{}")
    neighbour = out / "r1" / "agg" / f"a.json.0123456789abcdef{results.PART_SUFFIX}"
    neighbour.parent.mkdir(parents=True)
    neighbour.write_bytes(b"another object's part")  # `[ab]*` would glob it
    results.pull(s3, BUCKET, out, run_id="r1")
    assert neighbour.read_bytes() == b"another object's part"
    assert (out / "r1" / "agg" / "[ab]*.json").read_bytes() == b"{}"


def test_an_object_changing_under_the_pull_is_an_error(s3, bucket, tmp_path):
    obj = {"Key": "r1/agg/manifest.json", "ETag": '"not-the-etag"', "Size": 10}
    with pytest.raises(CliError, match="changed while pulling"):
        results._download(s3, BUCKET, obj, tmp_path / "manifest.json")


def test_unknown_run_is_a_clear_error(s3, bucket, tmp_path):
    with pytest.raises(CliError, match=r"no run 'r7'.*runs there: r1, r2"):
        results.pull(s3, BUCKET, tmp_path, run_id="r7")


def test_empty_bucket_is_a_clear_error(s3, tmp_path):
    with pytest.raises(CliError, match="no runs in s3://"):
        results.pull(s3, BUCKET, tmp_path)


def test_keys_escaping_the_output_directory_are_refused(s3, tmp_path):
    s3.put_object(Bucket=BUCKET, Key="r1/../../etc/evil", Body=b"x")
    with pytest.raises(CliError, match="outside"):
        results.pull(s3, BUCKET, tmp_path / "out")
    assert not (tmp_path / "etc").exists()


def test_cli_pull_list_and_errors(s3, bucket, tmp_path, capsys):
    out = tmp_path / "results"
    assert cli.main(["results", "pull", "--bucket", BUCKET, "--run", "r1", "--out", str(out)]) == 0
    r1_files = sum(key.startswith("r1/") for key in bucket)
    assert f"{r1_files} downloaded" in capsys.readouterr().out
    assert cli.main(["results", "pull", "--bucket", BUCKET, "--run", "r1", "--out", str(out)]) == 0
    assert "already present" in capsys.readouterr().out
    assert cli.main(["results", "list", "--bucket", BUCKET]) == 0
    assert [line.split() for line in capsys.readouterr().out.splitlines()] == [
        ["run", "id", "graph", "profile", "created"],
        ["r1", "agg", "cloud", "2025-06-20T10:00:00Z"],
        ["r1", "disagg", "cloud", "2025-06-20T10:00:00Z"],
        ["r2", "agg", "cloud", "2025-06-20T10:00:00Z"]]
    assert cli.main(["results", "pull", "--bucket", "no-such-bucket", "--out", str(out)]) == 2
    assert "NoSuchBucket" in capsys.readouterr().err


def test_cli_help_names_the_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["results", "pull", "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    assert all(flag in help_text for flag in ("--bucket", "--run", "--out"))


def test_list_as_json_names_graph_profile_and_date_of_every_run(s3, bucket, capsys):
    assert cli.main(["results", "list", "--bucket", BUCKET, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(run["run_id"], run["graph"], run["profile"], run["created"]) for run in listed] == [
        ("r1", "agg", "cloud", "2025-06-20T10:00:00Z"), ("r1", "disagg", "cloud",
                                                         "2025-06-20T10:00:00Z"),
        ("r2", "agg", "cloud", "2025-06-20T10:00:00Z")]


def fake_pulumi(directory: Path, outputs: dict, selected: str = "smoke") -> Path:
    """A `pulumi` on PATH answering `stack --show-name` and `stack output --json --stack S`,
    and logging its arguments."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "pulumi"
    script.write_text(f"""#!/bin/sh
echo "$@" >> {directory}/calls
case "$1 $2" in
  "stack --show-name") echo {selected} ;;
  "stack output") echo '{json.dumps(outputs)}' ;;
  *) exit 1 ;;
esac
""")
    script.chmod(0o755)
    return directory


def test_the_bucket_comes_from_the_stack_outputs(s3, bucket, tmp_path, monkeypatch, capsys):
    bin_dir = fake_pulumi(tmp_path / "bin", {"resultsBucket": BUCKET, "region": "us-east-1"})
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    assert cli.main(["results", "list", "--stack", "dev", "--json"]) == 0
    assert {run["run_id"] for run in json.loads(capsys.readouterr().out)} == {"r1", "r2"}
    assert cli.main(["results", "list", "--json"]) == 0  # the selected stack's outputs
    assert (bin_dir / "calls").read_text().splitlines() == [
        "stack output --json --stack dev --non-interactive",
        "stack --show-name --non-interactive",
        "stack output --json --stack smoke --non-interactive"]


def test_without_bucket_or_pulumi_the_error_says_what_to_pass(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no pulumi
    assert cli.main(["results", "list"]) == 2
    assert "pulumi CLI is not installed here" in capsys.readouterr().err
    bin_dir = fake_pulumi(tmp_path / "bin", {"kubeconfig": "[secret]"})
    monkeypatch.setenv("PATH", str(bin_dir))
    assert cli.main(["results", "pull", "--stack", "dev"]) == 2
    assert "stack dev has no output resultsBucket" in capsys.readouterr().err
