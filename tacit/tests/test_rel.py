"""`read_rel` (spec 1.5): rows, sentinels and malformed lines, under both ways of splitting a file into samples.

`semantics="csv"` must split exactly as Python's csv module (the reference); `semantics="lines"` must give one
sample per physical line with the window recovered between its outer quotes.
"""

from __future__ import annotations

import csv
import io
import math
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from tacit.ifllm.rel import RelFile, _read_python, read_rel

COLUMNS = ("x", "y", "idx", "t", "epoch", "head", "seven")
SEMANTICS = ("lines", "csv")

Row = tuple[float, float, str, int, float, int, bool, float | None]


def _write(tmp_path: Path, raw: bytes, name: str = "rel_gaze.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(raw)
    return path


def _rows(rel: RelFile) -> list[Row]:
    """The file as comparable tuples (NaN epochs as None)."""
    windows = rel.window_array()
    return [
        (
            float(rel.x[i]),
            float(rel.y[i]),
            str(windows[i]),
            int(rel.idx[i]),
            float(rel.t[i]),
            int(rel.head[i]),
            bool(rel.seven[i]),
            None if math.isnan(rel.epoch[i]) else float(rel.epoch[i]),
        )
        for i in range(len(rel))
    ]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _keep(row: Sequence[str]) -> Row | None:
    """The reference's row rules: 6 or 7 fields with numeric x, y and time; anything unreadable elsewhere is 'none'."""
    if len(row) not in (6, 7) or not all(_is_number(row[i]) for i in (0, 1, 4)):
        return None
    seven = len(row) == 7
    flag = row[5] if seven else ""
    head = int(float(flag)) if _is_number(flag) and float(flag) in (0.0, 1.0) else -1
    epoch = row[-1]
    return (
        float(row[0]),
        float(row[1]),
        row[2].strip(),
        int(float(row[3])) if _is_number(row[3]) else -1,
        float(row[4]),
        head,
        seven,
        float(epoch) if _is_number(epoch) else None,
    )


def _csv_oracle(raw: bytes) -> list[Row]:
    """What Python's csv module yields for these bytes, rows with another field count dropped."""
    kept = (_keep(row) for row in csv.reader(io.StringIO(raw.decode("utf-8"), newline="")))
    return [row for row in kept if row is not None]


def _assert_same(a: RelFile, b: RelFile) -> None:
    assert len(a) == len(b)
    for name in COLUMNS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert list(a.window_array()) == list(b.window_array())
    assert a.skipped == b.skipped


# --- files without quotes inside windows: both semantics agree ----------------------------------------------


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_clean_seven_column_file(tmp_path: Path, semantics: str) -> None:
    raw = (
        b'441.77,377.9,"the quick ",1902,77663.499999523,1,1765701461449\n'
        b"-1,-1,,,77800.5,0,1765701461590\n"
        b'12,30.25,"  padded  ",7,77900,1,1765701461700\n'
        b"87.81,429.83,,,78000,1,1765701461800\n"
    )
    rel = read_rel(_write(tmp_path, raw), semantics)
    assert _rows(rel) == [
        (441.77, 377.9, "the quick", 1902, 77663.499999523, 1, True, 1765701461449.0),
        (-1.0, -1.0, "", -1, 77800.5, 0, True, 1765701461590.0),
        (12.0, 30.25, "padded", 7, 77900.0, 1, True, 1765701461700.0),
        (87.81, 429.83, "", -1, 78000.0, 1, True, 1765701461800.0),
    ]
    assert rel.skipped == 0
    np.testing.assert_array_equal(rel.in_box, [True, False, True, True])


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_six_column_file_has_unknown_head(tmp_path: Path, semantics: str) -> None:
    raw = b'10,20,"abc",3,100.5,1700000000000\n-1,-1,,,200,1700000000100\n'
    rel = read_rel(_write(tmp_path, raw), semantics)
    assert _rows(rel) == [
        (10.0, 20.0, "abc", 3, 100.5, -1, False, 1700000000000.0),
        (-1.0, -1.0, "", -1, 200.0, -1, False, 1700000000100.0),
    ]
    assert rel.skipped == 0


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_mixed_six_and_seven_column_rows(tmp_path: Path, semantics: str) -> None:
    raw = (
        b'10,20,"abc",3,100,1700000000000\n'
        b'11,21,"def",4,200,0,1700000000100\n'
        b"-1,-1,,,300,1700000000200\n"
        b'12,22,"ghi",5,400,1,1700000000300\n'
    )
    rel = read_rel(_write(tmp_path, raw), semantics)
    np.testing.assert_array_equal(rel.seven, [False, True, False, True])
    np.testing.assert_array_equal(rel.head, [-1, 0, -1, 1])
    np.testing.assert_array_equal(rel.t, [100, 200, 300, 400])
    np.testing.assert_array_equal(rel.epoch, [1700000000000, 1700000000100, 1700000000200, 1700000000300])
    assert list(rel.window_array()) == ["abc", "def", "", "ghi"]
    assert _rows(rel) == _csv_oracle(raw)


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_commas_inside_a_quoted_window(tmp_path: Path, semantics: str) -> None:
    raw = b'1,2,"a, b, c",3,100,1,5\n3,4,",,,",9,200,0,6\n5,6,"x",1,300,1,7\n'
    rel = read_rel(_write(tmp_path, raw), semantics)
    assert list(rel.window_array()) == ["a, b, c", ",,,", "x"]
    np.testing.assert_array_equal(rel.idx, [3, 9, 1])
    assert rel.skipped == 0
    assert _rows(rel) == _csv_oracle(raw)


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_non_numeric_x_y_or_time_is_skipped_and_counted(tmp_path: Path, semantics: str) -> None:
    raw = b'1,2,"a",1,10,1,5\nabc,2,"b",2,20,1,6\n3,,"c",3,30,1,7\n4,4,"d",4,,1,8\n5,5,"e",5,50,1,9\n'
    rel = read_rel(_write(tmp_path, raw), semantics)
    np.testing.assert_array_equal(rel.x, [1.0, 5.0])
    assert list(rel.window_array()) == ["a", "e"]
    assert rel.skipped == 3


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_wrong_field_counts_are_skipped_and_counted(tmp_path: Path, semantics: str) -> None:
    raw = b'1,2,"a",1,10,1,5\n1,2,"a"\n1,2,"a",1,10,1,5,9\n2,2,"b",2,20,1,6\n'
    rel = read_rel(_write(tmp_path, raw), semantics)
    np.testing.assert_array_equal(rel.x, [1.0, 2.0])
    assert rel.skipped == 2


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_non_numeric_index_becomes_minus_one(tmp_path: Path, semantics: str) -> None:
    raw = b'1,2,"a",abc,10,1,5\n2,2,"b",7.0,20,1,6\n3,3,"c",,30,1,7\n'
    rel = read_rel(_write(tmp_path, raw), semantics)
    np.testing.assert_array_equal(rel.idx, [-1, 7, -1])
    np.testing.assert_array_equal(rel.x, [1.0, 2.0, 3.0])
    assert rel.skipped == 0


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_head_values_other_than_zero_and_one_are_unknown(tmp_path: Path, semantics: str) -> None:
    raw = b'1,2,"a",1,10,2,5\n2,2,"b",2,20,,6\n3,3,"c",3,30,0,7\n4,4,"d",4,40,1,\n'
    rel = read_rel(_write(tmp_path, raw), semantics)
    np.testing.assert_array_equal(rel.head, [-1, -1, 0, 1])
    np.testing.assert_array_equal(rel.seven, [True, True, True, True])
    assert np.isnan(rel.epoch[3])


@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("raw", [b"", b"\n", b"  \n\n"])
def test_empty_file(tmp_path: Path, raw: bytes, semantics: str) -> None:
    rel = read_rel(_write(tmp_path, raw), semantics)
    assert len(rel) == 0
    assert rel.skipped == 0
    assert rel.window_array().size == 0


@pytest.mark.parametrize("semantics", SEMANTICS)
@pytest.mark.parametrize("six", [False, True])
def test_file_without_trailing_newline(tmp_path: Path, semantics: str, six: bool) -> None:
    tail = b'3,3,"last",3,30,7' if six else b'3,3,"last",3,30,1,7'
    raw = b'1,2,"a",1,10,1,5\n2,2,"bc",2,20,1,6\n' + tail
    rel = read_rel(_write(tmp_path, raw), semantics)
    assert len(rel) == 3
    assert rel.window_array()[-1] == "last"
    assert rel.epoch[-1] == 7.0
    assert bool(rel.seven[-1]) is not six


def test_unknown_semantics_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="semantics"):
        read_rel(_write(tmp_path, b'1,2,"a",1,10,1,5\n'), "pandas")


