"""SFT then (robust) DPO + NLL with trl, with progress, cancellation and checkpoint resume (pure: no Celery).

`run_job` runs a job's stages in `workdir`: `sft/` (trl's SFTTrainer) then `dpo/` (trl's DPOTrainer, subclassed
in `rdpo.py` so the robust loss takes a per-example flip rate; the loss terms and their weights are set there too).
A finished stage leaves `<stage>/final/` (written under a temporary name and renamed, so it exists only complete)
and is skipped when the job runs again; an unfinished stage resumes from its last `checkpoint-N` (model, optimiser,
scheduler, RNG and data position). The DPO reference is the SFT model (the reference code used the raw base model
for rDPO: pitfall P7).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgspec

from align_worker.training.rdpo import dpo_classes, loss_terms
from tacit.schemas.align import (
    AlignmentJobSpec,
    AlignmentProgress,
    AlignmentResult,
    Artifact,
    DpoJob,
    DpoParams,
    EvaluationLink,
    PreferencePair,
    Runtime,
    SftParams,
    TrainSummary,
)

__all__ = [
    "Cancelled",
    "Control",
    "generate_answers",
    "preference_margin",
    "run_job",
    "sequence_logps",
    "weight_change",
]

#: Pairs scored for the before/after margin (a sample on big data sets: it is a diagnostic, not the training).
MARGIN_PAIRS = 256


class Cancelled(Exception):  # noqa: N818 (a signal, not an error)
    """Cancellation was requested; raised after the optimisation step in which it was seen."""


class Control(Protocol):
    """What the job runner reports to and asks of its host (the Celery task, or a test)."""

    def progress(self, progress: AlignmentProgress) -> None: ...

    def event(self, kind: str, data: dict[str, Any]) -> None: ...

    def cancelled(self) -> bool: ...


#: Judge hand-off: (prompts, SFT answers, aligned answers) -> (judge job id, status url).
JudgeFn = Callable[[Sequence[str], Sequence[str], Sequence[str]], tuple[str, str]]


def quiet_hub() -> None:
    """Workers never reach a model hub and send no telemetry (set before transformers is imported)."""
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(key, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-shard bars would flood the worker log
    import datasets

    datasets.disable_progress_bars()


# -- log-probabilities, margins and weight change ------------------------------------------------------------


def sequence_logps(
    model: Any, tokenizer: Any, prompts: Sequence[str], completions: Sequence[str], *, max_length: int = 512
) -> list[float]:
    """Sum of the completion's token log-probabilities given the prompt, per example (prompt tokens masked)."""
    import torch

    device = next(model.parameters()).device
    out: list[float] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for prompt, completion in zip(prompts, completions, strict=True):
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            full = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"][:max_length]
            start = min(_common_prefix(prompt_ids, full), len(full) - 1)
            ids = torch.tensor([full], device=device)
            logits = model(input_ids=ids).logits[0, :-1].float()
            logps = torch.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None])[:, 0]
            out.append(float(logps[max(start, 1) - 1 :].sum()))
    model.train(was_training)
    return out


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def preference_margin(model: Any, tokenizer: Any, pairs: Sequence[PreferencePair], *, max_length: int = 512) -> float:
    """Mean of lp(chosen) - lp(rejected) over `pairs` (the first MARGIN_PAIRS)."""
    pairs = pairs[:MARGIN_PAIRS]
    if not pairs:
        return math.nan
    prompts = [p.prompt for p in pairs]
    chosen = sequence_logps(model, tokenizer, prompts, [p.chosen for p in pairs], max_length=max_length)
    rejected = sequence_logps(model, tokenizer, prompts, [p.rejected for p in pairs], max_length=max_length)
    return sum(c - r for c, r in zip(chosen, rejected, strict=True)) / len(pairs)


