"""`pulumi up` refuses a credential-holding pod whose image has no digest in `imageDigests`,
unless `imagePolicy.allowUnpinnedImages` accepts tags; the shipped stack files say which."""
from __future__ import annotations

import pytest

from cli import offline
from facts import images
from stacks import config
from tests.conftest import REPO


def without_opt_in(values: dict) -> dict:
    return {k: v for k, v in values.items() if k != "imagePolicy"}


def test_a_tagged_credential_image_is_refused_before_any_resource(dev_config):
    recording = offline.Recording()
    with pytest.raises(config.ConfigError) as err:
        offline.run_program(without_opt_in(dev_config), recording=recording)
    (problem,) = [p for p in err.value.problems if p.startswith("benchlab:imageDigests")]
    assert images.CLIENT_IMAGE in problem and "imagePolicy.allowUnpinnedImages: true" in problem
    assert "lock-images" in problem
    assert recording.resources == {}


def test_a_digest_for_each_credential_image_or_the_opt_in_lets_it_pass(dev_config):
    digest = "sha256:" + "a" * 64
    locked = {**without_opt_in(dev_config), "imageDigests": {images.CLIENT_IMAGE: digest}}
    assert offline.run_program(locked).resources
    assert offline.run_program({**without_opt_in(dev_config),
                                "imagePolicy": {"allowUnpinnedImages": True}}).resources


def test_the_pinning_problem_is_reported_with_every_other_problem(dev_config):
    with pytest.raises(config.ConfigError) as err:
        offline.run_program({**without_opt_in(dev_config), "region": "nowhere"})
    keys = {p.split(":", 2)[1].split(":")[0] for p in err.value.problems}
    assert {"region", "imageDigests"} <= keys, err.value.problems


@pytest.mark.parametrize("stack", ["dev", "smoke"])
def test_the_shipped_stack_files_lock_or_opt_in_visibly(stack):
    lines = (REPO / f"Pulumi.{stack}.yaml").read_text().splitlines()
    cfg = config.parse(offline.stack_config(str(REPO / f"Pulumi.{stack}.yaml")))
    assert cfg.image_policy.allow_unpinned_images or not cfg.unpinned_credential_images()
    if cfg.image_policy.allow_unpinned_images:  # the comment above it says how to do without it
        at = next(i for i, line in enumerate(lines) if line.strip().startswith("benchlab:imagePolicy"))
        assert lines[at - 1].lstrip().startswith("#") and "lock-images" in lines[at - 2] + lines[at - 1]
    assert "imagePolicy.allowUnpinnedImages" in (REPO / "README.md").read_text()
