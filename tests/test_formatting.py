"""Text formatting shared by the outputs."""

import pytest

from exporter.formatting import human_bytes, one_line, short_digest, table


def test_human_bytes():
    assert [human_bytes(n) for n in (0, 999, 1000, 1_234_567, 5 * 10**12)] == ["0B", "999B", "1kB", "1.23MB", "5TB"]


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (999, "999B"),
        (1000, "1kB"),
        (999_499, "999kB"),
        # Rounding to 3 significant digits carries into the next unit.
        (999_500, "1MB"),
        (999_950, "1MB"),
        (999_999, "1MB"),
        (99_949, "99.9kB"),
        (99_950, "100kB"),
        (999_499_999, "999MB"),
        (999_950_000, "1GB"),
        (999_950_000_000, "1TB"),
        (12_345 * 10**12, "12345TB"),
        (-999_950, "-1MB"),
    ],
)
def test_human_bytes_unit_boundaries(n, text):
    assert human_bytes(n) == text
    assert "e+" not in human_bytes(n)


def test_table_short_digest_and_one_line():
    assert table(("A", "BB"), [(1, "x"), ("long", 2)]) == "A      BB\n1      x\nlong   2"
    assert short_digest("sha256:" + "ab" * 32) == "ab" * 6
    assert one_line("a\n  b", 60) == "a b" and one_line("x" * 70, 10) == "x" * 9 + "…"
