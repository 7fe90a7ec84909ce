"""ServingGraph: one DynamoGraphDeployment (nvidia.com/v1alpha1), applied as it is given, and
the Job that waits for it to get Ready.

The manifest is built by the composition (`stacks/serving_spec.py`): this component applies it
without waiting (a custom resource's Ready wait in pulumi-kubernetes ends only when the
condition holds or the timeout passes, and the engine lets an in-flight wait finish after
another resource failed: GPUs would bill for serving.readyTimeoutMinutes whatever is wrong).
The wait is the `graph-ready` Job instead (jobs/graph_ready.py): it fails within minutes when a
pod of the graph is stuck (CrashLoopBackOff, ImagePullBackOff, ErrImagePull, Unschedulable),
with the pod's reason and log tail, and what follows the graph waits for that Job.

Its service account may read the graph, its pods and their logs in the lab namespace, nothing else.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from components import job_code
from components.base import PART_OF
from jobs import deadlines

FRONTEND_PORT = 8000  # the operator's Frontend Service port
# The operator's own PodMonitors scrape the frontend and the workers' system port; KVBM serves
# its metrics on a port of its own, declared under this name on the workers that run it.
WORKER_ROLE = {"nvidia.com/dynamo-component-type": "worker"}
READY_APP = "graph-ready"  # the Ready wait's Job and service account
READY_RESOURCES = {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}}
# A stuck container (crash loop, failing pull) fails the wait after this long; a pod no node
# can take after the longer one, which covers GPU nodes still booting (the graph may be created
# before they joined: nothing waits for the node groups, so destroy deletes them first) and the
# GPU Operator's device plugin starting on them: ~8 + ~4 min (cli/cost.py NODE_GROUP_READY_MIN,
# GPU_OPERATOR_READY_MIN, published figures) with room to spare.
STUCK_MINUTES, UNSCHEDULABLE_MINUTES = 5, 20


def frontend_url(graph: str) -> str:
    """The in-cluster URL of a graph's Frontend Service (the operator names it <graph>-frontend)."""
    return f"http://{graph}-frontend:{FRONTEND_PORT}"


@dataclass(frozen=True)
class ServingGraphArgs:
    manifest: dict  # stacks.serving_spec.graph_manifest(cfg)
    namespace: pulumi.Input[str]
    ready_timeout_minutes: int
    # The model download, the Dynamo platform (its webhook must answer), the GPU Operator and
    # the EFA device plugin.
    depends_on: list[pulumi.Resource]
    image: str  # the client image the Ready wait runs in (standard library only)
    cpu_node_selector: dict[str, str]
    kvbm_metrics_port: str | None = None  # container port name of KVBM's metrics, if any


def ready_job_spec(args: ServingGraphArgs, graph: str, code_configmap: pulumi.Input[str],
                   code_sha: str) -> dict:
    env = {"POD_NAMESPACE": args.namespace, "GRAPH_NAME": graph,
           "READY_TIMEOUT_SECONDS": str(args.ready_timeout_minutes * 60),
           "STUCK_SECONDS": str(STUCK_MINUTES * 60),
           "UNSCHEDULABLE_SECONDS": str(UNSCHEDULABLE_MINUTES * 60)}
    container = {"name": "wait", "image": args.image, "command": job_code.run_module("graph_ready"),
                 "env": job_code.env_list(env), "resources": READY_RESOURCES,
                 # The report ends the log; the kubelet keeps its tail as the termination message,
                 # which pulumi-kubernetes shows when the Job fails (pulumi/pulumi-kubernetes
                 # provider/pkg/await/job.go: pod messages join a failed Job's error;
                 # checker/pod/check.go containerTerminatedError). FallbackToLogsOnError:
                 # https://kubernetes.io/docs/tasks/debug-application-cluster/determine-reason-pod-failure/
                 "terminationMessagePolicy": "FallbackToLogsOnError"}
    return {
        "backoffLimit": 0,  # a stuck graph stays stuck: the verdict stands
        "activeDeadlineSeconds": deadlines.graph_ready_seconds(args.ready_timeout_minutes),
        "template": job_code.job_template(
            container=container, lock=None, volumes=[], code_configmap=code_configmap,
            node_selector=args.cpu_node_selector, labels={"app.kubernetes.io/name": READY_APP, **PART_OF},
            annotations={job_code.DIGEST_ANNOTATION: code_sha},
            service_account=READY_APP, api_token=True),
    }


class ServingGraph(pulumi.ComponentResource):
    graph: k8s.apiextensions.CustomResource
    ready: k8s.batch.v1.Job  # complete once the graph is Ready; what follows the graph waits for it

    def __init__(self, name: str, args: ServingGraphArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("benchlab:workloads:ServingGraph", name, None, opts)
        manifest = args.manifest
        self.graph = k8s.apiextensions.CustomResource(
            f"{name}-dgd",
            api_version=manifest["apiVersion"], kind=manifest["kind"],
            metadata={**manifest["metadata"], "namespace": args.namespace},
            spec=manifest["spec"],
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=args.depends_on,
                # agg and disagg want the same GPUs: the old graph must be gone before the new
                # one can be scheduled, else the new one waits for GPUs until it times out.
                delete_before_replace=True))
        child = pulumi.ResourceOptions(parent=self, depends_on=args.depends_on)
        account, binding = job_code.namespaced_reader(
            f"{name}-ready-account", f"{name}-ready-read", READY_APP, args.namespace,
            [{"apiGroups": ["nvidia.com"], "resources": ["dynamographdeployments"], "verbs": ["get"]},
             {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
             {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}], child)
        graph = manifest["metadata"]["name"]
        # A change of the graph is a new wait: its spec's digest is in the Job's template.
        self.ready = job_code.code_job(
            self, f"{name}-ready", entry="graph_ready", lock=None, configmap_name=f"{name}-ready-code",
            namespace=args.namespace, app=READY_APP,
            spec=lambda code_map, code_sha: ready_job_spec(
                args, graph, code_map, job_code.digest({"code": code_sha, "graph": manifest["spec"]})),
            configmap_opts=child,
            depends_on=[self.graph, account, binding],
            timeout_minutes=math.ceil(deadlines.graph_ready_seconds(args.ready_timeout_minutes) / 60))
        if args.kvbm_metrics_port:
            # A PodMonitor needs kube-prometheus-stack's CRD: the graph waits for the Dynamo
            # platform, which waits for it.
            k8s.apiextensions.CustomResource(
                f"{name}-kvbm-metrics", api_version="monitoring.coreos.com/v1", kind="PodMonitor",
                metadata={"name": "kvbm-metrics", "namespace": args.namespace},
                spec={"selector": {"matchLabels": WORKER_ROLE},
                      "podMetricsEndpoints": [{"port": args.kvbm_metrics_port, "path": "/metrics"}]},
                opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on))
        self.register_outputs({"name": manifest["metadata"]["name"],
                               "frontendUrl": frontend_url(manifest["metadata"]["name"])})
