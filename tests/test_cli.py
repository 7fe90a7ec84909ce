"""The CLI as a newcomer meets it: every command listed by the wrapper, help without installs,
and an AWS problem as one line and a non-zero exit, never a traceback."""
from __future__ import annotations

import argparse
import importlib
import json
import shutil
import subprocess
from datetime import date, timedelta

import pytest
from tests.conftest import REPO
from tests.test_results_pull import fake_pulumi

from cli import cli
from facts.instances import PRICES_AS_OF, stale_prices_warning

# Every command that talks to AWS, with a profile that does not exist.
AWS_COMMANDS = [
    ["preflight", "--stack", "dev", "--profile", "nope"],
    ["cost", "--stack", "dev", "--live", "--profile", "nope"],
    ["results", "list", "--bucket", "b", "--profile", "nope"],
    ["results", "pull", "--bucket", "b", "--profile", "nope"],
]


@pytest.mark.parametrize("argv", AWS_COMMANDS, ids=lambda argv: " ".join(argv[:2]))
def test_a_bad_aws_profile_is_one_line_and_exit_2(argv, tmp_path, monkeypatch, capsys):
    config = tmp_path / "aws-config"
    config.write_text("[profile other]\nregion = us-east-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"benchlab {argv[0]}: error: AWS: The config profile (nope) could not be found"]


def test_any_botocore_error_is_one_line(monkeypatch, capsys):
    from botocore.exceptions import ClientError, NoCredentialsError

    from cli import cost
    for error in (NoCredentialsError(),
                  ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "GetProducts")):
        monkeypatch.setattr(cost, "run", lambda args, error=error: (_ for _ in ()).throw(error))
        assert cli.main(["cost"]) == 2
        [line] = capsys.readouterr().err.splitlines()
        assert line.startswith("benchlab cost: error: AWS: ")


def wrapper(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """The wrapper copied alone into an empty directory: anything it would install, it cannot."""
    shutil.copy(REPO / "benchlab", tmp_path / "benchlab")
    return subprocess.run([str(tmp_path / "benchlab"), *args], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": "/nonexistent"}, timeout=30)


@pytest.mark.parametrize("ask", [["--help"], ["-h"], ["help"], []])
def test_the_wrapper_help_lists_every_command_and_installs_nothing(tmp_path, ask):
    result = wrapper(tmp_path, *ask)
    assert result.returncode == 0, result.stderr
    listed = {line.split()[1] for line in result.stdout.splitlines()
              if line.strip().startswith("benchlab ")}
    assert listed == set(cli.COMMANDS) | {"test", "help"}
    assert not (tmp_path / ".venv").exists()


def test_test_help_installs_nothing(tmp_path):
    result = wrapper(tmp_path, "test", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: benchlab test")
    assert not (tmp_path / ".venv").exists()


def test_usage_lines_say_benchlab(capsys):
    for argv in (["--help"], ["report", "--help"], ["results", "pull", "--help"]):
        with pytest.raises(SystemExit):
            cli.main(argv)
        assert capsys.readouterr().out.startswith("usage: benchlab ")


def _options(parser: argparse.ArgumentParser):
    """Every option of a parser and of its sub-parsers."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _options(sub)
        else:
            yield action


def test_profile_means_the_aws_profile_in_every_command():
    with_profile = []
    for name, module_name in cli.COMMANDS.items():
        parser = argparse.ArgumentParser()
        importlib.import_module(module_name).add_arguments(parser)
        for action in _options(parser):
            if "--profile" in action.option_strings:
                assert "AWS profile" in action.help, name
                with_profile.append(name)
    assert {"preflight", "cost", "results"} <= set(with_profile) and "local" not in with_profile


def test_stack_defaults_to_the_selected_pulumi_stack_else_dev(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no pulumi CLI
    assert cli.main(["cost", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stack"] == "dev"
    monkeypatch.setenv("PATH", str(fake_pulumi(tmp_path / "bin", {}, selected="smoke")))
    assert cli.main(["cost", "--json"]) == 0
    estimate = json.loads(capsys.readouterr().out)
    assert estimate["stack"] == "smoke"
    assert estimate["campaign"]["total_usd"] > 0 and estimate["campaign"]["total_minutes"] > 0


def test_cost_calls_out_a_price_table_older_than_six_months(capsys):
    assert cli.main(["cost", "--stack", "dev"]) == 0
    out = capsys.readouterr().out
    stale = stale_prices_warning(date.today())
    assert (f"warning: {stale}" in out) if stale else "warning" not in out
    assert stale_prices_warning(date.fromisoformat(PRICES_AS_OF) + timedelta(days=365))
