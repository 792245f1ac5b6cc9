"""HTTP edge of the feature service: decode the body, call the pure core, encode the answer.

Bodies are decoded straight from bytes by cached msgspec decoders: litestar's default path decodes to builtins
and converts them again (about 1.4x the decoding time for a 2,000-sample session) and converts laxly ("1.5" is
accepted for a float), while the contract is strict. Every failure is an error value mapped to an HTTP status in
the edge kit (tacit.edge), which maps every service's errors alike.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.openapi.spec import OpenAPIMediaType, OpenAPIResponse, Operation, RequestBody
from prometheus_client import Histogram

from feature_svc.features import FEATURE_SETS, vectorize, vectorize_batch
from feature_svc.settings import FeatureSettings
from tacit.edge import json_response, service_app
from tacit.http_metrics import ServiceMetrics
from tacit.schemas import (
    Consent,
    FeatureBatchRequest,
    FeatureRequest,
    FeatureSetInfo,
    FeatureVector,
    FeatureVectors,
    Session,
    SessionError,
    validate_session,
)
from tacit.schemas import Response as SessionResponse
from tacit.schemas.problem import Problem
from tacit.serving import serve as run_server
from tacit.settings import load_settings

__all__ = ["Problem", "create_app", "serve"]

logger = logging.getLogger(__name__)

JSON = "application/json"
MODES = ("pairwise", "pointwise")

_REQUEST = msgspec.json.Decoder(FeatureRequest)
_BATCH = msgspec.json.Decoder(FeatureBatchRequest)
_ENCODER = msgspec.json.Encoder()


def _decode(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    # Not decode_body: session bodies are megabytes, and its duplicate-key check would parse them twice.
    try:
        return decoder.decode(body)
    except (msgspec.DecodeError, UnicodeError, RecursionError) as err:  # ValidationError is a DecodeError
        raise SessionError.of(err, decoder.type) from None


def _validate(session: Session, prefix: str) -> None:
    try:
        validate_session(session)
    except SessionError as err:
        raise SessionError(f"{prefix}{err.field}", err.detail, err.code) from None


# --- metrics and state ------------------------------------------------------------------------------------


class Metrics(ServiceMetrics):
    """The app's Prometheus metrics, in a registry of its own (many apps can live in one process)."""

    def __init__(self) -> None:
        super().__init__("feature_svc")
        self.samples = Histogram(
            "tacit_features_samples_per_session",
            "Samples (all streams) per session whose features were computed.",
            buckets=(0, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000),
            registry=self.registry,
        )
        self.extraction = Histogram(
            "tacit_feature_extraction_seconds",
            "Time spent in the feature core per request, by endpoint kind (single or batch).",
            ("kind",),
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=self.registry,
        )
        for kind in ("single", "batch"):  # exported from start-up, so rates exist before the first request
            self.extraction.labels(kind)


class FeatureState(State):
    """The app's state, typed: handlers are given it as `state`; the lifespan builds all of it at start-up."""

    settings: FeatureSettings
    metrics: Metrics
    feature_sets: bytes
    """The encoded answer of `GET /v1/feature-sets` (it never changes while the process runs)."""


# --- OpenAPI: bodies are documented from the msgspec contract, as the handlers decode raw bytes -----------

_DOCUMENTED = (FeatureRequest, FeatureBatchRequest, FeatureVector, FeatureVectors, list[FeatureSetInfo], Problem)


@cache
def _contract() -> tuple[tuple[dict[str, Any], ...], dict[str, Any]]:
    """JSON schemas of `_DOCUMENTED` (by index) and the components they refer to."""
    return msgspec.json.schema_components(_DOCUMENTED, ref_template="#/components/schemas/{name}")


_ERRORS = {
    "400": "Malformed JSON",
    "413": "Body larger than the configured limit",
    "422": "Body breaks the contract (type, unknown field, cross-field check) or the features cannot be computed",
}


def _json(schema: dict[str, Any]) -> dict[str, OpenAPIMediaType]:
    # Plain JSON-schema dicts pass through litestar's serializer unchanged.
    return {JSON: OpenAPIMediaType(schema=schema)}  # type: ignore[arg-type]


