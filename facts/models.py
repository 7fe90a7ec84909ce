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
    params_billion: float  # the model card's total parameter count

    @property
    def weights_gib(self) -> float:
        """Weights in GPU memory: FP8 stays 1 byte a parameter (also in vLLM's weight-only FP8
        path on GPUs without FP8 tensor cores), BF16 2."""
        return self.params_billion * 1e9 * (1 if self.weights == "fp8" else 2) / 2**30

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of every layer in BF16 (vLLM's kv_cache_dtype `auto` = the model's dtype)."""
        return 2 * self.layers * self.kv_heads * self.head_dim * 2


MODEL_FACTS: dict[str, ModelFacts] = {
    # quantization_config: {quant_method: fp8, fmt: e4m3, weight_block_size: [128, 128]}
    # huggingface.co/Qwen/Qwen3-30B-A3B: "Number of Parameters: 30.5B in total and 3.3B activated"
    "Qwen/Qwen3-30B-A3B-FP8": ModelFacts("fp8", 48, 4, 128, 30.5),
    "Qwen/Qwen3-30B-A3B": ModelFacts("bfloat16", 48, 4, 128, 30.5),
    # huggingface.co/Qwen/Qwen3-0.6B: "Number of Parameters: 0.6B"
    "Qwen/Qwen3-0.6B": ModelFacts("bfloat16", 28, 8, 128, 0.6),
}


def model_facts(model_id: str) -> ModelFacts:
    """The facts of one model; KeyError names the known ones."""
    return entry(MODEL_FACTS, model_id, "model")
