"""Run the Pulumi program offline, with mocked providers, and record what it registers.

Used by the tests and by `benchlab synth`. No Pulumi CLI or provider plugin is needed.

Why a monitor of our own: the stock MockMonitor decodes
requests with the SDK's async deserializer on a worker thread, which intermittently hangs
when resources are passed into remote components (pulumi/pulumi#6561); and its
MockResourceArgs carries no dependencies. Here every request is decoded synchronously with
protobuf's json_format, and the recording keeps inputs, parent, dependencies, provider and
custom timeouts of every resource.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import pulumi
from google.protobuf import json_format, struct_pb2
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime.proto import resource_pb2
from pulumi.runtime.settings import SETTINGS, get_root_resource, set_root_resource
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

# Pulumi's wire encoding of special values inside a protobuf Struct.
_SIG = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
_RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
_OUTPUT_SIG = "d0e6a833031e9bbcd3f4e8bde6ca49a4"
_ASSET_SIGS = {"c44067f5952c0a294b673a41bacd8c17", "0def7320c3a5731c473e5ecbe6d01bc7"}

REDACTED = "[secret]"


@dataclass(frozen=True)
class Secret:
    """A value Pulumi carries as secret."""
    value: Any


@dataclass(frozen=True)
class Ref:
    """A resource passed by reference (e.g. a resource given to a remote component)."""
    urn: str


def decode(value: Any, refs: set[str]) -> Any:
    """Turn a JSON-decoded Pulumi Struct value into plain data with Secret/Ref markers."""
    if isinstance(value, dict):
        sig = value.get(_SIG)
        if sig == _SECRET_SIG:
            return Secret(decode(value.get("value"), refs))
        if sig == _RESOURCE_SIG:
            refs.add(value["urn"])
            return Ref(value["urn"])
        if sig == _OUTPUT_SIG:
            refs.update(value.get("dependencies") or [])
            inner = decode(value.get("value"), refs)
            return Secret(inner) if value.get("secret") else inner
        if sig in _ASSET_SIGS:
            return {k: v for k, v in value.items() if k != _SIG}
        return {k: decode(v, refs) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v, refs) for v in value]
    return value


def plain(value: Any, reveal: bool = False) -> Any:
    """Data with markers removed: secrets redacted (or revealed), refs as their URN."""
    if isinstance(value, Secret):
        return plain(value.value, reveal) if reveal else REDACTED
    if isinstance(value, Ref):
        return value.urn
    if isinstance(value, dict):
        return {k: plain(v, reveal) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v, reveal) for v in value]
    return value


def _encode(value: Any) -> Any:
    """Plain mock state back to Pulumi's wire form (Secret markers become secrets)."""
    if isinstance(value, Secret):
        return {_SIG: _SECRET_SIG, "value": _encode(value.value)}
    if isinstance(value, Ref):
        return value.urn
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    return value


def _struct(state: dict) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    json_format.ParseDict(_encode(state), out)
    return out


@dataclass
class Resource:
    type: str
    name: str
    urn: str
    parent: str
    inputs: dict
    dependencies: set[str]
    custom: bool
    remote: bool
    provider: str
    custom_timeouts: dict
    options: dict = field(default_factory=dict)

    def plain_inputs(self, reveal: bool = False) -> dict:
        return plain(self.inputs, reveal)


class Recording:
    """What one offline run registered, with its dependency graph."""

    def __init__(self) -> None:
        self.resources: dict[str, Resource] = {}
        self.stack_outputs: dict[str, Any] = {}

    # --- lookups -------------------------------------------------------------------------
    def of_type(self, type_: str) -> list[Resource]:
        return [r for r in self.resources.values() if r.type == type_]

    def one(self, type_: str, name: str | None = None) -> Resource:
        found = [r for r in self.of_type(type_) if name is None or r.name == name]
        if len(found) != 1:
            names = sorted(r.name for r in self.of_type(type_))
            raise LookupError(f"expected one {type_} named {name!r}, found {len(found)}; "
                              f"registered names of that type: {names}")
        return found[0]

    def named(self, name: str) -> Resource:
        found = [r for r in self.resources.values() if r.name == name]
        if len(found) != 1:
            raise LookupError(f"expected one resource named {name!r}, found {len(found)}")
        return found[0]

    def children(self, urn: str) -> list[Resource]:
        """Every resource below `urn` in the parent tree."""
        out, todo = [], [urn]
        while todo:
            parent = todo.pop()
            kids = [r for r in self.resources.values() if r.parent == parent]
            out.extend(kids)
            todo.extend(k.urn for k in kids)
        return out

    # --- the dependency graph ------------------------------------------------------------
    def _subtree(self, urn: str) -> set[str]:
        return {urn} | {r.urn for r in self.children(urn)}

    def waits_for(self, later: Resource | str, earlier: Resource | str) -> bool:
        """True when `later` (or anything below it) transitively depends on `earlier`
        (or anything below it): Pulumi will not create `later` before `earlier` exists."""
        later_urn = later if isinstance(later, str) else later.urn
        earlier_urn = earlier if isinstance(earlier, str) else earlier.urn
        targets = self._subtree(earlier_urn)
        seen: set[str] = set()
        todo = list(self._subtree(later_urn))
        while todo:
            urn = todo.pop()
            if urn in seen:
                continue
            seen.add(urn)
            res = self.resources.get(urn)
            if res is None:
                continue
            for dep in res.dependencies:
                if dep in targets:
                    return True
                todo.extend(self._subtree(dep))
        return False


