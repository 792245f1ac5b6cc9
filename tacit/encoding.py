"""Unpadded URL-safe base64, the one text form of opaque tokens (API keys, browser tokens, page cursors)."""

from __future__ import annotations

import base64

__all__ = ["b64url", "unb64url"]


def b64url(raw: bytes) -> str:
    """`raw` as URL-safe base64 without `=` padding (safe in URLs, headers and URL fragments)."""
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    """The bytes of `b64url` text; raises binascii.Error (a ValueError) for text that is not base64."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
