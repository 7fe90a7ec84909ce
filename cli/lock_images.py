"""`benchlab lock-images`: resolve every image tag the stack pins to its digest and record the
digests in the stack file (`benchlab:imageDigests`); the program then deploys by digest.

Needs the container registries (Docker Hub, nvcr.io), which the user's machine reaches and
the lab's CI does not: run it before `pulumi up`, and again after changing a version.
"""
from __future__ import annotations

import argparse

from cli import stack_file
from cli.cli import CliError
from cli.image_registry import RegistryClient, RegistryError, parse_image

HELP = "resolve the stack's pinned image tags to digests and record them in Pulumi.<stack>.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    stack_file.add_stack_argument(parser)


def run(args: argparse.Namespace, client: RegistryClient | None = None) -> int:
    stack = stack_file.load(args.stack)
    cfg = stack.config()
    client = client or RegistryClient()
    digests, problems = {}, []
    for reference in sorted(set(cfg.images().values())):
        try:
            digests[reference] = client.digest(parse_image(reference))
        except RegistryError as err:
            problems.append(str(err))
    if problems:  # every image's problem at once, and the stack file untouched
        raise CliError("no digest recorded:\n  " + "\n  ".join(problems))
    stale = sorted(set(cfg.image_digests) - set(digests))
    stack_file.record_image_digests(stack.path, digests)
    for reference, digest in digests.items():
        was = cfg.image_digests.get(reference)
        note = "" if was in (None, digest) else f" (was {was})"
        print(f"{reference}@{digest}{note}")
    for reference in stale:
        print(f"dropped {reference}: the stack no longer runs it")
    print(f"{stack.path.name}: {len(digests)} images locked; `pulumi up` deploys them by digest")
    return 0
