"""The results contract shared by the local lab, the cloud Jobs and the report.

Layout of one run:
    <root>/<run_id>/<graph>/manifest.json       what ran: graph, nodes, workers, versions, simulated
    <root>/<run_id>/<graph>/<mode>/status.json  how one benchmark mode ended
    <root>/<run_id>/<graph>/<mode>/<step>/...   one AIPerf artifact directory per step
    <root>/<run_id>/<graph>/exported.json       (cloud) when the export had the run in S3
    <root>/<run_id>/<graph>/.attempts/<mode>-N/ an unfinished or abandoned attempt, kept

No Pulumi import: this module runs inside the cluster Jobs too.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jobs.names import GPU_GROUPS, GRAPHS

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"
STATUS_FILE = "status.json"
EXPORTED_FILE = "exported.json"
# Extra manifest key of a run whose model was stood in for (the local lab): what served instead.
STAND_IN = "stand_in"
# Extra manifest key: the times the local lab restarted a graph that stopped answering.
GRAPH_RESTARTS = "graph_restarts"
STATUSES = ("ok", "failed", "skipped")
ATTEMPTS_DIR = ".attempts"


class ManifestError(ValueError):
    """A manifest or status file that cannot be used: which file, and which key is wrong."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True)
class NodeGroup:
    role: str
    instance_type: str
    count: int
    gpus_per_node: int

    @property
    def gpus(self) -> int:
        return self.count * self.gpus_per_node


@dataclass(frozen=True)
class WorkerSpec:
    replicas: int
    tp: int


@dataclass(frozen=True)
class RunManifest:
    run_id: str
    graph: str
    simulated: bool
    profile: str
    created: str  # ISO 8601; the report picks the newest run per graph by it
    versions: dict[str, str]
    model: str
    nodes: list[NodeGroup]
    workers: dict[str, WorkerSpec]
    # Keys the cloud Jobs add (config_hash, dgd_spec, placement): kept, not interpreted.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def total_gpus(self) -> int:
        return sum(group.gpus for group in self.nodes)

    @property
    def nodes_summary(self) -> str:
        """e.g. "1x p4d.24xlarge (prefill) + 2x g6e.12xlarge (decode)"."""
        return " + ".join(f"{group.count}x {group.instance_type} ({group.role})"
                          for group in self.nodes)

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        extra = body.pop("extra")
        return {"schema": SCHEMA_VERSION, **body, **extra}


@dataclass(frozen=True)
class ModeStatus:
    status: str
    error: str | None
    started: str
    finished: str
    planned_seconds: float
    steps: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def write_manifest(graph_dir: Path, manifest: RunManifest) -> Path:
    _check_manifest(manifest.to_json(), graph_dir / MANIFEST_FILE)
    return _write_json(graph_dir / MANIFEST_FILE, manifest.to_json())


def read_manifest(graph_dir: Path) -> RunManifest:
    path = graph_dir / MANIFEST_FILE
    body = _read_json(path)
    _check_manifest(body, path)
    known = {"schema", "run_id", "graph", "simulated", "profile", "created", "versions", "model",
             "nodes", "workers"}
    return RunManifest(
        run_id=body["run_id"], graph=body["graph"], simulated=body["simulated"],
        profile=body["profile"], created=body["created"], versions=dict(body["versions"]),
        model=body["model"],
        nodes=[NodeGroup(**group) for group in body["nodes"]],
        workers={role: WorkerSpec(**spec) for role, spec in body["workers"].items()},
        extra={key: value for key, value in body.items() if key not in known},
    )


def with_extra(manifest: RunManifest, key: str, value: Any) -> RunManifest:
    """The manifest with one more recorded key (e.g. the GPU release's record)."""
    return dataclasses.replace(manifest, extra={**manifest.extra, key: value})


def write_exported(graph_dir: Path, finished: dt.datetime, bucket: str) -> Path:
    """The export's marker: the run is in `bucket` since `finished` (what the GPU release waits for)."""
    stamp = finished.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return _write_json(graph_dir / EXPORTED_FILE, {"finished": stamp, "bucket": bucket})


