"""Text formatting shared by every output: bytes as people read them, plain tables, short digests."""

from __future__ import annotations

from collections.abc import Sequence


def human_bytes(n: int) -> str:
    """Sizes the way `docker system df` prints them (SI units, 3 significant digits).

    Rounding can carry into the next unit (999_950 bytes is 1.00MB, not
    "1e+03kB"), so a unit is chosen after rounding, not before.

    >>> human_bytes(0), human_bytes(999), human_bytes(1_500_000), human_bytes(999_950)
    ('0B', '999B', '1.5MB', '1MB')
    """
    if abs(n) < 1000:
        return f"{n}B"
    value = n / 1000
    for unit in ("kB", "MB", "GB"):
        text = f"{value:.3g}"
        if abs(float(text)) < 1000:
            return text + unit
        value /= 1000
    text = f"{value:.3g}"
    # Beyond 999TB: whole terabytes rather than an exponent.
    return (text if abs(float(text)) < 1000 else str(round(value))) + "TB"


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns separated by three spaces, as `docker system df` prints them."""
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def short_digest(digest: str) -> str:
    """The first 12 hex digits, as `docker images` shows IDs."""
    return digest.removeprefix("sha256:")[:12]


def one_line(text: str, limit: int = 60) -> str:
    """Whitespace collapsed, cut with an ellipsis at `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