def weight_change(before_dir: Path, model: Any) -> float:
    """||theta_after - theta_before|| / ||theta_before|| over the saved tensors of `before_dir` (streamed)."""
    from safetensors import safe_open

    after = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    diff = base = 0.0
    for path in sorted(before_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if key not in after:
                    continue
                old = f.get_tensor(key).float()
                diff += float((after[key] - old).pow(2).sum())
                base += float(old.pow(2).sum())
    return math.sqrt(diff / base) if base else math.nan


# -- progress and cancellation ------------------------------------------------------------------------------


def _callback(stage: str, job: Control, tokens_fn: Callable[[], float | None]) -> Any:
    from transformers import TrainerCallback

    class ProgressCallback(TrainerCallback):
        """Turns the trainer's logs into job progress; stops after the step in which a cancel was seen."""

        def __init__(self) -> None:
            self.cancelled = False
            self.first: dict[str, float] = {}
            self.last: dict[str, float] = {}
            self.started = time.monotonic()
            self.start_step = 0
            self.tokens_per_s: float | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.started = time.monotonic()
            self.start_step = state.global_step
            job.progress(AlignmentProgress(stage=stage, step=state.global_step, total=state.max_steps))

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if job.cancelled():
                self.cancelled = True
                control.should_training_stop = True
                control.should_save = False

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            job.event("checkpoint", {"stage": stage, "step": state.global_step})

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kw: Any) -> None:
            logs = logs or {}
            if "loss" not in logs:
                return  # the end-of-training summary
            figures = {
                "loss": logs.get("loss"),
                "margin": logs.get("rewards/margins"),
                "logps_chosen": logs.get("logps/chosen"),
                "logps_rejected": logs.get("logps/rejected"),
            }
            for key, value in figures.items():
                if value is not None:
                    self.first.setdefault(key, float(value))
                    self.last[key] = float(value)
            elapsed = time.monotonic() - self.started
            done = state.global_step - self.start_step
            tokens = tokens_fn()
            self.tokens_per_s = tokens / elapsed if tokens and elapsed > 0 else None
            eta = (state.max_steps - state.global_step) * elapsed / done if done > 0 else None
            progress = AlignmentProgress(
                stage=stage,
                step=state.global_step,
                total=state.max_steps,
                epoch=state.epoch,
                tokens_per_s=self.tokens_per_s,
                eta_s=eta,
                **{k: (None if v is None else float(v)) for k, v in figures.items()},
            )
            job.progress(progress)

    return ProgressCallback()


# -- stages -------------------------------------------------------------------------------------------------


@dataclass
class _Device:
    name: str
    bf16: bool


def _device(runtime: Runtime) -> _Device:
    import torch

    if torch.cuda.is_available():
        bf16 = runtime.precision == "bf16" or (runtime.precision == "auto" and torch.cuda.is_bf16_supported())
        return _Device(torch.cuda.get_device_name(0), bf16)
    return _Device("cpu", False)


#: Written last when the HF Trainer saves a checkpoint: a folder without it was cut short.
CHECKPOINT_DONE = "trainer_state.json"


def _last_checkpoint(folder: Path) -> str | None:
    """The newest complete `checkpoint-N` in `folder`; incomplete ones (a worker killed while saving) are removed.

    transformers' `get_last_checkpoint` returns the newest folder whatever its state, and resuming from a
    half-written one fails (seen when a worker was SIGKILLed during a save).
    """
    if not folder.is_dir():
        return None
    steps = sorted(
        (int(p.name.split("-", 1)[1]), p)
        for p in folder.iterdir()
        if p.is_dir() and p.name.startswith("checkpoint-") and p.name.split("-", 1)[1].isdigit()
    )
    for _, path in reversed(steps):
        if (path / CHECKPOINT_DONE).is_file():
            return str(path)
        shutil.rmtree(path, ignore_errors=True)
    return None


def _finish(trainer: Any, tokenizer: Any, final: Path) -> None:
    """Save the stage's model under a temporary name, then rename: `final/` exists only when complete."""
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    trainer.save_model(str(partial))
    tokenizer.save_pretrained(str(partial))
    partial.rename(final)


