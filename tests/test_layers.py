"""The layout's rules, checked on the source: layers import only downwards, and the code shipped
into the cluster Jobs needs nothing the Jobs do not have."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

# package -> the project packages it may import (itself included). Top to bottom: the CLI;
# the planner; the composition (stacks) and the local lab; components and the report; the Jobs' code; facts.
ALLOWED = {
    "cli": {"cli", "planner", "local_lab", "stacks", "components", "report", "jobs", "facts"},
    "perf": {"cli", "local_lab", "stacks", "jobs", "facts"},
    "planner": {"planner", "local_lab", "stacks", "jobs", "facts"},
    "local_lab": {"local_lab", "stacks", "jobs", "facts"},
    "stacks": {"stacks", "components", "jobs", "facts"},
    "components": {"components", "jobs", "facts"},
    "report": {"report", "jobs", "facts"},
    "jobs": {"jobs"},
    "facts": {"facts"},
}
# The stack config sits below the composition: the CLI and the local lab read it alone.
CONFIG_ALLOWED = {"stacks.config", "jobs", "facts"}
# What a Job installs at start besides the standard library: the export Job's S3 client and the
# download Job's hub client.
JOB_THIRD_PARTY = {"boto3", "botocore", "huggingface_hub"}


def project_imports(path: Path) -> set[str]:
    """Dotted names of the project modules/packages `path` imports (any depth)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] in ALLOWED}


def modules(package: str) -> list[Path]:
    return sorted((REPO / package).glob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_layers_import_only_downwards(package):
    wrong = {f"{path.relative_to(REPO)} imports {name}"
             for path in modules(package) for name in project_imports(path)
             if name.split(".")[0] not in ALLOWED[package]}
    assert not wrong, sorted(wrong)


def test_the_stack_config_is_below_the_composition():
    imports = project_imports(REPO / "stacks" / "config.py")
    assert {name for name in imports if not any(
        name == allowed or name.startswith(allowed + ".") for allowed in CONFIG_ALLOWED)} == set()


def test_components_take_values_not_the_stack_config():
    users = [path.name for path in modules("components")
             if any(name.startswith("stacks") for name in project_imports(path))]
    assert users == []


def test_shipped_job_code_needs_only_the_standard_library_and_what_jobs_install():
    outside = set()
    for path in modules("jobs"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "jobs" and top not in JOB_THIRD_PARTY:
                    outside.add(f"{path.name}: {name}")
    assert not outside, sorted(outside)


def test_the_import_check_sees_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from stacks.config import StackConfig\nimport report.render\n")
    assert project_imports(bad) == {"stacks.config", "report.render"}


def module_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (at any depth of its code, functions included)."""
    paths = {f"{package}.{path.stem}": path
             for package in ALLOWED for path in modules(package) if path.stem != "__init__"}
    graph = {}
    for name, path in paths.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.update(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in paths
                             else node.module for alias in node.names)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {other for other in found if other in paths and other != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each cycle as the modules on it, found by walking every import from every module."""
    cycles, done = [], set()

    def walk(name: str, path: list[str]) -> None:
        for other in sorted(graph[name]):
            if other in path:
                cycle = path[path.index(other):]
                if frozenset(cycle) not in done:
                    done.add(frozenset(cycle))
                    cycles.append(cycle)
            elif other not in finished:
                walk(other, [*path, other])
        finished.add(name)

    finished: set[str] = set()
    for name in sorted(graph):
        if name not in finished:
            walk(name, [name])
    return cycles


def test_no_two_modules_import_each_other_at_any_depth():
    assert import_cycles(module_graph()) == []


def test_the_cycle_check_finds_a_cycle_through_a_function_level_import():
    graph = {"report.a": {"report.b"}, "report.b": {"report.c"}, "report.c": {"report.a"}, "jobs.x": set()}
    assert import_cycles(graph) == [["report.a", "report.b", "report.c"]]