def _documented(body: int | None, answer: int) -> type[Operation]:
    """An Operation class documenting request and answer by index into `_DOCUMENTED`."""

    @dataclass
    class _Documented(Operation):
        def __post_init__(self) -> None:
            schemas = _contract()[0]
            self.responses = {"200": OpenAPIResponse(description="OK", content=_json(schemas[answer]))}
            if body is not None:
                self.request_body = RequestBody(content=_json(schemas[body]), required=True)
                problem = _json({"$ref": "#/components/schemas/Problem"})
                for code, text in _ERRORS.items():
                    self.responses[code] = OpenAPIResponse(description=text, content=problem)

    return _Documented


# --- handlers -------------------------------------------------------------------------------------------


@post("/v1/features", status_code=200, operation_class=_documented(0, 2), summary="Features of one session")
async def features(request: Request[Any, Any, Any], state: FeatureState) -> Response[bytes]:
    """Feature vector of one session, for the named feature set."""
    body = _decode(_REQUEST, await request.body())
    _validate(body.session, "session.")
    if body.previous is not None:
        _validate(body.previous, "previous.")
    metrics = state.metrics
    start = time.perf_counter()
    vector = vectorize(body.session, body.feature_set, previous=body.previous)
    metrics.extraction.labels("single").observe(time.perf_counter() - start)
    metrics.samples.observe(vector.samples)
    return json_response(vector)


@post("/v1/features:batch", status_code=200, operation_class=_documented(1, 3), summary="Features of many sessions")
async def features_batch(request: Request[Any, Any, Any], state: FeatureState) -> Response[bytes]:
    """Vectors for sessions of one mode, in order; pointwise `prev_*` features come from the batch's previous turn."""
    body = _decode(_BATCH, await request.body())
    settings = state.settings
    if len(body.sessions) > settings.max_batch:
        raise SessionError("sessions", f"at most {settings.max_batch} sessions per batch", "too_many")
    for i, session in enumerate(body.sessions):
        _validate(session, f"sessions[{i}].")
    metrics = state.metrics
    start = time.perf_counter()
    vectors = vectorize_batch(body.sessions, body.feature_set)
    metrics.extraction.labels("batch").observe(time.perf_counter() - start)
    for vector in vectors.vectors:
        metrics.samples.observe(vector.samples)
    return json_response(vectors)


@get("/v1/feature-sets", operation_class=_documented(None, 4), summary="Feature sets")
async def feature_sets(state: FeatureState) -> Response[bytes]:
    """Every feature set once per mode: id, version, description and the ordered feature names."""
    return Response(state.feature_sets, media_type=JSON)


def _probe(mode: str) -> Session:
    """An empty session of `mode`: the `all` set's names are whatever the extractor computes for it."""
    responses = [SessionResponse(text="")] * (2 if mode == "pairwise" else 1)
    return Session(
        session_id="probe",
        user_id="probe",
        task_id="probe",
        mode=mode,  # type: ignore[arg-type]
        query="",
        responses=responses,
        consent=Consent(mouse=False),
    )


def feature_set_infos() -> list[FeatureSetInfo]:
    """Every feature set for each mode, with its version and names."""
    infos = []
    for mode in MODES:
        available = vectorize(_probe(mode), "all").names
        for fs in FEATURE_SETS.values():
            names = fs.names(mode, available)
            infos.append(
                FeatureSetInfo(
                    id=fs.id,
                    version=fs.version(mode, available),
                    mode=mode,  # type: ignore[arg-type]
                    description=fs.description,
                    names=names,
                )
            )
    return infos


def create_app(settings: FeatureSettings | None = None) -> Litestar:
    """The feature service's ASGI app; settings from `TACIT_FEATURES_*` when not given."""
    settings = settings if settings is not None else load_settings(FeatureSettings, "TACIT_FEATURES_")
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        state = FeatureState(app.state)  # a typed view of app.state
        state.settings, state.metrics = settings, metrics
        state.feature_sets = _ENCODER.encode(feature_set_infos())
        # Litestar replaces configured schema components with the ones it generated itself (none: the bodies are
        # raw bytes to it), so the contract's are added to the built document, which litestar keeps and serves.
        app.openapi_schema.components.schemas.update(_contract()[1])
        yield

    return service_app(
        "Tacit feature service",
        [features, features_batch, feature_sets],
        metrics=metrics,
        lifespan=lifespan,
        max_body_bytes=settings.max_body_bytes,
    )


def serve(settings: FeatureSettings | None = None) -> None:
    """Run the service with uvicorn on `settings.host:settings.port` until interrupted."""
    settings = settings if settings is not None else load_settings(FeatureSettings, "TACIT_FEATURES_")
    run_server(create_app(settings), settings.host, settings.port, log_level=settings.log_level)
