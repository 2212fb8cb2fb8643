import contextlib
import gzip
import hashlib
import io
import random
import tarfile
import tracemalloc
import zlib
from collections.abc import Generator

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.core.wasted import LayerContentError, TarEntry
from exporter.sources.layer_tar import layer_entries, summarize_layer


def make_tar(members, tar_format=tarfile.PAX_FORMAT):
    """members: (name, kind, data) with kind in file/dir/symlink/hardlink/fifo."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tar_format) as archive:
        for name, kind, data in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "hardlink": tarfile.LNKTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            info.linkname = "target" if kind in ("symlink", "hardlink") else ""
            archive.addfile(info)
    return out.getvalue()


def diff_id(tar_bytes):
    return "sha256:" + hashlib.sha256(tar_bytes).hexdigest()


def chunked(blob, size=7):
    return [blob[i : i + size] for i in range(0, len(blob), size)]


def read(blob, expected, chunk=4096, **options):
    return list(layer_entries(chunked(blob, chunk), expected, **options))


SAMPLE = [
    ("./", "dir", b""),
    ("./etc", "dir", b""),
    ("./etc/passwd", "file", b"root:x:0:0\n"),
    ("./bin/sh", "symlink", b""),
    ("./bin/ln", "hardlink", b""),
    ("./dev/fifo", "fifo", b""),
    ("./etc/.wh.shadow", "file", b""),
]
SAMPLE_ENTRIES = [
    TarEntry(".", "dir"),
    TarEntry("./etc", "dir"),
    TarEntry("./etc/passwd", "file", 11),
    TarEntry("./bin/sh", "symlink"),
    TarEntry("./bin/ln", "hardlink"),
    TarEntry("./dev/fifo", "other"),
    TarEntry("./etc/.wh.shadow", "file", 0),
]


def compressions():
    return {
        "plain": lambda data: data,
        "gzip": gzip.compress,
        "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
    }


@pytest.mark.parametrize("compression", ["plain", "gzip", "zstd"])
@pytest.mark.parametrize("chunk", [1, 3, 4096, 1 << 20])
def test_reads_every_compression_in_any_chunking(compression, chunk):
    tar_bytes = make_tar(SAMPLE)
    blob = compressions()[compression](tar_bytes)
    assert read(blob, diff_id(tar_bytes), chunk=chunk) == SAMPLE_ENTRIES


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_concatenated_members_and_frames_are_one_stream(compression):
    tar_bytes = make_tar(SAMPLE)
    compress = compressions()[compression]
    blob = compress(tar_bytes[:1000]) + compress(tar_bytes[1000:])
    assert read(blob, diff_id(tar_bytes)) == SAMPLE_ENTRIES


def test_summarize_layer():
    tar_bytes = make_tar(SAMPLE)
    summary = summarize_layer([gzip.compress(tar_bytes)], diff_id(tar_bytes))
    assert (summary.file_count, summary.total_file_bytes) == (1, 11)


def test_empty_layer_of_zero_blocks_and_of_nothing():
    assert read(b"\0" * 1024, diff_id(b"\0" * 1024)) == []
    assert read(gzip.compress(b"\0" * 1024), diff_id(b"\0" * 1024)) == []
    assert read(b"", diff_id(b"")) == []


def test_long_names_via_pax_and_gnu():
    name = "deep/" * 60 + "file.txt"
    for tar_format in (tarfile.PAX_FORMAT, tarfile.GNU_FORMAT):
        tar_bytes = make_tar([(name, "file", b"x" * 5)], tar_format)
        assert read(tar_bytes, diff_id(tar_bytes)) == [TarEntry(name, "file", 5)]


def test_diff_id_mismatch():
    tar_bytes = make_tar(SAMPLE)
    other = diff_id(tar_bytes + b"\0")
    with pytest.raises(LayerContentError, match="diff ID"):
        read(gzip.compress(tar_bytes), other)


def test_malformed_expected_diff_id_is_the_callers_error():
    with pytest.raises(ValueError) as raised:
        layer_entries([b""], "sha512:00")
    assert not isinstance(raised.value, LayerContentError)


@pytest.mark.parametrize("compression", ["plain", "gzip", "zstd"])
def test_truncated_blob(compression):
    big = [("a", "file", bytes(range(256)) * 200), ("b", "file", b"y" * 3000)]
    tar_bytes = make_tar(big)
    blob = compressions()[compression](tar_bytes)
    for cut in {len(blob) // 3, len(blob) // 2, len(blob) - 1, min(600, len(blob) - 1), 100}:
        with pytest.raises(LayerContentError):
            read(blob[:cut], diff_id(tar_bytes))


def test_corrupt_gzip_and_zstd_and_not_a_tar():
    tar_bytes = make_tar(SAMPLE)
    gz = bytearray(gzip.compress(tar_bytes))
    gz[len(gz) // 2] ^= 0xFF
    zs = bytearray(zstandard.ZstdCompressor().compress(tar_bytes))
    zs[len(zs) // 2] ^= 0xFF
    for blob in (bytes(gz), bytes(zs), b"hello, not a tar" * 100, gzip.compress(b"not a tar" * 100)):
        with pytest.raises(LayerContentError):
            read(blob, diff_id(tar_bytes))
    with pytest.raises(LayerContentError):
        read(gzip.compress(tar_bytes) + b"trailing", diff_id(tar_bytes))


def test_too_many_entries():
    tar_bytes = make_tar([(f"f{n}", "file", b"") for n in range(20)])
    assert len(read(tar_bytes, diff_id(tar_bytes), max_entries=20)) == 20
    with pytest.raises(LayerContentError, match="more than 19"):
        read(tar_bytes, diff_id(tar_bytes), max_entries=19)


def test_path_too_long():
    tar_bytes = make_tar([("x" * 5000, "file", b"")])
    with pytest.raises(LayerContentError, match="longer than"):
        read(tar_bytes, diff_id(tar_bytes))


def test_escaping_paths_are_refused_by_the_summary_and_absolute_ones_made_relative():
    tar_bytes = make_tar([("../outside", "file", b"x")])
    with pytest.raises(LayerContentError, match="escapes"):
        summarize_layer([tar_bytes], diff_id(tar_bytes))
    tar_bytes = make_tar([("/etc/a", "file", b"x"), ("etc/a", "file", b"yy")])
    assert summarize_layer([tar_bytes], diff_id(tar_bytes)).total_file_bytes == 2


def test_huge_declared_size_then_truncation_fails_fast():
    # A pax header may claim any size: 2**60 bytes of data that never come.
    info = tarfile.TarInfo("huge")
    info.size = 2**60
    header = info.tobuf(format=tarfile.PAX_FORMAT)
    blob = header + b"\0" * 5000
    with pytest.raises(LayerContentError, match="truncated"):
        read(blob, diff_id(blob))


def test_oversized_pax_header_is_refused_before_it_is_read():
    info = tarfile.TarInfo("x")
    info.type = tarfile.XHDTYPE
    info.size = 1 << 30
    blob = info.tobuf(format=tarfile.USTAR_FORMAT)
    with pytest.raises(LayerContentError, match="metadata header"):
        read(blob, diff_id(blob))


def _big_layer_gzip(data_size):
    """A gzip layer holding one file of zeros, built without holding it uncompressed."""
    info = tarfile.TarInfo("zeros")
    info.size = data_size
    digest, compressor, parts = hashlib.sha256(), zlib.compressobj(wbits=31), []

    def add(data):
        digest.update(data)
        parts.append(compressor.compress(data))

    add(info.tobuf(format=tarfile.PAX_FORMAT))
    zeros = bytes(1 << 20)
    for offset in range(0, data_size, len(zeros)):
        add(zeros[: min(len(zeros), data_size - offset)])
    add(b"\0" * (-data_size % 512) + b"\0" * 1024)
    parts.append(compressor.flush())
    return b"".join(parts), "sha256:" + digest.hexdigest()


def test_large_entry_streams_with_bounded_memory():
    blob, expected = _big_layer_gzip(50 * 1024 * 1024)
    chunks = chunked(blob, 64 * 1024)
    tracemalloc.start()
    try:
        entries = list(layer_entries(chunks, expected))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert entries == [TarEntry("zeros", "file", 50 * 1024 * 1024)]
    assert peak < 4 * 1024 * 1024


def test_throttle_hook_sees_every_chunk():
    tar_bytes = make_tar(SAMPLE)
    blob = gzip.compress(tar_bytes)
    seen: list[int] = []
    read(blob, diff_id(tar_bytes), chunk=100, on_chunk=seen.append)
    assert sum(seen) == len(blob)
    assert max(seen) <= 100


def test_errors_of_the_source_and_of_the_hook_pass_unchanged():
    tar_bytes = make_tar(SAMPLE)

    def failing_source():
        yield tar_bytes[:10]
        raise ConnectionError("containerd went away")

    with pytest.raises(ConnectionError):
        list(layer_entries(failing_source(), diff_id(tar_bytes)))

    def stop(_):
        raise InterruptedError("budget")

    for blob in (tar_bytes, gzip.compress(tar_bytes), zstandard.ZstdCompressor().compress(tar_bytes)):
        with pytest.raises(InterruptedError):
            list(layer_entries([blob], diff_id(tar_bytes), on_chunk=stop))


_VALID = make_tar(SAMPLE + [("./usr/lib/x", "file", b"z" * 700)])
_VALID_BLOBS = [_VALID, gzip.compress(_VALID), zstandard.ZstdCompressor().compress(_VALID)]


def _mutations():
    random_bytes = st.binary(max_size=3000)
    prefixed = st.tuples(st.sampled_from([b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b""]), random_bytes).map(
        lambda pair: pair[0] + pair[1]
    )
    truncated = st.tuples(st.sampled_from(_VALID_BLOBS), st.integers(0, 5000)).map(lambda pair: pair[0][: pair[1]])
    flipped = st.tuples(
        st.sampled_from(_VALID_BLOBS),
        st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=4),
    ).map(_flip)
    return st.one_of(random_bytes, prefixed, truncated, flipped)


def _flip(pair):
    blob, flips = pair
    data = bytearray(blob)
    for position, mask in flips:
        data[position % len(data)] ^= mask
    return bytes(data)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mutations(), st.sampled_from([1, 5, 512, 4096]))
def test_fuzz_only_content_errors_come_out(blob, chunk):
    with contextlib.suppress(LayerContentError):
        read(blob, diff_id(_VALID), chunk=chunk)


def test_a_reader_that_stops_early_reads_no_further():
    rng = random.Random(0)
    # 4 MB that do not compress.
    tar_bytes = make_tar([(f"f{i}", "file", rng.randbytes(10_000)) for i in range(400)])
    blob = gzip.compress(tar_bytes)
    pulled: list[int] = []

    def source():
        for chunk in chunked(blob, 4096):
            pulled.append(len(chunk))
            yield chunk

    entries = layer_entries(source(), diff_id(tar_bytes))
    assert next(entries).path == "f0"
    assert isinstance(entries, Generator)
    entries.close()
    assert sum(pulled) < len(blob) / 2


# -- the plain-header reader against tarfile ------------------------------------------


def _listing(tar_bytes, fast, chunk=4096):
    """The entries, or "error": as the reader gives them (fast), or as tarfile itself
    reads every header (the reference)."""
    from exporter.sources import layer_tar

    try:
        if fast:
            stream = layer_tar._LayerStream(iter(chunked(tar_bytes, chunk)))
            return list(layer_tar._entries(stream, 1000))
        with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:", tarinfo=layer_tar._CheckedTarInfo) as archive:
            return [layer_tar._tarfile_entry(info) for info in archive]
    except Exception:  # layer_entries turns every exception of the content into LayerContentError
        return "error"


_NAME_PARTS = st.sampled_from(["a", "bin", "é", "x" * 60, ".wh.y", ".", "..", "", "dir/", "\udcff"])
_KIND_TYPES = {
    "file": tarfile.REGTYPE,
    "oldfile": tarfile.AREGTYPE,
    "contiguous": tarfile.CONTTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "fifo": tarfile.FIFOTYPE,
    "char": tarfile.CHRTYPE,
    "unknown": b"V",
}


def _random_tar(members, tar_format):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tar_format, encoding="utf-8", errors="surrogateescape") as tar:
        for parts, kind, size, big_number in members:
            info = tarfile.TarInfo("/".join(parts))
            info.type = _KIND_TYPES[kind]
            info.size = size
            info.mtime = 2**40 if big_number else 1_700_000_000  # base-256 in GNU format, pax otherwise
            info.linkname = "t" if kind in ("symlink", "hardlink") else ""
            tar.addfile(info, io.BytesIO(bytes(size)) if size else None)
    return out.getvalue()


_MEMBERS = st.lists(
    st.tuples(
        st.lists(_NAME_PARTS, min_size=1, max_size=5),
        st.sampled_from(sorted(_KIND_TYPES)),
        st.integers(0, 1500),
        st.booleans(),
    ),
    max_size=8,
)
_FORMATS = st.sampled_from([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])


@settings(max_examples=300, deadline=None)
@given(_MEMBERS, _FORMATS, st.sampled_from([7, 512, 4096]))
def test_plain_headers_read_as_tarfile_reads_them(members, tar_format, chunk):
    try:
        tar_bytes = _random_tar(members, tar_format)
    except ValueError:
        return  # a member this format cannot hold (ustar: a name too long, a number too big)
    assert _listing(tar_bytes, fast=True, chunk=chunk) == _listing(tar_bytes, fast=False, chunk=chunk)


@settings(max_examples=300, deadline=None)
@given(_MEMBERS, _FORMATS, st.lists(st.tuples(st.integers(0, 10**5), st.integers(1, 255)), min_size=1, max_size=3))
def test_damaged_headers_read_as_tarfile_reads_them(members, tar_format, flips):
    try:
        tar_bytes = _random_tar(members, tar_format)
    except ValueError:
        return
    if not tar_bytes:
        return
    damaged = _flip((tar_bytes, flips))
    assert _listing(damaged, fast=True) == _listing(damaged, fast=False)


@given(st.binary(min_size=512, max_size=512) | st.just(b"\xff" * 512))
def test_the_header_byte_sum_is_the_sum_of_the_bytes(header):
    from exporter.sources.layer_tar import _byte_sum

    assert _byte_sum(header) == sum(header)


def test_plain_header_details_as_tarfile():
    # A v7 directory (an old-style file whose name ends in "/") has no data; a ustar prefix
    # joins the name; a checksum computed with signed bytes (old Sun tars) is accepted.
    v7_dir = tarfile.TarInfo("old/")
    v7_dir.type, v7_dir.size = tarfile.AREGTYPE, 0
    long_name = tarfile.TarInfo("p" * 120 + "/name")
    long_name.size = 3
    signed = bytearray(tarfile.TarInfo("caf\xe9").tobuf(tarfile.USTAR_FORMAT, "latin-1", "strict"))
    signed[148:156] = b"%06o\0 " % (256 + sum(b - 256 if b >= 128 else b for b in signed[:148] + signed[156:]))
    blob = v7_dir.tobuf(tarfile.USTAR_FORMAT) + long_name.tobuf(tarfile.USTAR_FORMAT) + b"abc".ljust(512, b"\0")
    blob += bytes(signed) + bytes(1024)
    assert (
        _listing(blob, fast=True)
        == _listing(blob, fast=False)
        == [
            TarEntry("old", "dir"),
            TarEntry("p" * 120 + "/name", "file", 3),
            TarEntry("caf\udce9", "file", 0),
        ]
    )


@pytest.mark.parametrize("stop_early", [False, True])
def test_the_chunk_source_is_closed_when_the_reader_stops_or_fails(stop_early):
    """A streaming call behind the chunks is ended at once, not whenever the garbage
    collector gets to its generator."""
    tar_bytes = make_tar([(f"f{i}", "file", bytes(3000)) for i in range(200)])
    blob = gzip.compress(tar_bytes)
    if not stop_early:
        blob = blob[:200] + bytes(300) + blob[500:]  # damaged early: the read fails
    closed: list[bool] = []

    def source():
        try:
            yield from chunked(blob, 700)
        finally:
            closed.append(True)

    chunks = source()  # kept referenced: only an explicit close ends it
    entries = layer_entries(chunks, diff_id(tar_bytes))
    if stop_early:
        next(entries)
        entries.close()
    else:
        with pytest.raises(LayerContentError):
            list(entries)
    assert closed == [True]


def _with_checksum(header: bytearray) -> bytes:
    header[148:156] = b" " * 8
    header[148:156] = b"%06o\0 " % sum(header)
    return bytes(header)


@pytest.mark.parametrize(
    "field, value",
    [
        ((100, 108), b"000644 \0"[:8]),  # space, then NUL: the old style
        ((124, 136), b"00000000003 "),  # a size ending in a space
        ((124, 136), b"   3\0\0\0\0\0\0\0\0"),  # leading blanks
        ((124, 136), b"\x80" + (3).to_bytes(11, "big")),  # base-256
        ((329, 337), b"0000001\0"),  # a device number
        ((337, 345), b"\0\0\0\0\0\0\0\0"),  # all NULs
        ((337, 345), b"1\0garbage"[:8]),  # text after the NUL, which tarfile ignores
        ((116, 124), b"00000x0\0"),  # not a number: both refuse it
    ],
)
def test_number_fields_outside_the_usual_form_read_as_tarfile_reads_them(field, value):
    header = bytearray(tarfile.TarInfo("f").tobuf(tarfile.USTAR_FORMAT))
    header[124:136] = b"%011o\0" % 3
    start, end = field
    header[start:end] = value
    blob = _with_checksum(header) + b"abc".ljust(512, b"\0") + bytes(1024)
    assert _listing(blob, fast=True) == _listing(blob, fast=False)
