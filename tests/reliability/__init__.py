"""Reliability tests of issue 9 (part 1 here: fuzzing, bad input, access control, privacy).

Each module runs against a real gateway: the process stack of tests/e2e on SQLite (fuzz, logs), or the app
in-process on SQLite and PostgreSQL (the rest). When `TACIT_RELIABILITY_OUT` names a directory, each module
merges a JSON fragment there for docs/reliability.md (`json.load` it; every fragment has `"module"`):

- `fuzz.json`: `operations` (int), `cases` (int, >= `requested`), `requested` (`TACIT_FUZZ_CASES`, default
  100), `checks` (schemathesis check names), `per_operation` ({"GET /path": cases}), `failures` (list of
  {operation, check, status, detail}; empty when the test passes), `seconds`.
- `bad_input.json`: `cases_sqlite` and `cases_postgres` (lists of {name, status, code, field, detail,
  stored_after}; `stored_after` = rows added to all tables, 0 for every refusal), `seconds_sqlite`,
  `seconds_postgres`, and `accepted_sqlite` / `accepted_postgres` (lists of {name, status, stored_verbatim,
  decision}: markup, SQL and odd Unicode in text are stored exactly, answered only as JSON, never run).
- `access.json`: `routes` (int), `requests` (int), `by_expectation` ({"<credential> -> <401|403|allowed>": n}),
  `mismatches` (list; empty when passing), `rate_limit` ({rate_per_s, burst, allowed, refused, retry_after,
  detail, default_rate_per_s, default_burst}), `body_limit` ({limit, status, detail}), `cors`
  ({allowed_origin, preflight_allowed_status, other_origin_status, other_origin_allowed, default_allows_any}).
- `privacy.json`: `logs` ({files, bytes, markers, found}), `erasure` ({tables, tables_with_user_before,
  rows_before, rows_after, models_affected, other_user_rows_kept}), `retention` ({retention_days, purged,
  kept_recent, kept_pending, features_kept}).
"""
