"""The credential holders' wheels (components/wheelhouse.py): a Job without credentials downloads
the boto3 lock onto a claim, the export and the GPU release install from that claim alone,
read-only and hash-checked, and wait for it; their commands are run here as rendered, with a
local index standing in for PyPI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli import offline
from facts import wheel_locks
from tests import lock_check
from tests.conftest import REPO

JOB, CRONJOB, CONFIG_MAP = "kubernetes:batch/v1:Job", "kubernetes:batch/v1:CronJob", "kubernetes:core/v1:ConfigMap"
BOTO3_LOCK_PATH = "/opt/benchlab/jobs/boto3.lock.txt"


@pytest.fixture(scope="module")
def rec() -> offline.Recording:
    return offline.run_program(offline.stack_config(str(REPO / "Pulumi.dev.yaml")))


def job(rec, suffix: str):
    (found,) = [r for r in rec.of_type(JOB) if r.name.endswith(suffix)]
    return found


def pod_specs(rec) -> dict[str, dict]:
    """The pod specs of the credential holders: the export Job and the GPU release CronJob."""
    return {"export": job(rec, "-export-job").plain_inputs()["spec"]["template"]["spec"],
            "gpu-release": rec.one(CRONJOB).plain_inputs()["spec"]["jobTemplate"]["spec"]["template"]["spec"]}


@pytest.mark.parametrize("holder", ["export", "gpu-release"])
def test_the_credential_holders_install_from_the_wheelhouse_alone_read_only_and_hash_checked(rec, holder):
    spec = pod_specs(rec)[holder]
    (install,) = spec["initContainers"]
    command = install["command"]
    assert command[:4] == ["python", "-m", "pip", "install"]
    assert {"--require-hashes", "--no-deps", "--only-binary=:all:", "--no-index"} <= set(command)
    assert "--index-url" not in command and command[command.index("--find-links") + 1] == "/wheelhouse/boto3"
    assert command[command.index("-r") + 1] == BOTO3_LOCK_PATH
    (volume,) = [v for v in spec["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == "wheelhouse"]
    assert volume["persistentVolumeClaim"]["readOnly"] is True
    (mount,) = [m for m in install["volumeMounts"] if m["name"] == volume["name"]]
    assert mount == {"name": volume["name"], "mountPath": "/wheelhouse", "readOnly": True}
    # the Job's own container, which holds the credentials, never sees the wheelhouse
    (container,) = spec["containers"]
    assert volume["name"] not in {m["name"] for m in container["volumeMounts"]}


def test_the_wheelhouse_job_holds_no_credential_and_downloads_the_lock_hash_checked(rec):
    wheelhouse = job(rec, "-wheelhouse-job").plain_inputs()
    spec = wheelhouse["spec"]["template"]["spec"]
    assert "serviceAccountName" not in spec and spec["automountServiceAccountToken"] is False
    assert "initContainers" not in spec
    assert all(set(v) - {"name"} <= {"configMap", "emptyDir", "persistentVolumeClaim"} for v in spec["volumes"])
    (container,) = spec["containers"]
    assert not any("valueFrom" in e for e in container.get("env", []))
    command = container["command"]
    assert command[:4] == ["python", "-m", "pip", "download"]
    assert {"--require-hashes", "--no-deps", "--only-binary=:all:"} <= set(command)
    assert command[command.index("--index-url") + 1] == "https://pypi.org/simple"
    assert command[command.index("-d") + 1] == "/wheelhouse/boto3"
    assert command[command.index("-r") + 1] == BOTO3_LOCK_PATH
    (claim,) = [v for v in spec["volumes"] if "persistentVolumeClaim" in v]
    assert claim["persistentVolumeClaim"] == {"claimName": "wheelhouse"}  # the one writer
    (lock_volume,) = [v for v in spec["volumes"] if "configMap" in v]
    (lock_map,) = [c for c in rec.of_type(CONFIG_MAP)
                   if c.name == lock_volume["configMap"]["name"].rsplit("-", 1)[0]]
    assert lock_map.plain_inputs()["data"] == {"boto3.lock.txt": wheel_locks.BOTO3.text()}


def test_the_credential_holders_and_the_download_wait_for_the_wheelhouse_job(rec):
    wheelhouse = job(rec, "-wheelhouse-job")
    for later in (job(rec, "-export-job"), rec.one(CRONJOB), job(rec, "-models-download")):
        assert rec.waits_for(later, wheelhouse), later.name


def run_as_rendered(command: list[str], root: Path, index: str | None = None) -> subprocess.CompletedProcess:
    """A rendered pip command on this machine: container paths under `root`, and `index` (a
    local one) where the command names PyPI."""
    argv = [sys.executable, *(str(root) + arg if arg.startswith("/") else arg for arg in command[1:])]
    if index is not None:
        argv[argv.index("--index-url") + 1] = index
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("PIP_")}, "PIP_CONFIG_FILE": os.devnull}
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def test_the_export_installs_what_the_wheelhouse_job_downloaded_and_refuses_a_changed_wheel(rec, tmp_path):
    published = tmp_path / "published"
    published.mkdir()
    wheel = lock_check.make_wheel(published, "benchlab_probe", "1.0")
    root = tmp_path / "pod"  # one filesystem for both pods: the claim and the code at their paths
    lock = root / BOTO3_LOCK_PATH.lstrip("/")
    lock.parent.mkdir(parents=True)
    lock.write_text(f"benchlab-probe==1.0 --hash=sha256:{lock_check.sha256(wheel)}\n")
    download = job(rec, "-wheelhouse-job").plain_inputs()["spec"]["template"]["spec"]["containers"][0]["command"]
    fetched = run_as_rendered(download, root, lock_check.simple_index(published, tmp_path / "index"))
    assert fetched.returncode == 0, fetched.stderr
    (landed,) = (root / "wheelhouse" / "boto3").iterdir()
    assert landed.read_bytes() == wheel.read_bytes()

    (install,) = pod_specs(rec)["export"]["initContainers"]
    installed = run_as_rendered(install["command"], root)
    assert installed.returncode == 0, installed.stderr
    assert (root / "tmp" / "deps" / "benchlab_probe" / "__init__.py").exists()

    landed.write_bytes(landed.read_bytes() + b"\0")  # the wheelhouse changed after the download
    (root / "tmp" / "deps").rename(root / "tmp" / "first")
    refused = run_as_rendered(install["command"], root)
    assert refused.returncode != 0 and "DO NOT MATCH THE HASHES" in refused.stderr
    assert not (root / "tmp" / "deps" / "benchlab_probe").exists()


def test_the_locked_botocore_calls_sts_by_its_regional_name_which_the_endpoint_covers(rec):
    """The STS interface endpoint's private DNS covers sts.<region>.amazonaws.com only; boto3
    resolves STS regionally by default from 1.40.0 on (boto/boto3#4583), so the Jobs set nothing."""
    botocore = wheel_locks.BOTO3.versions()["botocore"]
    assert tuple(int(part) for part in botocore.split(".")[:2]) >= (1, 40), botocore
    for holder, spec in pod_specs(rec).items():
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        assert env["AWS_REGION"] == "us-east-1" and "AWS_STS_REGIONAL_ENDPOINTS" not in env, holder
