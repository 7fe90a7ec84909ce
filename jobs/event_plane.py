"""Record Dynamo's NATS event plane during a run, and turn a step's window of it into evidence.

Dynamo 0.9.1's `/metrics` carry no KV hit rate or cache occupancy; its event plane does
(formats verified against a real frontend `--router-mode kv` + mocker + nats-server):
- `namespace.<ns>.kv-hit-rate`: one message per routing decision, a msgpack envelope
  {publisher_id, sequence, published_at, topic, payload} whose payload is msgpack
  {worker_id, dp_rank, isl_blocks, overlap_blocks}.
- `namespace.<ns>.kv_metrics`: the same envelope, payload {worker_id, dp_rank,
  active_decode_blocks, active_prefill_tokens}.
- `<stream>.kv-events` (JetStream stream `namespace-<ns>-component-<component>-kv-events`):
  JSON {worker_id, dp_rank, event: {event_id, data: {stored: {blocks: [...]}} | {removed:
  {block_hashes: [...]}} | "cleared"}}.

The recorder is a plain NATS subscriber (text protocol, stdlib only: it also runs inside the
cluster Jobs) writing each message raw (base64) with its receive time to a JSON-lines file.
`step_evidence` decodes the messages received inside a step's time window.

    python -m jobs.event_plane --nats nats://127.0.0.1:4222 --out events.jsonl
"""
from __future__ import annotations

import argparse
import base64
import json
import signal
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlparse

from jobs.exports import numbered_lines

# Core subscriptions; `*.kv-events` (not `>`) so the JetStream redeliveries to the router's
# inbox are not recorded twice.
SUBJECTS = ("namespace.*.kv-hit-rate", "namespace.*.kv_metrics", "*.kv-events")
HIT_RATE_SUFFIX, LOAD_SUFFIX, KV_EVENTS_SUFFIX = ".kv-hit-rate", ".kv_metrics", ".kv-events"
# The recording's file name, beside a mode's steps (cloud Jobs) or its graph's modes (local lab).
RECORDING = "event_plane.jsonl"
RECONNECT_SECONDS = 1.0
CLOCK_SLACK_SECONDS = 0.05  # receive time vs the client's clock (same machine or pod)


class EventPlaneError(Exception):
    """A recording that cannot be used: which file, and what is wrong with it."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


# ---- recording ----------------------------------------------------------------------------

def record(nats_url: str, out_path: Path, should_stop=lambda: False) -> None:
    """Subscribe and append every message to `out_path` until `should_stop()` is true.

    A lost connection (NATS restarting, not up yet) is retried: the recording continues."""
    parsed = urlparse(nats_url)
    address = (parsed.hostname or "127.0.0.1", parsed.port or 4222)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("a") as out:
        while not should_stop():
            try:
                with socket.create_connection(address, timeout=5) as sock:
                    _subscribe(sock)
                    _pump(sock, out, should_stop)
            except OSError:
                deadline = time.monotonic() + RECONNECT_SECONDS
                while time.monotonic() < deadline and not should_stop():
                    time.sleep(0.05)


def _subscribe(sock: socket.socket) -> None:
    # `headers: true` so JetStream-published messages (HMSG) arrive whole.
    connect = {"verbose": False, "pedantic": False, "headers": True, "no_responders": True,
               "protocol": 1, "name": "benchlab-event-plane"}
    lines = [f"CONNECT {json.dumps(connect)}"]
    lines += [f"SUB {subject} {sid}" for sid, subject in enumerate(SUBJECTS, start=1)]
    sock.sendall(("\r\n".join(lines) + "\r\nPING\r\n").encode())


def _pump(sock: socket.socket, out, should_stop) -> None:
    sock.settimeout(0.5)
    buffer = b""
    while not should_stop():
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, TimeoutError):
            continue
        if not chunk:
            raise ConnectionResetError("NATS closed the connection")
        buffer += chunk
        buffer = _consume(buffer, sock, out)


def _consume(buffer: bytes, sock: socket.socket, out) -> bytes:
    """Handle every complete protocol message in `buffer`; returns what is left over."""
    while True:
        end = buffer.find(b"\r\n")
        if end < 0:
            return buffer
        head = buffer[:end].decode(errors="replace").split()
        op = head[0].upper() if head else ""
        if op in ("MSG", "HMSG"):
            total = int(head[-1])
            header_bytes = int(head[-2]) if op == "HMSG" else 0
            if len(buffer) < end + 2 + total + 2:
                return buffer  # the payload is still arriving
            body = buffer[end + 2:end + 2 + total]
            out.write(json.dumps({"t": time.time(), "subject": head[1],
                                  "payload": base64.b64encode(body[header_bytes:]).decode()})
                      + "\n")
            out.flush()
            buffer = buffer[end + 2 + total + 2:]
            continue
        if op == "PING":
            sock.sendall(b"PONG\r\n")
        buffer = buffer[end + 2:]  # INFO, +OK, PONG, -ERR: nothing to keep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="record Dynamo's NATS event plane")
    parser.add_argument("--nats", required=True, help="e.g. nats://127.0.0.1:4222")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(1))
    record(args.nats, args.out, should_stop=lambda: bool(stopping))
    return 0


# ---- evidence -----------------------------------------------------------------------------

@dataclass(frozen=True)
class StepEvidence:
    """What the event plane says about one step's window; None where nothing was published."""
    routed: int                     # kv-hit-rate messages for workers that report their cache
    hit_rate_pct: float | None      # sum(overlap_blocks) / sum(isl_blocks) over those
    kv_active_blocks_peak: int | None
    kv_active_blocks_mean: float | None
    blocks_stored: int | None
    blocks_removed: int | None      # evictions: the cache gave these blocks up
    cache_workers: int              # workers publishing KV events (their cache is visible)