# Outputs every mocked resource gets, so that no output used downstream is None (a None
# input silently drops the dependency edge it would carry).
def _default_state(type_: str, name: str, inputs: dict) -> dict:
    service = type_.split(":")[1].split("/")[0] if type_.count(":") >= 2 else "x"
    return {
        "id": f"{name}-id",
        "arn": f"arn:aws:{service}:us-east-1:123456789012:{name}",
        "name": inputs.get("name", name),
    }


class ProgramMocks(pulumi_mocks.Mocks):
    """Outputs of the resources and invokes the lab uses. `extra` maps a resource type to
    a function(name, inputs) -> dict of outputs that overrides the defaults."""

    def __init__(self, extra: dict[str, Callable[[str, dict], dict]] | None = None):
        self.extra = dict(extra or {})

    def new_resource(self, args: pulumi_mocks.MockResourceArgs):
        inputs = plain(args.inputs, reveal=True)
        state = _default_state(args.typ, args.name, inputs)
        if args.custom:  # a remote component's outputs are not its inputs
            state.update(args.inputs)
        if args.typ.startswith("kubernetes:") and isinstance(state.get("metadata"), dict):
            # Other objects refer to an auto-named one by its name (a Job to its ConfigMap).
            state["metadata"] = {"name": k8s_auto_name(args.name), **state["metadata"]}
        make = self.extra.get(args.typ)
        if make:
            state.update(make(args.name, inputs))
        return state["id"], state

    def call(self, args: pulumi_mocks.MockCallArgs):
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": "123456789012", "arn": "arn:aws:iam::123456789012:user/lab",
                    "userId": "lab", "id": "123456789012"}
        if args.token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}
        if args.token == "aws:index/getRegion:getRegion":
            return {"name": "us-east-1", "region": "us-east-1", "id": "us-east-1"}
        return {}


class RecordingMonitor(pulumi_mocks.MockMonitor):
    def __init__(self, mocks: ProgramMocks, recording: Recording):
        super().__init__(mocks)
        self.recording = recording

    def RegisterResource(self, request):
        urn = self.make_urn(request.parent, request.type, request.name)
        if request.type == "pulumi:pulumi:Stack":
            return resource_pb2.RegisterResourceResponse(urn=urn)
        refs: set[str] = set()
        inputs = decode(json_format.MessageToDict(request.object), refs)
        deps = set(request.dependencies) | refs
        if request.provider:  # "<urn>::<id>": the provider is created first
            deps.add(request.provider.rsplit("::", 1)[0])
        for prop in request.propertyDependencies.values():
            deps.update(prop.urns)
        timeouts = {k: v for k, v in json_format.MessageToDict(request.customTimeouts).items() if v}
        self.recording.resources[urn] = Resource(
            type=request.type, name=request.name, urn=urn, parent=request.parent,
            inputs=inputs, dependencies=deps, custom=request.custom, remote=request.remote,
            provider=request.provider, custom_timeouts=timeouts,
            options={"retain_on_delete": request.retainOnDelete, "protect": request.protect,
                     "delete_before_replace": request.deleteBeforeReplace,
                     "ignore_changes": list(request.ignoreChanges), "version": request.version,
                     "replace_on_changes": list(request.replaceOnChanges),
                     # package -> provider reference, sent for components (remote ones above all)
                     "providers": dict(request.providers)},
        )
        if not request.custom and not request.remote:
            return resource_pb2.RegisterResourceResponse(urn=urn)  # local component
        id_, state = self.mocks.new_resource(pulumi_mocks.MockResourceArgs(
            typ=request.type, name=request.name, inputs=inputs, provider=request.provider,
            custom=request.custom))
        self.resources[urn] = pulumi_mocks.MockMonitor.ResourceRegistration(urn, id_, plain(state, True))
        return resource_pb2.RegisterResourceResponse(urn=urn, id=id_ or "", object=_struct(state))

    def Invoke(self, request):
        args = plain(decode(json_format.MessageToDict(request.args), set()), True)
        if request.tok == "pulumi:pulumi:getResource":  # rehydrating a resource reference
            found = self.resources[args["urn"]]
            reply = {"urn": found.urn, "id": found.id, "state": found.state}
            return resource_pb2.ResourceInvokeResponse(**{"return": _struct(reply)})
        result = self.mocks.call(pulumi_mocks.MockCallArgs(request.tok, args, request.provider))
        return resource_pb2.ResourceInvokeResponse(**{"return": _struct(result)})


