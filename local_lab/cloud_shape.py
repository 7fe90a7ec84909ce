"""The cloud lab a simulated run stands for, as recorded in its manifest.

The mocker simulates a stack's graphs (the default cloud lab's, stacks/config.py defaults, unless
`benchlab local --stack` names one); the report prices and labels a run by these nodes and
workers, always with `simulated: true`.
"""
from __future__ import annotations

import dataclasses

from jobs import names, run_manifest
from facts.versions import AIPERF_VERSION, DYNAMO_VERSION
from stacks.config import StackConfig
from facts.instances import facts


# The mocker moves no KV cache between workers: a simulated disagg run has no KV path to report.
MOCKER_KV_PATH = "none (mocker: simulated, no KV transfer)"


def manifest(run_id: str, graph: str, profile: str, tokenizer_dir: str, created: str, *,
             stack: StackConfig | None = None, extra: dict | None = None,
             kv_router: dict | None = None) -> run_manifest.RunManifest:
    """`model` is the model the run stands for; what served it locally is recorded beside it.
    `stack`: the cloud lab it stands for; `extra`: more manifest keys (twin, prediction);
    `kv_router`: the local KV router's evidence (jobs/kv_transport.RouterEvidence), when it ran."""
    stack = stack or StackConfig()
    lab = dataclasses.replace(stack, serving=dataclasses.replace(stack.serving, mode=graph))
    roles = lab.worker_roles()  # role -> (node group, workers)
    groups = [group for group in names.GPU_GROUPS
              if group in {group for group, _ in roles.values()}]
    return run_manifest.RunManifest(
        run_id=run_id, graph=graph, simulated=True, profile=profile, created=created,
        versions={"dynamo": DYNAMO_VERSION, "aiperf": AIPERF_VERSION}, model=lab.model.id,
        nodes=[run_manifest.NodeGroup(group, getattr(lab.node_groups, group).instance_type,
                                      getattr(lab.node_groups, group).count,
                                      facts(getattr(lab.node_groups, group).instance_type).gpus)
               for group in groups],
        workers={role: run_manifest.WorkerSpec(replicas=workers.replicas, tp=workers.tp)
                 for role, (_, workers) in roles.items()},
        extra={run_manifest.STAND_IN: f"a generated tokenizer ({tokenizer_dir}) served by "
                                      "Dynamo's mocker: no weights, simulated timing",
               "kv_transport": {"transport": MOCKER_KV_PATH,
                                **({"kv_router": kv_router} if kv_router is not None else {})},
               **(extra or {})},
    )