def _tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _common_args(params: SftParams | DpoParams, runtime: Runtime, device: _Device, out: Path) -> dict[str, Any]:
    return {
        "output_dir": str(out),
        "num_train_epochs": params.epochs,
        "max_steps": params.max_steps or -1,
        "learning_rate": params.learning_rate,
        "per_device_train_batch_size": params.batch_size,
        "gradient_accumulation_steps": params.grad_accumulation,
        "warmup_steps": params.warmup_steps,
        "lr_scheduler_type": "constant_with_warmup",
        "max_grad_norm": params.max_grad_norm,
        "optim": params.optimizer,
        "logging_steps": runtime.log_every,
        "logging_first_step": True,
        "save_strategy": "steps",
        "save_steps": runtime.checkpoint_every,
        "save_total_limit": 2,
        "seed": runtime.seed,
        "data_seed": runtime.seed,
        "bf16": device.bf16,
        "activation_checkpointing": runtime.gradient_checkpointing,
        "report_to": [],
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "dataloader_pin_memory": device.name != "cpu",
        "max_length": params.max_length,
    }


def _sft_rows(pairs: Sequence[PreferencePair], targets: str) -> list[dict[str, str]]:
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for p in pairs:
        for completion in (p.chosen, p.rejected) if targets == "both" else (p.chosen,):
            rows.setdefault((p.prompt, completion), {"prompt": p.prompt, "completion": completion})
    return list(rows.values())


def _truncate_prompts(pairs: Sequence[PreferencePair], tokenizer: Any, max_tokens: int) -> list[dict[str, Any]]:
    """trl rows with each prompt cut to its first `max_tokens` tokens (spec 8.5: the prompt is truncated first)."""
    rows = []
    for p in pairs:
        ids = tokenizer(p.prompt, add_special_tokens=False)["input_ids"]
        prompt = tokenizer.decode(ids[:max_tokens]) if len(ids) > max_tokens else p.prompt
        rows.append({"prompt": prompt, "chosen": p.chosen, "rejected": p.rejected, "confidence": p.confidence})
    return rows


def _summary(stage: str, callback: Any, steps: int, seconds: float, **extra: Any) -> TrainSummary:
    return TrainSummary(
        stage=stage,
        steps=steps,
        loss_first=callback.first.get("loss"),
        loss_last=callback.last.get("loss"),
        margin_first=callback.first.get("margin"),
        margin_last=callback.last.get("margin"),
        tokens_per_s=callback.tokens_per_s,
        seconds=seconds,
        **extra,
    )