def set_config(values: dict[str, Any], namespace: str, secret_keys: Iterable[str] = ()) -> None:
    """Stack config as `pulumi config set` would store it: objects as JSON strings."""
    config = {f"{namespace}:{k}": v if isinstance(v, str) else json.dumps(v)
              for k, v in values.items()}
    pulumi.runtime.set_all_config(config, [f"{namespace}:{k}" for k in secret_keys])


def run(program: Callable[[], Any], *, stack: str = "dev", project: str = "benchlab",
        mocks: ProgramMocks | None = None, recording: Recording | None = None) -> Recording:
    """Run `program` under mocks (config must be set first); return what it registered.
    An exception raised by the program propagates, after the run is torn down; pass your
    own `recording` to see what was registered before it."""
    recording = Recording() if recording is None else recording
    monitor = RecordingMonitor(mocks or ProgramMocks(), recording)
    set_root_resource(None)  # a fresh root Stack per run, so exports do not leak between runs
    pulumi.runtime.set_mocks(monitor.mocks, project=project, stack=stack, preview=False,
                             monitor=monitor)
    SETTINGS.rpc_manager.clear()
    SETTINGS.outputs.clear()

    async def program_and_exports():
        program()
        # The mock root Stack registered its (then empty) outputs at creation: resolve the
        # exports here instead.
        for key, value in get_root_resource().outputs.items():
            out = pulumi.Output.from_input(value)
            resolved = await out.future(with_unknowns=True)
            recording.stack_outputs[key] = Secret(resolved) if await out.is_secret() else resolved

    _sync_await(run_pulumi_func(program_and_exports))
    return recording


def _eks_cluster_outputs(name: str, inputs: dict) -> dict:
    cluster = inputs.get("name", name)
    kubeconfig = {"apiVersion": "v1", "kind": "Config", "clusters": [{"name": cluster, "cluster": {
        "server": f"https://{cluster}.eks.example", "certificate-authority-data": "Q0E="}}]}
    return {
        "kubeconfig": Secret(kubeconfig),
        "kubeconfigJson": Secret(json.dumps(kubeconfig)),
        "clusterSecurityGroupId": f"sg-{cluster}-cluster",
        "nodeSecurityGroupId": f"sg-{cluster}-node",
        "oidcProviderArn": f"arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/{cluster}",
        "oidcProviderUrl": f"oidc.eks.us-east-1.amazonaws.com/id/{cluster}",
        "oidcIssuer": f"oidc.eks.us-east-1.amazonaws.com/id/{cluster}",
    }


def k8s_auto_name(name: str) -> str:
    """The name pulumi-kubernetes gives an object without metadata.name: `<resource name>-<8
    hex>` (random there, derived from the name here so runs and `benchlab synth` agree)."""
    return f"{name}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def _bucket_outputs(name: str, inputs: dict) -> dict:
    # S3 completes a bucket_prefix with a 26-character unique suffix.
    bucket = inputs.get("bucket") or (inputs["bucketPrefix"] + "0" * 26 if "bucketPrefix" in inputs else name)
    return {"id": bucket, "bucket": bucket, "arn": f"arn:aws:s3:::{bucket}"}


MOCK_S3_CIDRS = ("52.216.0.0/15", "54.231.0.0/16", "3.5.0.0/19")


