"""The trl trainer subclass computes spec 8.4 per example, and a job's stages train, checkpoint, resume, cancel."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import msgspec
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from align_worker.training.losses import dpo_loss, robust_dpo_loss  # noqa: E402
from align_worker.training.rdpo import dpo_classes  # noqa: E402
from align_worker.training.trainers import Cancelled, run_job  # noqa: E402
from tacit.pairs import Observation, pairs_from_sessions  # noqa: E402
from tacit.schemas.align import (  # noqa: E402
    AlignmentProgress,
    DpoParams,
    EvalParams,
    PairSelection,
    PreferencePair,
    RobustDpoJob,
    Runtime,
    SftParams,
)
from tacit.simulate import simulate_sessions  # noqa: E402

FAST_SFT = SftParams(
    epochs=1, learning_rate=1e-3, warmup_steps=0, optimizer="adamw_torch", max_length=128, batch_size=4
)
FAST_DPO = DpoParams(
    learning_rate=5e-4, warmup_steps=0, optimizer="adamw_torch", max_length=128, max_prompt_length=48, batch_size=4
)


def _pairs(n: int) -> list[PreferencePair]:
    sessions = simulate_sessions(n, seed=5, samples=20)
    obs = [Observation(s, p_right=0.9 if i % 3 else 0.35, model_id="m") for i, s in enumerate(sessions)]
    return pairs_from_sessions(obs, PairSelection(test_fraction=0.25), default_model_id="m")[0]


class Recorder:
    def __init__(self, cancel_at: int | None = None) -> None:
        self.progress_log: list[AlignmentProgress] = []
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.cancel_at = cancel_at

    def progress(self, progress: AlignmentProgress) -> None:
        self.progress_log.append(progress)

    def event(self, kind: str, data: dict[str, Any]) -> None:
        self.events.append((kind, data))

    def cancelled(self) -> bool:
        steps = [p.step for p in self.progress_log if p.stage in ("sft", "rdpo")]
        return self.cancel_at is not None and bool(steps) and max(steps) >= self.cancel_at


def _masked_logps(model: Any, batch: dict[str, Any]) -> Any:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    logps = torch.log_softmax(logits, -1).gather(2, batch["input_ids"][:, 1:, None])[..., 0]
    mask = batch["completion_mask"][:, 1:].float()
    return logps, mask


@pytest.mark.parametrize("robust", [True, False])
def test_trainer_loss_is_the_closed_form_per_example(demo_model: Path, tmp_path: Path, robust: bool) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig

    trainer_cls, collator_cls = dpo_classes()
    tokenizer = AutoTokenizer.from_pretrained(demo_model)
    policy = AutoModelForCausalLM.from_pretrained(demo_model)
    with torch.no_grad():  # move the policy away from the reference so that h != 0
        gen = torch.Generator().manual_seed(0)
        for p in policy.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    confidences = [1.0, 0.8, 0.55, 0.2]
    rows = [
        {
            "prompt": f"\n\nHuman: q{i}\n\nAssistant:",
            "chosen": f" yes {i} indeed",
            "rejected": f" no {i}",
            "confidence": c,
        }
        for i, c in enumerate(confidences)
    ]
    args = DPOConfig(
        output_dir=str(tmp_path),
        beta=0.1,
        loss_type=["robust" if robust else "sigmoid", "sft"],
        loss_weights=[1.0, 0.7],
        per_device_train_batch_size=4,
        report_to=[],
        dataloader_pin_memory=False,
        activation_checkpointing=False,
        bf16=False,
    )
    trainer = trainer_cls(
        model=policy,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        data_collator=collator_cls(pad_token_id=tokenizer.pad_token_id),
    )
    batch = next(iter(trainer.get_train_dataloader()))
    confidence = batch["confidence"]  # the sampler shuffles: each pair keeps its own confidence
    assert sorted(confidence.tolist()) == pytest.approx(sorted(confidences))
    with torch.no_grad():
        got = trainer._compute_loss(trainer.model, dict(batch), return_outputs=False)
        logps, mask = _masked_logps(trainer.model, batch)
        ref_logps, _ = _masked_logps(trainer.ref_model, batch)
    lp, ref_lp = (logps * mask).sum(1), (ref_logps * mask).sum(1)
    pc, pr = lp.chunk(2)
    rc, rr = ref_lp.chunk(2)
    preference = robust_dpo_loss(pc, pr, rc, rr, confidence, beta=0.1) if robust else dpo_loss(pc, pr, rc, rr, beta=0.1)
    chosen_logps, chosen_mask = logps.chunk(2)[0], mask.chunk(2)[0]
    nll = -(chosen_logps * chosen_mask).sum() / chosen_mask.sum()  # mean token NLL of the chosen side (not P9's sum)
    expected = preference.mean() + 0.7 * nll
    assert abs((pc - rc) - (pr - rr)).max() > 0.1  # the margins are not trivially zero
    assert float(got) == pytest.approx(float(expected), rel=1e-4)
    if robust:  # and per-example eps matters: a single global eps would give another number
        flat = robust_dpo_loss(pc, pr, rc, rr, torch.full((4,), 0.8), beta=0.1).mean() + 0.7 * nll
        assert not math.isclose(float(got), float(flat), rel_tol=1e-4)


def _spec(demo_model: Path, **runtime: Any) -> RobustDpoJob:
    return RobustDpoJob(
        base_model=str(demo_model),
        sft=FAST_SFT,
        dpo=FAST_DPO,
        runtime=Runtime(**{"checkpoint_every": 3, **runtime}),
        evaluation=EvalParams(prompts=3, max_new_tokens=8),
    )


def test_job_trains_and_generates(demo_model: Path, tmp_path: Path) -> None:
    pairs = _pairs(32)
    judged: list[tuple[list[str], list[str], list[str]]] = []

    def judge(prompts: Any, sft: Any, aligned: Any) -> tuple[str, str]:
        judged.append((list(prompts), list(sft), list(aligned)))
        return "j1", "http://judge/v1/judgments/jobs/j1"

    recorder = Recorder()
    result = run_job(_spec(demo_model), pairs, tmp_path / "job", recorder, judge=judge)
    sft, rdpo = result.stages
    assert sft.loss_last < sft.loss_first
    assert sft.weight_change > 0
    assert rdpo.train_margin_after > rdpo.train_margin_before  # type: ignore[operator]
    assert rdpo.weight_change > 0
    assert rdpo.tokens_per_s
    assert result.aligned_model
    assert (Path(result.aligned_model) / "config.json").is_file()
    assert result.evaluation is not None
    assert (result.evaluation.judge_job_id, result.evaluation.status) == ("j1", "running")
    [(prompts, sft_answers, aligned_answers)] = judged
    assert prompts
    assert len(sft_answers) == len(aligned_answers) == len(prompts)
    assert not {p.prompt for p in pairs if p.split == "train"} & set(prompts)  # held-out prompts only
    assert {"stage", "checkpoint", "stage_done", "evaluation"} <= {k for k, _ in recorder.events}
    assert any(p.loss is not None and p.eta_s is not None for p in recorder.progress_log)
    names = {a.name for a in result.artifacts}
    assert {"sft/final/config.json", "dpo/final/model.safetensors", "evaluation/answers.jsonl"} <= names
    # A finished job run again does no training: its stages are reported from what they left.
    again = run_job(_spec(demo_model), pairs, tmp_path / "job", Recorder(), judge=judge)
    assert [s.steps for s in again.stages] == [s.steps for s in result.stages]

    # judge_svc refusing the hand-off (no LLM configured): the job's result says its evaluation failed, and why.
    def refused(prompts: Any, sft: Any, aligned: Any) -> tuple[str, str]:
        raise RuntimeError("judge_svc answered HTTP 503: judge_svc has no LLM endpoint configured")

    failed = run_job(_spec(demo_model), pairs, tmp_path / "job", Recorder(), judge=refused).evaluation
    assert failed is not None
    assert failed.status == "failed"
    assert "no LLM endpoint configured" in (failed.error or "")


def test_cancel_stops_within_a_step_and_the_job_resumes(demo_model: Path, tmp_path: Path) -> None:
    pairs = _pairs(32)
    spec = msgspec.structs.replace(_spec(demo_model), evaluation=None)
    recorder = Recorder(cancel_at=4)
    with pytest.raises(Cancelled):
        run_job(spec, pairs, tmp_path / "job", recorder)
    steps = [p.step for p in recorder.progress_log if p.stage == "sft"]
    # The cancel became visible once step 4 was logged; training stopped at the end of the very next step.
    assert max(steps) == 5
    assert (tmp_path / "job" / "sft" / "checkpoints" / "checkpoint-3").is_dir()
    # A worker killed while saving leaves a checkpoint without its trainer state: it is skipped and removed.
    partial = tmp_path / "job" / "sft" / "checkpoints" / "checkpoint-6"
    shutil.copytree(tmp_path / "job" / "sft" / "checkpoints" / "checkpoint-3", partial)
    (partial / "trainer_state.json").unlink()
    resumed = Recorder()
    result = run_job(spec, pairs, tmp_path / "job", resumed)
    assert not partial.exists()
    assert ("stage", {"stage": "sft", "resume_from": "checkpoint-3"}) in resumed.events
    assert min(p.step for p in resumed.progress_log if p.stage == "sft") == 3
    assert result.aligned_model is not None
