"""`tacit keys create|list|revoke`: the gateway's API keys, in the database of the stack the user means.

The database is, first found: `--database-url`; `--home DIR` (the database of the stack running there, else
`DIR/gateway.db`); `TACIT_GATEWAY_DATABASE_URL` or `TACIT_DATABASE_URL`; `TACIT_HOME`; the one running `tacit up`
(see tacit_cli/stacks.py); the default home. A SQLite database that does not exist is not made silently: the
command stops and says how to start a stack there, or `create --create` makes it. Which database was used goes
to stderr.

This is a composition root: it reads the process environment for the settings the gateway would read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.keys import create_key, list_keys, revoke
from tacit.db import SCOPES, Store
from tacit_cli.stacks import StackPointer, default_home, running_stacks

__all__ = ["KeysError", "Target", "add_keys_commands", "keys_command", "resolve"]


class KeysError(RuntimeError):
    """The database cannot be chosen or opened; the message says what to do."""


@dataclass(frozen=True)
class Target:
    """The database a `tacit keys` command works on, why that one, and the stack serving it (if running)."""

    url: str
    source: str
    stack: StackPointer | None = None


def _sqlite_path(url: str) -> Path | None:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _same_home(a: Path, b: Path) -> bool:
    return a.expanduser().resolve() == b.expanduser().resolve()


def _in_home(home: Path, source: str, stacks: Sequence[StackPointer]) -> Target:
    stack = next((s for s in stacks if _same_home(s.home, home)), None)
    if stack is not None:
        return Target(stack.database_url, f"{source}: the tacit up (pid {stack.pid}) running there", stack)
    return Target(f"sqlite:///{home.expanduser().resolve() / 'gateway.db'}", source)


def resolve(database_url: str, home: Path | None, environ: Mapping[str, str]) -> Target:
    """The database to use (see the module docstring for the order)."""
    stacks = running_stacks(environ)
    serving = {s.database_url: s for s in stacks}
    if database_url:
        return Target(database_url, "--database-url", serving.get(database_url))
    if home is not None:
        return _in_home(home, f"--home {home}", stacks)
    for name in ("TACIT_GATEWAY_DATABASE_URL", "TACIT_DATABASE_URL"):
        if environ.get(name):
            return Target(environ[name], name, serving.get(environ[name]))
    if environ.get("TACIT_HOME"):
        return _in_home(Path(environ["TACIT_HOME"]), f"TACIT_HOME={environ['TACIT_HOME']}", stacks)
    if len(stacks) == 1:
        stack = stacks[0]
        return Target(stack.database_url, f"the running tacit up (pid {stack.pid}, home {stack.home})", stack)
    if len(stacks) > 1:
        homes = "; ".join(f"pid {s.pid}: --home {shlex.quote(str(s.home))}" for s in stacks)
        raise KeysError(f"{len(stacks)} tacit up stacks are running ({homes}); say which with --home")
    return _in_home(default_home(environ), "the default home", stacks)


def _redact(url: str) -> str:
    from tacit_cli.up import redact

    return redact(url)


def _open(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[Store, Target]:
    target = resolve(args.database_url, args.home, environ)
    path = _sqlite_path(target.url)
    if path is not None and not path.exists() and not getattr(args, "create", False):
        home = path.parent
        make = " or pass --create to make it now" if hasattr(args, "create") else ""
        raise KeysError(
            f"no gateway database at {path} (chosen by {target.source}). Start a stack there first "
            f"(tacit up --home {shlex.quote(str(home))}){make}; or name another with --home or --database-url"
        )
    print(f"tacit keys: database {_redact(target.url)} ({target.source})", file=sys.stderr)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = Store(target.url)
    store.migrate()
    return store, target


def _when(value: dt.datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%SZ")


def _create(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    store, target = _open(args, environ)
    try:
        token, row = create_key(store, args.scope, args.name)
    finally:
        store.close()
    print(f"key: {token}")
    print(f"id: {row.id}")
    print(f"scopes: {' '.join(row.scopes)}")
    if target.stack is not None:
        print(f"console: {target.stack.gateway_url}/console#key={token}")
    print("The key is shown only once; store it now.", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    store, _ = _open(args, environ)
    try:
        rows = list_keys(store)
    finally:
        store.close()
    header = ("id", "name", "prefix", "scopes", "created", "last used", "revoked")
    table = [header] + [
        (
            row.id,
            row.name or "-",
            row.prefix + "…",
            ",".join(row.scopes),
            _when(row.created_at),
            _when(row.last_used_at),
            _when(row.revoked_at),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    return 0


def _revoke(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    store, _ = _open(args, environ)
    try:
        row = revoke(store, args.id)
    finally:
        store.close()
    if row is None:
        print(f"tacit: no key with id {args.id!r}", file=sys.stderr)
        return 1
    print(f"revoked {row.id} ({row.prefix}…) at {_when(row.revoked_at)}")
    return 0


_ORDER = (
    "The database: --database-url, else --home (the database of the tacit up running there, else DIR/gateway.db), "
    "else TACIT_GATEWAY_DATABASE_URL or TACIT_DATABASE_URL, else TACIT_HOME, else the one running tacit up, else "
    "the default home (~/.local/share/tacit). A SQLite file that does not exist is never made silently. The "
    "database used is printed to stderr."
)


def _add_parsers(keys: argparse.ArgumentParser) -> None:
    database = argparse.ArgumentParser(add_help=False)
    database.add_argument("--database-url", default="", help="the gateway database, used as is (SQLite or PostgreSQL)")
    database.add_argument("--home", type=Path, default=None, help="the data home of the stack (as given to tacit up)")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser(
        "create",
        parents=[database],
        help="create a key and print it once",
        description="Create a key and print it once (stdout), with a console login link "
        "(console: http://HOST:PORT/console#key=...) when the database is a running stack's. " + _ORDER,
    )
    create.add_argument(
        "--scope", action="append", required=True, choices=SCOPES, help="repeat for several; admin implies all"
    )
    create.add_argument("--name", default="", help="a label shown in listings")
    create.add_argument("--create", action="store_true", help="make the SQLite database if it does not exist")
    create.set_defaults(handler=_create, func=_run)
    listing = actions.add_parser(
        "list", parents=[database], help="list keys (never the tokens)", description="List keys. " + _ORDER
    )
    listing.set_defaults(handler=_list, func=_run)
    revoking = actions.add_parser(
        "revoke", parents=[database], help="revoke a key by id", description="Revoke a key by id. " + _ORDER
    )
    revoking.add_argument("id")
    revoking.set_defaults(handler=_revoke, func=_run)


def _run(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    try:
        return int(args.handler(args, env))
    except KeysError as err:
        print(f"tacit keys: {err}", file=sys.stderr)
        return 2


def add_keys_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `tacit keys ...` on the main parser's subcommands (each action sets `func`)."""
    keys = sub.add_parser("keys", help="API keys of the gateway", description="API keys of the gateway. " + _ORDER)
    _add_parsers(keys)


def keys_command(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int:
    """`tacit keys <create|list|revoke> ...`; `argv` is what follows `keys`. Returns the exit status."""
    parser = argparse.ArgumentParser(prog="tacit keys", description="API keys of the gateway. " + _ORDER)
    _add_parsers(parser)
    return _run(parser.parse_args(list(argv)), environ)
