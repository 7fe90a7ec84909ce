"""The container images the lab's own pods run, by the tags it pins, and what they take on a
node's disk. The image lock (stack config `imageDigests`, written by `benchlab lock-images`)
maps each tag to the digest it resolved to; the program then deploys by digest.

Charts (monitoring, GPU Operator, Dynamo platform, EFA plugin) pin their own images through
their chart versions and are not part of this lock.
"""
from __future__ import annotations

import re

# The client Jobs (model download, benchmarks, results export): Python and nothing else; each
# installs its hash-locked wheels (facts/wheel_locks.py, built for this interpreter and glibc).
CLIENT_IMAGE = "docker.io/library/python:3.11-slim-bookworm"
VLLM_RUNTIME = "nvcr.io/nvidia/ai-dynamo/vllm-runtime:{version}"  # frontend and workers
# The images whose pods hold a credential: the client image runs the model download (HF token),
# the export (IRSA), the GPU release (IRSA and an API token), the volume guard (deletes PVCs), the
# benchmarks and the KV check (API tokens). Serving pods hold none (no token, no Secret).
# tests/test_pod_security.py checks this against every pod the program renders.
CREDENTIAL_ROLES = ("client",)
# The pip CLIENT_IMAGE carries: its CPython 3.11 is built --with-ensurepip and pip is never
# upgraded (docker-library/python 3.11/slim-bookworm/Dockerfile), and CPython 3.11.9+ bundles
# pip 24.0 (Lib/ensurepip). The Jobs' install resolves nothing (facts/wheel_locks.py), so it
# gets the same bytes from any pip; the Jobs e2e stand-in runs this one, by its wheel's sha256.
CLIENT_IMAGE_PIP = "24.0"
CLIENT_IMAGE_PIP_SHA256 = "ba0d021a166865d2265246961bec0152ff124de910c5cc39f1156ce3fa7c69dc"

# opencontainers/distribution-spec@967efdc:spec.md#pulling-manifests (<name>, tag) and
# distribution/reference's grammar (optional registry host[:port]).
_NAME = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*"
TAGGED_REFERENCE = re.compile(rf"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?{_NAME}:[a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")
# opencontainers/image-spec descriptor.md#digests: sha256 is 64 lowercase hex characters.
DIGEST = re.compile(r"sha256:[a-f0-9]{64}")

# Disk on a system node (GiB). The frontend runs vllm-runtime there: ~20 GB (issue 9), and
# vLLM-based images reach 25 GB unpacked (vllm-project/vllm#17163, "ephemeral storage to run
# out in 50GB SSD nodes"): 25 is the bound. The EKS AMI's containerd discards a layer's
# compressed blob once unpacked (awslabs/amazon-eks-ami nodeadm/internal/containerd/
# config.template.toml: discard_unpacked_layers = true), but a pull holds both meanwhile.
VLLM_RUNTIME_UNPACKED_GIB = 25
# Estimate, with margin: every other image on a system node (kube-prometheus-stack, Dynamo
# operator, etcd, NATS, Pushgateway, CSI drivers, VPC CNI, kube-proxy, CoreDNS, python-slim).
OTHER_SYSTEM_IMAGES_GIB = 6
# A client Job's scratch emptyDir (its sizeLimit): the wheels it installs, the AIPerf lock the
# largest at 1.1 GiB installed (measured: pip --require-hashes --target, 2026-11-29), pip's
# downloads and unpacking beside them while it installs, and AIPerf's logs.
CLIENT_JOB_SCRATCH_GIB = 3
NODE_OS_GIB = 5  # estimate: the AL2023 EKS AMI's own files, logs, kubelet state


def vllm_runtime(dynamo_version: str) -> str:
    return VLLM_RUNTIME.format(version=dynamo_version)


def pinned(reference: str, digests: dict[str, str]) -> str:
    """`reference` by digest when the image lock has it (`name:tag@sha256:...`: the tag stays
    for people, the runtime pulls the digest), else as tagged."""
    digest = digests.get(reference)
    return f"{reference}@{digest}" if digest else reference
