"""Fast reader for IFLLM `rel_*.csv` trajectory files (spec 1.5).

Rows are `x, y, "window", centre_idx, rel_ts[, camera_flag], abs_ts`: 7 columns, or 6 in early sessions
(no camera flag). The server joined values with commas without escaping, so a window holding a quote can
break a row; the reference reads with Python's csv module and skips rows whose field count is not 6 or 7.
Clean files (every line has 0 or 2 quote characters and one column count) go through pyarrow's
multi-threaded parser; any other file is read with Python's csv module so its rows split exactly as the
reference splits them.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

__all__ = ["RelFile", "read_rel"]

_COLS7 = ["x", "y", "window", "idx", "t", "head", "epoch"]
_COLS6 = ["x", "y", "window", "idx", "t", "epoch"]
_TYPES = {
    "x": pa.float64(),
    "y": pa.float64(),
    "window": pa.string(),
    "idx": pa.float64(),
    "t": pa.float64(),
    "head": pa.float64(),
    "epoch": pa.float64(),
}


@dataclass(frozen=True, slots=True)
class RelFile:
    """One rel_* file as columns. `window` is dictionary-encoded: `window_codes` index `windows`."""

    x: npt.NDArray[np.float64]
    y: npt.NDArray[np.float64]
    idx: npt.NDArray[np.int64]
    """centre_idx, -1 when empty."""
    t: npt.NDArray[np.float64]
    """rel_ts, the page timer (ms)."""
    epoch: npt.NDArray[np.float64]
    """abs_ts (epoch ms)."""
    head: npt.NDArray[np.int8]
    """Camera flag: 1 / 0, or -1 when unknown (6-column rows, or a value other than 0/1)."""
    seven: npt.NDArray[np.bool_]
    """True for 7-column rows (the camera flag column was written)."""
    window_codes: npt.NDArray[np.int32]
    windows: list[str]
    """Distinct windows (stripped); code of the empty window is wherever "" sits in this list."""
    skipped: int
    """Rows dropped as malformed (field count not 6 or 7, or non-numeric values)."""

    def __len__(self) -> int:
        return int(self.t.shape[0])

    @property
    def in_box(self) -> npt.NDArray[np.bool_]:
        """True where the point is inside the response box (not the (-1, -1) sentinel)."""
        mask: npt.NDArray[np.bool_] = ~((self.x == -1) & (self.y == -1))
        return mask

    def window_array(self) -> npt.NDArray[np.object_]:
        """Per-row window strings (materialised on demand; the codes are cheaper)."""
        return np.asarray(self.windows, dtype=object)[self.window_codes]

    @staticmethod
    def empty() -> RelFile:
        f = np.zeros(0, dtype=np.float64)
        return RelFile(
            x=f,
            y=f,
            idx=np.zeros(0, np.int64),
            t=f,
            epoch=f,
            head=np.zeros(0, np.int8),
            seven=np.zeros(0, np.bool_),
            window_codes=np.zeros(0, np.int32),
            windows=[""],
            skipped=0,
        )


_SIX_MARK = -9  # head value written for normalised 6-column rows, so `seven` survives the rewrite


def _num(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _clean_row(row: list[str]) -> list[str] | None:
    """Reference row rules: 6 or 7 fields with numeric x, y and time; a non-numeric index counts as none.

    Rows glued together by a stray quote can still have 7 fields; the reference keeps them when x and y
    parse, so we do too (their index is unreadable and becomes -1). Returns 7 fields, or None to skip.
    """
    if len(row) == 6:
        row = [*row[:5], str(_SIX_MARK), row[5]]
    elif len(row) != 7:
        return None
    if not (_num(row[0]) and _num(row[1]) and _num(row[4])):
        return None
    if row[3].strip() and not _num(row[3]):
        row[3] = ""
    if row[5].strip() and not _num(row[5]):
        row[5] = ""
    if row[6].strip() and not _num(row[6]):
        row[6] = ""
    return row


def _line_table(raw: bytes) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per physical line: end offsets, quote counts and field counts (fields valid where quotes are 0 or 2)."""
    buf = np.frombuffer(raw, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)
    if raw[-1:] != b"\n":
        ends = np.append(ends, buf.size)
    qpos = np.flatnonzero(buf == 34)
    quotes = np.bincount(np.searchsorted(ends, qpos), minlength=ends.size)[: ends.size]
    comma_pos = np.flatnonzero(buf == 44)
    commas = np.bincount(np.searchsorted(ends, comma_pos), minlength=ends.size)[: ends.size].astype(np.int64)
    # On lines with exactly two quotes, commas between them belong to the quoted window.
    two = np.flatnonzero(quotes == 2)
    if two.size:
        line_of_q = np.searchsorted(ends, qpos)
        keep = np.isin(line_of_q, two)
        pairs = qpos[keep].reshape(-1, 2)
        inside = np.searchsorted(comma_pos, pairs[:, 1]) - np.searchsorted(comma_pos, pairs[:, 0])
        commas[line_of_q[keep][0::2]] -= inside
    return ends, quotes.astype(np.int64), commas + 1


