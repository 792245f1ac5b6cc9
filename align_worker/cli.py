"""`tacit align ...`: build the demo model, export preference pairs, run a job locally (heavy imports stay lazy)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_align_commands"]


def _demo_model(args: argparse.Namespace) -> int:
    from align_worker.training.demo_model import build_demo_model
    from align_worker.training.trainers import quiet_hub

    quiet_hub()
    facts = build_demo_model(
        args.out, hidden_size=args.hidden, layers=args.layers, vocab_size=args.vocab, seed=args.seed
    )
    print(json.dumps({"out": str(args.out), **facts}, indent=2))
    return 0


def _selection(args: argparse.Namespace) -> dict[str, Any]:
    selection: dict[str, Any] = {
        "source": args.source,
        "include_demo": args.include_demo,
        "with_history": args.with_history,
        "test_fraction": args.test_fraction,
        "seed": args.seed,
        "min_confidence": args.min_confidence,
    }
    if args.model_id:
        selection["model_id"] = args.model_id
    return selection


def _pairs_from_ifllm(args: argparse.Namespace) -> tuple[list[Any], Any]:
    """Explicit-label pairs straight from an IFLLM folder (no gateway): the user's stated preference chooses."""
    import msgspec

    from tacit.ifllm.sessions import sessions_from_ifllm
    from tacit.pairs import Observation, pairs_from_sessions
    from tacit.schemas.align import PairSelection

    if args.source != "explicit":
        raise SystemExit("tacit: --data exports explicit labels only (implicit pairs need stored, scored sessions)")
    sessions = list(sessions_from_ifllm(args.data, unrecorded=True))
    earlier: dict[tuple[str, str], list[Any]] = {}
    for s in sessions:
        earlier.setdefault((s.user_id, s.task_id), []).append(s)
    selection = msgspec.convert(_selection(args), PairSelection)
    return pairs_from_sessions([Observation(s) for s in sessions], selection, earlier=earlier)


def _export(args: argparse.Namespace) -> int:
    import msgspec

    from tacit.pairs import write_jsonl

    if args.data is not None:
        pairs, summary = _pairs_from_ifllm(args)
    else:
        from tacit.client import TacitClient, TacitError

        try:
            with TacitClient(args.gateway, args.key, timeout=300) as client:
                answer = client.alignment_pairs(**_selection(args))
        except TacitError as err:
            print(f"tacit: {err}", file=sys.stderr)
            return 1
        pairs, summary = answer.pairs, answer.summary
    out: Path = args.out
    written = {
        split: write_jsonl([p for p in pairs if p.split == split], out / f"{split}.jsonl")
        for split in ("train", "test")
    }
    (out / "summary.json").write_bytes(msgspec.json.format(msgspec.json.encode(summary)) + b"\n")
    print(json.dumps({"out": str(out), **written, "summary": msgspec.to_builtins(summary)}, indent=2))
    return 0 if pairs else 1


class _ConsoleControl:
    """Progress of a local run as a bar on stderr; Ctrl-C cancels after the current step."""

    def __init__(self, quiet: bool) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.quiet = quiet
        self.bar: Any = None
        self.stage = ""
        self.stop = False

    def progress(self, p: Any) -> None:
        if p.stage != self.stage:
            if self.bar is not None:
                self.bar.close()
            self.stage = p.stage
            self.bar = self._tqdm(total=p.total, desc=p.stage, unit="step", disable=self.quiet, file=sys.stderr)
        bar = self.bar
        bar.total = p.total
        bar.update(p.step - bar.n)
        figures = {"loss": p.loss, "margin": p.margin, "tok/s": p.tokens_per_s}
        bar.set_postfix({k: f"{v:.3g}" for k, v in figures.items() if v is not None}, refresh=False)

    def event(self, kind: str, data: dict[str, Any]) -> None:
        if kind in ("checkpoint", "evaluation") and not self.quiet:
            print(f"{kind}: {data}", file=sys.stderr)

    def cancelled(self) -> bool:
        return self.stop


def _run(args: argparse.Namespace) -> int:
    import signal

    import msgspec

    from align_worker.training.trainers import Cancelled, run_job
    from tacit.pairs import read_jsonl
    from tacit.schemas.align import AlignmentJobSpec

    spec = msgspec.json.decode(args.spec.read_bytes(), type=AlignmentJobSpec)
    pairs = [*read_jsonl(args.pairs / "train.jsonl")]
    test = args.pairs / "test.jsonl"
    if test.is_file():
        pairs += read_jsonl(test)
    control = _ConsoleControl(args.quiet)
    signal.signal(signal.SIGINT, lambda *_: setattr(control, "stop", True))
    try:
        result = run_job(spec, pairs, args.out, control)
    except Cancelled as stage:
        print(f"tacit: cancelled during {stage}; run again to resume from the last checkpoint", file=sys.stderr)
        return 130
    finally:
        if control.bar is not None:
            control.bar.close()
    (args.out / "result.json").write_bytes(msgspec.json.format(msgspec.json.encode(result)) + b"\n")
    print(msgspec.json.format(msgspec.json.encode(result.stages)).decode())
    return 0


def add_align_commands(sub: Any) -> None:
    align = sub.add_parser("align", help="alignment: demo model, preference pairs, local runs")
    actions = align.add_subparsers(dest="action", required=True)

    demo = actions.add_parser("demo-model", help="build a tiny random causal LM + locally trained tokenizer, offline")
    demo.add_argument("--out", type=Path, required=True)
    demo.add_argument("--hidden", type=int, default=64)
    demo.add_argument("--layers", type=int, default=2)
    demo.add_argument("--vocab", type=int, default=512)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo_model)

    export = actions.add_parser("export", help="write train.jsonl / test.jsonl preference pairs that trl loads")
    export.add_argument("--out", type=Path, required=True)
    export.add_argument("--gateway", default="http://127.0.0.1:8100", help="gateway holding the scored sessions")
    export.add_argument("--key", default=None, help="API key with the read scope")
    export.add_argument("--data", type=Path, default=None, help="an IFLLM folder instead (explicit labels only)")
    export.add_argument("--source", choices=["implicit", "explicit"], default="implicit")
    export.add_argument("--model-id", default=None, help="reward model whose scores choose (default: the active one)")
    export.add_argument("--include-demo", action="store_true", help="allow scores of a demo model")
    export.add_argument("--with-history", action="store_true", help="prefix earlier turns of the conversation")
    export.add_argument("--test-fraction", type=float, default=0.2)
    export.add_argument("--min-confidence", type=float, default=0.5)
    export.add_argument("--seed", type=int, default=42)
    export.set_defaults(func=_export)

    run = actions.add_parser("run", help="run a job spec on exported pairs here (no queue), with a progress bar")
    run.add_argument("--spec", type=Path, required=True, help="job spec JSON (kind sft | dpo | rdpo)")
    run.add_argument("--pairs", type=Path, required=True, help="folder with train.jsonl (and test.jsonl)")
    run.add_argument("--out", type=Path, required=True, help="work folder (run again to resume)")
    run.add_argument("--quiet", action="store_true")
    run.set_defaults(func=_run)
