"""A small local model directory (tokenizer + config) for the mocker and AIPerf.

No model hub is reachable, so the lab trains a tiny byte-level BPE on a deterministic
synthetic corpus. Byte-level means any text AIPerf generates encodes without unknown tokens.
The directory is reused when its stamp matches, so every run serves the same model id.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

VOCAB_SIZE = 2048
# Large enough for the longest planned request (ISL 4096 + OSL 2048) with headroom.
CONTEXT_LENGTH = 32768
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# ChatML, as Qwen uses: the frontend needs a chat template to serve /v1/chat/completions.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{{ message['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
STAMP = f"benchlab-bpe-v1-{VOCAB_SIZE}"


def _corpus(lines: int = 4000, seed: int = 7) -> list[str]:
    """Deterministic pseudo-English: syllable words, so BPE learns realistic merges."""
    rng = random.Random(seed)
    onsets = ["", "b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s", "t", "th", "st", "w"]
    vowels = ["a", "e", "i", "o", "u", "ea", "ou", "ai"]
    codas = ["", "", "n", "r", "s", "t", "ng", "ll", "th"]
    words = ["".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                     for _ in range(rng.randint(1, 3))) for _ in range(3000)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(5, 20))) + rng.choice(".,;?!")
            for _ in range(lines)]


def _train() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    return tokenizer


def ensure_model_dir(model_dir: Path) -> Path:
    """Create (or reuse) the model directory; returns its absolute path, the served model id."""
    model_dir = model_dir.resolve()
    stamp = model_dir / "benchlab-stamp"
    if stamp.exists() and stamp.read_text() == STAMP:
        return model_dir
    model_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _train()
    tokenizer.save(str(model_dir / "tokenizer.json"))
    eos_id = tokenizer.token_to_id("<|im_end|>")
    pad_id = tokenizer.token_to_id("<|endoftext|>")
    _write_json(model_dir / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": CONTEXT_LENGTH,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "bos_token": None,
        "add_bos_token": False,
        "chat_template": CHAT_TEMPLATE,
    })
    _write_json(model_dir / "config.json", {
        "architectures": ["Qwen3MoeForCausalLM"],
        "model_type": "qwen3_moe",
        "vocab_size": tokenizer.get_vocab_size(),
        "max_position_embeddings": CONTEXT_LENGTH,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
        "bos_token_id": pad_id,
    })
    _write_json(model_dir / "generation_config.json", {"eos_token_id": eos_id})
    stamp.write_text(STAMP)
    return model_dir


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")
