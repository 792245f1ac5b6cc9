"""The local backend with a tiny GPT-2 built offline (random weights): every verdict is valid."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from judge_svc.prompts import build_messages
from judge_svc.protocol import Judge
from tacit.schemas.judge import CRITERIA, JudgeRequest, Verdict

pytest.importorskip("torch")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")  # built from a config: nothing may be downloaded
        yield _build(tmp_path_factory.mktemp("tiny-judge"))


def _build(path: Path) -> Path:
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    corpus = [message["content"] for message in build_messages("What is 2 + 2?", "4", "5", rubric=("relevance",))]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus * 4, vocab_size=1200, min_frequency=2, show_progress=False)
    fast: Any = PreTrainedTokenizerFast
    tokenizer = fast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>")
    tokenizer.add_special_tokens({"eos_token": "<|endoftext|>"})
    tokenizer.save_pretrained(path)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_layer=2, n_head=2, n_embd=32, n_positions=2048)
    GPT2LMHeadModel(config).save_pretrained(path)
    return path


def test_local_backend_returns_valid_verdicts_for_20_pairs(tiny_model: Path) -> None:
    from judge_svc.backends.local import LocalBackend

    async def run() -> list[Verdict]:
        backend = LocalBackend(str(tiny_model), device="cpu")
        judge = Judge(backend)
        try:
            requests = [
                JudgeRequest(prompt=f"Question {i}: what is {i} + {i}?", answer_a=str(2 * i), answer_b=f"{i}{i}")
                for i in range(20)
            ]
            return list(await asyncio.gather(*(judge.judge(request) for request in requests)))
        finally:
            await backend.aclose()

    verdicts = asyncio.run(run())
    assert len(verdicts) == 20
    for verdict in verdicts:
        assert verdict.error is None
        assert verdict.winner in ("A", "B", "tie")
        assert verdict.consistent in (True, False)
        assert verdict.backend == "local"
        assert verdict.model == str(tiny_model)
        assert set(verdict.criteria_a) == set(CRITERIA)
        assert all(1 <= score <= 10 for score in (*verdict.criteria_a.values(), *verdict.criteria_b.values()))
        assert all(o.tokens_in > 0 and o.tokens_out > 0 for o in verdict.outcomes)
