"""Text formatting shared by every output: bytes as people read them, plain tables, short digests."""

from __future__ import annotations

from collections.abc import Sequence


def human_bytes(n: int) -> str:
    """Sizes the way `docker system df` prints them (SI units).

    >>> human_bytes(0), human_bytes(999), human_bytes(1_500_000)
    ('0B', '999B', '1.5MB')
    """
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{int(value)}{unit}" if unit == "B" else f"{value:.3g}{unit}"
        value /= 1000
    return f"{n}B"


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
