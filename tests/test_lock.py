"""requirements.lock and pyproject.toml must agree: every declared requirement is locked at a version it allows.

`make install` installs the lock and then Tacit with `--no-deps`, so a requirement added to pyproject.toml
without `make lock` would be missing on a fresh machine; this test says so before CI does.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCKED_EXTRAS = ("dev", "align", "postgres")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;]+)")


def _locked() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in (ROOT / "requirements.lock").read_text("utf-8").splitlines():
        match = _PIN.match(line)
        if match:
            pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    declared = [Requirement(r) for r in project["dependencies"]]
    for extra in LOCKED_EXTRAS:
        declared += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return declared


def test_every_declared_requirement_is_locked_at_an_allowed_version() -> None:
    locked = _locked()
    problems = []
    for requirement in _declared():
        name = canonicalize_name(requirement.name)
        if name not in locked:
            problems.append(f"{requirement} is not in requirements.lock")
        elif not requirement.specifier.contains(locked[name], prereleases=True):
            problems.append(f"{requirement} but the lock has {name}=={locked[name]}")
    assert not problems, "run `make lock`: " + "; ".join(problems)


def test_every_lock_line_is_an_exact_pin() -> None:
    # pip-compile writes `name==version` lines and comments only; anything else was edited by hand
    for line in (ROOT / "requirements.lock").read_text("utf-8").splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            assert _PIN.match(stripped), f"not an exact pin in requirements.lock: {line!r}"


def test_torch_is_the_cpu_release_the_machines_carry() -> None:
    # the lock names the release; pip takes this machine's +cpu wheel of it (see the Makefile's lock target)
    assert str(_locked()["torch"]) == "2.13.0"
