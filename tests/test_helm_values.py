"""Every Helm value key the project sets exists in the pinned chart's values.yaml (the copies
under ../shared/reference): a misspelled key is silently ignored by Helm, so it must fail
here. Generic: every Helm release and chart the program registers, agg and disagg."""
from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest
import yaml

from components.helm import deep_merge
from cli import offline
from tests.conftest import serving_mode

HELM_TYPES = ("kubernetes:helm.sh/v3:Release", "kubernetes:helm.sh/v4:Chart")
DYNAMO_CHARTS = "dynamo-0.9.x/deploy/helm/charts"

# chart -> (version -> [(key prefix, reference values file)]): a subchart's defaults sit under
# its name in the parent chart's values, so its own values.yaml is merged under that prefix.
REFERENCES: dict[str, Callable[[str], list[tuple[tuple[str, ...], str]]]] = {
    "gpu-operator": lambda v: [((), f"gpu-operator-{v}/values.yaml")],
    "kube-prometheus-stack": lambda v: [((), f"kube-prometheus-stack-{v}/values.yaml")],
    "prometheus-pushgateway": lambda v: [((), f"prometheus-pushgateway-{v}/values.yaml")],
    "aws-efa-k8s-device-plugin": lambda v: [((), f"aws-efa-k8s-device-plugin-{v}/values.yaml")],
    # The reference holds the 0.9 line's charts (PROVENANCE.txt: main at the 0.9 branch cut).
    "dynamo-platform": lambda v: [
        ((), f"{DYNAMO_CHARTS}/platform/values.yaml"),
        (("dynamo-operator",), f"{DYNAMO_CHARTS}/platform/components/operator/values.yaml"),
    ] if v.startswith("0.9.") else [],
    "dynamo-crds": lambda v: [],  # the chart takes no values
}

# Keys of subcharts whose values.yaml is not in the reference, each checked by hand against
# that values.yaml at the version the pinned parent pulls in. Exact paths, so a typo still
# fails; "<path>.*": the chart passes the map below <path> through as it is.
OUTSIDE_REFERENCE = {
    "kube-prometheus-stack": {
        # grafana/helm-charts charts/grafana/values.yaml (kube-prometheus-stack 65.8.1 pulls
        # grafana 8.5.x; these keys are the same from 6.x on)
        "grafana.persistence.enabled", "grafana.persistence.type", "grafana.persistence.size",
        "grafana.persistence.storageClassName",  # documented there as a commented-out key
        "grafana.deploymentStrategy.type",
        "grafana.admin.existingSecret",
        # charts/grafana/templates/role.yaml: a Role instead of the ClusterRole (grafana 8.5.x)
        "grafana.rbac.namespaced",
    },
    "dynamo-platform": {
        # bitnami/charts bitnami/etcd/values.yaml (etcd chart 12.0.18 under dynamo-platform 0.9)
        "etcd.networkPolicy.enabled",
    },
}


def reference_values(chart: str, version: str, shared) -> dict:
    if chart not in REFERENCES:
        pytest.fail(f"no reference values for chart {chart!r}: add it to REFERENCES")
    files = REFERENCES[chart](version)
    root = shared("PROVENANCE.txt").parent  # skips when ../shared is absent
    merged: dict = {}
    for prefix, relative in files:
        if not (root / relative).is_file():  # present, but not for this chart version
            pytest.fail(f"no reference values for {chart} {version}: {relative} is not in {root}")
        values = yaml.safe_load((root / relative).read_text()) or {}
        for key in reversed(prefix):
            values = {key: values}
        merged = deep_merge(merged, values)
    if not files and chart != "dynamo-crds":
        pytest.fail(f"no reference values for {chart} {version}")
    return merged


def unknown_keys(values: dict, reference: dict, allowed: set[str] = frozenset()) -> list[str]:
    """Dotted paths of the keys in `values` the chart does not have. Below a reference value
    that is an empty mapping, a list or null, anything goes: the chart renders it as given."""
    problems: list[str] = []
    free = {a[:-2] for a in allowed if a.endswith(".*")}

    def walk(node: dict, ref: Any, path: tuple[str, ...]) -> None:
        for key, value in node.items():
            here = (*path, key)
            dotted = ".".join(here)
            if any(dotted == f or dotted.startswith(f + ".") for f in free):
                continue
            if isinstance(ref, dict) and key in ref:
                sub = ref[key]
                if isinstance(value, dict) and isinstance(sub, dict) and sub:
                    walk(value, sub, here)
                elif isinstance(value, dict) and sub is not None and not isinstance(sub, (dict, list)):
                    problems.append(f"{dotted} (a mapping where the chart has {sub!r})")
            elif isinstance(value, dict) and any(a.startswith(dotted + ".") for a in allowed):
                walk(value, None, here)
            elif dotted not in allowed:
                problems.append(dotted)

    walk(values, reference, ())
    return problems


