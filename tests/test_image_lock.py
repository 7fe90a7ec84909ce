"""The image lock: `benchlab lock-images` against a registry speaking the OCI distribution API
(a fake one on loopback, with Docker's bearer-token flow), the stack file it writes, and
preflight's warning while an image is unlocked."""
from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import shutil
import threading
import urllib.parse

import pytest

from cli import image_registry, lock_images, preflight, stack_file
from cli.cli import CliError
from facts import images
from stacks import config
from tests.conftest import REPO

INDEX = "application/vnd.oci.image.index.v1+json"


def manifest_bytes(name: str) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 1,
         "digest": "sha256:" + hashlib.sha256(name.encode()).hexdigest(),
         "platform": {"architecture": "amd64", "os": "linux"}}]}, indent=3).encode()


class FakeRegistry(http.server.ThreadingHTTPServer):
    """/v2/<name>/manifests/<tag> behind a bearer challenge; /token hands out pull tokens."""

    def __init__(self, manifests: dict[tuple[str, str], bytes], wrong_header: bool = False):
        super().__init__(("127.0.0.1", 0), FakeRegistryHandler)
        self.manifests, self.wrong_header, self.requests = manifests, wrong_header, []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class FakeRegistryHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        server: FakeRegistry = self.server
        server.requests.append((self.path, dict(self.headers)))
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/token":
            query = dict(urllib.parse.parse_qsl(url.query))
            repository = query["scope"].split(":")[1]
            return self._send(200, json.dumps({"token": f"T-{repository}"}).encode(), "application/json")
        name, _, tag = url.path[len("/v2/"):].partition("/manifests/")
        if self.headers.get("Authorization") != f"Bearer T-{name}":
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="{server.url}/token",'
                             f'service="fake-registry",scope="repository:{name}:pull"')
            self.end_headers()
            return
        body = server.manifests.get((name, tag))
        if body is None:
            return self._send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}', "application/json")
        digest = "sha256:" + hashlib.sha256(b"other" if server.wrong_header else body).hexdigest()
        self._send(200, body, INDEX, {"Docker-Content-Digest": digest})

    def _send(self, code: int, body: bytes, content_type: str, headers: dict | None = None):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def registry():
    servers = []

    def start(manifests, wrong_header=False):
        server = FakeRegistry(manifests, wrong_header)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def stack_images() -> dict[tuple[str, str], bytes]:
    """The images the dev stack runs, as the fake registry serves them."""
    served = {}
    for reference in config.parse({}).images().values():
        image = image_registry.parse_image(reference)
        served[(image.repository, image.tag)] = manifest_bytes(reference)
    return served


def client_for(server: FakeRegistry, asked: list[str] | None = None) -> image_registry.RegistryClient:
    def endpoint(registry: str) -> str:
        if asked is not None:
            asked.append(registry)
        return server.url
    return image_registry.RegistryClient(endpoint=endpoint)