# --- quotes inside windows under csv semantics (the reference) ----------------------------------------------


def test_csv_semantics_quotes_inside_windows_split_as_python_csv(tmp_path: Path) -> None:
    raw = (
        b'441.77,377.9,"lamorizing the "Alwa",1902,77663.4,1,1765701461449\n'  # 3 quotes, the row stays whole
        b'536.16,378.79,"g the "Always On"",1911,94077.0,1,1765701477862\n'  # 4 quotes
        + '2,2,"naïve "q" x",2,20,1,6\n'.encode()
        + b'1,2,"clean",3,100,1,5\n'
    )
    rel = read_rel(_write(tmp_path, raw), "csv")
    # csv closes the field at the second quote and keeps the rest of it as literal characters
    assert list(rel.window_array()) == ['lamorizing the Alwa"', 'g the Always On""', 'naïve q" x"', "clean"]
    assert _rows(rel) == _csv_oracle(raw)
    assert rel.skipped == 0


def test_csv_semantics_a_window_ending_in_a_quote_glues_the_next_physical_line(tmp_path: Path) -> None:
    raw = (
        b'1,2,"before",1,50,1,4\n'
        b'622.41,406.98,"lways On"",1919,93671.2,1,1765701477457\n'  # "" is an escaped quote: the field stays open
        b'600.53,367.13,"next",1917,93951.8,1,1765701477737\n'
        b'3,4,"after",2,100,0,6\n'
    )
    rel = read_rel(_write(tmp_path, raw), "csv")
    expected = _csv_oracle(raw)
    assert _rows(rel) == expected
    # the glued record keeps x, y of the first line and index, time, flag and epoch of the second
    assert expected[1] == (
        622.41,
        406.98,
        'lways On",1919,93671.2,1,1765701477457\n600.53,367.13,next"',
        1917,
        93951.8,
        1,
        True,
        1765701477737.0,
    )
    assert len(rel) == 3
    assert rel.skipped == 0


