"""Resolve container image tags to manifest digests: the OCI distribution API (Docker Registry
HTTP API v2), anonymous bearer tokens as Docker's token authentication describes them.

Only what the image lock needs: GET the manifest a tag points at and hash its bytes
(opencontainers/distribution-spec@967efdc:spec.md#pulling-manifests, "Pulling manifests";
https://distribution.github.io/distribution/spec/auth/token/ for the token flow).
"""
from __future__ import annotations

import hashlib
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Callable

from facts import images

# What a tag may point at, the index types first (opencontainers/image-spec media-types.md).
# The digest is the index's for a multi-platform image: it holds on every node's platform.
MANIFEST_TYPES = ("application/vnd.oci.image.index.v1+json",
                  "application/vnd.docker.distribution.manifest.list.v2+json",
                  "application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
DOCKER_HUB = "docker.io"
# moby/moby:registry/config.go DefaultRegistryHost: docker.io's API is served from this host
DOCKER_HUB_API = "registry-1.docker.io"
TIMEOUT_SECONDS = 30


class RegistryError(RuntimeError):
    """A tag could not be resolved; the message names the image and why."""


@dataclass(frozen=True)
class ImageRef:
    registry: str
    repository: str
    tag: str

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"


def parse_image(text: str) -> ImageRef:
    """`registry/repository:tag`. Without a registry host (python:3.11, org/img:1) the image
    is on Docker Hub, and a one-part name is under library/, as docker reads it."""
    if not images.TAGGED_REFERENCE.fullmatch(text):
        raise ValueError(f"{text!r} is not a tagged image reference (registry/repository:tag)")
    name, _, tag = text.rpartition(":")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = DOCKER_HUB, name
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    return ImageRef(registry, repository, tag)


def api_base(registry: str) -> str:
    return f"https://{DOCKER_HUB_API if registry == DOCKER_HUB else registry}"


class RegistryClient:
    """Resolves tags against `endpoint(registry)` (https://<registry> by default)."""

    def __init__(self, endpoint: Callable[[str], str] = api_base,
                 opener: urllib.request.OpenerDirector | None = None):
        self.endpoint = endpoint
        self.opener = opener or urllib.request.build_opener()

    def digest(self, image: ImageRef) -> str:
        url = (f"{self.endpoint(image.registry).rstrip('/')}/v2/{image.repository}"
               f"/manifests/{image.tag}")
        headers = {"Accept": ", ".join(MANIFEST_TYPES)}
        try:
            body, response_headers = self._get(url, headers)
        except urllib.error.HTTPError as err:
            challenge = err.headers.get("WWW-Authenticate", "")
            if err.code != 401 or not challenge.lower().startswith("bearer "):
                raise self._error(image, err) from None
            headers["Authorization"] = f"Bearer {self._token(image, challenge)}"
            try:
                body, response_headers = self._get(url, headers)
            except urllib.error.HTTPError as again:
                raise self._error(image, again) from None
        except urllib.error.URLError as err:
            raise RegistryError(f"{image}: cannot reach {url}: {err.reason}") from None
        media_type = response_headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in MANIFEST_TYPES:
            raise RegistryError(f"{image}: the registry answered {media_type or 'no Content-Type'}, "
                                f"not a manifest or image index")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        # The spec: a client using Docker-Content-Digest MUST verify it matches the manifest.
        claimed = response_headers.get("Docker-Content-Digest")
        if claimed and claimed != digest:
            raise RegistryError(f"{image}: Docker-Content-Digest {claimed} does not match the "
                                f"manifest's sha256 {digest}")
        return digest

    def _get(self, url: str, headers: dict[str, str]) -> tuple[bytes, dict]:
        request = urllib.request.Request(url, headers=headers)
        with self.opener.open(request, timeout=TIMEOUT_SECONDS) as response:
            return response.read(), response.headers

    def _token(self, image: ImageRef, challenge: str) -> str:
        """An anonymous pull token from the challenge's realm (the token authentication flow)."""
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm", None)
        if not realm:
            raise RegistryError(f"{image}: the registry's Bearer challenge has no realm")
        params.setdefault("scope", f"repository:{image.repository}:pull")
        url = f"{realm}?{urllib.parse.urlencode(params)}"
        try:
            body, _ = self._get(url, {})
            answer = json.loads(body)
        except urllib.error.HTTPError as err:
            raise RegistryError(f"{image}: the token service {realm} answered {err.code}") from None
        except (urllib.error.URLError, ValueError) as err:
            raise RegistryError(f"{image}: no token from {realm}: {err}") from None
        token = answer.get("token") or answer.get("access_token")
        if not token:
            raise RegistryError(f"{image}: the token service {realm} returned no token")
        return token

    @staticmethod
    def _error(image: ImageRef, err: urllib.error.HTTPError) -> RegistryError:
        what = {401: "unauthorized (a private image needs credentials this command does not use)",
                404: "no such image or tag"}.get(err.code, err.reason)
        return RegistryError(f"{image}: the registry answered {err.code}: {what}")