# Outputs of the resources whose defaults are not enough (remote components' outputs above all:
# under mocks their children are never created).
LAB_OUTPUTS: dict[str, Callable[[str, dict], dict]] = {
    "eks:index:Cluster": _eks_cluster_outputs,
    "eks:index:ManagedNodeGroup": lambda name, inputs: {
        "placementGroupName": f"{name}-pg" if inputs.get("placementGroupAvailabilityZone") else ""},
    "aws:ec2/vpc:Vpc": lambda name, inputs: {"id": f"vpc-{name}"},
    "aws:ec2/subnet:Subnet": lambda name, inputs: {"id": f"subnet-{name}"},
    "aws:ec2/securityGroup:SecurityGroup": lambda name, inputs: {"id": f"sg-{name}"},
    "aws:efs/fileSystem:FileSystem": lambda name, inputs: {"id": f"fs-{name}"},
    "aws:s3/bucket:Bucket": lambda name, inputs: _bucket_outputs(name, inputs),
    "aws:ec2/launchTemplate:LaunchTemplate": lambda name, inputs: {"id": f"lt-{name}", "latestVersion": 1},
    "aws:iam/role:Role": lambda name, inputs: {"arn": f"arn:aws:iam::123456789012:role/{name}"},
    # An archive input comes back decoded as a plain dict, which the SDK refuses as an output.
    "aws:lambda/function:Function": lambda name, inputs: {"code": None},
    # A gateway endpoint exposes its service's prefix-list CIDRs (stand-ins shaped like S3's).
    "aws:ec2/vpcEndpoint:VpcEndpoint": lambda name, inputs: {
        "cidrBlocks": list(MOCK_S3_CIDRS) if inputs.get("vpcEndpointType") == "Gateway" else []},
    "kubernetes:helm.sh/v3:Release": lambda name, inputs: {
        "status": {"name": inputs.get("name", name), "namespace": inputs.get("namespace", "default"),
                   "status": "deployed", "version": inputs.get("version", "")}},
    # A generated password is a secret output that is not among the inputs.
    "random:index/randomPassword:RandomPassword": lambda name, inputs: {
        "result": Secret(f"mock-password-{name}")},
}


def run_program(config: dict[str, Any], secrets: dict[str, str] | None = None, *,
            stack: str = "dev", mocks: ProgramMocks | None = None,
            recording: Recording | None = None) -> Recording:
    """Run the lab's Pulumi program (what __main__.py does) offline with `config` (keys
    without the `benchlab:` prefix) and `secrets` (set as secret config)."""
    from stacks import config as lab_config
    from stacks import compose

    set_config({**config, **(secrets or {})}, lab_config.NAMESPACE, secret_keys=(secrets or {}).keys())

    def program() -> None:
        cfg, lab_secrets = lab_config.load()
        compose.build(cfg, lab_secrets, pulumi.get_stack())

    return run(program, stack=stack, mocks=mocks or ProgramMocks(LAB_OUTPUTS), recording=recording)


# TEST ONLY. The shipped stack files' publicAccessCidrs placeholder (a documentation range) is
# refused by validation, by `pulumi up` as by preflight. Offline runs of those files (the tests,
# `benchlab synth`, `cost`, `plan`) put this CIDR in its place and say so; it never reaches AWS,
# and `pulumi up` reads the file itself. Globally reachable: validation refuses any other kind.
TEST_PUBLIC_ACCESS_CIDR = "1.2.3.4/32"


def placeholder_cidrs(values: dict[str, Any]) -> list[str]:
    """The publicAccessCidrs entries in a documentation range: the shipped placeholder."""
    import ipaddress

    from stacks.config import DOCUMENTATION_NETS

    cidrs = values.get("publicAccessCidrs")
    found = []
    for cidr in cidrs if isinstance(cidrs, list) else []:
        try:
            network = ipaddress.IPv4Network(cidr)
        except (TypeError, ValueError):
            continue  # validation names it
        if any(network.subnet_of(net) for net in DOCUMENTATION_NETS):
            found.append(cidr)
    return found


def stack_config(path: str, *, test_cidr: bool = True) -> dict[str, Any]:
    """The `benchlab:` keys of a Pulumi.<stack>.yaml, prefix removed. With `test_cidr` (offline
    runs), a placeholder CIDR is replaced by TEST_PUBLIC_ACCESS_CIDR; without, the file as
    written: what `pulumi up` validates."""
    import yaml

    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f) or {}
    prefix = "benchlab:"
    values = {k[len(prefix):]: v for k, v in (doc.get("config") or {}).items() if k.startswith(prefix)}
    return with_test_cidr(values) if test_cidr else values


def with_test_cidr(values: dict[str, Any]) -> dict[str, Any]:
    """`values` with its placeholder CIDRs (if any) replaced by TEST_PUBLIC_ACCESS_CIDR."""
    placeholders = placeholder_cidrs(values)
    if not placeholders:
        return values
    kept = [c for c in values["publicAccessCidrs"] if c not in placeholders]
    return {**values, "publicAccessCidrs": kept + [TEST_PUBLIC_ACCESS_CIDR]}
