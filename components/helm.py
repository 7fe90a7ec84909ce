"""Helm plumbing shared by the platform components: chart values files and releases.

Each chart's values live in `helm_values/<chart>.yaml`; a component loads them and overlays
only what config (or an object the component itself creates) decides.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml

HELM_VALUES_DIR = Path(__file__).resolve().parent.parent / "helm_values"


@dataclass(frozen=True)
class Chart:
    name: str  # the chart's name, also the name of its values file
    repo: str
    version: str


def chart_values(chart: str, overlay: dict[str, Any] | None = None) -> dict[str, Any]:
    """`helm_values/<chart>.yaml` with `overlay` merged over it (mappings merge key by key)."""
    return deep_merge(_values_file(chart), overlay or {})


@functools.lru_cache(maxsize=None)
def _values_file(chart: str) -> dict[str, Any]:
    with open(HELM_VALUES_DIR / f"{chart}.yaml", encoding="utf-8") as f:
        return yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class ChartRelease(pulumi.ComponentResource):
    """Base of the components that are one Helm release of a pinned chart: `release` is
    what later resources wait for."""
    release: k8s.helm.v3.Release

    def __init__(self, type_: str, name: str, chart: Chart, *, release_name: str,
                 namespace: pulumi.Input[str], depends_on: list[pulumi.Resource],
                 timeout_minutes: int, opts: pulumi.ResourceOptions | None):
        super().__init__(type_, name, None, opts)
        self.release = release(
            f"{name}-{release_name}", chart, release_name=release_name, namespace=namespace,
            values=chart_values(chart.name), timeout_minutes=timeout_minutes,
            opts=pulumi.ResourceOptions(parent=self, depends_on=depends_on))
        self.register_outputs({"release": self.release.name, "version": chart.version})


def release(resource_name: str, chart: Chart, *, release_name: str, namespace: pulumi.Input[str],
            values: dict[str, Any], timeout_minutes: int,
            opts: pulumi.ResourceOptions) -> k8s.helm.v3.Release:
    """A real Helm release: Helm runs the chart's hooks and installs its CRDs itself (some,
    like kube-prometheus-stack's, are too large for client-side apply), and Pulumi waits
    until every resource it created is ready."""
    return k8s.helm.v3.Release(
        resource_name,
        name=release_name,
        chart=chart.name,
        version=chart.version,
        repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=chart.repo),
        namespace=namespace,
        values=values,
        skip_await=False,
        # A failed first install is uninstalled again, so the next `pulumi up` starts clean.
        atomic=True,
        timeout=timeout_minutes * 60,
        max_history=5,
        opts=opts)