def read_exported(graph_dir: Path) -> dt.datetime | None:
    """When the export finished; None when it has not (no marker)."""
    path = graph_dir / EXPORTED_FILE
    if not path.exists():
        return None
    finished = _require(_read_json(path), "finished", str, path)
    try:
        return dt.datetime.fromisoformat(finished)
    except ValueError:
        raise ManifestError(path, f"key 'finished' is not an ISO 8601 time: {finished!r}") from None


def write_status(mode_dir: Path, status: ModeStatus) -> Path:
    _check_status(status.to_json(), mode_dir / STATUS_FILE)
    return _write_json(mode_dir / STATUS_FILE, status.to_json())


def read_status(mode_dir: Path) -> ModeStatus:
    path = mode_dir / STATUS_FILE
    body = _read_json(path)
    _check_status(body, path)
    return ModeStatus(**{key: body[key] for key in ModeStatus.__dataclass_fields__})


def set_aside(mode_dir: Path) -> Path | None:
    """Move an earlier attempt at a mode out of the way before it runs again (kept for
    diagnosis, never overwritten)."""
    if not mode_dir.exists():
        return None
    attempts = mode_dir.parent / ATTEMPTS_DIR
    attempts.mkdir(exist_ok=True)
    number = 1
    while (attempts / f"{mode_dir.name}-{number}").exists():
        number += 1
    target = attempts / f"{mode_dir.name}-{number}"
    mode_dir.rename(target)
    return target


def _write_json(path: Path, body: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body, indent=2) + "\n")
    return path


def _read_json(path: Path) -> dict[str, Any]:
    try:
        body = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(path, "missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ManifestError(path, f"not readable JSON ({err})") from None
    if not isinstance(body, dict):
        raise ManifestError(path, f"expected a JSON object, got {type(body).__name__}")
    return body


def _require(body: dict[str, Any], key: str, kind: type | tuple[type, ...], path: Path,
             where: str = "") -> Any:
    if key not in body:
        raise ManifestError(path, f"missing key '{where}{key}'")
    value = body[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int subclass: a count of True must not pass as 1
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ManifestError(path, f"key '{where}{key}' must be "
                            f"{' or '.join(k.__name__ for k in kinds)}, got {value!r}")
    return value


def _check_manifest(body: dict[str, Any], path: Path) -> None:
    schema = _require(body, "schema", int, path)
    if schema != SCHEMA_VERSION:
        raise ManifestError(path, f"key 'schema' is {schema}, this reader knows {SCHEMA_VERSION}")
    for key in ("run_id", "profile", "created", "model"):
        _require(body, key, str, path)
    if _require(body, "graph", str, path) not in GRAPHS:
        raise ManifestError(path, f"key 'graph' must be one of {GRAPHS}, got {body['graph']!r}")
    _require(body, "simulated", bool, path)
    _require(body, "versions", dict, path)
    nodes = _require(body, "nodes", list, path)
    for index, group in enumerate(nodes):
        where = f"nodes[{index}]."
        if not isinstance(group, dict):
            raise ManifestError(path, f"key 'nodes[{index}]' must be an object")
        if _require(group, "role", str, path, where) not in GPU_GROUPS:
            raise ManifestError(path, f"key '{where}role' must be one of {GPU_GROUPS}, "
                                f"got {group['role']!r}")
        _require(group, "instance_type", str, path, where)
        for key in ("count", "gpus_per_node"):
            if _require(group, key, int, path, where) < 0:
                raise ManifestError(path, f"key '{where}{key}' must not be negative")
    for role, spec in _require(body, "workers", dict, path).items():
        if not isinstance(spec, dict):
            raise ManifestError(path, f"key 'workers.{role}' must be an object")
        for key in ("replicas", "tp"):
            _require(spec, key, int, path, f"workers.{role}.")


def _check_status(body: dict[str, Any], path: Path) -> None:
    if _require(body, "status", str, path) not in STATUSES:
        raise ManifestError(path, f"key 'status' must be one of {STATUSES}, "
                            f"got {body['status']!r}")
    _require(body, "error", (str, type(None)), path)
    for key in ("started", "finished"):
        _require(body, key, str, path)
    _require(body, "planned_seconds", (int, float), path)
    steps = _require(body, "steps", list, path)
    if not all(isinstance(step, str) for step in steps):
        raise ManifestError(path, "key 'steps' must be a list of strings")