def test_csv_semantics_glued_records(tmp_path: Path) -> None:
    raw = (
        b'1,2,"ok",1,50,1,4\n'
        b'5,6,"open,7,60,1,5\n'  # one quote: the field runs on to the next line's first quote
        b'7,8,"z",8,70,1,6\n'
        b'9,9,"ok2",2,80,0,7\n'
    )
    rel = read_rel(_write(tmp_path, raw), "csv")
    assert _rows(rel) == _csv_oracle(raw)
    assert list(rel.window_array()) == ["ok", 'open,7,60,1,5\n7,8,z"', "ok2"]
    raw_bad = b'1,2,"ok",1,50,1,4\n5,6,"open"",7,60,1,5\n'  # never closes: a 3-field record, skipped
    rel_bad = read_rel(_write(tmp_path, raw_bad, "bad.csv"), "csv")
    assert _rows(rel_bad) == _csv_oracle(raw_bad) == [(1.0, 2.0, "ok", 1, 50.0, 1, True, 4.0)]
    assert rel_bad.skipped == 1


def test_csv_semantics_without_trailing_newline_after_a_dirty_line(tmp_path: Path) -> None:
    raw = b'1,2,"a",1,10,1,5\n2,2,"b"c",2,20,1,6\n3,3,"last",3,30,1,7'
    rel = read_rel(_write(tmp_path, raw), "csv")
    assert _rows(rel) == _csv_oracle(raw)
    assert len(rel) == 3


