"""Facts about the models the lab serves: what a performance model needs to know before it runs.

From each model's Hugging Face `config.json` (the copies aiconfigurator 0.12.0 bundles:
aiconfigurator_core/model_configs/Qwen--<name>_config.json).
"""
from __future__ import annotations

from dataclasses import dataclass

from facts.lookup import entry


@dataclass(frozen=True)
class ModelFacts:
    weights: str  # "fp8" (quantization_config.quant_method) or "bfloat16" (torch_dtype)
    layers: int  # num_hidden_layers
    kv_heads: int  # num_key_value_heads
    head_dim: int


MODEL_FACTS: dict[str, ModelFacts] = {
    # quantization_config: {quant_method: fp8, fmt: e4m3, weight_block_size: [128, 128]}
    "Qwen/Qwen3-30B-A3B-FP8": ModelFacts("fp8", 48, 4, 128),
    "Qwen/Qwen3-30B-A3B": ModelFacts("bfloat16", 48, 4, 128),
    "Qwen/Qwen3-0.6B": ModelFacts("bfloat16", 28, 8, 128),
}


def model_facts(model_id: str) -> ModelFacts:
    """The facts of one model; KeyError names the known ones."""
    return entry(MODEL_FACTS, model_id, "model")
