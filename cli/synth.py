"""`benchlab synth`: run the Pulumi program offline (mocked providers, as the tests do) and write
what it would create, for review before `pulumi up` and for applying the Kubernetes layer by
hand to an existing cluster.

    <out>/k8s/NNN-<kind>-<namespace>-<name>.yaml   one Kubernetes object per file, NNN = order
    <out>/helm/<release>.values.yaml               each Helm release's values (chart in the header)
    <out>/helm/releases.yaml                       chart, repository, version, namespace of each
    <out>/apply-order.sh                           helm/kubectl commands in dependency order
    <out>/graph.mmd, graph.txt                     resources and their dependencies
    <out>/aws/resources.yaml                       every other resource (AWS, EKS, providers)
    <out>/outputs.yaml                             the stack outputs

Secrets are redacted: every value Pulumi carries as secret, and any secret config value found
in plain text anywhere (then reported as a leak: a component forgot to mark it secret).
"""
from __future__ import annotations

import argparse
import base64
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cli import offline, stack_file
from cli.cli import CliError

HELP = "render every Kubernetes manifest, Helm values and the dependency graph offline"

MARKER = ".lab-synth"  # marks a directory synth owns and may empty
HELM_TYPES = ("kubernetes:helm.sh/v3:Release", "kubernetes:helm.sh/v4:Chart")


@dataclass
class Written:
    files: list[Path] = field(default_factory=list)
    leaks: list[Path] = field(default_factory=list)  # files where a plain secret was scrubbed


# ---------------------------------------------------------------------------------------
# Running the program
# ---------------------------------------------------------------------------------------
@dataclass
class Synthesis:
    recording: offline.Recording
    error: Exception | None  # the program failed part-way: the recording holds what came before


def synthesize(config: dict[str, Any], secrets: dict[str, str] | None, stack: str) -> Synthesis:
    recording = offline.Recording()
    try:
        offline.run_program(config, secrets, stack=stack, recording=recording)
    except Exception as err:  # the program's own error, reported with what it registered
        return Synthesis(recording, err)
    return Synthesis(recording, None)