# --- quotes inside windows under lines semantics (Tacit) ----------------------------------------------------


def test_lines_semantics_recovers_windows_holding_quotes(tmp_path: Path) -> None:
    raw = (
        b'441.77,377.9,"lamorizing the "Alwa",1902,77663.4,1,1765701461449\n'
        b'622.41,406.98,"lways On"",1919,93671.2,1,1765701477457\n'  # would glue the next line under csv
        b'600.53,367.13,""Always On"",1917,93951.8,1,1765701477737\n'
        b'1,2,"say "hi", he",3,100,5\n'  # a quote followed by a comma inside the window, 6 columns
        b'5,6,"trunc\n'  # a truncated line: 3 fields, skipped
        b'3,4,"after",2,100,0,6\n'
    )
    rel = read_rel(_write(tmp_path, raw), "lines")
    assert list(rel.window_array()) == [
        'lamorizing the "Alwa',
        'lways On"',
        '"Always On"',
        'say "hi", he',
        "after",
    ]
    np.testing.assert_array_equal(rel.idx, [1902, 1919, 1917, 3, 2])
    np.testing.assert_array_equal(rel.t, [77663.4, 93671.2, 93951.8, 100, 100])
    np.testing.assert_array_equal(rel.seven, [True, True, True, False, True])
    assert rel.skipped == 1
    _assert_same(rel, _read_python(raw, "lines"))


# --- known inconsistencies ----------------------------------------------------------------------------------


def test_csv_semantics_blank_line_count_does_not_depend_on_a_bad_row_elsewhere(tmp_path: Path) -> None:
    with_blank = b'1,2,"a",1,10,1,5\n\n2,2,"b",2,20,1,6\n'
    base = read_rel(_write(tmp_path, with_blank, "a.csv"), "csv").skipped
    with_bad = read_rel(_write(tmp_path, with_blank + b"x,2,,,15,1,5\n", "b.csv"), "csv").skipped
    assert with_bad - base == 1  # only the bad row is new


def test_lines_semantics_blank_lines_are_not_rows(tmp_path: Path) -> None:
    with_blank = b'1,2,"a",1,10,1,5\n\n2,2,"b",2,20,1,6\n'
    assert read_rel(_write(tmp_path, with_blank, "a.csv"), "lines").skipped == 0
    assert read_rel(_write(tmp_path, with_blank + b"x,2,,,15,1,5\n", "b.csv"), "lines").skipped == 1


def test_csv_semantics_crlf_file_with_a_glued_record_matches_the_python_reader(tmp_path: Path) -> None:
    raw = b'1,2,"abc"",3,100,1,5\r\n1,2,"def",4,200,1,6\r\n1,2,"g",5,300,1,7\r\n'
    _assert_same(read_rel(_write(tmp_path, raw), "csv"), _read_python(raw, "csv"))


def test_lines_semantics_line_separator_inside_a_window_survives_the_fallback_reader(tmp_path: Path) -> None:
    raw = '1,2,"a\u2028b",3,100,1,5\nx,2,,,15,1,5\n'.encode()  # the bad second row forces the fallback
    rel = read_rel(_write(tmp_path, raw), "lines")
    assert list(rel.window_array()) == ["a\u2028b"]
    assert rel.skipped == 1


