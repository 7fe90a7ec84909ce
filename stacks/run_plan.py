"""The run plan: what the benchmark Jobs need and what the run manifest records, with its hash.

Pure. A change of the graph, the benchmark plan, a version or the Jobs' code changes the hash,
so the Jobs are replaced and a new run is made; an unrelated change re-runs nothing.
"""
from __future__ import annotations

import dataclasses

from components import job_code
from components.cluster import ROLE_LABEL
from components.model_store import model_dir
from components.serving_graph import frontend_url
from facts.instances import facts
from jobs import modes
from stacks.config import StackConfig
from stacks.serving_spec import graph_manifest, image

PLAN_SCHEMA = 1


def run_plan(cfg: StackConfig, code_sha: str) -> dict:
    """What the benchmark Jobs need and what the run manifest records, with its hash."""
    graph = graph_manifest(cfg)
    roles = cfg.worker_roles()
    used_groups = sorted({group for group, _ in roles.values()})
    recorded = {
        "model": cfg.model.id,
        "versions": {**{key: getattr(cfg.versions, key)
                        for key in (f.name for f in dataclasses.fields(cfg.versions))},
                     "vllm_runtime_image": image(cfg),
                     "client_image": cfg.deployed_image("client"),
                     "kubernetes": cfg.kubernetes_version,
                     "model_revision": cfg.model.revision},
        "nodes": [{"role": group, "instance_type": getattr(cfg.node_groups, group).instance_type,
                   "count": cfg.desired_nodes(group),
                   "gpus_per_node": facts(getattr(cfg.node_groups, group).instance_type).gpus}
                  for group in used_groups],
        "workers": {role: {"replicas": w.replicas, "tp": w.tp} for role, (_, w) in roles.items()},
        "dgd_spec": graph["spec"],
    }
    directory = model_dir(cfg.model.id, cfg.model.revision)
    plan = {
        "schema": PLAN_SCHEMA,
        "graph": cfg.serving.mode,
        "graph_name": graph["metadata"]["name"],
        "node_role_label": ROLE_LABEL,
        "aiperf_version": cfg.versions.aiperf,
        "target": {"url": frontend_url(graph["metadata"]["name"]), "model": cfg.model.id,
                   "tokenizer": directory},
        "model_dir": directory,
        "model_revision": cfg.model.revision,
        "bench": modes.plan_to_mapping(cfg.bench),
        "manifest": recorded,
    }
    return {**plan, "config_hash": job_code.digest({"plan": plan, "code": code_sha})}
