"""Every generated name and label value fits Kubernetes' (and AWS's) limits for any stack name
the lab accepts, and a stack name that would not fit is rejected before any resource."""
from __future__ import annotations

import re

import pytest

from cli import offline
from stacks import config
from tests.conftest import REPO, serving_mode

DEV = offline.stack_config(str(REPO / "Pulumi.dev.yaml"))
LONGEST = "a" + "-" * 2 + "z" * (config.MAX_STACK_NAME - 3)
# https://kubernetes.io/docs/concepts/overview/working-with-objects/names/
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
# Kinds whose names must be DNS labels (63): Namespaces and Services by the API; a Job because
# the Job controller copies its name into the pods' job-name label; a Helm release: 53.
LABEL_NAMED = {"Namespace", "Service", "Job"}
HELM_RELEASE_MAX = 53
PULUMI_AUTONAME_SUFFIX = 8  # "-" + 7 hex: https://www.pulumi.com/docs/iac/concepts/resources/names/


def k8s_names(rec: offline.Recording):
    """(kind, name, labels of the object and of its pod template) of every Kubernetes object."""
    for res in rec.resources.values():
        if not res.type.startswith("kubernetes:"):
            continue
        inputs = res.plain_inputs()
        kind = res.type.rsplit(":", 1)[1]
        if kind == "Release":
            yield kind, inputs.get("name"), {}
            continue
        metadata = inputs.get("metadata") or {}
        name = metadata.get("name") or offline.k8s_auto_name(res.name)
        template = ((inputs.get("spec") or {}).get("template") or {}).get("metadata") or {}
        yield kind, name, {**(metadata.get("labels") or {}), **(template.get("labels") or {})}


def name_problems(rec: offline.Recording) -> list[str]:
    problems = []
    for kind, name, labels in k8s_names(rec):
        if kind == "Release":
            if len(name) > HELM_RELEASE_MAX or not DNS_LABEL.fullmatch(name):
                problems.append(f"Helm release {name!r}")
            continue
        limit, pattern = (63, DNS_LABEL) if kind in LABEL_NAMED else (253, DNS_SUBDOMAIN)
        if len(name) > limit or not pattern.fullmatch(name):
            problems.append(f"{kind} {name!r} ({len(name)} characters; at most {limit})")
        for key, value in labels.items():
            if len(str(value)) > 63 or not LABEL_VALUE.fullmatch(str(value)):
                problems.append(f"{kind} {name!r} label {key}={value!r}")
    for role in rec.of_type("aws:iam/role:Role"):
        if len(role.name) + PULUMI_AUTONAME_SUFFIX > 64:
            problems.append(f"IAM role {role.name!r} + autoname suffix > 64")
    return problems


@pytest.mark.parametrize("mode", ["agg", "disagg"])
def test_every_name_and_label_fits_with_the_longest_stack_name(mode):
    rec = offline.run_program({**DEV, "serving": {**DEV["serving"], **serving_mode(mode)}}, stack=LONGEST)
    assert rec.one("eks:index:Cluster").plain_inputs()["name"] == f"benchlab-{LONGEST}"
    assert name_problems(rec) == []
    jobs = rec.of_type("kubernetes:batch/v1:Job")
    assert len(jobs) >= 6  # the check saw the Jobs whose names once grew with the stack's


def test_the_check_catches_a_name_too_long_for_a_job():
    class Fake:
        type, name, custom = "kubernetes:batch/v1:Job", "j", True

        def plain_inputs(self):
            return {"metadata": {"name": "benchlab-" + "x" * 60}, "spec": {}}
    rec = offline.Recording()
    rec.resources["urn"] = Fake()
    assert name_problems(rec) == [f"Job {'benchlab-' + 'x' * 60!r} (69 characters; at most 63)"]


@pytest.mark.parametrize("stack", [LONGEST + "z", "dev.eu", "-dev", "dév"])
def test_a_stack_name_the_lab_cannot_fit_is_rejected_before_any_resource(stack):
    recording = offline.Recording()
    with pytest.raises(config.ConfigError) as err:
        offline.run_program(DEV, stack=stack, recording=recording)
    assert [p for p in err.value.problems if p.startswith(f"stack name {stack!r}: ")]
    assert recording.resources == {}
