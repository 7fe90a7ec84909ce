"""README tells the truth: its config reference lists exactly the keys the schema has, and
its test command is the one CI runs."""
from __future__ import annotations

import dataclasses
import re
import typing

from jobs import typed_mapping
from jobs.names import NODE_GROUPS
from stacks import config
from tests.conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def schema_keys(cls: type = config.StackConfig, prefix: str = "") -> set[str]:
    keys = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = prefix + typed_mapping.camel(f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            keys |= schema_keys(hints[f.name], key + ".")
        else:
            keys.add(key)
    return keys


def readme_keys() -> set[str]:
    """First cells of the config reference table; `a.b.c` / `.d` stands for a.b.c and a.b.d."""
    section = README.split("## Config reference", 1)[1].split("\n## ", 1)[0]
    keys = set()
    for line in section.splitlines():
        if not line.startswith("| `"):
            continue
        first, *others = re.findall(r"`([^`]+)`", line.split("|")[1])
        keys.add(first)
        keys |= {first.rsplit(".", 1)[0] + other for other in others if other.startswith(".")}
    return keys


def test_config_reference_lists_every_key_and_no_other():
    expected = schema_keys() | set(config.SECRET_KEYS)
    assert schema_keys() >= {"nodeGroups.prefill.count", "bench.prefixCache.hitRatios"}
    assert readme_keys() == expected


def test_readme_test_command_is_what_ci_runs():
    assert "./benchlab test" in README
    assert "./benchlab test" in (REPO / ".ci" / "run").read_text()


def test_readme_stands_alone_without_the_reference_material_beside_the_repo():
    """A user who clones the project has no ../shared: nothing may point there."""
    for pattern in (r"\.\./shared", r"\bshared/(DESIGN|reference)", r"DESIGN\.md"):
        assert not re.search(pattern, README), pattern


def test_first_screen_campaign_cost_and_time_are_what_cost_says():
    """The figures beside the two commands come from `benchlab cost` of the shipped stacks."""
    from cli import cost, pricing, stack_file

    first_screen = README.split("## The cloud lab", 1)[0]
    for stack in ("smoke", "dev"):
        cfg = stack_file.load(stack).config()
        types = sorted({getattr(cfg.node_groups, role).instance_type for role in NODE_GROUPS})
        estimate = cost.estimate(cfg, pricing.table_prices(types))
        [row] = [line for line in first_screen.splitlines() if f"`Pulumi.{stack}.yaml`" in line]
        assert f"~{estimate.total_minutes:.0f} min" in row, stack
        assert f"~${estimate.total_usd:.0f} " in row, stack
        for graph in ("agg", "disagg"):
            assert f"${sum(estimate.hourly[graph].values()):.2f}/h {graph}" in row, stack


def test_readme_states_the_system_disk_minimum_the_validation_enforces():
    row = next(line for line in README.splitlines() if line.startswith("| `nodeGroups.system.diskGib`"))
    assert f"at least {config.MIN_SYSTEM_DISK_GIB}:" in row


def secret_values_on_command_lines(text: str) -> list[str]:
    """`pulumi config set --secret KEY VALUE` commands: the value lands in shell history."""
    found = []
    for match in re.finditer(r"pulumi config set\b[^\n`#]*", text):
        command = re.split(r"\s[<|]\s", match.group(0))[0]  # stdin redirect or pipe: no value
        words = command.split()[3:]
        positional = [w for w in words if not w.startswith("-")]
        if "--secret" in words and len(positional) > 1:
            found.append(command.strip())
    return found


def test_docs_never_put_a_secret_on_the_command_line():
    docs = {"README.md": README, **{p.name: p.read_text(encoding="utf-8")
                                    for p in REPO.glob("Pulumi.*.yaml")}}
    assert secret_values_on_command_lines("pulumi config set --secret hfToken hf_abc") == [
        "pulumi config set --secret hfToken hf_abc"]
    assert secret_values_on_command_lines("`pulumi config set --secret hfToken < f`") == []
    assert secret_values_on_command_lines("pulumi config set --secret hfToken <token>") != []
    assert {name: secret_values_on_command_lines(text) for name, text in docs.items()
            if secret_values_on_command_lines(text)} == {}
    assert "config set --secret hfToken" in README  # the prompt form is shown


def test_no_command_in_the_readme_puts_a_credential_in_shell_history_or_the_checkout():
    # a passphrase on a command line stays in the shell's history
    assert not re.search(r"PULUMI_CONFIG_PASSPHRASE=\S", README)
    assert "PULUMI_CONFIG_PASSPHRASE_FILE=" in README
    # every secret written out goes to the user's home (umask 077), never into the checkout
    for line in README.splitlines():
        for redirect in re.findall(r"--show-secrets[^`|]*?>\s*(\S+)", line):
            assert redirect.startswith("~/"), line
    ignored = (REPO / ".gitignore").read_text().splitlines()
    assert "/kubeconfig" in ignored
