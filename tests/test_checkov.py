"""checkov over the manifests `benchlab synth` renders (agg and disagg) with every secret set
(an HF token and a Grafana password: what then appears, e.g. a Secret read into a Job's
environment, is scanned too) and every image locked by digest: zero failures outside the short, justified skip list in
.checkov.yaml, and every skip still suppresses a finding. checkov lives in its own virtual
environment:

    ./benchlab tools

What Helm renders (kube-prometheus-stack, the GPU Operator, the Dynamo platform, the EFA
plugin, the Pushgateway) is not scanned here: no helm binary is to be had on this machine
(none in Debian's archive or on PyPI) and the charts' repositories cannot be reached from it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from cli import offline, synth
from stacks import config as lab_config
from tests.conftest import REPO, serving_mode

CHECKOV = REPO / ".venvs" / "checkov" / "bin" / "checkov"
CONFIG = REPO / ".checkov.yaml"
POD_KINDS = {"Pod", "Job", "CronJob", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"}
SECRETS = {"hfToken": "hf_checkovScanToken42", "grafanaAdminPassword": "checkov-scan-pw-42"}
# A manifest checkov must fail: proves a failure would be seen.
BAD_POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bad", "namespace": "default"},
           "spec": {"hostNetwork": True, "containers": [{"name": "c", "image": "busybox:latest",
                                                         "securityContext": {"privileged": True}}]}}


def checkov_or_skip() -> Path:
    if CHECKOV.is_file():
        return CHECKOV
    message = f"{CHECKOV} is missing; create it with: ./benchlab tools"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def skips() -> list[str]:
    return yaml.safe_load(CONFIG.read_text())["skip-check"]


def locked(config: dict) -> dict:
    """`config` with every image it runs locked (a made-up digest per tag) and no tag accepted."""
    references = lab_config.parse(config).images().values()
    return {**config, "imagePolicy": {"allowUnpinnedImages": False}, "imageDigests": {
        ref: "sha256:" + hashlib.sha256(ref.encode()).hexdigest() for ref in references}}


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    """checkov's results, with no check skipped, over synth's k8s/ of both modes (secrets set)
    plus one bad pod, each in its own folder under one scanned root (checkov mixes up results
    given several -d) -> (report, dirs). The skip list is applied by `failures`."""
    checkov = checkov_or_skip()
    work, scan = tmp_path_factory.mktemp("synth"), tmp_path_factory.mktemp("scan")
    config = offline.stack_config(str(REPO / "Pulumi.dev.yaml"))
    for mode in ("agg", "disagg"):
        config_of_mode = {**config, "serving": {**config["serving"], **serving_mode(mode)}}
        result = synth.synthesize(locked(config_of_mode), SECRETS, "dev")
        if result.error is not None:
            raise result.error
        synth.write(result.recording, work / mode)
        shutil.copytree(work / mode / "k8s", scan / mode)
    (scan / "bad").mkdir()
    (scan / "bad" / "pod.yaml").write_text(yaml.safe_dump(BAD_POD))
    unskipped = work / "checkov.yaml"
    unskipped.write_text(yaml.safe_dump({k: v for k, v in yaml.safe_load(CONFIG.read_text()).items()
                                         if k != "skip-check"}))
    done = subprocess.run([str(checkov), "--skip-download", "--framework", "kubernetes", "-d", str(scan),
                           "--config-file", str(unskipped), "-o", "json"],
                          # not in the repo: checkov would also read its .checkov.yaml (the skips)
                          capture_output=True, text=True, timeout=300, cwd=work)
    try:
        report = json.loads(done.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov gave no JSON (exit {done.returncode}): {done.stderr[-2000:]}")
    return report, {name: scan / name for name in ("agg", "disagg", "bad")}


def results(report: dict, kind: str, directory: Path) -> list[dict]:
    return [c for c in report["results"][kind] if Path(c["file_abs_path"]).parent == directory]


@pytest.mark.parametrize("mode", ["agg", "disagg"])
def test_synthesized_manifests_pass_checkov(scanned, mode):
    report, dirs = scanned
    failed = [f"{c['check_id']} {c['resource']} ({c['check_name']})"
              for c in results(report, "failed_checks", dirs[mode]) if c["check_id"] not in skips()]
    assert failed == []
    assert report["summary"]["parsing_errors"] == 0


def test_every_skip_still_suppresses_a_finding(scanned):
    """A skip whose check no longer fails anywhere hides nothing but future findings: remove it."""
    report, dirs = scanned
    found = {c["check_id"] for mode in ("agg", "disagg") for c in results(report, "failed_checks", dirs[mode])}
    assert [check for check in skips() if check not in found] == []


def test_the_scan_saw_the_secrets_in_use(scanned):
    """Secrets were set: the HF token Secret and the Grafana admin Secret are among the
    scanned objects (values redacted by synth)."""
    _, dirs = scanned
    kinds = [yaml.safe_load(p.read_text()) for p in dirs["agg"].glob("*.yaml")]
    names = {d["metadata"]["name"] for d in kinds if d["kind"] == "Secret"}
    assert {"hf-token-secret", "grafana-admin"} <= names
    assert not any(value in p.read_text() for p in dirs["agg"].glob("*.yaml") for value in SECRETS.values())


@pytest.mark.parametrize("mode", ["agg", "disagg"])
def test_checkov_looked_at_every_workload(scanned, mode):
    """checkov silently skips a manifest it cannot read (e.g. a null name): every file with
    pods in it must show up in its results."""
    report, dirs = scanned
    workloads = {p.name for p in dirs[mode].glob("*.yaml") if yaml.safe_load(p.read_text())["kind"] in POD_KINDS}
    checked = {Path(c["file_abs_path"]).name for kind in ("passed_checks", "failed_checks")
               for c in results(report, kind, dirs[mode])}
    assert workloads and workloads <= checked


def test_checkov_checked_the_rbac_in_the_gpu_operators_namespace(scanned):
    """The benchmarks' Role and RoleBinding there (list pods) went through the RBAC checks."""
    report, dirs = scanned
    rbac = {p.name for p in dirs["agg"].glob("*.yaml")
            if (doc := yaml.safe_load(p.read_text()))["kind"] in ("Role", "RoleBinding")
            and doc["metadata"].get("namespace") == "gpu-operator"}
    checked = {Path(c["file_abs_path"]).name for c in results(report, "passed_checks", dirs["agg"])}
    assert len(rbac) == 2 and rbac <= checked, (rbac, checked & rbac)


def test_a_bad_manifest_fails(scanned):
    report, dirs = scanned
    failed = {c["check_id"] for c in results(report, "failed_checks", dirs["bad"])}
    assert {"CKV_K8S_16", "CKV_K8S_19"} <= failed  # privileged container, host network


def test_every_skip_says_why():
    lines = CONFIG.read_text().splitlines()
    assert 0 < len(skips()) <= 6, "the skip list stays short"
    for check in skips():
        at = next(i for i, line in enumerate(lines) if re.fullmatch(rf"\s*-\s*{check}\s*", line))
        assert lines[at - 1].lstrip().startswith("#"), f"{check} has no comment saying why"
