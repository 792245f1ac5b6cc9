"""The gateway Store on SQLite and on PostgreSQL: sessions, features, scores, erasure, jobs, retention, migrations."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import MetaData, Table, inspect, text
from sqlmodel import SQLModel

from tacit.db import (
    LATEST,
    InvalidCursorError,
    PayloadPurgedError,
    SchemaTooNewError,
    SessionConflict,
    SessionRow,
    Store,
)
from tacit.db.migrations import MIGRATIONS
from tacit.db.models import _Base
from tacit.db.payload import canonical_json, prepare, strip_unconsented
from tacit.db.sessions import session_row
from tacit.db.testing import database_text, postgres_schema
from tacit.schemas.features import FeatureVector
from tacit.schemas.reward import Score
from tacit.schemas.session import Consent, Feedback, Session, ViewportStream
from tacit.simulate import simulate_session

T0 = dt.datetime(2025, 1, 6, 9, 0, tzinfo=dt.UTC)
GATEWAY_TABLES = {
    "sessions",
    "feature_names",
    "api_keys",
    "erasures",
    "training_sets",
    "jobs",
    "schema_version",
    "alignment_jobs",
    "alignment_pairs",
    "alignment_pair_users",
    "job_events",
    "session_scores",
    "rescore_batches",
}


NO_PAIRS = {"alignment_pairs": 0, "alignment_pair_users": 0}


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh schema in the session's PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.db'}"
    else:
        with postgres_schema(request.getfixturevalue("postgres_url")) as url:
            yield url


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    st = Store(db_url, max_score_attempts=3)
    st.migrate()
    yield st
    st.close()


def sim(seed: int, **kw: object) -> Session:
    return simulate_session(seed=seed, samples=kw.pop("samples", 60), **kw)  # type: ignore[arg-type]


# -- migrations -------------------------------------------------------------------------------------------


def _indexes(url: str, table: str) -> set[str]:
    st = Store(url)
    try:
        return {ix["name"] for ix in inspect(st.engine).get_indexes(table) if ix["name"]}
    finally:
        st.close()


def test_migrate_twice_is_a_noop(db_url: str) -> None:
    st = Store(db_url)
    try:
        assert st.schema_version() == 0
        assert st.migrate() == [m.version for m in MIGRATIONS]
        assert st.migrate() == []
        assert st.schema_version() == LATEST
        assert set(inspect(st.engine).get_table_names()) >= GATEWAY_TABLES
    finally:
        st.close()


def test_concurrent_start_ups_migrate_once(db_url: str) -> None:
    stores = [Store(db_url) for _ in range(4)]
    try:
        with ThreadPoolExecutor(4) as pool:
            applied = list(pool.map(lambda st: st.migrate(), stores))
        assert sorted(v for versions in applied for v in versions) == [m.version for m in MIGRATIONS]
        with stores[0].engine.connect() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM schema_version")).scalar_one() == len(MIGRATIONS)
    finally:
        for st in stores:
            st.close()


def test_a_database_at_a_future_version_is_refused(store: Store) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO schema_version (version, name) VALUES (:v, 'from the future')"), {"v": LATEST + 1}
        )
    with pytest.raises(SchemaTooNewError, match=rf"version {LATEST + 1} .* up to {LATEST}"):
        store.migrate()
    second = Store(store.url)
    try:
        with pytest.raises(SchemaTooNewError):
            second.migrate()
    finally:
        second.close()


def test_a_v1_database_is_upgraded_by_the_next_step(db_url: str) -> None:
    st = Store(db_url)
    try:
        assert st.migrate(target=1) == [1]
        assert st.schema_version() == 1
        assert "ix_sessions_user_id" in _indexes(db_url, "sessions")
        # Data written under v1 (its columns only: the models have grown since) survives the upgrade.
        v1_sessions = Table("sessions", MetaData(), autoload_with=st.engine)
        v1_row = session_row(prepare(sim(1)), T0)
        with st.engine.begin() as conn:
            conn.execute(v1_sessions.insert().values({c.name: getattr(v1_row, c.name) for c in v1_sessions.columns}))
        assert st.migrate() == list(range(2, LATEST + 1))
        indexes = _indexes(db_url, "sessions")
        assert {"ix_sessions_user_received", "ix_sessions_status_received"} <= indexes
        assert "ix_sessions_user_id" not in indexes
        row = st.sessions.get_session("sim-1")
        assert row is not None
        assert st.sessions.load_payload(row) == sim(1)
    finally:
        st.close()


def test_migration_target_out_of_range(db_url: str) -> None:
    st = Store(db_url)
    try:
        with pytest.raises(ValueError, match="target version"):
            st.migrate(target=LATEST + 1)
    finally:
        st.close()


def test_models_agree_with_the_migrated_schema(store: Store) -> None:
    assert _Base.metadata is not SQLModel.metadata  # never mixed with another service's tables
    inspector = inspect(store.engine)
    for table in _Base.metadata.sorted_tables:
        columns = {c["name"]: c["nullable"] for c in inspector.get_columns(table.name)}
        assert columns == {c.name: c.nullable for c in table.columns}, table.name
        declared = {ix.name for ix in table.indexes}
        assert {ix["name"] for ix in inspector.get_indexes(table.name)} == declared, table.name


# -- sessions ---------------------------------------------------------------------------------------------


def test_put_get_and_payload_round_trip(store: Store) -> None:
    session = sim(1, user_id="u1", task_id="t1")
    row, created = store.sessions.put_session(session)
    assert created
    got = store.sessions.get_session("sim-1")
    assert got is not None
    assert (got.user_id, got.task_id, got.query_id, got.mode) == ("u1", "t1", "sim-q-1", "pairwise")
    assert (got.consent_mouse, got.consent_gaze, got.consent_camera) == (True, True, True)
    assert got.received_at.tzinfo is not None
    assert got.received_at == row.received_at
    assert got.samples == sum(len(s.t_page_ms) for r in session.responses for s in (r.mouse, r.gaze) if s)
    assert got.score_status == "pending"
    assert got.score_attempts == 0
    assert got.payload_sha256 == hashlib.sha256(canonical_json(session)).hexdigest()
    assert store.sessions.load_payload(got) == session
    assert store.sessions.get_session("missing") is None


def test_same_session_again_returns_the_stored_row(store: Store) -> None:
    session = sim(2)
    first, created = store.sessions.put_session(session, received_at=T0)
    again, created_again = store.sessions.put_session(session)
    assert created
    assert not created_again
    assert again.received_at == first.received_at == T0
    assert store.users.count_user_rows("sim-user")["sessions"] == 1


def test_same_id_other_content_is_a_conflict(store: Store) -> None:
    store.sessions.put_session(sim(3))
    other = sim(4, session_id="sim-3")
    with pytest.raises(SessionConflict) as err:
        store.sessions.put_session(other)
    assert err.value.session_id == "sim-3"
    row = store.sessions.get_session("sim-3")
    assert row is not None
    assert store.sessions.load_payload(row) == sim(3)


def test_concurrent_puts_of_one_session_create_it_once(store: Store) -> None:
    session = sim(5)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: store.sessions.put_session(session), range(16)))
    assert sum(created for _, created in results) == 1
    assert {row.payload_sha256 for row, _ in results} == {results[0][0].payload_sha256}
    with ThreadPoolExecutor(8) as pool:
        created_many = list(pool.map(lambda i: store.sessions.put_session(sim(100 + i))[1], range(16)))
    assert all(created_many)
    assert store.users.count_user_rows("sim-user")["sessions"] == 17


def test_put_sessions_batch(store: Store) -> None:
    store.sessions.put_session(sim(6))
    results = store.sessions.put_sessions([sim(7), sim(6), sim(8, session_id="sim-6"), sim(7)])
    first, existing, conflict, duplicate = results
    assert isinstance(first, tuple)
    assert first[1]
    assert isinstance(existing, tuple)
    assert not existing[1]
    assert isinstance(conflict, SessionConflict)
    assert conflict.session_id == "sim-6"
    assert isinstance(duplicate, tuple)
    assert not duplicate[1]
    assert store.users.count_user_rows("sim-user")["sessions"] == 2


@pytest.mark.parametrize(
    ("mode", "preference", "label"),
    [("pairwise", "right", 1), ("pairwise", "left", 0), ("pointwise", "current", 1), ("pointwise", "previous", 0)],
)
def test_label_from_explicit_feedback(store: Store, mode: str, preference: str, label: int) -> None:
    session = msgspec.structs.replace(sim(9, mode=mode), feedback=Feedback(preference=preference))  # type: ignore[arg-type]
    row, _ = store.sessions.put_session(session)
    assert row.label == label
    unlabelled, _ = store.sessions.put_session(sim(10, mode=mode, feedback=False))
    assert unlabelled.label is None


def test_unconsented_signals_are_never_stored(store: Store) -> None:
    full = sim(11, samples=80)
    assert all(r.gaze is not None and r.gaze.head_in_box is not None for r in full.responses)
    viewport = ViewportStream(x=[1.0], y=[2.0], t_page_ms=[0.0])
    # Bypasses validation on purpose: the gateway refuses this body, the store must strip it anyway.
    sneaky = msgspec.structs.replace(
        full,
        consent=Consent(mouse=True, gaze=False, camera=False),
        viewport_gaze=viewport,
        viewport_mouse=viewport,
    )
    row, _ = store.sessions.put_session(sneaky)
    assert (row.consent_mouse, row.consent_gaze, row.consent_camera) == (True, False, False)
    kept = store.sessions.load_payload(row)
    assert all(r.gaze is None for r in kept.responses)
    assert all(r.mouse is not None and r.mouse.head_in_box is None for r in kept.responses)
    assert kept.viewport_gaze is None
    assert kept.calibration_accuracy is None
    assert kept.viewport_mouse == viewport
    assert row.samples == sum(len(r.mouse.t_page_ms) for r in kept.responses if r.mouse)
    dump = database_text(store.url)
    assert "head_in_box" not in dump
    assert '"gaze":{' not in dump
    # Re-posting the same body is idempotent: what counts is the stored (stripped) content.
    assert store.sessions.put_session(sneaky)[1] is False
    assert strip_unconsented(sneaky) == kept

    no_mouse = msgspec.structs.replace(sim(12), consent=Consent(mouse=False, gaze=True, camera=True))
    kept_gaze = store.sessions.load_payload(store.sessions.put_session(no_mouse)[0])
    assert all(r.mouse is None and r.gaze is not None for r in kept_gaze.responses)


def test_find_turn(store: Store) -> None:
    store.sessions.put_session(sim(13, mode="pointwise", session_id="a", task_id="conv"), received_at=T0)
    turn = store.sessions.get_session("a")
    assert turn is not None
    assert turn.turn is not None
    found = store.sessions.find_turn("sim-user", "conv", turn.turn)
    assert found is not None
    assert found.session_id == "a"
    assert store.sessions.load_payload(found).session_id == "a"
    assert store.sessions.find_turn("sim-user", "conv", turn.turn + 1) is None
    assert store.sessions.find_turn("someone-else", "conv", turn.turn) is None


def test_list_sessions_pages_through_everything(store: Store) -> None:
    # Ties on received_at are broken by session id, so no row is skipped or repeated across pages.
    times = [T0, T0, T0 + dt.timedelta(seconds=1), T0 + dt.timedelta(seconds=2), T0, T0 + dt.timedelta(seconds=3)]
    for i, at in enumerate(times):
        store.sessions.put_session(sim(20 + i, session_id=f"s{5 - i}", user_id="u1"), received_at=at)
    store.sessions.put_session(sim(30, session_id="other", user_id="u2"), received_at=T0 + dt.timedelta(seconds=1))
    expected = sorted([(at, f"s{5 - i}") for i, at in enumerate(times)])

    seen: list[tuple[dt.datetime, str]] = []
    cursor: str | None = None
    pages = 0
    while True:
        rows, cursor = store.sessions.list_sessions(user_id="u1", limit=2, cursor=cursor)
        seen.extend((row.received_at, row.session_id) for row in rows)
        pages += 1
        if cursor is None:
            break
    assert seen == expected
    assert pages == 3

    everything, last = store.sessions.list_sessions(limit=100)
    assert len(everything) == 7
    assert last is None
    since, _ = store.sessions.list_sessions(since=T0 + dt.timedelta(seconds=2), limit=10)
    assert [row.session_id for row in since] == ["s2", "s0"]
    assert store.sessions.load_payload(everything[0]).session_id == everything[0].session_id  # payload loads on demand

    with pytest.raises(InvalidCursorError):
        store.sessions.list_sessions(limit=2, cursor="not-a-cursor")
    with pytest.raises(ValueError, match="limit"):
        store.sessions.list_sessions(limit=0)


def test_naive_datetimes_are_taken_as_utc(store: Store) -> None:
    store.sessions.put_session(sim(31), received_at=dt.datetime(2025, 1, 6, 9, 0))
    row = store.sessions.get_session("sim-31")
    assert row is not None
    assert row.received_at == T0
    rows, _ = store.sessions.list_sessions(since=dt.datetime(2025, 1, 6, 9, 0), limit=5)
    assert [r.session_id for r in rows] == ["sim-31"]


# -- features and scores ----------------------------------------------------------------------------------


def test_features_are_stored_with_names_once(store: Store) -> None:
    for seed in (40, 41):
        store.sessions.put_session(sim(seed))
        store.scores.set_features(f"sim-{seed}", "all", "v1", ["a", "b", "c"], [1.0, 2.5, seed])
    row = store.sessions.get_session("sim-41")
    assert row is not None
    assert row.features == [1.0, 2.5, 41.0]
    assert store.scores.features_of(row) == FeatureVector(
        session_id="sim-41",
        feature_set="all",
        feature_set_version="v1",
        names=["a", "b", "c"],
        values=[1.0, 2.5, 41.0],
        samples=row.samples,
    )
    assert store.scores.feature_names("all", "v1") == ["a", "b", "c"]
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM feature_names")).scalar_one() == 1
    with pytest.raises(ValueError, match="other names"):
        store.scores.set_features("sim-40", "all", "v1", ["a", "c", "b"], [1.0, 2.0, 3.0])
    # A second Store (another process) sees the names stored by the first.
    other = Store(store.url)
    try:
        with pytest.raises(ValueError, match="other names"):
            other.scores.set_features("sim-40", "all", "v1", ["x", "y", "z"], [1.0, 2.0, 3.0])
        assert other.scores.features_of(row) is not None
    finally:
        other.close()
    with pytest.raises(ValueError, match="finite"):
        store.scores.set_features("sim-40", "all", "v2", ["a"], [float("nan")])
    with pytest.raises(ValueError, match="values"):
        store.scores.set_features("sim-40", "all", "v2", ["a"], [])
    with pytest.raises(KeyError):
        store.scores.set_features("missing", "all", "v1", ["a", "b", "c"], [1.0, 2.0, 3.0])
    fresh = store.sessions.get_session("sim-40")
    assert fresh is not None
    assert fresh.features == [1.0, 2.5, 40.0]
    vector = FeatureVector(session_id="sim-40", feature_set="text", feature_set_version="1", names=["n"], values=[3.0])
    assert store.scores.set_feature_vectors([vector]) == 1


def test_scoring_lifecycle(store: Store) -> None:
    for i, seed in enumerate((50, 51, 52, 53)):
        store.sessions.put_session(sim(seed), received_at=T0 + dt.timedelta(seconds=3 - i))
    assert [row.session_id for row in store.scores.pending(10)] == ["sim-53", "sim-52", "sim-51", "sim-50"]
    assert len(store.scores.pending(2)) == 2

    scored = store.scores.set_score(
        "sim-53", p=0.8, preferred="right", confidence=0.8, quality=0.9, abstained=False, model_id="m1", model_demo=True
    )
    assert scored.score_status == "scored"
    row = store.sessions.get_session("sim-53")
    assert row is not None
    assert (row.p, row.preferred, row.confidence, row.quality, row.abstained) == (0.8, "right", 0.8, 0.9, False)
    assert (row.model_id, row.model_demo) == ("m1", True)
    assert row.scored_at is not None
    assert row.scored_at.tzinfo is not None
    with pytest.raises(KeyError):
        store.scores.set_score(
            "missing",
            p=0.5,
            preferred="left",
            confidence=0.5,
            quality=None,
            abstained=True,
            model_id="m",
            model_demo=False,
        )

    # A dependency being down is noted without counting an attempt.
    deferred = store.scores.defer_score("sim-52", "reward_svc down")
    assert (deferred.score_status, deferred.score_attempts, deferred.score_error) == ("pending", 0, "reward_svc down")

    # max_score_attempts=3 in the fixture: pending, pending, then failed.
    statuses = []
    for attempt in range(3):
        failed = store.scores.mark_score_failed("sim-52", f"bad input {attempt}")
        statuses.append((failed.score_status, failed.score_attempts))
    assert statuses == [("pending", 1), ("pending", 2), ("failed", 3)]
    assert store.sessions.get_session("sim-52").score_error == "bad input 2"  # type: ignore[union-attr]
    assert store.scores.mark_score_failed("sim-52", "again").score_attempts == 3  # no longer pending: unchanged
    assert store.scores.mark_score_failed("sim-53", "late").score_status == "scored"
    with pytest.raises(KeyError):
        store.scores.mark_score_failed("missing", "x")
    assert [row.session_id for row in store.scores.pending(10)] == ["sim-51", "sim-50"]

    score = Score(
        session_id="sim-51",
        p=0.3,
        preferred="left",
        confidence=0.7,
        abstained=False,
        quality=None,
        model_id="m2",
        demo=False,
    )
    assert store.scores.set_scores([score, msgspec.structs.replace(score, session_id="missing")]) == 1
    assert [row.session_id for row in store.scores.pending(10)] == ["sim-50"]
    row = store.sessions.get_session("sim-51")
    assert row is not None
    assert (row.score_status, row.p, row.model_id, row.model_demo) == ("scored", 0.3, "m2", False)


def test_set_result_stores_features_and_score_together(store: Store) -> None:
    store.sessions.put_session(sim(55))
    vector = FeatureVector(session_id="sim-55", feature_set="all", feature_set_version="v1", names=["a"], values=[2.0])
    score = Score(
        session_id="sim-55",
        p=0.9,
        preferred="right",
        confidence=0.9,
        abstained=True,
        quality=0.2,
        model_id="m",
        demo=True,
    )
    row = store.scores.set_result(vector, score)
    assert (row.features, row.score_status, row.p, row.abstained, row.model_demo) == ([2.0], "scored", 0.9, True, True)
    assert store.scores.pending(5) == []
    with pytest.raises(ValueError, match="vector of"):
        store.scores.set_result(vector, msgspec.structs.replace(score, session_id="other"))
    with pytest.raises(KeyError):
        store.scores.set_result(
            msgspec.structs.replace(vector, session_id="missing"), msgspec.structs.replace(score, session_id="missing")
        )


# -- users ------------------------------------------------------------------------------------------------


def test_erase_user_empties_every_table_and_names_the_models(store: Store) -> None:
    for seed in (60, 61, 62):
        store.sessions.put_session(sim(seed, user_id="alice"))
        store.scores.set_features(f"sim-{seed}", "all", "v1", ["a"], [1.0])
    store.sessions.put_session(sim(63, user_id="bob"))
    # one of alice's sessions scored by two models: two (session, model) rows, erased with her
    for model in ("m-a", "m-b"):
        store.scores.set_score(
            "sim-60",
            p=0.7,
            preferred="right",
            confidence=0.7,
            quality=1.0,
            abstained=False,
            model_id=model,
            model_demo=False,
        )
    assert store.users.record_training_set("m-both", ["alice", "bob"]) == 2
    assert store.users.record_training_set("m-both", ["alice"]) == 0  # recorded once
    store.users.record_training_set("m-b", ["bob"])
    store.users.record_training_set("m-a", ["alice", "alice"])
    assert store.users.count_user_rows("alice") == {"sessions": 3, "session_scores": 2, "training_sets": 2, **NO_PAIRS}

    erasure = store.users.erase_user("alice")
    assert erasure.rows_deleted == {
        "sessions": 3,
        "session_scores": 2,
        "training_sets": 2,
        "evaluation_answers": 0,
        **NO_PAIRS,
    }
    assert erasure.models_affected == ["m-a", "m-both"]
    assert erasure.user_hash == hashlib.sha256(b"alice").hexdigest()
    assert erasure.at.tzinfo is not None
    assert store.users.count_user_rows("alice") == {"sessions": 0, "session_scores": 0, "training_sets": 0, **NO_PAIRS}
    assert "alice" not in database_text(store.url)  # not even in the erasure record
    assert store.users.count_user_rows("bob") == {"sessions": 1, "session_scores": 0, "training_sets": 2, **NO_PAIRS}
    [record] = store.users.erasures("alice")
    assert record.id == erasure.id
    assert record.rows_deleted == erasure.rows_deleted
    assert store.users.erasures("bob") == []

    again = store.users.erase_user("alice")
    assert again.rows_deleted == {
        "sessions": 0,
        "session_scores": 0,
        "training_sets": 0,
        "evaluation_answers": 0,
        **NO_PAIRS,
    }
    assert again.models_affected == []
    assert len(store.users.erasures()) == 2


# -- jobs -------------------------------------------------------------------------------------------------


def test_jobs(store: Store) -> None:
    job = store.jobs.create_job("import_ifllm", {"data": "/srv/ifllm", "feature_set": "all"})
    assert (job.status, job.stage, job.done, job.total, job.error, job.result) == ("queued", "", 0, 0, "", None)
    updated = store.jobs.update_job(job.id, status="running", stage="reading", done=3, total=10)
    assert updated.updated_at >= job.created_at
    store.jobs.update_job(job.id, status="succeeded", done=10, result={"sessions": 10, "ids": ["a", "b"]})
    got = store.jobs.get_job(job.id)
    assert got is not None
    assert (got.status, got.stage, got.done, got.total) == ("succeeded", "reading", 10, 10)
    assert got.spec == {"data": "/srv/ifllm", "feature_set": "all"}
    assert got.result == {"sessions": 10, "ids": ["a", "b"]}
    other = store.jobs.create_job("rescore", {})
    assert [j.id for j in store.jobs.list_jobs()] == [other.id, job.id]
    assert [j.id for j in store.jobs.list_jobs("import_ifllm")] == [job.id]
    assert store.jobs.list_jobs("nothing") == []
    assert store.jobs.get_job("missing") is None
    with pytest.raises(KeyError):
        store.jobs.update_job("missing", status="failed")
    with pytest.raises(ValueError, match="status"):
        store.jobs.update_job(job.id, status="exploded")
    with pytest.raises(TypeError, match="kind"):
        store.jobs.update_job(job.id, kind="other")


# -- retention and health ---------------------------------------------------------------------------------


def test_purge_payloads_keeps_features_and_scores(store: Store) -> None:
    old = T0 - dt.timedelta(days=400)
    now = dt.datetime.now(dt.UTC)
    store.sessions.put_session(sim(70), received_at=old)  # scored: purged
    store.scores.set_features("sim-70", "all", "v1", ["a"], [0.5])
    store.scores.set_score(
        "sim-70", p=0.6, preferred="right", confidence=0.6, quality=1.0, abstained=False, model_id="m", model_demo=False
    )
    store.sessions.put_session(sim(71), received_at=old)  # pending without features: kept, it is needed to score it
    store.sessions.put_session(
        sim(72), received_at=old
    )  # pending with features: purged (scoring needs only the vector)
    store.scores.set_features("sim-72", "all", "v1", ["a"], [0.1])
    store.sessions.put_session(sim(73), received_at=now)  # recent: kept

    assert store.users.purge_payloads(dt.timedelta(days=30)) == 2
    assert store.users.purge_payloads(dt.timedelta(days=30)) == 0
    purged = store.sessions.get_session("sim-70")
    assert purged is not None
    assert purged.payload is None
    assert (purged.features, purged.p, purged.score_status) == ([0.5], 0.6, "scored")
    with pytest.raises(PayloadPurgedError):
        store.sessions.load_payload(purged)
    listed = {row.session_id: row for row in store.sessions.list_sessions(limit=10)[0]}
    with pytest.raises(PayloadPurgedError):
        store.sessions.load_payload(listed["sim-72"])
    for kept in ("sim-71", "sim-73"):
        assert store.sessions.load_payload(listed[kept]).session_id == kept
    # The hash outlives the payload: a re-post is still recognised.
    assert store.sessions.put_session(sim(70))[1] is False
    with pytest.raises(SessionConflict):
        store.sessions.put_session(sim(74, session_id="sim-70"))


def test_ping(store: Store) -> None:
    assert store.ping()
    down = Store("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    try:
        assert not down.ping()
    finally:
        down.close()


def test_only_sqlite_and_postgresql() -> None:
    with pytest.raises(ValueError, match="unsupported database"):
        Store("mysql://localhost/x")


def test_in_memory_sqlite() -> None:
    st = Store("sqlite://")
    try:
        st.migrate()
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: st.sessions.put_session(sim(80 + i)), range(4)))
        assert st.users.count_user_rows("sim-user")["sessions"] == 4
        assert isinstance(st.sessions.get_session("sim-80"), SessionRow)
    finally:
        st.close()
