"""What the lab's Jobs share: how their Python code reaches the cluster, the pod they run in,
and how Pulumi waits for them.

The code: a ConfigMap, not an image of our own. The lab needs no registry, no build step and
no image scan; every Job runs the stock client image (facts/images.py: Python only, never the
~20 GB serving image) with the project's small, pure-Python modules mounted at
/opt/benchlab/jobs. Each Job ships only the modules its entry module imports (transitively),
so an edit to the report code does not replace, and so re-run, the GPU benchmarks. A digest of
what is shipped is in the pod template: a code change changes the template, and Pulumi
replaces the Job.

Third-party packages (AIPerf, boto3, huggingface_hub): the Job's wheel lock ships beside its
code, and an init container installs exactly those wheels, each checked against its sha256
(pip --require-hashes --no-deps, wheels only: no package code runs at install and nothing is
resolved), before the Job's own container starts. That init container holds no secret, no API
token and no AWS identity. A failed install fails the pod there: the Job never runs with
anything else. The holders of AWS credentials (export, GPU release) install from the wheelhouse
instead (components/wheelhouse.py: a credential-free Job downloads the same lock onto a claim they
mount read-only), so their pods need no internet at all; the hashes are checked there all the same.

The pod: restricted. A non-root user with no capabilities and a read-only root filesystem;
what a Job writes goes to its volumes or to an emptyDir scratch directory (HOME, pip --target
installs, caches). No service account token unless the Job reads the Kubernetes API.

Helpers for the components that create the lab's ConfigMaps and Jobs.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import json
from pathlib import Path
from typing import Callable

import pulumi
import pulumi_kubernetes as k8s

from components.base import PART_OF
from facts import images
from jobs import deadlines
from facts.wheel_locks import INSTALL_FLAGS, WheelLock

PACKAGE = "jobs"
PACKAGE_DIR = Path(__file__).resolve().parent.parent / PACKAGE
MOUNT_ROOT = "/opt/benchlab"  # on PYTHONPATH in the Jobs
CODE_VOLUME = "bench-code"
DIGEST_ANNOTATION = "benchlab.io/code-sha256"
SCRATCH = "/tmp"  # an emptyDir; HOME
DEPS = f"{SCRATCH}/deps"  # where the install init container puts the Job's locked wheels
INSTALL_CONTAINER = "install-locked-wheels"
INDEX_URL = "https://pypi.org/simple"  # where the locks were made (cli/lock_wheels.py)
# The wheelhouse claim, where a Job's install step reads its wheels from (read-only) instead of PyPI.
WHEELHOUSE_VOLUME = "wheelhouse"
WHEELHOUSE_MOUNT = "/wheelhouse"
PIP_QUIET = ("--no-cache-dir", "--disable-pip-version-check", "--no-input", "--progress-bar", "off")
# Any non-root uid will do: through an EFS access point every file operation is made as the
# access point's own POSIX user, whoever the client is.
RUN_AS = 10001
API_TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"  # where clients look for it
RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]}}
RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS,
                  "seccompProfile": {"type": "RuntimeDefault"}}


def module_closure(entry: str) -> list[str]:
    """File names of `jobs` modules `entry` (e.g. "entrypoint") needs, itself included."""
    todo, seen = [entry], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(_package_imports(PACKAGE_DIR / f"{name}.py"))
    return sorted(f"{name}.py" for name in seen | {"__init__"})


@functools.cache
def _package_imports(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PACKAGE:  # from jobs import modes, names
                found.update(alias.name for alias in node.names)
            elif node.module.startswith(PACKAGE + "."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names
                         if alias.name.startswith(PACKAGE + "."))
    return frozenset(name for name in found if (PACKAGE_DIR / f"{name}.py").exists())


def code_files(entry: str, lock: WheelLock | None) -> dict[str, str]:
    """ConfigMap data: file name -> source, for the closure of the entry module, and the
    wheel lock the Job installs (None: a standard-library Job installs nothing)."""
    return {**{name: (PACKAGE_DIR / name).read_text(encoding="utf-8")
               for name in module_closure(entry)},
            **({lock.file_name: lock.text()} if lock is not None else {})}


def immutable_config_map(resource_name: str, namespace: pulumi.Input[str], data: dict[str, str],
                         opts: pulumi.ResourceOptions) -> k8s.core.v1.ConfigMap:
    """A ConfigMap of code or plan that never changes in place: a change is a new one (and a
    new Job), so a running Job never sees its inputs change under it."""
    return k8s.core.v1.ConfigMap(resource_name, metadata={"namespace": namespace, "labels": PART_OF},
                                 data=data, immutable=True, opts=opts)


def code_job(parent: pulumi.Resource, job_name: str, *, entry: str, lock: WheelLock | None,
             configmap_name: str, namespace: pulumi.Input[str], app: str,
             spec: Callable[[pulumi.Input[str], str], dict],
             configmap_opts: pulumi.ResourceOptions, depends_on: list[pulumi.Resource],
             timeout_minutes: int) -> k8s.batch.v1.Job:
    """A Job running `jobs.<entry>` from its own code ConfigMap, with `lock`'s wheels.
    `spec(configmap name, code digest)` builds the Job spec."""
    code = code_files(entry, lock)
    code_map = immutable_config_map(configmap_name, namespace, code, configmap_opts)
    return k8s.batch.v1.Job(
        job_name,
        metadata={"namespace": namespace, "labels": {"app.kubernetes.io/name": app, **PART_OF}},
        spec=spec(code_map.metadata.name, digest(code)),
        opts=job_options(parent, depends_on, timeout_minutes))


def namespaced_reader(account_resource: str, role_resource: str, account: str,
                      namespace: pulumi.Input[str], rules: list[dict],
                      opts: pulumi.ResourceOptions) -> tuple[k8s.core.v1.ServiceAccount, k8s.rbac.v1.RoleBinding]:
    """A Job's service account bound to a Role of `rules` in its namespace."""
    service_account = k8s.core.v1.ServiceAccount(
        account_resource, metadata={"name": account, "namespace": namespace, "labels": PART_OF},
        opts=opts)
    role = k8s.rbac.v1.Role(role_resource, metadata={"namespace": namespace, "labels": PART_OF},
                            rules=rules, opts=opts)
    binding = k8s.rbac.v1.RoleBinding(
        role_resource, metadata={"namespace": namespace, "labels": PART_OF},
        role_ref={"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role.metadata.name},
        subjects=[{"kind": "ServiceAccount", "name": account, "namespace": namespace}], opts=opts)
    return service_account, binding


def digest(data: dict) -> str:
    """A stable content hash of ConfigMap-like data (or any JSON-able mapping)."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def run_module(module: str) -> list[str]:
    """The command of a Job's own container: its entry module, from the code ConfigMap."""
    return ["python", "-m", f"{PACKAGE}.{module}"]


def lock_file(lock: WheelLock) -> str:
    """Where a Job's pod sees its lock: beside its code."""
    return f"{MOUNT_ROOT}/{PACKAGE}/{lock.file_name}"


def wheel_dir(lock: WheelLock) -> str:
    """The lock's directory on the wheelhouse claim."""
    return f"{WHEELHOUSE_MOUNT}/{lock.name}"


def install_command(lock: WheelLock, from_wheelhouse: bool = False) -> list[str]:
    """Install exactly the locked wheels into DEPS (facts/wheel_locks.INSTALL_FLAGS): pip fails
    on any file whose sha256 is not in the lock, and resolves nothing, so neither a later
    release on the index nor the image's pip version changes what is installed. From the
    wheelhouse: that directory alone, no index (https://pip.pypa.io/en/stable/user_guide/#installing-from-local-packages)."""
    source = (["--no-index", "--find-links", wheel_dir(lock)] if from_wheelhouse
              else ["--index-url", INDEX_URL])
    return ["python", "-m", "pip", "install", *INSTALL_FLAGS, *PIP_QUIET, *source, "--target", DEPS,
            "-r", lock_file(lock)]


def env_list(values: dict) -> list[dict]:
    return [{"name": name, "value": value} for name, value in values.items()]


def job_template(*, container: dict, lock: WheelLock | None, volumes: list[dict],
                 code_configmap: pulumi.Input[str], node_selector: dict[str, str],
                 labels: dict[str, str], annotations: dict[str, str],
                 service_account: str | None = None, api_token: bool = False,
                 wheelhouse: str | None = None) -> dict:
    """A Job's pod template: `container` and `volumes` plus the code, the scratch directory,
    the install init container for `lock` (none without one), the restricted security contexts and, with
    `api_token`, a short-lived API token (for the Job's own container only). With `wheelhouse`
    (a claim's name) the install reads the lock's wheels from that claim, read-only, not from PyPI."""
    mounts = [{"name": CODE_VOLUME, "mountPath": f"{MOUNT_ROOT}/{PACKAGE}", "readOnly": True},
              {"name": "scratch", "mountPath": SCRATCH}]
    scratch = f"{images.CLIENT_JOB_SCRATCH_GIB}Gi"  # the installed wheels: counted on the node
    extra_volumes = [{"name": CODE_VOLUME, "configMap": {"name": code_configmap}},
                     {"name": "scratch", "emptyDir": {"sizeLimit": scratch}}]
    if api_token:
        # Projected by hand rather than automounted: only this Job gets one, bound to its pod.
        mounts.append({"name": "api-token", "mountPath": API_TOKEN_DIR, "readOnly": True})
        extra_volumes.append({"name": "api-token", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token", "expirationSeconds": 3600}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}}]}})
    # Unbuffered: the Job's log shows progress as it happens.
    common_env = env_list({"PYTHONUNBUFFERED": "1", "HOME": SCRATCH})
    install_mounts = mounts[:2]
    if wheelhouse is not None:
        # readOnly on the volume forces it on every mount of it:
        # https://kubernetes.io/docs/concepts/storage/volumes/#read-only-mounts
        install_mounts = [*install_mounts, {"name": WHEELHOUSE_VOLUME, "mountPath": WHEELHOUSE_MOUNT, "readOnly": True}]
        extra_volumes.append({"name": WHEELHOUSE_VOLUME,
                              "persistentVolumeClaim": {"claimName": wheelhouse, "readOnly": True}})
    install = None if lock is None else {
        "name": INSTALL_CONTAINER, "image": container["image"],
        "command": install_command(lock, from_wheelhouse=wheelhouse is not None),
        "env": common_env, "volumeMounts": install_mounts, "securityContext": RESTRICTED_CONTAINER,
        # pip unpacks one wheel at a time; the container's own requests cover the pod anyway
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
    }
    resources = container.get("resources", {})
    container = {
        **container,
        "resources": {**resources, "requests": {**resources.get("requests", {}),
                                                "ephemeral-storage": scratch}},
        "env": [*container.get("env", []), *common_env,
                *env_list({"PYTHONPATH": f"{DEPS}:{MOUNT_ROOT}"})],
        "volumeMounts": [*container.get("volumeMounts", []), *mounts],
        "securityContext": RESTRICTED_CONTAINER,
    }
    spec = {"restartPolicy": "Never", "automountServiceAccountToken": False,
            "nodeSelector": node_selector, "securityContext": RESTRICTED_POD,
            **({"initContainers": [install]} if lock is not None else {}), "containers": [container],
            "volumes": [*volumes, *extra_volumes]}
    if service_account:
        spec["serviceAccountName"] = service_account
    # IRSA's webhook injects the role's web identity token into every container, init
    # containers too, except those this annotation names (aws/amazon-eks-pod-identity-webhook
    # @9dafe2b:pkg/handler/handler.go getContainersToSkip): the install step gets no AWS identity.
    annotations = {**annotations, "eks.amazonaws.com/skip-containers": INSTALL_CONTAINER}
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": spec}


def job_options(parent: pulumi.Resource, depends_on: list[pulumi.Resource],
                timeout_minutes: int) -> pulumi.ResourceOptions:
    """Options of every Job of the lab. Pulumi waits for a Job to complete: as long as the Job
    may run (its activeDeadlineSeconds) and a minute more. Any change of the spec is a new Job
    (a Job's pod template is immutable, and a changed Job is new work to run)."""
    timeout = f"{deadlines.pulumi_wait_minutes(timeout_minutes)}m"
    return pulumi.ResourceOptions(
        parent=parent, depends_on=depends_on, replace_on_changes=["spec"],
        custom_timeouts=pulumi.CustomTimeouts(create=timeout, update=timeout))
