"""Public API gateway (litestar + msgspec); built in the gateway issue."""
