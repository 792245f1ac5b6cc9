"""Pairs come from the stored texts (never the trajectories), and a preview is built once per store state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anyio
import msgspec
import pytest

import gateway.alignment as alignment
from tacit.db import Store
from tacit.db.payload import decode_payload, decode_text, prepare
from tacit.schemas.align import PairSelection
from tacit.simulate import simulate_session


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    st = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    st.migrate()
    for seed in range(12):
        st.sessions.put_session(
            simulate_session(seed=seed, samples=300, user_id=f"u{seed % 3}", task_id=f"t{seed}", session_id=f"s{seed}")
        )
    yield st
    st.close()


def test_text_decoding_keeps_everything_but_the_trajectories() -> None:
    session = simulate_session(seed=4, samples=500, mode="pointwise", texts=("now", "before"))
    full = decode_payload(prepare(session).payload)
    text = decode_text(prepare(session).payload)
    assert all(r.mouse is None and r.gaze is None for r in text.responses)
    assert text.viewport_mouse is None
    without_streams = msgspec.structs.replace(
        full,
        responses=[msgspec.structs.replace(r, mouse=None, gaze=None) for r in full.responses],
        viewport_mouse=None,
        viewport_gaze=None,
    )
    assert text == without_streams


def test_pairs_from_texts_equal_pairs_from_full_sessions(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    selection = PairSelection(source="explicit", with_history=True)
    pairs, summary = alignment.build_pairs(store, selection, None)
    assert summary.pairs == len(pairs) > 0
    # the same pairs when every session is decoded in full (the old path)
    monkeypatch.setattr(
        store.sessions, "load_texts", lambda rows: {r.session_id: store.sessions.load_payload(r) for r in rows}
    )
    assert alignment.build_pairs(store, selection, None) == (pairs, summary)


def test_a_preview_is_built_once_per_store_state(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    builds = []
    real = alignment.build_pairs

    def counting(*args: object) -> object:
        builds.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(alignment, "build_pairs", counting)
    cache = alignment._PreviewCache(size=2)
    selection = PairSelection(source="explicit")

    async def run() -> list[bytes]:
        first = await cache.get(store, selection, None)
        second = await cache.get(store, selection, None)
        store.sessions.put_session(simulate_session(seed=99, samples=300, user_id="u9", session_id="s99"))
        third = await cache.get(store, selection, None)
        return [first, second, third]

    first, second, third = anyio.run(run)
    assert first == second
    assert len(builds) == 2  # the repeat came from the cache; the new session made a rebuild
    assert msgspec.json.decode(third)["summary"]["sessions"] > msgspec.json.decode(first)["summary"]["sessions"]


def test_demo_token_sessions_enter_pairs_only_when_asked_for(store: Store) -> None:
    for seed in range(20, 26):
        demo = simulate_session(seed=seed, samples=100, user_id="anon", task_id=f"d{seed}", session_id=f"demo-{seed}")
        store.sessions.put_session(demo, demo=True)
    plain = PairSelection(source="explicit")
    asked = PairSelection(source="explicit", include_demo_sessions=True)
    without = alignment.build_pairs(store, plain, None)[0]
    with_demo = alignment.build_pairs(store, asked, None)[0]
    assert not any("anon" in p.users for p in without)
    assert sum("anon" in p.users for p in with_demo) == 6
