"""The offline harness's order assertions can fail: they see a dependency when there is one,
and stop seeing it when it is removed (in a tiny program, and in the real lab mutated)."""
from __future__ import annotations

import types

import pulumi
import pulumi_eks as eks
import pytest

from components import node_groups
from cli import offline
from tests.test_aws_layer import assert_node_groups_wait_for_the_cluster, run


class Thing(pulumi.CustomResource):
    def __init__(self, name: str, props: dict, opts: pulumi.ResourceOptions | None = None):
        super().__init__("test:index:Thing", name, props, opts)


def tiny_program(link: str | None):
    """`later` is linked to `earlier` as `link` says (an option or an input), or not at all."""
    def program() -> None:
        earlier = Thing("earlier", {"size": 1})
        if link == "depends_on":
            Thing("later", {"size": 2}, pulumi.ResourceOptions(depends_on=[earlier]))
        elif link == "input":
            Thing("later", {"size": 2, "upstream": earlier.id})
        else:
            Thing("later", {"size": 2})
    return program


def chain_program(link: bool):
    def program() -> None:
        first = Thing("first", {"size": 1})
        middle = Thing("middle", {"size": 2}, pulumi.ResourceOptions(depends_on=[first]) if link else None)
        Thing("second", {"size": 3, "upstream": middle.id})
    return program


@pytest.mark.parametrize("link", ["depends_on", "input"])
def test_a_direct_dependency_is_seen_and_its_absence_too(link):
    linked, unlinked = offline.run(tiny_program(link)), offline.run(tiny_program(None))
    assert linked.waits_for(linked.named("later"), linked.named("earlier"))
    assert not unlinked.waits_for(unlinked.named("later"), unlinked.named("earlier"))
    assert not linked.waits_for(linked.named("earlier"), linked.named("later"))  # not symmetric


def test_a_transitive_dependency_is_seen_and_breaking_the_chain_removes_it():
    linked, broken = offline.run(chain_program(True)), offline.run(chain_program(False))
    assert linked.waits_for(linked.named("second"), linked.named("first"))
    assert broken.waits_for(broken.named("second"), broken.named("middle"))
    assert not broken.waits_for(broken.named("second"), broken.named("first"))


def test_the_real_order_assertion_fails_when_a_node_group_is_detached_from_the_cluster(monkeypatch):
    """Mutate the real lab: node groups get the cluster by name and a fixed launch template
    (no resource reference, no output of the cluster), so nothing orders them after it."""
    real = eks.ManagedNodeGroup

    def detached(name, *, cluster, launch_template, opts, **kwargs):
        return real(name, cluster="benchlab-dev", launch_template={"id": "lt-fixed", "version": "1"},
                    opts=pulumi.ResourceOptions(parent=opts.parent), **kwargs)

    assert_node_groups_wait_for_the_cluster(run())  # the unmutated lab passes
    monkeypatch.setattr(node_groups, "eks", types.SimpleNamespace(ManagedNodeGroup=detached))
    mutated = run()
    prefill = mutated.one("eks:index:ManagedNodeGroup", "benchlab-dev-prefill")
    assert prefill.plain_inputs()["cluster"] == "benchlab-dev"  # the mutation took
    with pytest.raises(AssertionError, match="node group does not wait for the cluster"):
        assert_node_groups_wait_for_the_cluster(mutated)