# ---------------------------------------------------------------------------------------
# Redaction
# ---------------------------------------------------------------------------------------
def redact(value: Any) -> Any:
    """Plain data with every secret leaf replaced; a secret mapping keeps its keys, so a
    redacted Secret's `stringData` is still a mapping (and still a valid object). Whole
    numbers, which Pulumi's wire format carries as floats, are integers again (`replicas: 1`)."""
    if isinstance(value, offline.Secret):
        return _redact_leaves(value.value)
    if isinstance(value, offline.Ref):
        return value.urn
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _redact_leaves(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _redact_leaves(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_leaves(v) for v in value]
    return offline.REDACTED


class Scrubber:
    """Replaces known secret values (and their base64 forms) in text."""

    def __init__(self, secrets: list[str]):
        forms = set()
        for secret in secrets:
            if secret:
                forms.add(secret)
                forms.add(base64.b64encode(secret.encode()).decode())
        self.pattern = re.compile("|".join(map(re.escape, sorted(forms, key=len, reverse=True)))) if forms else None

    def __call__(self, text: str) -> tuple[str, bool]:
        if self.pattern is None:
            return text, False
        scrubbed, count = self.pattern.subn(offline.REDACTED, text)
        return scrubbed, count > 0


# ---------------------------------------------------------------------------------------
# What is written
# ---------------------------------------------------------------------------------------
def is_kubernetes_object(res: offline.Resource) -> bool:
    """A Kubernetes object the provider applies itself (not a Helm chart, not a component)."""
    return res.custom and res.type.startswith("kubernetes:") and res.type not in HELM_TYPES


def kubernetes_object(res: offline.Resource) -> dict[str, Any]:
    """The object Pulumi would apply: apiVersion/kind/metadata first, then the rest. An object
    without metadata.name gets the name the mocks gave it, which other objects refer to."""
    inputs = redact(res.inputs)
    group_version, kind = res.type[len("kubernetes:"):].rsplit(":", 1)
    api_version = inputs.pop("apiVersion", group_version.removeprefix("core/"))
    kind = inputs.pop("kind", kind)
    metadata = {"name": offline.k8s_auto_name(res.name), **inputs.pop("metadata", {})}
    return {"apiVersion": api_version, "kind": kind, "metadata": metadata, **inputs}


def helm_release(res: offline.Resource) -> dict[str, Any]:
    inputs = redact(res.inputs)
    return {"name": inputs.get("name", res.name), "namespace": inputs.get("namespace", "default"),
            "chart": inputs.get("chart"), "repo": (inputs.get("repositoryOpts") or {}).get("repo"),
            "version": inputs.get("version"), "pulumiType": res.type, "pulumiName": res.name,
            "values": inputs.get("values") or {},
            **{k: inputs[k] for k in ("postRenderer", "skipAwait", "timeout", "skipCrds") if k in inputs}}


def topological(recording: offline.Recording) -> list[offline.Resource]:
    """Resources in an order they can be created: dependencies and parents first, and, as
    the API server requires, a Namespace the program creates before what goes into it;
    registration order among equals."""
    resources = list(recording.resources.values())
    position = {r.urn: i for i, r in enumerate(resources)}
    namespace_urns = {(r.inputs.get("metadata") or {}).get("name"): r.urn
                      for r in recording.of_type("kubernetes:core/v1:Namespace")}

    def before(res: offline.Resource) -> set[str]:
        urns = res.dependencies | {res.parent}
        if res.type.startswith("kubernetes:"):
            namespace = (res.inputs.get("metadata") or {}).get("namespace") or res.inputs.get("namespace")
            urns.add(namespace_urns.get(namespace, ""))
        return {u for u in urns if u in position and u != res.urn}

    done: set[str] = set()
    ordered: list[offline.Resource] = []
    pending = resources
    while pending:
        ready = [r for r in pending if before(r) <= done] or pending[:1]  # a cycle: break it
        first = min(ready, key=lambda r: position[r.urn])
        ordered.append(first)
        done.add(first.urn)
        pending = [r for r in pending if r.urn != first.urn]
    return ordered


def short_type(res: offline.Resource) -> str:
    """`Vpc` for aws:ec2/vpc:Vpc, `provider:aws` for pulumi:providers:aws."""
    if res.type.startswith("pulumi:providers:"):
        return "provider:" + res.type.rsplit(":", 1)[-1]
    return res.type.rsplit(":", 1)[-1]


def label(res: offline.Resource) -> str:
    return f"{res.name} ({short_type(res)})"


def graph_text(ordered: list[offline.Resource], recording: offline.Recording) -> str:
    lines = ["# Resources in creation order; `after` = what each waits for (direct dependencies).",
             "# `pulumi destroy` deletes in the reverse order."]
    for i, res in enumerate(ordered, 1):
        parent = recording.resources.get(res.parent)
        lines.append(f"{i:4}. {res.type}  {res.name}" + (f"  (in {parent.name})" if parent else ""))
        deps = sorted(label(recording.resources[d]) for d in res.dependencies if d in recording.resources)
        if deps:
            lines.append(f"        after: {', '.join(deps)}")
    return "\n".join(lines) + "\n"


def graph_mermaid(ordered: list[offline.Resource], recording: offline.Recording) -> str:
    """Mermaid flowchart: components as subgraphs, an edge from each dependency to its dependent."""
    ids = {res.urn: f"n{i}" for i, res in enumerate(ordered)}
    children: dict[str, list[offline.Resource]] = {}
    for res in ordered:
        children.setdefault(res.parent if res.parent in ids else "", []).append(res)

    def text(res: offline.Resource) -> str:
        return f"{short_type(res)}<br/>{res.name}".replace('"', "#quot;")

    lines = ["flowchart LR"]

    def emit(parent: str, depth: int) -> None:
        pad = "  " * depth
        for res in children.get(parent, []):
            if res.urn in children:
                lines.append(f'{pad}subgraph {ids[res.urn]}["{text(res)}"]')
                emit(res.urn, depth + 1)
                lines.append(f"{pad}end")
            else:
                lines.append(f'{pad}{ids[res.urn]}["{text(res)}"]')

    emit("", 1)
    for res in ordered:
        for dep in sorted(d for d in res.dependencies if d in ids and d != res.urn):
            lines.append(f"  {ids[dep]} --> {ids[res.urn]}")
    return "\n".join(lines) + "\n"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-") or "_"


def _yaml(doc: Any, header: str = "") -> str:
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120)
    return "".join(f"# {line}\n" for line in header.splitlines()) + body


