"""KvTransportCheck: one Job between the serving graph's Ready and the first benchmark Job.

It runs `jobs.kv_transport` (standard library, code from a ConfigMap, in the client image the benchmarks use,
on a CPU node): a handful of real requests through the frontend, then the workers' own evidence
(NIXL counters on their metrics port, the NIXL backend in their logs) and, with the KV router,
the frontend's routing decisions. A wrong KV path fails the Job, so `pulumi up` stops before any
benchmark runs; the record goes to the results volume for the run manifest.

Its service account may read pods and their logs in the lab namespace, nothing else. It
reaches the frontend's HTTP port, each worker's system (metrics) port and the API server.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import job_code
from components.base import PART_OF
from components.model_store import RESULTS_MOUNT, RESULTS_PVC
from jobs import deadlines

SERVICE_ACCOUNT = "kv-transport-check"
APP = "kv-transport-check"
CHECK_RESOURCES = {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}


@dataclass(frozen=True)
class KvTransportCheckArgs:
    namespace: pulumi.Input[str]
    graph_name: str
    frontend_url: str
    model: str  # the served model name
    kv_transport: str  # serving.kvTransport for disagg; "none" for agg (no KV transfer)
    kv_router: bool  # the frontend routes by KV: the router must have seen KV events
    config_hash: str  # the run plan's: names the record the benchmark Jobs read
    image: str
    cpu_node_selector: dict[str, str]
    depends_on: list[pulumi.Resource]  # the serving graph (Ready) and the results volume


class KvTransportCheck(pulumi.ComponentResource):
    job: k8s.batch.v1.Job

    def __init__(self, name: str, args: KvTransportCheckArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("benchlab:workloads:KvTransportCheck", name, None, opts)
        child = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)
        rbac = self._log_reader(name, args.namespace, child)
        env = {"POD_NAMESPACE": args.namespace, "GRAPH_NAME": args.graph_name,
               "FRONTEND_URL": args.frontend_url, "MODEL": args.model,
               "KV_TRANSPORT": args.kv_transport, "KV_ROUTER": "1" if args.kv_router else "0",
               "REQUESTS": str(deadlines.KV_CHECK_REQUESTS),
               "REQUEST_TIMEOUT_SECONDS": str(deadlines.KV_CHECK_REQUEST_TIMEOUT_SECONDS),
               "RESULTS_ROOT": RESULTS_MOUNT,
               "CONFIG_HASH": args.config_hash}

        def spec(code_configmap: pulumi.Input[str], code_sha: str) -> dict:
            container = {"name": "check", "image": args.image,
                         "command": job_code.run_module("kv_transport"),
                         "env": job_code.env_list(env),
                         "resources": CHECK_RESOURCES,
                         "volumeMounts": [{"name": "results", "mountPath": RESULTS_MOUNT}]}
            labels = {"app.kubernetes.io/name": APP, **PART_OF}
            return {
                "backoffLimit": 0,  # the verdict is deterministic: a retry would hide nothing
                "activeDeadlineSeconds": deadlines.kv_check_seconds(),
                "template": job_code.job_template(
                    container=container, lock=None,  # standard library only
                    volumes=[{"name": "results", "persistentVolumeClaim": {"claimName": RESULTS_PVC}}],
                    code_configmap=code_configmap, node_selector=args.cpu_node_selector,
                    labels=labels, annotations={job_code.DIGEST_ANNOTATION: code_sha,
                                                "benchlab.io/config-hash": args.config_hash},
                    service_account=SERVICE_ACCOUNT, api_token=True),
            }

        self.job = job_code.code_job(
            self, f"{name}-job", entry="kv_transport", lock=None, configmap_name=f"{name}-code",
            namespace=args.namespace, app=APP, spec=spec, configmap_opts=child,
            depends_on=[*args.depends_on, *rbac],
            timeout_minutes=math.ceil(deadlines.kv_check_seconds() / 60))
        self.register_outputs({"job": self.job.metadata.name})

    @staticmethod
    def _log_reader(name: str, namespace: pulumi.Input[str],
                    child: pulumi.ResourceOptions) -> list[pulumi.Resource]:
        """The check's service account: read pods and their logs in the lab namespace."""
        account, binding = job_code.namespaced_reader(
            f"{name}-account", f"{name}-read-pods", SERVICE_ACCOUNT, namespace,
            [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
             {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}], child)
        return [account, binding]