@dataclass(frozen=True)
class Message:
    t: float
    subject: str
    data: Any


def read_recording(path: Path) -> list[Message]:
    """Every message of a recording; a file that cannot be read, or a line that is not a
    record, is an error. A last line without its newline (the recorder stopped mid-write) is
    dropped."""
    messages = []
    for number, line in numbered_lines(path, EventPlaneError, whole_lines_only=True):
        try:
            row = json.loads(line)
            messages.append(Message(float(row["t"]), str(row["subject"]),
                                    _decode(row["subject"], base64.b64decode(row["payload"]))))
        except (ValueError, KeyError, TypeError, IndexError, struct.error) as err:
            raise EventPlaneError(path, f"line {number}: not an event-plane record "
                                        f"({type(err).__name__}: {err})") from None
    return messages


def _decode(subject: str, payload: bytes) -> Any:
    if subject.endswith(KV_EVENTS_SUFFIX):
        return json.loads(payload)
    envelope = unpack_msgpack(payload)
    inner = envelope["payload"]
    return unpack_msgpack(bytes(inner))


def cache_workers(messages: Iterable[Message]) -> set[int]:
    """Workers that publish KV events, over the whole recording: only their hits are visible
    (a decode-only mocker publishes none, so the router sees no overlap on it)."""
    return {m.data["worker_id"] for m in messages if m.subject.endswith(KV_EVENTS_SUFFIX)}


def step_evidence(messages: list[Message], start: float, end: float,
                  workers: set[int]) -> StepEvidence:
    """Evidence from the messages received in [start, end] (epoch seconds)."""
    window = [m for m in messages if start <= m.t <= end]
    hits = [m.data for m in window if m.subject.endswith(HIT_RATE_SUFFIX)
            and m.data["worker_id"] in workers]
    isl = sum(hit["isl_blocks"] for hit in hits)
    overlap = sum(hit["overlap_blocks"] for hit in hits)
    loads = [m.data["active_decode_blocks"] for m in window if m.subject.endswith(LOAD_SUFFIX)]
    stored = removed = 0
    seen_events: set[tuple] = set()
    for m in window:
        if not m.subject.endswith(KV_EVENTS_SUFFIX):
            continue
        key = (m.data["worker_id"], m.data.get("dp_rank"), m.data["event"]["event_id"])
        if key in seen_events:
            continue
        seen_events.add(key)
        data = m.data["event"]["data"]
        if isinstance(data, dict) and "stored" in data:
            stored += len(data["stored"]["blocks"])
        elif isinstance(data, dict) and "removed" in data:
            removed += len(data["removed"]["block_hashes"])
    return StepEvidence(
        routed=len(hits),
        hit_rate_pct=overlap * 100 / isl if isl else None,
        kv_active_blocks_peak=max(loads) if loads else None,
        kv_active_blocks_mean=sum(loads) / len(loads) if loads else None,
        blocks_stored=stored if workers else None,
        blocks_removed=removed if workers else None,
        cache_workers=len(workers),
    )


@dataclass(frozen=True)
class Request:
    start: float        # epoch seconds
    first_token: float  # epoch seconds: routing happened before it
    prompt_tokens: int  # as the server counted them (chat template included)


