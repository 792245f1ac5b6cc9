"""`tacit keys`: which database it uses (flags, environment, the running `tacit up`), and that it never makes one
silently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.keys import authenticate
from tacit.db import Store
from tacit_cli.keys import keys_command
from tacit_cli.stacks import StackPointer, pointer_dir, running_stacks, write_pointer


def _field(out: str, name: str) -> str:
    return next(line.removeprefix(f"{name}: ") for line in out.splitlines() if line.startswith(f"{name}: "))


def _make_db(home: Path) -> str:
    url = f"sqlite:///{home / 'gateway.db'}"
    home.mkdir(parents=True, exist_ok=True)
    store = Store(url)
    store.migrate()
    store.close()
    return url


def _valid(url: str, token: str) -> bool:
    store = Store(url)
    try:
        return authenticate(store, token) is not None
    finally:
        store.close()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A user with nothing set: HOME in tmp_path, no runtime folder, no TACIT_* variables."""
    return {"HOME": str(tmp_path / "user")}


@pytest.fixture
def live_pid() -> Iterator[int]:
    """The pid of a live process standing in for a `tacit up`."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def _fake_stack(env: dict[str, str], home: Path, pid: int, port: int = 8111) -> StackPointer:
    url = _make_db(home)
    (home / "up.json").write_text(json.dumps({"pid": pid}))
    pointer = StackPointer(pid=pid, home=home, gateway_port=port, database_url=url)
    write_pointer(env, pointer)
    return pointer


def test_create_list_revoke_with_a_database_url(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'home' / 'gateway.db'}"
    argv = ["create", "--scope", "ingest", "--scope", "read", "--name", "ci", "--database-url", url, "--create"]
    assert keys_command(argv, env) == 0
    captured = capsys.readouterr()
    token, key_id = _field(captured.out, "key"), _field(captured.out, "id")
    assert f"database {url} (--database-url)" in captured.err
    assert "console:" not in captured.out  # no stack serves this database
    store = Store(url)
    try:
        row = authenticate(store, token)
        assert row is not None
        assert (row.id, row.name, row.scopes) == (key_id, "ci", ["ingest", "read"])
    finally:
        store.close()

    assert keys_command(["list", "--database-url", url], env) == 0
    listing = capsys.readouterr().out
    assert key_id in listing
    assert "ingest,read" in listing
    assert token not in listing

    assert keys_command(["revoke", key_id, "--database-url", url], env) == 0
    assert "revoked" in capsys.readouterr().out
    assert keys_command(["revoke", "nope", "--database-url", url], env) == 1
    assert "no key" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        keys_command(["create", "--scope", "root", "--database-url", url], env)
    capsys.readouterr()


@pytest.mark.parametrize("action", [["create", "--scope", "admin"], ["list"], ["revoke", "abc"]])
def test_a_missing_sqlite_database_is_refused_not_made(
    tmp_path: Path, env: dict[str, str], action: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "nowhere"
    assert keys_command([*action, "--home", str(home)], env) == 2
    err = capsys.readouterr().err
    assert str(home.resolve() / "gateway.db") in err
    assert f"tacit up --home {home.resolve()}" in err
    assert ("--create" in err) == (action[0] == "create")
    assert not home.exists()
    # The default home is refused the same way (the case of issue 18: nothing said, a database nobody serves).
    assert keys_command(action, env) == 2
    assert "the default home" in capsys.readouterr().err
    assert not Path(env["HOME"]).exists()


def test_create_makes_the_database_only_when_asked(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    home = tmp_path / "fresh"
    assert keys_command(["create", "--scope", "read", "--home", str(home), "--create"], env) == 0
    token = _field(capsys.readouterr().out, "key")
    assert _valid(f"sqlite:///{home / 'gateway.db'}", token)


def test_the_order_database_url_home_environment_tacit_home(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, c, d = (_make_db(tmp_path / name) for name in "abcd")
    cases = [
        (["--database-url", a, "--home", str(tmp_path / "b")], {"TACIT_HOME": str(tmp_path / "c")}, a),
        (["--home", str(tmp_path / "b")], {"TACIT_DATABASE_URL": d, "TACIT_HOME": str(tmp_path / "c")}, b),
        ([], {"TACIT_GATEWAY_DATABASE_URL": d, "TACIT_HOME": str(tmp_path / "c")}, d),
        ([], {"TACIT_HOME": str(tmp_path / "c")}, c),
    ]
    for flags, extra, expected in cases:
        assert keys_command(["create", "--scope", "read", *flags], env | extra) == 0, (flags, extra)
        captured = capsys.readouterr()
        assert f"database {expected} " in captured.err
        assert _valid(expected, _field(captured.out, "key"))


def test_the_running_stack_is_found_without_its_home_and_prints_a_console_link(
    tmp_path: Path, env: dict[str, str], live_pid: int, capsys: pytest.CaptureFixture[str]
) -> None:
    stack = _fake_stack(env, tmp_path / "H", live_pid, port=8111)
    pointer = pointer_dir(env) / f"up-{live_pid}.json"
    assert pointer.stat().st_mode & 0o777 == 0o600
    assert pointer_dir(env).stat().st_mode & 0o777 == 0o700
    assert keys_command(["create", "--scope", "admin"], env) == 0
    captured = capsys.readouterr()
    token = _field(captured.out, "key")
    assert _valid(stack.database_url, token)
    assert f"running tacit up (pid {live_pid}, home {tmp_path / 'H'})" in captured.err
    assert _field(captured.out, "console") == f"http://127.0.0.1:8111/console#key={token}"
    # --home naming that stack's home finds it too (and its database, which may not be <home>/gateway.db).
    assert keys_command(["create", "--scope", "read", "--home", str(tmp_path / "H")], env) == 0
    assert _field(capsys.readouterr().out, "console").startswith("http://127.0.0.1:8111/console#key=tacit_")


def test_a_stale_pointer_is_ignored_and_removed(
    tmp_path: Path, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a pid that was a tacit up's and is dead now
    _fake_stack(env, tmp_path / "H", proc.pid)
    assert running_stacks(env) == []
    assert not (pointer_dir(env) / f"up-{proc.pid}.json").exists()
    assert keys_command(["list"], env) == 2  # falls through to the default home, which has no database
    assert "the default home" in capsys.readouterr().err


def test_a_pointer_whose_home_now_names_another_pid_is_stale(
    tmp_path: Path, env: dict[str, str], live_pid: int
) -> None:
    _fake_stack(env, tmp_path / "H", live_pid)
    (tmp_path / "H" / "up.json").write_text(json.dumps({"pid": os.getpid()}))
    assert running_stacks(env) == []


def test_two_running_stacks_need_home(
    tmp_path: Path, env: dict[str, str], live_pid: int, capsys: pytest.CaptureFixture[str]
) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        _fake_stack(env, tmp_path / "A", live_pid)
        _fake_stack(env, tmp_path / "B", other.pid)
        assert keys_command(["list"], env) == 2
        err = capsys.readouterr().err
        assert "2 tacit up stacks are running" in err
        assert str(tmp_path / "A") in err
        assert str(tmp_path / "B") in err
        assert keys_command(["list", "--home", str(tmp_path / "B")], env) == 0
        assert f"pid {other.pid}" in capsys.readouterr().err
    finally:
        other.kill()
        other.wait()


def test_the_runtime_folder_holds_the_pointers_when_there_is_one(tmp_path: Path, env: dict[str, str]) -> None:
    runtime = tmp_path / "run"
    runtime.mkdir()
    assert pointer_dir(env | {"XDG_RUNTIME_DIR": str(runtime)}) == runtime / "tacit"
    assert pointer_dir(env | {"XDG_RUNTIME_DIR": str(tmp_path / "absent")}) == Path(env["HOME"]) / (
        ".local/share/tacit/stacks"
    )


def test_the_cli_wires_keys_with_home(tmp_path: Path) -> None:
    from tacit_cli.cli import _parser

    args = _parser().parse_args(["keys", "create", "--scope", "read", "--home", str(tmp_path), "--create"])
    assert args.home == tmp_path
    assert args.create is True
