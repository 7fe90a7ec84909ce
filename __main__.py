"""benchlab: validate the stack config, then build the lab (see stacks/compose.py)."""
import pulumi

from stacks import compose, config

cfg, secrets = config.load()
compose.build(cfg, secrets, pulumi.get_stack())
