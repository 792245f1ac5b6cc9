"""`tacit judge ...` commands. Register them with `add_judge_commands(sub)` on the top-level subparsers.

`tacit judge agreement --data DIR [--backend openai|local] [--limit N] [--predictions preds.csv] [--json]`
judges the IFLLM pairwise questions that carry a human preference and reports the judge's agreement with it
(see `judge_svc.agreement`). The judge is configured by the `TACIT_JUDGE_*` settings (base URL, model, key,
concurrency, retries); `--backend` and `--model` override them. No verdict cache unless `--cache` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_judge_commands"]


def _agreement(args: argparse.Namespace) -> int:
    import msgspec

    from judge_svc.agreement import judge_agreement, labelled_pairwise, read_predictions
    from judge_svc.app import make_backend
    from judge_svc.protocol import Judge, VerdictCache
    from judge_svc.settings import load_judge_settings
    from tacit.ifllm.reader import Dataset

    settings = load_judge_settings()
    overrides: dict[str, Any] = {}
    if args.backend is not None:
        overrides["backend"] = "openai_compat" if args.backend == "openai" else "local"
    if args.model is not None:
        overrides["model"] = args.model
    settings = msgspec.structs.replace(settings, **overrides)
    if not settings.configured:
        raise SystemExit("no judge LLM endpoint: set TACIT_JUDGE_BASE_URL (or --backend local --model DIR)")
    queries = labelled_pairwise(Dataset(args.data).queries, args.limit)
    predictions = read_predictions(args.predictions) if args.predictions is not None else None

    def progress(done: int, total: int) -> None:
        if not args.quiet and (done == total or done % 10 == 0):
            print(f"judged {done}/{total}", file=sys.stderr)

    async def run() -> Any:
        cache = VerdictCache.from_url(settings.redis_url, ttl_s=settings.cache_ttl_s) if args.cache else None
        judge = Judge(make_backend(settings), cache)
        try:
            return await judge_agreement(
                queries,
                judge,
                predictions=predictions,
                winner_rule=args.winner_rule,
                concurrency=4 * settings.concurrency,
                progress=progress,
            )
        finally:
            await judge.backend.aclose()
            if cache is not None:
                await cache.aclose()

    report = asyncio.run(run())
    data = report.to_dict(items=args.items)
    data.update(backend=settings.backend, model=settings.model, data=str(args.data))
    if args.json:
        print(json.dumps(data))
    else:
        width = max(map(len, data))
        for key, value in data.items():
            print(f"{key:<{width}}  {value}")
    return 0


def add_judge_commands(sub: Any) -> None:
    """Add the `judge` command group to the top-level subparsers."""
    judge = sub.add_parser("judge", help="LLM-as-judge: agreement with human preferences")
    actions = judge.add_subparsers(dest="action", required=True)
    ag = actions.add_parser("agreement", help="judge IFLLM pairwise questions and compare with the human preference")
    ag.add_argument("--data", type=Path, required=True, help="unpacked IFLLM folder")
    ag.add_argument("--backend", choices=["openai", "local"], default=None, help="default: TACIT_JUDGE_BACKEND")
    ag.add_argument("--model", default=None, help="default: TACIT_JUDGE_MODEL")
    ag.add_argument("--limit", type=int, default=None, help="first N labelled pairwise questions (by query id)")
    ag.add_argument("--predictions", type=Path, default=None, help="reward predictions CSV (query_id,p_right)")
    ag.add_argument("--winner-rule", choices=["from_scores", "from_winner_line"], default="from_scores")
    ag.add_argument("--cache", action="store_true", help="use the Redis verdict cache (TACIT_JUDGE_REDIS_URL)")
    ag.add_argument("--items", action="store_true", help="include per-question results")
    ag.add_argument("--json", action="store_true", help="print JSON")
    ag.add_argument("--quiet", action="store_true", help="no progress output")
    ag.set_defaults(func=_agreement)
