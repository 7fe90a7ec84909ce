"""Pinned versions and the default model: the stack config's defaults, and what the local lab
installs and records (a stack may override them)."""
DYNAMO_VERSION = "0.9.1"
AIPERF_VERSION = "0.9.0"
MODEL_ID = "Qwen/Qwen3-30B-A3B-FP8"
# What the results-export and model-download Jobs install (hash-locked: facts/wheel_locks.py).
BOTO3_VERSION = "1.44.5"  # as requirements.txt pins it for the CLI
HUGGINGFACE_HUB_VERSION = "1.33.0"
