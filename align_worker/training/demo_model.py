"""A tiny randomly initialised causal LM and a locally trained tokenizer, built fully offline.

For smoke tests, demos and this project's tests: a Qwen2-style decoder small enough to train on a CPU in
seconds, with a byte-level BPE tokenizer trained on the simulator's question and answer text (byte-level, so
any text still tokenises). Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["build_demo_model", "demo_corpus"]

SPECIAL = {"eos": "<|endoftext|>", "pad": "<|pad|>"}


def demo_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """Prompt-shaped question and answer text from the session simulator (deterministic)."""
    from tacit.simulate import _question_and_answers

    rng = np.random.default_rng(seed)
    texts = []
    for _ in range(n):
        query, answers = _question_and_answers(rng, 2)
        texts.append(f"\n\nHuman: {query}\n\nAssistant: {answers[0]}")
        texts.append(answers[1])
    return texts


def _train_tokenizer(vocab_size: int, seed: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL["eos"], SPECIAL["pad"]],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(demo_corpus(seed=seed), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=SPECIAL["eos"], pad_token=SPECIAL["pad"], model_max_length=1024
    )


def build_demo_model(
    out: Path,
    *,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    vocab_size: int = 512,
    seed: int = 0,
) -> dict[str, Any]:
    """Write a tiny Qwen2-style model and its tokenizer to `out` (a `from_pretrained` directory); returns its facts."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    tokenizer = _train_tokenizer(vocab_size, seed)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    facts = {
        "kind": "tacit demo model (random weights, not a language model)",
        "architecture": "Qwen2ForCausalLM",
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "layers": layers,
        "seed": seed,
    }
    (out / "tacit_demo.json").write_text(json.dumps(facts, indent=2) + "\n")
    return facts
