"""Pinned versions and the default model: the stack config's defaults, and what the local lab
installs and records (a stack may override them)."""
DYNAMO_VERSION = "0.9.1"
AIPERF_VERSION = "0.9.0"
MODEL_ID = "Qwen/Qwen3-30B-A3B-FP8"
