"""The `tacit` command line. Subcommands import their service lazily so `tacit --help` stays instant."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _data_summary(args: argparse.Namespace) -> int:
    from tacit.ifllm.reader import Dataset

    summary = Dataset(args.data).summary()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        width = max(map(len, summary))
        for key, value in summary.items():
            print(f"{key:<{width}}  {value}")
    return 0


def _features_extract(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from feature_svc.extract import extract_table, write_table

    bar = tqdm(total=0, unit="task", desc="extract", disable=args.quiet, file=sys.stderr)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    result = extract_table(args.data, mode=args.mode, workers=args.workers, progress=progress)
    bar.close()
    path = write_table(result, args.out)
    import pyarrow.compute as pc

    table = result.table
    pairwise = int(pc.sum(pc.and_(table["label"].is_valid(), pc.equal(table["mode"], "pairwise"))).as_py() or 0)
    report = {
        "out": str(path),
        "mode": result.mode,
        "rows": result.rows,
        "labelled_pairwise_rows": pairwise,
        "columns": result.table.num_columns,
        "tasks": result.tasks,
        "samples": result.samples,
        "malformed_rows_skipped": result.skipped_rows,
        "seconds": round(result.seconds, 2),
        "rows_per_s": round(result.rows / result.seconds, 1),
        "samples_per_s": round(result.samples / result.seconds),
    }
    print(json.dumps(report) if args.json else "\n".join(f"{k}: {v}" for k, v in report.items()))
    return 0


def _features_sets(args: argparse.Namespace) -> int:
    from feature_svc.features.sets import FEATURE_SETS

    for fs in FEATURE_SETS.values():
        sizes = ", ".join(
            f"{mode} {len(names)}" for mode in ("pairwise", "pointwise") if (names := getattr(fs, mode)) is not None
        )
        print(f"{fs.id:<18} {sizes or 'every extracted feature':<28} {fs.description}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    if args.service == "features":
        from feature_svc.app import serve as serve_features

        serve_features()
    elif args.service == "reward":
        from reward_svc.app import serve as serve_reward

        serve_reward()
    elif args.service == "gateway":
        from gateway.app import serve as serve_gateway

        serve_gateway()
    elif args.service == "judge":
        from judge_svc.app import serve as serve_judge

        serve_judge()
    return 0


def _worker(args: argparse.Namespace) -> int:
    """A Celery worker for the given queues (real Redis from TACIT_WORKER_REDIS_URL)."""
    from tacit_cli.worker import app

    argv = ["worker", "-Q", ",".join(args.queues), "--pool", "solo", "--loglevel", args.loglevel]
    app.worker_main(argv)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tacit", description="Implicit-feedback preference scoring and alignment.")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="IFLLM data").add_subparsers(dest="action", required=True)
    summary = data.add_parser("summary", help="count questions, workers and labels in an IFLLM folder")
    summary.add_argument("--data", type=Path, required=True, help="unpacked IFLLM folder")
    summary.add_argument("--json", action="store_true")
    summary.set_defaults(func=_data_summary)

    features = sub.add_parser("features", help="feature extraction").add_subparsers(dest="action", required=True)
    extract = features.add_parser("extract", help="one row per question: ids, mode, label and features")
    extract.add_argument("--data", type=Path, required=True, help="unpacked IFLLM folder")
    extract.add_argument("--out", type=Path, required=True, help="output .parquet or .csv")
    extract.add_argument("--mode", choices=["default", "reference"], default="default")
    extract.add_argument("--workers", type=int, default=2)
    extract.add_argument("--json", action="store_true", help="print the report as JSON")
    extract.add_argument("--quiet", action="store_true", help="no progress bar")
    extract.set_defaults(func=_features_extract)
    sets = features.add_parser("sets", help="list the named feature sets")
    sets.set_defaults(func=_features_sets)

    # Services register their own subcommands (imported lazily inside their handlers).
    from reward_svc.cli import add_reward_commands

    add_reward_commands(sub)

    from align_worker.cli import add_align_commands
    from judge_svc.cli import add_judge_commands
    from tacit.ifllm.sessions import add_sessions_command
    from tacit_cli.keys import add_keys_commands
    from tacit_cli.up import add_up_command

    add_keys_commands(sub)
    add_align_commands(sub)
    add_judge_commands(sub)
    add_up_command(sub)
    add_sessions_command(sub)

    serve = sub.add_parser("serve", help="run a service in the foreground")
    serve.add_argument("service", choices=["gateway", "features", "reward", "judge"])
    serve.set_defaults(func=_serve)

    worker = sub.add_parser("worker", help="run a Celery worker (cpu queue by default)")
    worker.add_argument("--queues", nargs="+", default=["cpu"], choices=["cpu", "align"])
    worker.add_argument("--loglevel", default="INFO")
    worker.set_defaults(func=_worker)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except FileNotFoundError as err:
        print(f"tacit: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
