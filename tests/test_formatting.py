"""Text formatting shared by the outputs."""

from exporter.formatting import human_bytes, one_line, short_digest, table


def test_human_bytes():
    assert [human_bytes(n) for n in (0, 999, 1000, 1_234_567, 5 * 10**12)] == ["0B", "999B", "1kB", "1.23MB", "5TB"]


def test_table_short_digest_and_one_line():
    assert table(("A", "BB"), [(1, "x"), ("long", 2)]) == "A      BB\n1      x\nlong   2"
    assert short_digest("sha256:" + "ab" * 32) == "ab" * 6
    assert one_line("a\n  b", 60) == "a b" and one_line("x" * 70, 10) == "x" * 9 + "…"
