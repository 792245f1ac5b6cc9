"""Paths in requests stay inside the data roots, and the refusal never says whether a path exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.data_roots import NOT_ALLOWED, allowed_path
from tacit.schemas.problem import RequestError


def test_inside_a_root_is_allowed_and_resolved(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "ifllm").mkdir(parents=True)
    assert allowed_path(str(root / "ifllm"), [str(root)], "data") == (root / "ifllm").resolve()
    assert allowed_path(str(root), [str(root)], "data") == root.resolve()


@pytest.mark.parametrize("target", ["/etc/passwd", "/nonexistent/xyz", "{root}/../outside", "{root}x", "{link}"])
def test_outside_every_root_is_refused_alike(tmp_path: Path, target: str) -> None:
    root = tmp_path / "data"
    root.mkdir()
    (tmp_path / "outside").mkdir()
    (root / "link").symlink_to(tmp_path / "outside")  # a link out of the root does not get out
    raw = target.format(root=root, link=root / "link")
    with pytest.raises(RequestError) as info:
        allowed_path(raw, [str(root)], "data")
    assert (info.value.status, info.value.field, info.value.detail) == (422, "data", NOT_ALLOWED)


def test_no_roots_means_no_restriction() -> None:
    assert allowed_path("/anywhere", [], "data") == Path("/anywhere")


def test_routes_read_only_inside_the_roots(tmp_path: Path) -> None:
    from litestar.testing import TestClient

    from gateway.app import create_app
    from gateway.keys import create_key
    from gateway.settings import GatewaySettings
    from tacit.db import Store

    database = f"sqlite:///{tmp_path / 'gateway.db'}"
    store = Store(database)
    store.migrate()
    admin = create_key(store, ["admin"])[0]
    store.close()
    root = tmp_path / "data"
    root.mkdir()
    down = "http://127.0.0.1:9"
    settings = GatewaySettings(
        database_url=database,
        feature_url=down,
        reward_url=down,
        judge_url=down,
        retries=0,
        timeout_s=1,
        rescore_interval_s=3600,
        data_roots=[str(root)],
    )
    with TestClient(create_app(settings)) as client:
        client.headers["Authorization"] = f"Bearer {admin}"
        answers = [
            client.post("/v1/imports/ifllm", json={"data": path}).json()
            for path in ("/etc", "/no/such/folder", str(tmp_path))
        ]
        # outside the roots, an existing folder and a missing one get the very same answer
        assert all(a == answers[0] for a in answers)
        assert (answers[0]["field"], answers[0]["detail"]) == ("data", NOT_ALLOWED)
        inside = client.post("/v1/imports/ifllm", json={"data": str(root / "missing")})
        assert inside.status_code == 422
        assert "not an IFLLM folder" in inside.json()["detail"]
        training = client.post("/v1/reward/models", json={"data": "/etc/passwd"})
        assert training.status_code == 422
        assert (training.json()["field"], training.json()["detail"]) == ("data", NOT_ALLOWED)
        tagged = client.post("/v1/reward/models", json={"source": {"kind": "ifllm", "data": "/etc"}})
        assert (tagged.status_code, tagged.json()["field"]) == (422, "source.data")