def request_hits(messages: list[Message], workers: set[int], requests: list[Request],
                 block_size: int) -> list[tuple[int, int] | None]:
    """(isl_blocks, overlap_blocks) of the routing decision made for each request, or None.

    kv-hit-rate messages carry no request id: a request's decision is the first unclaimed one
    received between its start and its first token whose prompt size in blocks (the last one
    partial) is the request's. A prefill router publishes each decision more than once (disagg:
    twice, back to back); the copies per request, read off the counts, collapse into one."""
    if not requests:
        return []
    low = min(r.start for r in requests) - CLOCK_SLACK_SECONDS
    high = max(r.first_token for r in requests) + CLOCK_SLACK_SECONDS
    published = [(m.t, m.data["isl_blocks"], m.data["overlap_blocks"]) for m in messages
                 if m.subject.endswith(HIT_RATE_SUFFIX) and m.data["worker_id"] in workers
                 and low <= m.t <= high]
    copies = max(1, round(len(published) / len(requests)))
    hits: list[tuple[float, int, int]] = []
    run = 0  # copies of the last decision kept so far
    for hit in published:
        if hits and run < copies and hits[-1][1:] == hit[1:]:
            run += 1
            continue
        hits.append(hit)
        run = 1
    claimed: set[int] = set()
    matched = []
    for request in requests:
        blocks = -(-request.prompt_tokens // block_size)  # the router counts a partial block
        found = next((index for index, (t, isl, _) in enumerate(hits)
                      if index not in claimed and isl == blocks
                      and request.start - CLOCK_SLACK_SECONDS <= t
                      <= request.first_token + CLOCK_SLACK_SECONDS), None)
        if found is not None:
            claimed.add(found)
        matched.append(None if found is None else hits[found][1:])
    return matched


# ---- msgpack (the subset Dynamo's envelopes use; stdlib only) -----------------------------

_FIXED = {0xcc: ">B", 0xcd: ">H", 0xce: ">I", 0xcf: ">Q", 0xd0: ">b", 0xd1: ">h",
          0xd2: ">i", 0xd3: ">q", 0xca: ">f", 0xcb: ">d"}
_SIZED = {0xd9: (">B", "str"), 0xda: (">H", "str"), 0xdb: (">I", "str"),
          0xc4: (">B", "bin"), 0xc5: (">H", "bin"), 0xc6: (">I", "bin"),
          0xdc: (">H", "array"), 0xdd: (">I", "array"), 0xde: (">H", "map"), 0xdf: (">I", "map")}


def unpack_msgpack(data: bytes) -> Any:
    value, end = _unpack(data, 0)
    if end != len(data):
        raise ValueError(f"msgpack: {len(data) - end} bytes after the value")
    return value


def _unpack(data: bytes, at: int) -> tuple[Any, int]:
    tag = data[at]
    at += 1
    if tag <= 0x7f:
        return tag, at
    if tag >= 0xe0:
        return tag - 0x100, at
    if 0x80 <= tag <= 0x8f:
        return _container(data, at, tag & 0x0f, "map")
    if 0x90 <= tag <= 0x9f:
        return _container(data, at, tag & 0x0f, "array")
    if 0xa0 <= tag <= 0xbf:
        size = tag & 0x1f
        return data[at:at + size].decode(), at + size
    if tag in (0xc0, 0xc2, 0xc3):
        return {0xc0: None, 0xc2: False, 0xc3: True}[tag], at
    if tag in _FIXED:
        fmt = _FIXED[tag]
        return struct.unpack_from(fmt, data, at)[0], at + struct.calcsize(fmt)
    if tag in _SIZED:
        fmt, kind = _SIZED[tag]
        size = struct.unpack_from(fmt, data, at)[0]
        at += struct.calcsize(fmt)
        if kind == "str":
            return data[at:at + size].decode(), at + size
        if kind == "bin":
            return bytes(data[at:at + size]), at + size
        return _container(data, at, size, kind)
    raise ValueError(f"msgpack: type 0x{tag:02x} at byte {at - 1} is not supported")


def _container(data: bytes, at: int, size: int, kind: str) -> tuple[Any, int]:
    if kind == "array":
        items = []
        for _ in range(size):
            item, at = _unpack(data, at)
            items.append(item)
        return items, at
    mapping = {}
    for _ in range(size):
        key, at = _unpack(data, at)
        mapping[key], at = _unpack(data, at)
    return mapping, at


if __name__ == "__main__":
    sys.exit(main())
