"""Benchmarks: the four AIPerf Jobs, strictly one after another, against the serving graph.

Each Job runs `jobs.entrypoint` for one mode (code and the run plan mounted from
ConfigMaps) in the client image with the hash-locked AIPerf (facts/locks/aiperf.lock.txt), on a
CPU node, writing to the results volume. Pulumi
waits for each Job to complete, with a timeout derived from the mode's planned duration, and
starts the next only then. The plan carries everything the run manifest records (versions,
nodes, workers, the graph's spec) and a hash of it: a change of any of them, or of the code,
gives new Jobs, so a new run; an unrelated change (say, monitoring retention) re-runs nothing.

The Jobs' service account may read pods (in the lab namespace) and nodes, and list pods in the
GPU Operator's namespace, and nothing else: the manifest records which pod ran on which node and
instance type, and AIPerf scrapes the DCGM exporters on the workers' nodes (GPU telemetry).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from jobs import deadlines, modes
from jobs.entrypoint import GPU_OPERATOR_NAMESPACE_ENV
from components import job_code
from components.base import PART_OF
from components.model_store import MODEL_MOUNT, MODEL_PVC, RESULTS_MOUNT, RESULTS_PVC
from facts.wheel_locks import AIPERF

SERVICE_ACCOUNT = "bench-runner"
PLAN_MOUNT = "/opt/benchlab-plan"
PLAN_FILE = "plan.json"
# A pod that fails for a reason outside AIPerf (node drained, volume hiccup) is retried; the
# entrypoint keeps the earlier attempt and never overwrites finished modes.
BENCH_BACKOFF_LIMIT = 2
TERMINAL_ENV = {"NO_COLOR": "1", "TERM": "dumb", "TQDM_DISABLE": "1"}  # plain Job logs
# No HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE here, unlike the serving pods: with either set,
# AIPerf 0.9.0 loads the tokenizer as a hub repo id from the local cache and rejects the model
# store's directory (aiperf 0.9.0 aiperf/common/tokenizer.py: _is_offline_mode ->
# _from_pretrained_local). Online, an absolute path never reaches the hub (resolve_alias).
# tests/test_workloads.py loads the tokenizer with the real AIPerf in this env.

# AIPerf runs one process per worker: a few cores keep the client from being the limit
# (stacks/pod_fit.py checks it fits a system node).
BENCH_RESOURCES = {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"memory": "16Gi"}}


def shipped_code() -> dict[str, str]:
    """The benchmark Jobs' code ConfigMap: `jobs.entrypoint`, what it imports, the AIPerf lock."""
    return job_code.code_files("entrypoint", AIPERF)


def shipped_code_sha() -> str:
    """Digest of the benchmark Jobs' code: part of the run plan's hash."""
    return job_code.digest(shipped_code())


@dataclass(frozen=True)
class BenchmarksArgs:
    namespace: pulumi.Input[str]
    plan: dict  # stacks.run_plan.run_plan(cfg, shipped_code_sha()): mounted as the Jobs' plan
    modes: tuple[modes.Mode, ...]  # in the order they run
    image: str  # the client image (facts/images.py), by digest when the stack locks it
    cpu_node_selector: dict[str, str]
    depends_on: list[pulumi.Resource]  # the serving graph (Ready) and the volumes
    gpu_operator_namespace: str  # where the DCGM exporters run


