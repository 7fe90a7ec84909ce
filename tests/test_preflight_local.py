"""`benchlab preflight`'s checks that need no AWS call: the AWS CLI v2 the kubeconfig runs, and
an EKS API that is neither open to the internet nor still set to the stack file's placeholder."""
from __future__ import annotations

import stat

import pytest

from cli import cli, preflight
from stacks import config


def fake_aws(tmp_path, monkeypatch, version_line: str | None) -> None:
    """Put an `aws` that prints `version_line` first on PATH (None: no `aws` at all)."""
    monkeypatch.setenv("PATH", str(tmp_path))
    if version_line is not None:
        script = tmp_path / "aws"
        script.write_text(f"#!/bin/sh\necho '{version_line}'\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)


def test_aws_cli_v2_passes(tmp_path, monkeypatch):
    fake_aws(tmp_path, monkeypatch, "aws-cli/2.17.3 Python/3.11.9 Linux/6.1 exe/x86_64")
    check = preflight.check_aws_cli()
    assert (check.status, check.detail) == ("pass", "aws-cli/2.17.3")


@pytest.mark.parametrize("line", ["aws-cli/1.33.1 Python/3.9 Linux/6.1 botocore/1.34", "garbage"])
def test_aws_cli_v1_or_unknown_fails(tmp_path, monkeypatch, line):
    fake_aws(tmp_path, monkeypatch, line)
    check = preflight.check_aws_cli()
    assert check.status == "fail" and "install" in check.fix


def test_missing_aws_cli_fails(tmp_path, monkeypatch):
    fake_aws(tmp_path, monkeypatch, None)
    check = preflight.check_aws_cli()
    assert check.status == "fail" and "get-token" in check.detail


@pytest.mark.parametrize("raw, status", [
    ({"publicAccessCidrs": ["93.184.216.34/32"]}, "pass"),
    ({}, "fail"),  # unset
    ({"publicAccessCidrs": ["93.184.216.34/32", "0.0.0.0/0"],
      "clusterAccess": {"allowApiFromAnywhere": True}}, "fail"),  # admitted by config, flagged here
])
def test_api_access(raw, status):
    check = preflight.check_api_access(config.parse(raw))
    assert check.status == status
    if status == "fail":
        assert "publicAccessCidrs" in check.fix


def test_preflight_of_the_shipped_dev_stack_fails_until_the_user_sets_their_cidr(monkeypatch, capsys):
    """No AWS call: the credentials check is made to fail, so only the local checks speak."""
    class NoCredentials:
        def get_caller_identity(self):
            from botocore.exceptions import NoCredentialsError
            raise NoCredentialsError()

    monkeypatch.setattr(preflight.AwsClients, "create",
                        classmethod(lambda cls, region, profile: preflight.AwsClients(NoCredentials(), None, None, None)))
    assert cli.main(["preflight", "--stack", "dev"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  EKS API access" in out and "203.0.113.0/24" in out


def test_pod_fit_is_checked_with_the_rest():
    assert preflight.check_pod_fit(config.parse({})).status == "pass"
    small = config.parse({"nodeGroups": {"system": {"instanceType": "m5.xlarge", "count": 2, "diskGib": 80}}})
    check = preflight.check_pod_fit(small)
    assert check.status == "fail" and "nodeGroups.system.instanceType" in check.detail


def test_the_switch_to_disagg_over_efa_is_warned_of_while_agg_runs_on_the_stock_image():
    stock = preflight.check_efa_image(config.parse({}))
    assert stock.status == "warn" and "serving.image" in stock.fix and "no libfabric" in stock.detail
    built = config.parse({"serving": {"image": "registry.example.com/lab/vllm-runtime:0.9.1-efa"}})
    assert preflight.check_efa_image(built).status == "pass"
    assert preflight.check_efa_image(config.parse({"serving": {"kvTransport": "tcp"}})).status == "pass"
