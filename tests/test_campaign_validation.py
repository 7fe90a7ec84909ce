"""A campaign runs agg, then disagg, with one config: every role and setting is validated
whatever `serving.mode` says now, so a bad disagg setting fails before the first GPU hour."""
from __future__ import annotations

import pytest

from stacks import config
from tests.conftest import EFA_IMAGE, serving_mode

CASES = {
    "decode TP above a node's GPUs": ({"decode": {"tp": 8, "replicas": 1}}, "benchlab:serving.decode.tp: 8 "),
    "decode replicas above the group's GPUs": ({"decode": {"tp": 2, "replicas": 9}}, "benchlab:serving.decode: 9 replicas"),
    "prefill replicas above the group's GPUs": ({"prefill": {"tp": 4, "replicas": 5}}, "benchlab:serving.prefill: 5 replicas"),
    "decode replicas 0": ({"decode": {"tp": 2, "replicas": 0}}, "benchlab:serving.decode.replicas: 0"),
    "prefill replicas 0": ({"prefill": {"tp": 4, "replicas": 0}}, "benchlab:serving.prefill.replicas: 0"),
    "KV disk tier above the disk": ({"kvOffload": {"diskCacheGib": 4000}}, "benchlab:serving.kvOffload.diskCacheGib: 4000 GiB"),
}


@pytest.mark.parametrize("mode", ["agg", "disagg"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_role_is_validated_in_both_modes(mode, case):
    serving, expected = CASES[case]
    with pytest.raises(config.ConfigError) as err:
        config.parse({"serving": {**serving_mode(mode), **serving}})
    assert any(p.startswith(expected) for p in err.value.problems), err.value.problems


def test_agg_workers_are_validated_in_disagg_mode_too():
    with pytest.raises(config.ConfigError) as err:
        config.parse({"serving": {"mode": "disagg", "image": EFA_IMAGE, "agg": {"tp": 8, "replicas": 3}}})
    assert any(p.startswith("benchlab:serving.agg: 3 replicas x TP8") for p in err.value.problems)