def split_line(line: str) -> list[str]:
    """One physical line as the server wrote it: `x,y,"window",idx,t[,flag],abs` with the window unescaped.

    The window sits between the first quote after the second comma and the last quote that is followed
    only by the numeric tail, so quotes and commas inside it cannot shift the other fields.
    """
    head = line.split(",", 2)
    if len(head) < 3:
        return head
    rest = head[2]
    if not rest.startswith('"'):
        return line.split(",")
    close = rest.rfind('",')
    if close <= 0:
        return line.split(",")
    return [head[0], head[1], rest[1:close], *rest[close + 2 :].split(",")]


def _normalise(
    raw: bytes,
    ends: npt.NDArray[np.int64],
    quotes: npt.NDArray[np.int64],
    fields: npt.NDArray[np.int64],
    semantics: str = "lines",
) -> tuple[bytes, int]:
    """Rewrite a file into uniform 7-column lines that pyarrow parses as Python's csv would.

    Lines with 0 or 2 quotes parse identically in pyarrow and Python's csv, so only the others (windows
    holding quote characters) are re-parsed one by one with Python's csv and written back escaped; 6-column
    lines get a marked camera field. Returns the new bytes and the number of rows dropped as malformed.
    """
    starts = np.concatenate(([0], ends[:-1] + 1))
    dirty = (quotes != 0) & (quotes != 2)
    special = np.flatnonzero(dirty | (fields != 7))
    if special.size == 0:
        return raw, 0
    n_lines = int(ends.size)

    def physical(i: int) -> str:
        # Universal newlines, as the reference's open(): a CR before the LF is not part of the record.
        return raw[int(starts[i]) : int(ends[i])].decode("utf-8", errors="replace").removesuffix("\r") + "\n"

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    pieces: list[bytes] = []
    prev_byte = 0
    next_line = 0  # first line not yet consumed by a record
    skipped = 0
    for i in special.tolist():
        if i < next_line:
            continue  # swallowed by a quoted field that ran on from an earlier line
        pieces.append(raw[prev_byte : int(starts[i])])
        consumed = [i]

        def lines_from(first: int, consumed: list[int] = consumed) -> Iterator[str]:
            for j in range(first, n_lines):
                consumed[0] = j
                yield physical(j)

        if semantics == "csv" and dirty[i]:
            # Python's csv pulls further lines while a quote is open, exactly as the reference's reader did.
            row = next(csv.reader(lines_from(i)), [])
        elif dirty[i]:
            row = split_line(physical(i)[:-1])
        else:
            row = next(csv.reader([physical(i)]), [])
        next_line = consumed[0] + 1
        prev_byte = min(int(ends[consumed[0]]) + 1, len(raw))
        if not row:
            continue
        cleaned = _clean_row(row)
        if cleaned is None:
            skipped += 1
            continue
        out.seek(0)
        out.truncate()
        writer.writerow(cleaned)
        pieces.append(out.getvalue().encode("utf-8"))
    pieces.append(raw[prev_byte:])
    return b"".join(pieces), skipped