# --- randomized: fast reader == row-by-row reader == independent oracle ------------------------------------

_ALPHABET = "abcdefghij ,.-:;()*#éü中 文"


def _window(rng: random.Random, dirty: bool) -> str:
    chars = [rng.choice(_ALPHABET) for _ in range(rng.randint(0, 20))]
    if dirty:
        for _ in range(rng.randint(1, 3)):
            chars.insert(rng.randint(0, len(chars)), '"')
    return "".join(chars)


def _number(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        return str(rng.randint(0, 900))
    if kind == 1:
        return f"{rng.uniform(0, 900):.2f}"
    return f"{rng.uniform(0, 1e5):.9f}"


def _line(rng: random.Random, *, six: bool, clean: bool, broken: bool) -> tuple[str, list[str]]:
    """One physical line as the server writes it, and its true fields (window unquoted)."""
    t = _number(rng)
    epoch = str(rng.randint(1_700_000_000_000, 1_800_000_000_000))
    head = rng.choice("1110")
    quoted = False
    kind = rng.random()
    if kind < 0.3:
        fields = ["-1", "-1", "", "", t]  # outside the box
    elif kind < 0.35:
        fields = [_number(rng), _number(rng), "", "", t]  # in the box, no caret
    else:
        quoted = True
        dirty = not clean and rng.random() < 0.25
        fields = [_number(rng), _number(rng), _window(rng, dirty), str(rng.randint(0, 3000)), t]
    fields += [epoch] if six else [head, epoch]
    roll = rng.random()
    if not clean and roll < 0.03:
        fields = fields[: rng.randint(1, 4)]  # truncated row
    elif broken and roll < 0.06:
        fields[0] = "abc"  # non-numeric x
    elif broken and roll < 0.09:
        fields[3] = "nan?"  # non-numeric index
    elif broken and roll < 0.12:
        fields[5] = rng.choice(["", "2", "x"])  # odd camera flag (the epoch in a 6-column row)
    written = [f'"{f}"' if i == 2 and quoted else f for i, f in enumerate(fields)]
    return ",".join(written), fields


def _random_file(rng: random.Random) -> tuple[bytes, list[Row]]:
    """A file and what lines semantics must read from it."""
    style = rng.random()
    clean = style > 0.6  # clean files: one column count, windows without quotes (the pyarrow-only path)
    broken = 0.45 < style <= 0.6  # non-numeric values (pyarrow refuses the file: row-by-row reader)
    lines, expected = [], []
    for _ in range(rng.randint(1, 40)):
        six = style > 0.9 if clean else (style < 0.2 or (style < 0.4 and rng.random() < 0.5))
        line, fields = _line(rng, six=six, clean=clean, broken=broken)
        lines.append(line)
        row = _keep(fields)
        if row is not None:
            expected.append(row)
    raw = "\n".join(lines) + ("\n" if rng.random() < 0.8 else "")
    return raw.encode("utf-8"), expected


@pytest.mark.parametrize("semantics", SEMANTICS)
def test_random_files_fast_reader_equals_row_by_row_reader(tmp_path: Path, semantics: str) -> None:
    rng = random.Random(20240519)
    glued = dirty = 0
    for k in range(200):
        raw, expected_lines = _random_file(rng)
        fast = read_rel(_write(tmp_path, raw, f"rel_{k}.csv"), semantics)
        _assert_same(fast, _read_python(raw, semantics))
        if semantics == "csv":
            assert _rows(fast) == _csv_oracle(raw), raw
            glued += sum("\n" in w for w in fast.windows)
        else:
            assert _rows(fast) == expected_lines, raw
        dirty += any(line.count(b'"') not in (0, 2) for line in raw.split(b"\n"))
    assert dirty > 20  # the generator does exercise windows holding quotes
    if semantics == "csv":
        assert glued > 0  # ... and records that run over several physical lines
