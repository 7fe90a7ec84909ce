"""benchlab: validate the stack config, then build the lab (see stacks/lab.py)."""
import pulumi

from stacks import config, lab

cfg, secrets = config.load()
lab.build(cfg, secrets, pulumi.get_stack())
