"""API keys: creation, hashing, authentication, revocation and scopes (`tacit keys` is in tacit_cli/keys.py).

A token is `tacit_` plus 43 url-safe characters (32 random bytes). Only a salted scrypt hash is stored,
with the token's first 14 characters (`tacit_` and 8 of the secret) as a non-secret prefix that listings
show and lookups use. scrypt costs ~50 ms, so a verified token is remembered in this process (keyed by a
sha256 of the token, for ten minutes, at most 1,024 of them; a token that failed is never remembered); every
request still reads the key row, so a revocation takes effect at once, in every gateway process.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

from tacit.db import SCOPES, KeyRow, Store
from tacit.db.models import utcnow
from tacit.encoding import b64url, unb64url

__all__ = [
    "PREFIX_CHARS",
    "SCOPES",
    "TOKEN_PREFIX",
    "allowed",
    "authenticate",
    "create_key",
    "list_keys",
    "revoke",
]

TOKEN_PREFIX = "tacit_"
#: Characters of the token kept in clear: `tacit_` and 8 characters of the secret (48 of its 256 bits).
PREFIX_CHARS = len(TOKEN_PREFIX) + 8
#: last_used_at is written at most this often per key.
TOUCH_INTERVAL = dt.timedelta(minutes=1)
# scrypt parameters (n=2**14, r=8: 16 MiB, ~50 ms); stored with each hash so they can change later.
_N, _R, _P, _DKLEN = 2**14, 8, 1, 32
_CACHE_SECONDS = 600.0
_CACHE_SIZE = 1024


def hash_token(token: str, *, salt: bytes | None = None) -> str:
    """`scrypt$n$r$p$salt$hash` of a token with a fresh (or the given) 16-byte salt."""
    salt = secrets.token_bytes(16) if salt is None else salt
    digest = hashlib.scrypt(token.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_DKLEN)
    return f"scrypt${_N}${_R}${_P}${b64url(salt)}${b64url(digest)}"


def verify_token(token: str, stored: str) -> bool:
    """Whether `token` hashes to `stored` (constant-time comparison)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = unb64url(digest)
        actual = hashlib.scrypt(token.encode(), salt=unb64url(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected))
    except ValueError:
        return False
    return hmac.compare_digest(actual, expected)


class _Verified:
    """Tokens verified recently in this process: sha256(token) -> (key id, stored hash, when)."""

    def __init__(self) -> None:
        self._items: OrderedDict[bytes, tuple[str, str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: bytes) -> tuple[str, str] | None:
        with self._lock:
            item = self._items.get(digest)
            if item is None or time.monotonic() - item[2] > _CACHE_SECONDS:
                return None
            self._items.move_to_end(digest)
            return item[0], item[1]

    def put(self, digest: bytes, key_id: str, stored: str) -> None:
        with self._lock:
            self._items[digest] = (key_id, stored, time.monotonic())
            self._items.move_to_end(digest)
            while len(self._items) > _CACHE_SIZE:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_verified = _Verified()


def _check_scopes(scopes: Iterable[str]) -> list[str]:
    requested = set(scopes)
    unknown = sorted(requested - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    if not requested:
        raise ValueError(f"a key needs at least one scope ({', '.join(SCOPES)})")
    return [scope for scope in SCOPES if scope in requested]


def create_key(store: Store, scopes: Sequence[str], name: str = "") -> tuple[str, KeyRow]:
    """A new key: (token, row). The token is shown once and cannot be recovered."""
    chosen = _check_scopes(scopes)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = KeyRow(
        id=uuid.uuid4().hex[:12],
        name=name,
        prefix=token[:PREFIX_CHARS],
        hash=hash_token(token),
        scopes=chosen,
    )
    return token, store.keys.add_key(row)


def _well_formed(token: str) -> bool:
    return token.startswith(TOKEN_PREFIX) and PREFIX_CHARS + 8 <= len(token) <= 256


def authenticate(store: Store, token: str, *, before_hash: Callable[[], None] | None = None) -> KeyRow | None:
    """The key a token belongs to; None for an unknown, malformed or revoked token.

    `before_hash` is called when the token must be checked by scrypt (its prefix is a stored key's and it was not
    verified lately): the one costly path, which a caller may refuse by raising (a failed-attempt throttle).
    """
    if not _well_formed(token):
        return None
    digest = hashlib.sha256(token.encode()).digest()
    row: KeyRow | None = None
    cached = _verified.get(digest)
    if cached is not None:
        candidate = store.keys.get_key(cached[0])
        if candidate is not None and hmac.compare_digest(candidate.hash, cached[1]):
            row = candidate
    if row is None:
        candidates = store.keys.keys_with_prefix(token[:PREFIX_CHARS])
        if candidates and before_hash is not None:
            before_hash()
        for candidate in candidates:
            if verify_token(token, candidate.hash):
                row = candidate
                _verified.put(digest, candidate.id, candidate.hash)
                break
    if row is None or row.revoked_at is not None:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at >= TOUCH_INTERVAL:
        store.keys.touch_key(row.id, at=now, not_since=now - TOUCH_INTERVAL)
        row.last_used_at = now
    return row


def revoke(store: Store, key_id: str) -> KeyRow | None:
    """Revoke a key (it stays listed, marked revoked); None for an unknown id."""
    return store.keys.revoke_key(key_id)


def list_keys(store: Store) -> list[KeyRow]:
    """All keys, oldest first (revoked ones included)."""
    return store.keys.list_keys()


def allowed(key_scopes: Iterable[str], needed: str) -> bool:
    """Whether a key with `key_scopes` may do what needs scope `needed` (`admin` may do everything)."""
    if needed not in SCOPES:
        raise ValueError(f"unknown scope {needed!r}")
    granted = set(key_scopes)
    return "admin" in granted or needed in granted