def _run_sft(
    base_model: str, params: SftParams, pairs: Sequence[PreferencePair], runtime: Runtime, out: Path, control: Control
) -> TrainSummary | None:
    """Train SFT into `out/final`; None when it was already there (a finished stage is never run twice)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl.trainer.sft_config import SFTConfig
    from trl.trainer.sft_trainer import SFTTrainer

    if (out / "final" / "config.json").is_file():
        return _load_summary(out)
    device = _device(runtime)
    tokenizer = _tokenizer(base_model)
    model = AutoModelForCausalLM.from_pretrained(base_model)
    args = SFTConfig(**_common_args(params, runtime, device, out / "checkpoints"), completion_only_loss=True)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(_sft_rows(pairs, params.targets)),
        processing_class=tokenizer,
    )
    callback = _callback("sft", control, lambda: float(trainer._total_train_tokens or 0) or None)
    return _save_summary(out, _train(trainer, callback, "sft", out, tokenizer, base_model, control))


def _run_dpo(
    sft_model: str,
    spec: DpoJob | Any,
    pairs: Sequence[PreferencePair],
    out: Path,
    control: Control,
) -> TrainSummary | None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl.trainer.dpo_config import DPOConfig

    params: DpoParams = spec.dpo
    if (out / "final" / "config.json").is_file():
        return _load_summary(out)
    trainer_cls, collator_cls = dpo_classes()
    device = _device(spec.runtime)
    tokenizer = _tokenizer(sft_model)
    model = AutoModelForCausalLM.from_pretrained(sft_model)
    robust = isinstance(spec, DpoJob) is False
    losses, weights = loss_terms(robust=robust, nll_weight=params.nll_weight)
    args = DPOConfig(
        **_common_args(params, spec.runtime, device, out / "checkpoints"),
        beta=params.beta,
        loss_type=losses,
        loss_weights=weights,
        label_smoothing=0.0,
        precompute_ref_log_probs=False,
        truncation_mode="keep_start",
    )
    collator = collator_cls(pad_token_id=tokenizer.pad_token_id, max_length=params.max_length)
    rows = _truncate_prompts(pairs, tokenizer, params.max_prompt_length)
    # ref_model=None: trl loads a second, frozen copy from the same path, so the reference is the SFT model (P7).
    trainer = trainer_cls(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        data_collator=collator,
    )
    stage = "rdpo" if robust else "dpo"
    margin_before = preference_margin(trainer.model, tokenizer, pairs, max_length=params.max_length)
    callback = _callback(stage, control, lambda: float(trainer._total_train_tokens or 0) or None)
    summary = _train(trainer, callback, stage, out, tokenizer, sft_model, control)
    margin_after = preference_margin(trainer.model, tokenizer, pairs, max_length=params.max_length)
    summary = msgspec.structs.replace(summary, train_margin_before=margin_before, train_margin_after=margin_after)
    return _save_summary(out, summary)


def _save_summary(out: Path, summary: TrainSummary) -> TrainSummary:
    (out / "summary.json").write_bytes(msgspec.json.encode(summary))
    return summary


def _load_summary(out: Path) -> TrainSummary | None:
    """The summary a finished stage left (None if it predates summaries): reported again on a resumed job."""
    path = out / "summary.json"
    return msgspec.json.decode(path.read_bytes(), type=TrainSummary) if path.is_file() else None


def _train(
    trainer: Any, callback: Any, stage: str, out: Path, tokenizer: Any, start_model: str, control: Control
) -> TrainSummary:
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # progress goes to the job record, not to stdout
    trainer.add_callback(callback)
    resume = _last_checkpoint(out / "checkpoints")
    control.event("stage", {"stage": stage, "resume_from": Path(resume).name if resume else None})
    started = time.monotonic()
    trainer.train(resume_from_checkpoint=resume)
    if callback.cancelled:
        raise Cancelled(stage)
    seconds = time.monotonic() - started
    change = weight_change(Path(start_model), trainer.model) if Path(start_model).is_dir() else math.nan
    _finish(trainer, tokenizer, out / "final")
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    control.event("stage_done", {"stage": stage, "steps": trainer.state.global_step})
    return _summary(stage, callback, trainer.state.global_step, seconds, weight_change=change)


# -- generation ---------------------------------------------------------------------------------------------


def generate_answers(
    model_dir: str,
    prompts: Sequence[str],
    *,
    temperature: float = 1.0,
    top_p: float = 0.95,
    max_new_tokens: int = 512,
    seed: int = 42,
    batch_size: int = 8,
) -> list[str]:
    """Sampled answers (spec 8.6: temperature 1.0, top-p 0.95, up to 512 new tokens), stripped."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = _tokenizer(model_dir)
    tokenizer.padding_side = "left"  # decoder-only generation continues from the right edge
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model: Any = AutoModelForCausalLM.from_pretrained(model_dir)
    model = model.to(device).eval()
    torch.manual_seed(seed)
    answers: list[str] = []
    for start in range(0, len(prompts), batch_size):
        chunk = list(prompts[start : start + batch_size])
        enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        with torch.no_grad():
            generated = model.generate(
                **enc,
                do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None,
                top_p=top_p if temperature > 0 else None,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        new = generated[:, enc["input_ids"].shape[1] :]
        answers.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    return answers


# -- the job ------------------------------------------------------------------------------------------------


def _artifacts(workdir: Path) -> list[Artifact]:
    return [
        Artifact(name=str(path.relative_to(workdir)), path=str(path), bytes=path.stat().st_size)
        for path in sorted(workdir.rglob("*"))
        if path.is_file() and "checkpoints" not in path.parts and ".partial" not in str(path)
    ]


def _evaluate(
    spec: AlignmentJobSpec,
    sft_dir: str,
    aligned_dir: str,
    test_pairs: Sequence[PreferencePair],
    workdir: Path,
    control: Control,
    judge: JudgeFn | None,
) -> EvaluationLink | None:
    params = spec.evaluation
    if params is None:
        return None
    prompts = list(dict.fromkeys(p.prompt for p in test_pairs))[: params.prompts]
    path = workdir / "evaluation" / "answers.jsonl"
    if not prompts:
        return EvaluationLink(prompts=0, answers_path=str(path), error="no held-out prompts to answer", status="failed")
    control.progress(AlignmentProgress(stage="generate", step=0, total=2 * len(prompts)))
    kwargs = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_new_tokens": params.max_new_tokens,
        "seed": params.seed,
    }
    sft_answers = generate_answers(sft_dir, prompts, **kwargs)  # type: ignore[arg-type]
    control.progress(AlignmentProgress(stage="generate", step=len(prompts), total=2 * len(prompts)))
    aligned_answers = generate_answers(aligned_dir, prompts, **kwargs)  # type: ignore[arg-type]
    control.progress(AlignmentProgress(stage="generate", step=2 * len(prompts), total=2 * len(prompts)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        for prompt, a, b in zip(prompts, sft_answers, aligned_answers, strict=True):
            f.write(msgspec.json.encode({"prompt": prompt, "sft": a, "aligned": b}) + b"\n")
    link = EvaluationLink(prompts=len(prompts), answers_path=str(path))
    if not params.judge:
        return msgspec.structs.replace(link, status="skipped")
    if judge is None:
        return msgspec.structs.replace(
            link, status="skipped", error="the worker has no judge_svc (TACIT_WORKER_JUDGE_URL)"
        )
    try:
        job_id, url = judge(prompts, sft_answers, aligned_answers)
    except Exception as err:  # the models are trained and saved: a judge outage must not fail the job
        control.event("evaluation", {"error": str(err), "status": "failed"})
        return msgspec.structs.replace(link, error=f"judge request failed: {err}", status="failed")
    control.event("evaluation", {"judge_job_id": job_id, "status_url": url, "status": "running"})
    return msgspec.structs.replace(link, judge_job_id=job_id, status_url=url, status="running")


def run_job(
    spec: AlignmentJobSpec,
    pairs: Sequence[PreferencePair],
    workdir: Path,
    control: Control,
    *,
    judge: JudgeFn | None = None,
) -> AlignmentResult:
    """Run (or resume) a job's stages in `workdir`; raises Cancelled when a cancel was seen."""
    quiet_hub()
    train = [p for p in pairs if p.split == "train"]
    test = [p for p in pairs if p.split == "test"]
    if not train:
        raise ValueError("the job has no training pairs")
    workdir.mkdir(parents=True, exist_ok=True)
    stages: list[TrainSummary] = []
    sft_dir = spec.base_model
    sft_params = getattr(spec, "sft", None)
    if sft_params is not None:
        summary = _run_sft(spec.base_model, sft_params, train, spec.runtime, workdir / "sft", control)
        if summary is not None:
            stages.append(summary)
        sft_dir = str(workdir / "sft" / "final")
    aligned_dir: str | None = None
    if hasattr(spec, "dpo"):
        summary = _run_dpo(sft_dir, spec, train, workdir / "dpo", control)
        if summary is not None:
            stages.append(summary)
        aligned_dir = str(workdir / "dpo" / "final")
    evaluation = None
    if aligned_dir is not None:
        evaluation = _evaluate(spec, sft_dir, aligned_dir, test, workdir, control, judge)
    return AlignmentResult(
        sft_model=sft_dir if sft_params is not None else spec.base_model,
        aligned_model=aligned_dir,
        artifacts=_artifacts(workdir),
        stages=stages,
        evaluation=evaluation,
        device=_device(spec.runtime).name,
    )