def _read_arrow(raw: bytes, ncols: int, skipped: int = 0) -> RelFile:
    names = _COLS7 if ncols == 7 else _COLS6
    table = pacsv.read_csv(
        io.BytesIO(raw),
        read_options=pacsv.ReadOptions(column_names=names, use_threads=False),
        parse_options=pacsv.ParseOptions(newlines_in_values=False),
        convert_options=pacsv.ConvertOptions(
            column_types={n: _TYPES[n] for n in names},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    n = table.num_rows
    window = pc.utf8_trim_whitespace(table.column("window")).combine_chunks()
    encoded = window.dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
    windows = encoded.dictionary.to_pylist()
    idx = table.column("idx").to_numpy()
    idx = np.where(np.isnan(idx), -1, idx).astype(np.int64)
    if ncols == 7:
        flag = table.column("head").to_numpy()
        head = np.where(flag == 1, 1, np.where(flag == 0, 0, -1)).astype(np.int8)
        seven = flag != _SIX_MARK
    else:
        head = np.full(n, -1, dtype=np.int8)
        seven = np.zeros(n, dtype=np.bool_)
    return RelFile(
        x=table.column("x").to_numpy(),
        y=table.column("y").to_numpy(),
        idx=idx,
        t=table.column("t").to_numpy(),
        epoch=table.column("epoch").to_numpy(),
        head=head,
        seven=seven,
        window_codes=codes,
        windows=windows,
        skipped=skipped,
    )


def _read_python(raw: bytes, semantics: str = "csv") -> RelFile:
    """Row-by-row reader: Python csv semantics (quotes may join physical lines) or one sample per line."""
    text = raw.decode("utf-8", errors="replace")
    records = (
        csv.reader(io.StringIO(text, newline=None))
        if semantics == "csv"
        # Split at LF only (as the fast path): str.splitlines would also break at U+2028, \f, \x1c...
        else (split_line(line.removesuffix("\r")) for line in text.split("\n") if line.strip())
    )
    xs: list[float] = []
    ys: list[float] = []
    idxs: list[int] = []
    ts: list[float] = []
    heads: list[int] = []
    sevens: list[bool] = []
    epochs: list[float] = []
    codes: list[int] = []
    lookup: dict[str, int] = {}
    skipped = 0
    for raw_row in records:
        if not raw_row or not any(field.strip() for field in raw_row):
            continue  # blank line: pyarrow ignores these too, so they are not counted as malformed
        row = _clean_row(raw_row)
        if row is None:
            skipped += 1
            continue
        x, y, t = float(row[0]), float(row[1]), float(row[4])
        c = row[3].strip()
        idx = int(float(c)) if c else -1
        flag = float(row[5]) if row[5].strip() else -1.0
        head = 1 if flag == 1 else 0 if flag == 0 else -1
        epoch = float(row[6]) if row[6].strip() else np.nan
        window = row[2].strip()
        code = lookup.setdefault(window, len(lookup))
        xs.append(x)
        ys.append(y)
        idxs.append(idx)
        ts.append(t)
        heads.append(head)
        sevens.append(flag != _SIX_MARK)
        epochs.append(epoch)
        codes.append(code)
    return RelFile(
        x=np.asarray(xs, dtype=np.float64),
        y=np.asarray(ys, dtype=np.float64),
        idx=np.asarray(idxs, dtype=np.int64),
        t=np.asarray(ts, dtype=np.float64),
        epoch=np.asarray(epochs, dtype=np.float64),
        head=np.asarray(heads, dtype=np.int8),
        seven=np.asarray(sevens, dtype=np.bool_),
        window_codes=np.asarray(codes, dtype=np.int32),
        windows=list(lookup) or [""],
        skipped=skipped,
    )


def read_rel(path: Path | str, semantics: str = "lines") -> RelFile:
    """Read one rel_* file; malformed rows are skipped and counted, never raised.

    `semantics="lines"` (Tacit's reading): one physical line is one sample, and a window holding quotes is
    recovered by `split_line`. `semantics="csv"` (the reference's reading): Python's csv module, under
    which such a window can swallow the following lines (whole records lost or glued together).
    """
    if semantics not in ("lines", "csv"):
        raise ValueError(f"semantics must be 'lines' or 'csv', not {semantics!r}")
    raw = Path(path).read_bytes()
    if not raw.strip():
        return RelFile.empty()
    ends, quotes, fields = _line_table(raw)
    uniform = np.unique(fields)
    try:
        if np.all((quotes == 0) | (quotes == 2)) and uniform.size == 1 and int(uniform[0]) in (6, 7):
            return _read_arrow(raw, int(uniform[0]))
        normalised, skipped = _normalise(raw, ends, quotes, fields, semantics)
        return _read_arrow(normalised, 7, skipped)
    except (pa.ArrowInvalid, ValueError):
        pass  # anything pyarrow refuses: the row-by-row reader skips exactly the bad rows
    return _read_python(raw, semantics)