class Benchmarks(pulumi.ComponentResource):
    jobs: list[k8s.batch.v1.Job]
    plan: dict
    plan_configmap: pulumi.Output[str]  # the results export reads the same plan

    def __init__(self, name: str, args: BenchmarksArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("benchlab:workloads:Benchmarks", name, None, opts)
        # Everything after the serving graph (so after the namespace and the volumes too).
        child = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)
        code = shipped_code()
        self.plan = args.plan

        reader = self._reader_rbac(name, args.namespace, args.gpu_operator_namespace, child)
        code_map = job_code.immutable_config_map(f"{name}-code", args.namespace, code, child)
        plan_map = job_code.immutable_config_map(
            f"{name}-plan", args.namespace,
            {PLAN_FILE: json.dumps(self.plan, indent=2, sort_keys=True)}, child)
        self.plan_configmap = plan_map.metadata.name

        self.jobs = []
        previous: list[pulumi.Resource] = [*args.depends_on, *reader]
        for index, mode in enumerate(args.modes):
            spec = bench_job_spec(mode, self.plan["config_hash"], args, code_map.metadata.name,
                                  plan_map.metadata.name, allocate_run=index == 0)
            job = k8s.batch.v1.Job(
                f"{name}-{mode.name.replace('_', '-')}",
                metadata={"namespace": args.namespace, "labels": _labels(mode.name)},
                spec=spec,
                # strictly one after another
                opts=job_code.job_options(self, previous, math.ceil(deadlines.benchmark_seconds(mode, _repeats(args)) / 60)))
            self.jobs.append(job)
            previous = [job]
        self.register_outputs({"configHash": self.plan["config_hash"],
                               "jobs": [job.metadata.name for job in self.jobs]})

    @staticmethod
    def _reader_rbac(name: str, namespace: pulumi.Input[str], gpu_operator_namespace: str,
                     child: pulumi.ResourceOptions) -> list[pulumi.Resource]:
        """The Jobs' service account, allowed to read pods (here) and nodes, and to list the
        DCGM exporter pods (GPU Operator namespace); what the Jobs need."""
        read = ["get", "list"]
        account, pods_binding = job_code.namespaced_reader(
            f"{name}-runner", f"{name}-read-pods", SERVICE_ACCOUNT, namespace,
            [{"apiGroups": [""], "resources": ["pods"], "verbs": read}], child)
        subject = [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}]
        # Nodes are cluster-scoped: a ClusterRole, still read-only and nodes only.
        nodes = k8s.rbac.v1.ClusterRole(
            f"{name}-read-nodes", metadata={"labels": PART_OF},
            rules=[{"apiGroups": [""], "resources": ["nodes"], "verbs": read}], opts=child)
        nodes_binding = k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-read-nodes", metadata={"labels": PART_OF},
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                      "name": nodes.metadata.name},
            subjects=subject, opts=child)
        # The exporters' pod IPs and nodes (jobs/cluster_facts.py): list pods there, nothing more.
        exporters = k8s.rbac.v1.Role(
            f"{name}-list-dcgm-exporters", metadata={"namespace": gpu_operator_namespace, "labels": PART_OF},
            rules=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}], opts=child)
        exporters_binding = k8s.rbac.v1.RoleBinding(
            f"{name}-list-dcgm-exporters",
            metadata={"namespace": gpu_operator_namespace, "labels": PART_OF},
            role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                      "name": exporters.metadata.name},
            subjects=subject, opts=child)
        return [account, pods_binding, nodes_binding, exporters_binding]


def _repeats(args: BenchmarksArgs) -> int:
    return modes.plan_from_mapping(args.plan["bench"]).repeats


def _labels(mode: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "benchmark", "benchlab.io/mode": mode, **PART_OF}


def bench_job_spec(mode: modes.Mode, config_hash: str, args: BenchmarksArgs,
                   code_configmap: pulumi.Input[str], plan_configmap: pulumi.Input[str],
                   allocate_run: bool) -> dict:
    env = {"BENCH_MODE": mode.name, "PLAN_FILE": f"{PLAN_MOUNT}/{PLAN_FILE}",
           "RESULTS_ROOT": RESULTS_MOUNT, "ALLOCATE_RUN": "1" if allocate_run else "0",
           GPU_OPERATOR_NAMESPACE_ENV: args.gpu_operator_namespace, **TERMINAL_ENV}
    container = {
        "name": "aiperf",
        "image": args.image,
        "command": job_code.run_module("entrypoint"),
        "env": [*job_code.env_list(env),
                # The Job's identity (its uid), so a retried pod keeps the run id its Job made.
                {"name": "JOB_UID", "valueFrom": {"fieldRef": {
                    "fieldPath": "metadata.labels['batch.kubernetes.io/controller-uid']"}}},
                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
        "resources": BENCH_RESOURCES,
        "volumeMounts": [{"name": "results", "mountPath": RESULTS_MOUNT},
                         {"name": "model-store", "mountPath": MODEL_MOUNT, "readOnly": True},
                         {"name": "plan", "mountPath": PLAN_MOUNT, "readOnly": True}],
    }
    return {
        "backoffLimit": BENCH_BACKOFF_LIMIT,
        "activeDeadlineSeconds": deadlines.benchmark_seconds(mode, _repeats(args)),
        # No ttlSecondsAfterFinished: a Job Kubernetes deleted would be re-created (and re-run)
        # by the next `pulumi up`.
        "template": job_code.job_template(
            container=container, lock=AIPERF,
            volumes=[{"name": "results", "persistentVolumeClaim": {"claimName": RESULTS_PVC}},
                     {"name": "model-store", "persistentVolumeClaim": {
                         "claimName": MODEL_PVC, "readOnly": True}},
                     {"name": "plan", "configMap": {"name": plan_configmap}}],
            code_configmap=code_configmap, node_selector=args.cpu_node_selector,
            labels=_labels(mode.name), annotations={"benchlab.io/config-hash": config_hash},
            # the manifest's pod -> node placement is read through the API
            service_account=SERVICE_ACCOUNT, api_token=True),
    }