def sha(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def test_a_tag_resolves_to_the_sha256_of_its_manifest_through_the_token_flow(registry):
    served = stack_images()
    server = registry(served)
    asked: list[str] = []
    image = image_registry.parse_image(images.CLIENT_IMAGE)
    digest = client_for(server, asked).digest(image)
    assert digest == sha(served[("library/python", "3.11-slim-bookworm")])
    assert asked == ["docker.io"]
    (challenged, _), (token, _), (answered, headers) = server.requests
    assert challenged == answered == "/v2/library/python/manifests/3.11-slim-bookworm"
    assert token.startswith("/token?") and "scope=repository%3Alibrary%2Fpython%3Apull" in token
    assert headers["Authorization"] == "Bearer T-library/python"
    assert headers["Accept"].split(", ")[0] == INDEX  # an index first: the multi-platform digest


def test_docker_hub_short_names_and_the_api_host():
    assert image_registry.parse_image("python:3.11") == image_registry.ImageRef(
        "docker.io", "library/python", "3.11")
    assert image_registry.api_base("docker.io") == "https://registry-1.docker.io"
    assert image_registry.api_base("nvcr.io") == "https://nvcr.io"
    with pytest.raises(ValueError, match="not a tagged image reference"):
        image_registry.parse_image("nvcr.io/nvidia/ai-dynamo/vllm-runtime")


def test_a_digest_header_that_does_not_match_the_manifest_is_refused(registry):
    server = registry(stack_images(), wrong_header=True)
    with pytest.raises(image_registry.RegistryError, match="does not match the manifest's sha256"):
        client_for(server).digest(image_registry.parse_image(images.CLIENT_IMAGE))


@pytest.fixture
def dev_stack(tmp_path, monkeypatch):
    shutil.copy(REPO / "Pulumi.dev.yaml", tmp_path / "Pulumi.dev.yaml")
    monkeypatch.setattr(stack_file, "REPO_ROOT", tmp_path)
    return tmp_path / "Pulumi.dev.yaml"


def test_lock_images_records_every_digest_in_the_stack_file_and_the_program_uses_them(
        registry, dev_stack, capsys):
    served = stack_images()
    server = registry(served)
    before = dev_stack.read_text()
    assert lock_images.run(argparse.Namespace(stack="dev"), client=client_for(server)) == 0
    after = dev_stack.read_text()
    # every line of the file is kept (comments too); the lock is added under config:
    assert [line for line in after.splitlines() if line in before.splitlines()] == before.splitlines()
    cfg = stack_file.load("dev").config()
    expected = {reference: sha(served[(image.repository, image.tag)])
                for reference, image in ((r, image_registry.parse_image(r)) for r in cfg.images().values())}
    assert cfg.image_digests == expected and len(expected) == 2
    assert cfg.deployed_image("client") == f"{images.CLIENT_IMAGE}@{expected[images.CLIENT_IMAGE]}"
    assert preflight.check_image_lock(cfg) and all(
        c.status == "pass" for c in preflight.check_image_lock(cfg))
    assert "2 images locked" in capsys.readouterr().out
    # locking again replaces the block, never duplicates it
    assert lock_images.run(argparse.Namespace(stack="dev"), client=client_for(server)) == 0
    assert dev_stack.read_text() == after


def test_a_version_change_relocks_the_new_tag_and_drops_the_old(registry, dev_stack, capsys):
    server = registry(stack_images())
    lock_images.run(argparse.Namespace(stack="dev"), client=client_for(server))
    old = images.vllm_runtime("0.9.1")
    dev_stack.write_text(dev_stack.read_text().replace("  benchlab:model:",
                                                       "  benchlab:versions: {dynamo: 0.9.2}\n  benchlab:model:"))
    assert any(c.status == "warn" for c in preflight.check_image_lock(stack_file.load("dev").config()))
    newer = {**stack_images(), ("nvidia/ai-dynamo/vllm-runtime", "0.9.2"): manifest_bytes("0.9.2")}
    server.manifests = newer
    lock_images.run(argparse.Namespace(stack="dev"), client=client_for(server))
    cfg = stack_file.load("dev").config()
    assert old not in cfg.image_digests and images.vllm_runtime("0.9.2") in cfg.image_digests
    assert f"dropped {old}" in capsys.readouterr().out


def test_an_unresolvable_image_is_named_and_nothing_is_written(registry, dev_stack):
    served = stack_images()
    del served[("nvidia/ai-dynamo/vllm-runtime", "0.9.1")]
    server = registry(served)
    before = dev_stack.read_text()
    with pytest.raises(CliError, match=r"nvcr.io/nvidia/ai-dynamo/vllm-runtime:0.9.1: the registry "
                                       r"answered 404: no such image or tag"):
        lock_images.run(argparse.Namespace(stack="dev"), client=client_for(server))
    assert dev_stack.read_text() == before


def test_preflight_warns_while_an_image_is_unlocked():
    checks = preflight.check_image_lock(config.parse({"imagePolicy": {"allowUnpinnedImages": True}}))
    assert {c.name for c in checks} == {f"image {images.CLIENT_IMAGE}",
                                        f"image {images.vllm_runtime('0.9.1')}"}
    assert all(c.status == "warn" and "lock-images" in c.fix for c in checks)


def test_preflight_fails_where_pulumi_up_refuses_a_tagged_credential_holder():
    statuses = {c.name: c.status for c in preflight.check_image_lock(config.parse({}))}
    assert statuses == {f"image {images.CLIENT_IMAGE}": "fail",
                        f"image {images.vllm_runtime('0.9.1')}": "warn"}
