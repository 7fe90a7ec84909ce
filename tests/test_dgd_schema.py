"""Every DynamoGraphDeployment the lab renders (agg and disagg, from the pure builder and as
registered by the whole program) validates against the pinned CRD's openAPIV3Schema, with
unknown fields rejected the way the API server's structural pruning would drop them."""
from __future__ import annotations

import copy
import functools

import jsonschema
import pytest
import yaml

from stacks import serving_spec
from cli import synth
from stacks import config

CRD = "dynamo-0.9.x/deploy/helm/charts/crds/templates/nvidia.com_dynamographdeployments.yaml"
from jobs.names import GRAPHS as MODES
from tests.conftest import EFA_IMAGE, serving_mode


def strict(schema: dict) -> dict:
    """The schema with `additionalProperties: false` wherever it lists properties and allows
    nothing else (no additionalProperties of its own, no x-kubernetes-preserve-unknown-fields)."""
    schema = copy.deepcopy(schema)

    def visit(node):
        if isinstance(node, dict):
            if ("properties" in node and "additionalProperties" not in node
                    and not node.get("x-kubernetes-preserve-unknown-fields")):
                node["additionalProperties"] = False
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)
    visit(schema)
    return schema


@functools.lru_cache(maxsize=1)
def _validator(path: str) -> jsonschema.Draft7Validator:
    crd = yaml.safe_load(open(path, encoding="utf-8"))
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1")
    return jsonschema.Draft7Validator(strict(version["schema"]["openAPIV3Schema"]))


@pytest.fixture
def validator(shared):
    return _validator(str(shared(CRD)))


def problems(validator, manifest: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(manifest)]


@pytest.mark.parametrize("mode", MODES)
def test_rendered_graph_validates(validator, mode):
    manifest = serving_spec.graph_manifest(config.parse({"serving": serving_mode(mode)}), namespace="lab")
    assert problems(validator, manifest) == []


@pytest.mark.parametrize("mode", MODES)
def test_registered_graph_validates(validator, run_lab, mode):
    recording = run_lab(overrides={"serving": serving_mode(mode)})
    graphs = recording.of_type(f"kubernetes:{serving_spec.API_VERSION}:{serving_spec.KIND}")
    assert len(graphs) == 1
    manifest = synth.redact(graphs[0].inputs)  # as `benchlab synth` writes it
    assert manifest["spec"]["services"].keys() >= {"Frontend"}
    assert problems(validator, manifest) == []


@pytest.mark.parametrize("where, field", [
    (("spec",), "replicaCount"),
    (("spec", "services", "Frontend"), "replica"),
    (("spec", "services", "Frontend", "extraPodSpec", "mainContainer"), "imagePullPolicyy"),
])
def test_an_unknown_field_fails(validator, where, field):
    manifest = serving_spec.graph_manifest(config.parse({"serving": {"mode": "disagg", "image": EFA_IMAGE}}))
    node = manifest
    for key in where:
        node = node[key]
    node[field] = 1
    found = problems(validator, manifest)
    assert len(found) == 1 and f"'{field}' was unexpected" in found[0]


def test_a_wrong_type_fails(validator):
    manifest = serving_spec.graph_manifest(config.parse({}))
    manifest["spec"]["services"]["VllmWorker"]["replicas"] = "four"
    assert any("'four' is not of type 'integer'" in p for p in problems(validator, manifest))
