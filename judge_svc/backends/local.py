"""A local transformers causal LM as judge, scoring the options by the log-probabilities of their tokens.

Instead of sampling free text, the reply is built line by line in the template's format: for every slot
(each criterion's A and B score, the overall scores, the winner) the option whose tokens are most likely
after the prompt and the lines chosen so far is taken. The reply is therefore always well formed and goes
through the same strict parser as any other. torch and transformers are imported lazily, here only.

Every option is scored as a full sequence (no prefix cache), which is simple and fine for small judges;
a large judge on long prompts wants a server backend (vLLM) instead.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any

from judge_svc.backends import BackendResult, Parser
from judge_svc.prompts import ParseError
from tacit.schemas.judge import Sampling

__all__ = ["LocalBackend"]

_SCORES = tuple(str(i) for i in range(1, 11))
_WINNERS = ("A", "B", "tie")
_CRITERION_LINE = re.compile(r"^([A-Z_]+): A=<1-10> B=<1-10>$", re.MULTILINE)


class LocalBackend:
    """Judge with a causal LM loaded from `model_path` (a local directory; nothing is downloaded)."""

    name = "local"

    def __init__(self, model_path: str, *, sampling: Sampling | None = None, device: str | None = None) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model = model_path
        # greedy choice among options: temperature does not apply, recorded as 0 for the verdict's version
        self.sampling = sampling or Sampling()
        self.sampling = Sampling(temperature=0.0, top_p=1.0, max_tokens=self.sampling.max_tokens)
        self._torch: Any = torch
        self._device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self._tokenizer: Any = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
        lm: Any = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True)
        self._lm: Any = lm.to(self._device).eval()
        config = self._lm.config
        self._max_positions = int(
            getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None) or 2048
        )
        pad = self._tokenizer.pad_token_id
        self._pad = int(pad if pad is not None else (self._tokenizer.eos_token_id or 0))
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        return None

    def _context_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        if getattr(self._tokenizer, "chat_template", None):
            ids = self._tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True)
            if not isinstance(ids, list):  # newer versions may answer an encoding
                ids = list(ids["input_ids"])
            return [int(i) for i in ids]
        text = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages) + "Assistant: "
        return [int(i) for i in self._tokenizer(text, add_special_tokens=False)["input_ids"]]

    def _encode(self, text: str) -> list[int]:
        return [int(i) for i in self._tokenizer(text, add_special_tokens=False)["input_ids"]]

    def _full_logprob(self, context: list[int], options: list[list[int]]) -> list[float]:
        """Summed log-probabilities of multi-token options, each scored as a full sequence."""
        torch = self._torch
        rows = [context + ids for ids in options]
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        with torch.inference_mode():
            logits = self._lm(input_ids=input_ids.to(self._device), attention_mask=mask.to(self._device)).logits
            logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
        start = len(context)
        return [
            float(logprobs[i, torch.arange(start - 1, start - 1 + len(ids)), torch.tensor(ids)].sum())
            for i, ids in enumerate(options)
        ]

    def _judge(self, messages: Sequence[dict[str, str]]) -> tuple[str, int, int]:
        torch = self._torch
        criteria = _CRITERION_LINE.findall(messages[0]["content"])
        slots: list[tuple[str, Sequence[str]]] = []
        for i, name in enumerate(criteria):
            slots += [(f"{chr(10) if i else ''}{name}: A=", _SCORES), (" B=", _SCORES)]
        slots += [("\nSCORE_A: " if criteria else "SCORE_A: ", _SCORES), ("\nSCORE_B: ", _SCORES)]
        slots += [("\nWINNER: ", _WINNERS)]
        reserve = sum(len(self._encode(prefix)) + max(len(self._encode(o)) for o in opts) for prefix, opts in slots)
        # keep the end of an over-long prompt (the answers and the format request), with room for the reply
        prompt = self._context_ids(messages)[-max(1, self._max_positions - reserve) :]
        context: list[int] = []
        state: dict[str, Any] = {"past": None, "next": None}

        def feed(ids: list[int]) -> None:
            # the reply grows a few tokens per slot: extend the KV cache rather than re-reading the prompt
            with torch.inference_mode():
                out = self._lm(input_ids=torch.tensor([ids], device=self._device), cache=state["past"], use_cache=True)
            state["past"] = out.cache
            state["next"] = torch.log_softmax(out.logits[0, -1].float(), dim=-1).cpu()
            context.extend(ids)

        feed(prompt)
        text, tokens_out = "", 0
        for prefix, options in slots:
            feed(self._encode(prefix))
            encoded = [self._encode(option) or [self._pad] for option in options]
            totals = [float(state["next"][ids[0]]) if len(ids) == 1 else 0.0 for ids in encoded]
            longer = [i for i, ids in enumerate(encoded) if len(ids) > 1]
            if longer:  # rare with real tokenizers ("10" and "tie" are single tokens in most)
                scored = self._full_logprob(list(context), [encoded[i] for i in longer])
                for i, total in zip(longer, scored, strict=True):
                    totals[i] = total
            best = max(range(len(options)), key=totals.__getitem__)
            tokens_out += len(encoded[best])
            text += prefix + options[best]
            feed(encoded[best])
        text += "\nREASONING: chosen by the log-probabilities of the answer tokens."
        return text, len(prompt), tokens_out

    async def judge(self, messages: Sequence[dict[str, str]], parse: Parser) -> BackendResult:
        """Build the reply slot by slot; it is well formed by construction, and still parsed strictly."""
        async with self._lock:  # one forward pass at a time: the model is not shared across threads
            text, tokens_in, tokens_out = await asyncio.to_thread(self._judge, messages)
        parsed = parse(text)
        if isinstance(parsed, ParseError):  # only if the template and this backend drift apart
            return BackendResult(None, text, 1, tokens_in, tokens_out, f"unparsable reply: {parsed.detail}")
        return BackendResult(parsed, text, 1, tokens_in, tokens_out)
