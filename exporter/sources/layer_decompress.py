"""Layer blobs decompressed: gzip, zstd or an uncompressed tar, told by their magic bytes.

The output comes in blocks of at most BLOCK_SIZE bytes however well the input
compresses, so memory stays at a few blocks whatever the layer's size. Damaged
input raises the decompressor's own error; truncated input may simply end early:
the caller checks the result against the layer's diff ID either way.
"""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Iterable, Iterator
from typing import IO, cast

import zstandard

from exporter.core.wasted import LayerContentError

# Large enough that Python overhead is noise next to zlib/zstd, small enough to bound memory.
BLOCK_SIZE = 256 << 10
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def decompressed(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The uncompressed bytes of a blob whose bytes come as `chunks`."""
    iterator = iter(chunks)
    head = b""
    while len(head) < len(_ZSTD_MAGIC):
        chunk = next(iterator, b"")
        if not chunk:
            break
        head += chunk
    source = itertools.chain((head,), iterator)
    if head.startswith(_GZIP_MAGIC):
        yield from _gunzip(source)
    elif head.startswith(_ZSTD_MAGIC):
        yield from _unzstd(source)
    else:
        yield from (chunk for chunk in source if chunk)  # an uncompressed layer (rare)


def _gunzip(chunks: Iterator[bytes]) -> Iterator[bytes]:
    member: zlib._Decompress | None = None  # None between gzip members
    for chunk in chunks:
        data = chunk
        while True:
            if member is None:
                member = zlib.decompressobj(wbits=31)  # gzip framing only
            out = member.decompress(data, BLOCK_SIZE)
            if out:
                yield out
            if member.eof:
                # Concatenated members are one stream (RFC 1952).
                data, member = member.unused_data, None
                if not data:
                    break
            else:
                data = member.unconsumed_tail
                # A full block may leave output inside zlib even with no input left.
                if not data and len(out) < BLOCK_SIZE:
                    break
    if member is not None:
        raise LayerContentError("gzip stream is truncated")


class _ChunkFile:
    """The chunks as a readable file, for zstandard's stream reader."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._pending = b""

    def read(self, size: int = -1) -> bytes:
        if not self._pending:
            self._pending = next(self._chunks, b"")
        if 0 <= size < len(self._pending):
            out, self._pending = self._pending[:size], self._pending[size:]
        else:
            out, self._pending = self._pending, b""
        return out


def _unzstd(chunks: Iterator[bytes]) -> Iterator[bytes]:
    source = cast("IO[bytes]", _ChunkFile(chunks))
    reader = zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True)
    while block := reader.read(BLOCK_SIZE):
        yield block