def helm_installs(rec: offline.Recording) -> Iterator[offline.Resource]:
    for type_ in HELM_TYPES:
        yield from rec.of_type(type_)


@pytest.fixture(scope="module", params=["agg", "disagg"])
def recording(request):
    from tests.conftest import REPO
    config = offline.stack_config(str(REPO / "Pulumi.dev.yaml"))
    return offline.run_program({**config, "serving": serving_mode(request.param)}, {"hfToken": "hf_x"})


def test_every_value_key_exists_in_the_pinned_chart(recording, shared):
    checked, problems = [], []
    for res in helm_installs(recording):
        inputs = res.plain_inputs()
        chart, version = inputs["chart"], inputs["version"]
        reference = reference_values(chart, version, shared)
        for key in unknown_keys(inputs.get("values") or {}, reference, OUTSIDE_REFERENCE.get(chart, set())):
            problems.append(f"{chart} {version}: {key}")
        checked.append(chart)
    assert {"gpu-operator", "kube-prometheus-stack", "prometheus-pushgateway",
            "aws-efa-k8s-device-plugin", "dynamo-platform", "dynamo-crds"} <= set(checked)
    assert not problems, "value keys the pinned charts do not have:\n  " + "\n  ".join(problems)


def _release_values(rec: offline.Recording, chart: str) -> tuple[dict, str]:
    (res,) = [r for r in helm_installs(rec) if r.inputs["chart"] == chart]
    return res.plain_inputs()["values"], res.inputs["version"]


TYPOS = {  # chart -> a misspelling merged into the values the program sets -> the key flagged
    "gpu-operator": ({"driver": {"enabeld": False}}, "driver.enabeld"),
    "prometheus-pushgateway": ({"serviceMonitor": {"honorLabel": True}}, "serviceMonitor.honorLabel"),
    "aws-efa-k8s-device-plugin": ({"toleration": []}, "toleration"),
    "dynamo-platform": (
        {"dynamo-operator": {"controllerManager": {"kubeRbacProxy": {"imgae": {"tag": "x"}}}}},
        "dynamo-operator.controllerManager.kubeRbacProxy.imgae"),
}
KPS_TYPOS = {
    "a mapping": ({"grafana": {"persistance": {"size": "1Gi"}}}, "grafana.persistance"),
    "under a key kept outside the reference": ({"grafana": {"persistence": {"sise": "1Gi"}}},
                                              "grafana.persistence.sise"),
    "deep in the reference": ({"prometheus": {"prometheusSpec": {"retension": "1d"}}},
                              "prometheus.prometheusSpec.retension"),
    "a mapping for a scalar": ({"fullnameOverride": {"name": "x"}}, "fullnameOverride"),
}


@pytest.fixture(scope="module")
def agg_recording():
    from tests.conftest import REPO
    return offline.run_program(offline.stack_config(str(REPO / "Pulumi.dev.yaml")))


@pytest.mark.parametrize("chart", TYPOS)
def test_a_misspelled_key_fails(agg_recording, shared, chart):
    values, version = _release_values(agg_recording, chart)
    typo, flagged = TYPOS[chart]
    reference = reference_values(chart, version, shared)
    allowed = OUTSIDE_REFERENCE.get(chart, set())
    assert unknown_keys(values, reference, allowed) == []
    assert unknown_keys(deep_merge(values, typo), reference, allowed) == [flagged]


@pytest.mark.parametrize("typo, flagged", KPS_TYPOS.values(), ids=KPS_TYPOS.keys())
def test_a_misspelled_kube_prometheus_stack_key_fails(agg_recording, shared, typo, flagged):
    values, version = _release_values(agg_recording, "kube-prometheus-stack")
    reference = reference_values("kube-prometheus-stack", version, shared)
    problems = unknown_keys(deep_merge(values, typo), reference, OUTSIDE_REFERENCE["kube-prometheus-stack"])
    assert len(problems) == 1 and problems[0].startswith(flagged)


def test_free_form_maps_take_any_key(agg_recording, shared):
    """Where the chart's default is {} (e.g. Prometheus' storageSpec), the chart renders the
    map as given: any key is accepted there, and only there."""
    values, version = _release_values(agg_recording, "kube-prometheus-stack")
    reference = reference_values("kube-prometheus-stack", version, shared)
    assert reference["prometheus"]["prometheusSpec"]["storageSpec"] == {}
    extra = {"prometheus": {"prometheusSpec": {"storageSpec": {"emptyDir": {"medium": "Memory"}}}}}
    allowed = OUTSIDE_REFERENCE["kube-prometheus-stack"]
    assert unknown_keys(deep_merge(values, extra), reference, allowed) == []
