"""Pinned versions shared by the cloud Jobs, the local lab and the report (config may override)."""
DYNAMO_VERSION = "0.9.1"
AIPERF_VERSION = "0.9.0"
MODEL_ID = "Qwen/Qwen3-30B-A3B-FP8"