def write(recording: offline.Recording, out: Path, secret_values: list[str] = ()) -> Written:
    """Write everything the recording holds under `out` (which synth owns: see prepare())."""
    written = Written()
    scrub = Scrubber(list(secret_values))

    def emit(relative: str, text: str) -> None:
        text, leaked = scrub(text)
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        written.files.append(path)
        if leaked:
            written.leaks.append(path)

    ordered = topological(recording)
    commands = ["#!/bin/sh",
                "# The Kubernetes layer in dependency order, for an existing cluster (kubectl",
                "# context set). Files holding '[secret]' need their real values first.",
                "set -eu", 'cd "$(dirname "$0")"']
    releases = []
    for i, res in enumerate(ordered):
        if res.type in HELM_TYPES:
            release = helm_release(res)
            values_file = f"helm/{_slug(release['name'])}.values.yaml"
            header = (f"{release['name']}: chart {release['chart']} {release['version']} from "
                      f"{release['repo']}, namespace {release['namespace']}")
            emit(values_file, _yaml(release.pop("values"), header))
            releases.append({**release, "valuesFile": values_file})
            commands.append(_helm_command(release, values_file))
        elif is_kubernetes_object(res):
            obj = kubernetes_object(res)
            meta = obj["metadata"]
            name = f"k8s/{i:03d}-{_slug(obj['kind'])}-{_slug(meta.get('namespace', '_'))}-{_slug(meta['name'])}.yaml"
            emit(name, _yaml(obj, f"pulumi: {res.type} {res.name}"))
            commands.extend(_kubectl_commands(obj, res, name))
    emit("helm/releases.yaml", _yaml(releases))
    emit("apply-order.sh", "\n".join(commands) + "\n")
    others = [{"type": r.type, "name": r.name, "inputs": redact(r.inputs)} for r in ordered
              if (r.custom or r.remote) and r.type not in HELM_TYPES and not is_kubernetes_object(r)]
    emit("aws/resources.yaml", _yaml(others, "every resource besides Kubernetes objects and Helm "
                                              "charts (AWS, EKS, providers), in creation order"))
    emit("outputs.yaml", _yaml(redact(recording.stack_outputs)))
    emit("graph.txt", graph_text(ordered, recording))
    emit("graph.mmd", graph_mermaid(ordered, recording))
    return written


def _helm_command(release: dict, values_file: str) -> str:
    # Pulumi waits for a release's resources unless told not to (skipAwait): so does helm.
    options = "" if release.get("skipAwait") else " --wait"
    if release.get("timeout"):
        options += f" --timeout {release['timeout']}s"
    renderer = release.get("postRenderer")
    if renderer:
        options += f" --post-renderer {renderer['command']}" + "".join(
            f" --post-renderer-args {shlex.quote(arg)}" for arg in renderer.get("args", []))
    return (f"helm upgrade --install {release['name']} {release['chart']} --repo {release['repo']} "
            f"--version {release['version']} --namespace {release['namespace']} --create-namespace "
            f"-f {values_file}{options}")


def _kubectl_commands(obj: dict, res: offline.Resource, path: str) -> list[str]:
    commands = [f"kubectl apply --server-side -f {path}"]
    meta = obj["metadata"]
    target = f"{obj['kind'].lower()}/{meta['name']}" + (f" -n {meta['namespace']}" if meta.get("namespace") else "")
    timeout = res.custom_timeouts.get("create", "10m")
    wait_for = (meta.get("annotations") or {}).get("pulumi.com/waitFor")
    if wait_for:
        commands.append(f"kubectl wait --for={wait_for} {target} --timeout={timeout}")
    elif obj["kind"] == "Job":  # Pulumi waits for a Job to complete
        commands.append(f"kubectl wait --for=condition=complete {target} --timeout={timeout}")
    return commands


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------
def prepare(out: Path) -> None:
    """Empty `out` if synth wrote it before; refuse a non-empty directory synth does not own."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise CliError(f"{out} is not empty and was not written by benchlab synth; "
                           "choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by `benchlab synth`; emptied on the next synth\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    stack_file.add_stack_argument(parser)
    parser.add_argument("--out", type=Path, help="output directory (default: synth-out/<stack>)")


def run(args: argparse.Namespace) -> int:
    stack = stack_file.load(args.stack)
    stack.config()  # a bad config is reported as such, before the program runs
    # Secret config cannot be decrypted here: the program gets placeholders (always redacted).
    secrets = {key: f"synth-placeholder-{key}" for key in stack.secret_keys}
    out = args.out or Path("synth-out") / stack.name
    prepare(out)
    synthesis = synthesize(stack.values, secrets, stack.name)
    written = write(synthesis.recording, out, list(secrets.values()))
    objects = sum(1 for f in written.files if f.parent.name == "k8s")
    print(f"wrote {len(written.files)} files to {out}: {objects} Kubernetes objects, "
          f"{len(synthesis.recording.resources)} resources in the graph")
    if stack.test_cidr_replaced:
        print(f"note: publicAccessCidrs {', '.join(stack.test_cidr_replaced)} (the stack file's "
              f"placeholder) rendered as the test CIDR {offline.TEST_PUBLIC_ACCESS_CIDR}; "
              "`pulumi up` refuses the file until you set your own")
    for path in written.leaks:
        print(f"warning: a secret value was in plain text in {path} (scrubbed); "
              "the resource behind it must mark it secret")
    if synthesis.error is not None:
        raise CliError(f"the program failed part-way ({type(synthesis.error).__name__}: "
                       f"{synthesis.error}); {out} holds what it registered before")
    return 1 if written.leaks else 0
