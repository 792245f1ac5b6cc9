"""Plain-text tables shared by the benchmark scripts."""

from __future__ import annotations

__all__ = ["print_table"]


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """First column left-aligned, the rest right-aligned, ruled above and below."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=True)]
    line = "  ".join("-" * w for w in widths)
    print(f"\n{title}\n{line}")
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths, strict=True))))
    print(line)
    for row in rows:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    print(line)
