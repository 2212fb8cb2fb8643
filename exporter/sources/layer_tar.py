"""Layer blobs in: the entries of a layer tar, streamed from its compressed bytes.

Only the tar headers matter, so file data is decompressed in bounded blocks,
hashed and dropped: memory stays at a few MiB whatever the layer's size. The
uncompressed stream's sha256 must equal the layer's diff ID, so a corrupt or
truncated blob never yields a figure; every way the bytes can be wrong comes out
as LayerContentError, while errors of the chunk source or of the throttle hook
propagate unchanged (they are not the layer's fault).
"""

from __future__ import annotations

import hashlib
import re
import threading
import zlib
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from functools import cache
from typing import IO, TYPE_CHECKING, Generic, Self, TypeAlias, TypeVar, cast

from exporter.core.wasted import EntryKind, LayerContentError, LayerSummary, TarEntry, summarize

if TYPE_CHECKING:
    import tarfile

# Decompressed bytes per step: large enough that Python overhead is noise next to
# zlib/zstd, small enough to bound memory (a step holds about three blocks at once).
BLOCK_SIZE = 256 << 10
# Compressed bytes zstandard asks for at once: a whole gRPC chunk (containerd sends 1 MiB), not slices of it.
READ_SIZE = 1 << 20
TAR_BLOCK = 512  # a tar header, and the unit of its data
MAX_ENTRIES = 1_000_000
MAX_PATH_BYTES = 4096
# pax and GNU long-name headers are read whole by tarfile: bound them.
MAX_META_HEADER_BYTES = 1 << 20

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_DIFF_ID = re.compile(r"sha256:[0-9a-f]{64}")
# pax (x, g, Solaris X) and GNU long name/link (L, K) headers.
_META_TYPES = frozenset({b"x", b"g", b"X", b"L", b"K"})
# Once the data has ended every read returns nothing: a reader that keeps asking
# (a header claiming more data than there is) is stopped after a few.
_READS_AFTER_END = 3


class _Outside(BaseException):
    """Carries an error of the chunk source or throttle hook past the content-error net."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(error)
        self.error = error


# A chunk of the compressed blob: the reader's own bytes, or a view into a received message.
Chunk: TypeAlias = bytes | memoryview
_Item = TypeVar("_Item", bound=Chunk)


def _chunks_from(
    chunks: Iterable[Chunk], on_chunk: Callable[[int], None] | None, blob_sha256: hashlib._Hash | None
) -> Iterator[Chunk]:
    iterator = iter(chunks)
    while True:
        try:
            chunk = next(iterator)
        except StopIteration:
            return
        except Exception as error:
            raise _Outside(error) from error
        length = len(chunk)
        if length:
            if blob_sha256 is not None:
                blob_sha256.update(chunk)  # in whichever thread receives the chunks
            yield chunk
        del chunk  # not kept while pacing or waiting for the next one
        if on_chunk is not None:
            try:
                on_chunk(length)
            except Exception as error:
                raise _Outside(error) from error


class _ZstdFraming:
    """Follows zstd's frame and block headers (RFC 8878) over the compressed bytes.

    zstandard's stream reader says nothing when the input stops inside a frame,
    nor about bytes after the last frame, so the framing is walked here: one step
    per block (up to 128 KiB), the block contents left to zstandard.
    """

    def __init__(self) -> None:
        self._head = b""  # the header being collected
        self._in_frame = False  # False: a frame header comes next; True: a block header
        self._checksum = False
        self._skip = 0  # bytes of block content, checksum or skippable frame still to pass
        self._frames = 0

    def _header_size(self) -> int:
        if self._in_frame:
            return 3
        if len(self._head) < 5:
            return 5
        magic = int.from_bytes(self._head[:4], "little")
        if magic & 0xFFFFFFF0 == 0x184D2A50:
            return 8  # skippable frame: magic and a 4-byte length
        descriptor = self._head[4]
        content_size_bytes = (1 if descriptor & 0x20 else 0, 2, 4, 8)[descriptor >> 6]
        window_bytes = 0 if descriptor & 0x20 else 1
        return 5 + window_bytes + (0, 1, 2, 4)[descriptor & 3] + content_size_bytes

    def _parse(self) -> None:
        head, self._head = self._head, b""
        if self._in_frame:
            block = int.from_bytes(head, "little")
            kind = (block >> 1) & 3
            if kind == 3:
                raise LayerContentError("corrupt zstd stream: reserved block type")
            self._skip = 1 if kind == 1 else block >> 3  # RLE blocks carry one byte
            if block & 1:  # the frame's last block
                self._skip += 4 if self._checksum else 0
                self._in_frame = False
            return
        magic = int.from_bytes(head[:4], "little")
        if magic & 0xFFFFFFF0 == 0x184D2A50:
            self._skip = int.from_bytes(head[4:8], "little")
        elif magic == 0xFD2FB528 and not head[4] & 0x08:
            self._checksum = bool(head[4] & 0x04)
            self._in_frame = True
            self._frames += 1
        else:
            raise LayerContentError("corrupt zstd stream: bytes after the last frame are not a frame")

    def feed(self, data: Chunk) -> None:
        position = 0
        while position < len(data):
            if self._skip:
                step = min(self._skip, len(data) - position)
                self._skip -= step
                position += step
                continue
            take = min(self._header_size() - len(self._head), len(data) - position)
            self._head += data[position : position + take]
            position += take
            if len(self._head) == self._header_size():
                self._parse()

    def check_complete(self) -> None:
        if self._in_frame or self._head or self._skip or not self._frames:
            raise LayerContentError("zstd stream is truncated")


class _ChunkReader:
    """The compressed chunks as a readable file, for zstandard's stream reader.

    read() hands on the chunks themselves, memoryviews included (zstandard takes
    any buffer), so no chunk is copied.
    """

    def __init__(self, chunks: Iterator[Chunk], framing: _ZstdFraming) -> None:
        self._chunks = chunks
        self._pending: Chunk = b""
        self._framing = framing

    def read(self, size: int = -1) -> Chunk:
        if not self._pending:
            self._pending = next(self._chunks, b"")
        if 0 <= size < len(self._pending):
            out, self._pending = self._pending[:size], self._pending[size:]
        else:
            out, self._pending = self._pending, b""
        self._framing.feed(out)
        return out


def _gunzip(chunks: Iterator[Chunk]) -> Iterator[bytes]:
    member: zlib._Decompress | None = None  # None between gzip members
    for chunk in chunks:
        data = chunk
        while True:
            if member is None:
                member = zlib.decompressobj(wbits=31)  # gzip framing only
            out = member.decompress(data, BLOCK_SIZE)
            produced = len(out)
            if out:
                yield out
                del out  # not kept alive while the next block is made
            if member.eof:
                # Concatenated members are one stream (RFC 1952); anything else after is an error.
                data, member = member.unused_data, None
                if not data:
                    break
            else:
                data = member.unconsumed_tail
                # A full block may leave output inside zlib even with no input left.
                if not data and produced < BLOCK_SIZE:
                    break
    if member is not None:
        raise LayerContentError("gzip stream is truncated")


def _unzstd(chunks: Iterator[Chunk]) -> Iterator[bytes]:
    import zstandard  # most nodes have no zstd layer: its 0.3 MiB only when one comes

    framing = _ZstdFraming()
    source = cast("IO[bytes]", _ChunkReader(chunks, framing))
    reader = zstandard.ZstdDecompressor().stream_reader(source, read_size=READ_SIZE, read_across_frames=True)
    while block := reader.read(BLOCK_SIZE):
        yield block
    framing.check_complete()


def _prepend(first: list[_Item], chunks: Iterator[_Item]) -> Iterator[_Item]:
    """The items of `first` (emptied as they go: none is kept once handed on), then `chunks`."""
    while first:
        yield first.pop(0)
    yield from chunks


class _HashedBlocks(Generic[_Item]):
    """The decompressed blocks, made in a thread of their own, hashed as they are taken.

    Decompression and sha256 release the GIL, tar header parsing does not: with
    the blocks made one step ahead, decompression runs beside hashing and
    parsing, like `zstd -dc | tar -t`. At most _AHEAD blocks wait; an error of the producer
    (the layer's or the chunk source's) is raised to the reader unchanged.
    """

    def __init__(self, blocks: Iterator[_Item], *, ahead: int = 2, hashed: bool = True) -> None:
        self._AHEAD = ahead
        self._hashed = hashed
        # A deque and a condition rather than queue.Queue: the queue module is not loaded for this.
        self._waiting: deque[_Item | BaseException | None] = deque()
        self._changed = threading.Condition()
        self._stopped = threading.Event()
        self._ended = False
        self._sha256 = hashlib.sha256()
        self._thread = threading.Thread(target=self._produce, args=(blocks,), name="layer-blocks", daemon=True)
        self._thread.start()

    def _produce(self, blocks: Iterator[_Item]) -> None:
        try:
            for block in blocks:
                put = self._put(block)
                del block  # not kept while the next one is made or received
                if not put:
                    return
            self._put(None)
        except BaseException as error:  # handed to the reader, whatever it is
            self._put(error)

    def _put(self, item: _Item | BaseException | None) -> bool:
        with self._changed:
            while not self._stopped.is_set():
                if len(self._waiting) < self._AHEAD:
                    break
                self._changed.wait(0.1)
            else:
                return False
            self._waiting.append(item)
            self._changed.notify()
        return True

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> _Item:
        if self._ended:
            raise StopIteration
        with self._changed:
            while not self._waiting:
                self._changed.wait()
            item = self._waiting.popleft()
            self._changed.notify()
        if item is None:
            self._ended = True
            raise StopIteration
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        # Hashed by the reader: decompression alone keeps the producer busy, and
        # the tar headers leave the reader most of its time.
        if self._hashed:
            self._sha256.update(item)
        return item

    def hexdigest(self) -> str:
        """The sha256 of every block; only complete once the blocks have ended."""
        return self._sha256.hexdigest()

    def close(self) -> None:
        """Stop the producer (the reader gave up early) and let it end."""
        self._stopped.set()
        with self._changed:
            self._changed.notify_all()
        self._thread.join()


class _InlineBlocks:
    """The decompressed blocks made when asked for, hashed as they are taken (a small blob)."""

    def __init__(self, blocks: Iterator[bytes], *, hashed: bool = True) -> None:
        self._blocks = blocks
        self._hashed = hashed
        self._sha256 = hashlib.sha256()

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> bytes:
        block = next(self._blocks)
        if self._hashed:
            self._sha256.update(block)
        return block

    def hexdigest(self) -> str:
        return self._sha256.hexdigest()

    def close(self) -> None:
        pass


class _LayerStream:
    """The uncompressed tar stream as a readable file, hashed as it is read.

    It also seeks forward: tarfile then passes over file data by moving an
    offset through the decompressed blocks (every byte is still hashed), instead
    of reading it through tarfile's stream buffer a few KiB at a time, which
    cost twice the decompression itself.
    """

    def __init__(self, blocks: _HashedBlocks[bytes] | _InlineBlocks) -> None:
        self._blocks = blocks
        self._buffer = b""
        self._offset = 0
        self._start = 0  # stream position of self._buffer[0]
        self._empty_reads = 0

    def tell(self) -> int:
        return self._start + self._offset

    def seek(self, position: int, whence: int = 0) -> int:
        """Move forward to `position` (or back within the current block)."""
        if whence != 0 or position < self._start:
            raise LayerContentError("the tar reader moved backwards in the layer")
        self.skip(position - self.tell())
        return position

    def skip(self, count: int) -> None:
        """Move `count` bytes on (a header and its file's data; back only within the current block)."""
        offset = self._offset + count
        while offset > len(self._buffer):
            offset -= len(self._buffer)
            if not self._fill():
                raise LayerContentError("layer ends inside a file's data (truncated)")
        self._offset = offset

    def _fill(self) -> bool:
        self._start += len(self._buffer)
        self._buffer, self._offset = b"", 0  # drop the old block before making the next
        block = next(self._blocks, b"")
        if not block:
            return False
        self._buffer, self._offset = block, 0
        return True

    def read(self, size: int = -1) -> bytes:
        parts: list[bytes] = []
        wanted = size
        while wanted:
            available = len(self._buffer) - self._offset
            if not available:
                if not self._fill():
                    break
                continue
            take = available if wanted < 0 else min(wanted, available)
            parts.append(self._buffer[self._offset : self._offset + take])
            self._offset += take
            wanted -= take if wanted > 0 else 0
        out = b"".join(parts)
        if size and not out:
            self._empty_reads += 1
            if self._empty_reads > _READS_AFTER_END:
                raise LayerContentError("layer ends inside a file's data (truncated)")
        return out

    def peek_block(self) -> bytes:
        """The next 512 bytes (fewer at the end), left unread."""
        end = self._offset + TAR_BLOCK
        if end <= len(self._buffer):
            return self._buffer[self._offset : end]
        start = self.tell()
        head = self.read(TAR_BLOCK)
        self._buffer, self._offset, self._start = head + self._buffer[self._offset :], 0, start
        return head

    def starts_with_zero_block(self) -> bool:
        """Whether the stream is empty or begins with an end-of-archive block."""
        start = self.tell()
        head = self.read(TAR_BLOCK)
        self._buffer, self._offset, self._start = head + self._buffer[self._offset :], 0, start
        return head.count(0) == len(head)

    def finish(self) -> str:
        """Read to the end (padding after the archive is part of the diff ID); the digest (if hashed)."""
        while self._fill():
            pass
        return "sha256:" + self._blocks.hexdigest()


@cache
def _checked_tar_info() -> type[tarfile.TarInfo]:
    """tarfile's TarInfo, refusing damaged headers and oversized metadata.

    tarfile (and what it imports) is loaded only for a layer that needs it: most
    layers have plain headers only, and the exporter runs for months.
    """
    import tarfile

    class CheckedTarInfo(tarfile.TarInfo):
        @classmethod
        def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> Self:
            if 0 < len(buf) < TAR_BLOCK:
                raise LayerContentError("layer ends inside a tar header (truncated)")
            if not buf or buf.count(0) == TAR_BLOCK:
                # tarfile's own end signals: a zero block ends the archive; no bytes at all
                # means it has no end blocks, which is accepted (the diff ID vouches for it).
                return super().frombuf(buf, encoding, errors)
            try:
                info = super().frombuf(buf, encoding, errors)
            except tarfile.HeaderError as error:
                raise LayerContentError(f"not a tar archive, or a damaged tar header: {error}") from error
            if info.type in _META_TYPES and info.size > MAX_META_HEADER_BYTES:
                raise LayerContentError(f"tar metadata header of {info.size} bytes (limit {MAX_META_HEADER_BYTES})")
            return info

    return CheckedTarInfo


def _kind(info: tarfile.TarInfo) -> EntryKind:
    if info.isreg():
        return "file"
    if info.isdir():
        return "dir"
    if info.issym():
        return "symlink"
    if info.islnk():
        return "hardlink"
    return "other"


# The plain header types (ustar, GNU and v7 without extensions), read here; any
# other type (pax, GNU long names, sparse files) hands the rest of the archive to
# tarfile. As tarfile does, an unknown type is "other" and its data is skipped.
_KINDS: dict[bytes, EntryKind] = {
    b"0": "file",
    b"\0": "file",
    b"7": "file",  # contiguous file
    b"5": "dir",
    b"2": "symlink",
    b"1": "hardlink",
}
_HAS_NO_DATA = frozenset({b"1", b"2", b"3", b"4", b"5", b"6"})  # tarfile skips no data after these
_HANDED_OVER = frozenset({b"x", b"g", b"X", b"L", b"K", b"S"})
# Of those, the headers that extend only the member after them (pax extended, GNU long name and link).
_EXTENDING_ONE = frozenset({b"x", b"L", b"K"})
_ZERO_BLOCK = bytes(TAR_BLOCK)
_HEADER_NUMBERS = ((100, 108), (108, 116), (116, 124), (124, 136), (136, 148), (329, 337), (337, 345))
# Those fields as Go's archive/tar, GNU tar and tarfile write them (octal digits,
# then NUL or space; device numbers also all NULs): valid as tarfile reads them,
# so one match checks them all and gives the size; anything else is read field by field.
_USUAL_NUMBERS = re.compile(rb"[0-7]{7}[\0 ][0-7]{7}[\0 ][0-7]{7}[\0 ]([0-7]{11})[\0 ][0-7]{11}[\0 ]")
_USUAL_DEVICES = re.compile(rb"(?:[0-7]{7}[\0 ]|\0{8}){2}")


def _number(field: bytes) -> int:
    """A header number field, as tarfile's nti() reads it (octal text or base-256)."""
    if field[0] in (0o200, 0o377):
        value = int.from_bytes(field[1:], "big")
        return value - 256 ** (len(field) - 1) if field[0] == 0o377 else value
    try:
        return int(field.partition(b"\0")[0] or b"0", 8)  # the usual field, without decoding it
    except ValueError:
        pass  # all blanks (0 for tarfile), or not a number at all: as tarfile reads it
    end = field.find(0)
    try:
        return int((field if end < 0 else field[:end]).decode("ascii").strip() or "0", 8)
    except ValueError:
        raise LayerContentError("not a tar archive, or a damaged tar header: invalid header") from None


def _byte_sum(header: bytes) -> int:
    """The sum of a header's 512 bytes, a third of the time sum() takes.

    Adler-32 keeps 1 + the byte sum modulo 65,521 in its low 16 bits; 256 bytes
    sum to at most 65,280, so for each half that is the exact sum.
    """
    return (zlib.adler32(header[:256]) & 0xFFFF) + (zlib.adler32(header[256:]) & 0xFFFF) - 2


def _text(field: bytes) -> str:
    end = field.find(0)
    return (field if end < 0 else field[:end]).decode("utf-8", "surrogateescape")


def _plain_header(header: bytes) -> tuple[str, EntryKind, int, int] | None:
    """(path, kind, size, data bytes to skip) of a plain header, as tarfile reads it; None: not plain.

    Reading the 512 bytes here instead of through tarfile's TarInfo is most of the
    analysis's Python time saved; tests check it against tarfile on random archives.
    """
    type_flag = header[156:157]
    if type_flag in _HANDED_OVER:
        return None
    # tarfile accepts the unsigned or the signed sum (some old tars), the checksum field as spaces.
    checksum = _number(header[148:156])
    unsigned = _byte_sum(header) - sum(header[148:156]) + 256
    if checksum != unsigned and checksum != unsigned - 256 * sum(
        1 for byte in header[:148] + header[156:] if byte >= 128
    ):
        raise LayerContentError("not a tar archive, or a damaged tar header: bad checksum")
    usual = _USUAL_NUMBERS.match(header, 100)
    if usual is not None and _USUAL_DEVICES.match(header, 329):
        size = int(usual[1], 8)
    else:
        size = [_number(header[start:end]) for start, end in _HEADER_NUMBERS][3]  # each checked
    name = _text(header[:100])
    kind = _KINDS.get(type_flag, "other")
    if type_flag == b"\0" and name.endswith("/"):
        kind = "dir"  # old v7 tars write a directory as a file whose name ends in "/"
    if kind == "dir":
        name = name.rstrip("/")
    prefix = _text(header[345:500])
    if prefix:
        name = prefix + "/" + name
        if kind == "dir":
            name = name.rstrip("/")
    skip = 0 if kind == "dir" or type_flag in _HAS_NO_DATA else -(-size // TAR_BLOCK) * TAR_BLOCK
    if skip < 0:
        raise LayerContentError(f"negative size in the tar header of {name!r}")
    return name, kind, size, skip


def _entries(stream: _LayerStream, max_entries: int, *, fast: bool = True) -> Iterator[TarEntry]:
    """The entries: plain headers read here, a member with extended headers (pax,
    GNU long names) by tarfile, and the whole rest by tarfile from a header that
    affects later members (pax global, sparse, Solaris)."""
    count = 0
    archive: tarfile.TarFile | None = None
    while fast:
        header = stream.peek_block()
        if not header or header == _ZERO_BLOCK:
            return  # the end blocks; or none at all, which is accepted (the diff ID vouches for it)
        if len(header) < TAR_BLOCK:
            raise LayerContentError("layer ends inside a tar header (truncated)")
        plain = _plain_header(header)
        if plain is not None:
            path, kind, size, skip = plain
            # A plain header's path has at most 256 bytes (prefix, "/", name): below MAX_PATH_BYTES.
            entry = TarEntry(path, kind, size if kind == "file" else 0)
            stream.skip(TAR_BLOCK + skip)
        elif header[156:157] in _EXTENDING_ONE:
            # Extended headers are rare (a long path, a capability xattr): tarfile reads
            # this member with them, and the plain headers after it are read here again.
            if archive is None:
                archive = _open_archive(stream)  # reads the member at the stream's position
            else:
                archive.offset = stream.tell()  # where its next() reads
            info = archive.next()
            archive.members.clear()  # type: ignore[attr-defined]  # tarfile keeps every member it read
            if info is None:
                return
            stream.seek(archive.offset)  # past the member's data
            entry = _tarfile_entry(info)
        else:
            break
        count += 1
        if count > max_entries:
            raise LayerContentError(f"layer has more than {max_entries} entries")
        yield entry
    if stream.tell() == 0 and stream.starts_with_zero_block():
        return  # an empty layer: docker writes one as 1,024 zero bytes
    if archive is None:
        archive = _open_archive(stream)
    else:
        archive.offset = stream.tell()
    with archive:
        while (info := archive.next()) is not None:
            archive.members.clear()  # type: ignore[attr-defined]
            count += 1
            if count > max_entries:
                raise LayerContentError(f"layer has more than {max_entries} entries")
            yield _tarfile_entry(info)


def _open_archive(stream: _LayerStream) -> tarfile.TarFile:
    """tarfile over the stream, its first member the one at the stream's position."""
    import tarfile

    # "r:" (not the stream mode "r|"): tarfile seeks over file data; the stream only goes forward.
    return tarfile.open(fileobj=cast("IO[bytes]", stream), mode="r:", tarinfo=_checked_tar_info())


def _tarfile_entry(info: tarfile.TarInfo) -> TarEntry:
    if len(info.name.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise LayerContentError(f"layer entry path longer than {MAX_PATH_BYTES} bytes")
    kind = _kind(info)
    return TarEntry(info.name, kind, info.size if kind == "file" else 0)


def layer_entries(
    chunks: Iterable[Chunk],
    diff_id: str,
    *,
    blob_digest: str | None = None,
    on_chunk: Callable[[int], None] | None = None,
    max_entries: int = MAX_ENTRIES,
) -> Generator[TarEntry, None, None]:
    """The entries of a layer blob (gzip, zstd or plain tar, told by its magic bytes).

    `chunks` are the blob's bytes in order (containerd's content Read); `diff_id`
    is the expected sha256 of the uncompressed tar. With `blob_digest`, the
    compressed bytes are checked against it instead: only for a blob the runtime
    itself decompressed and recorded as `diff_id` (containerd's
    containerd.io/uncompressed label), where it vouches as much for a third of
    the hashing. `on_chunk` is called after each chunk with its length, for the
    caller to pace itself (sleep to keep CPU under a budget). The entries are
    only vouched for once the iterator is exhausted without LayerContentError:
    the digest is checked at the end. When the entries end (read, failed or
    closed), `chunks` is closed if it can be: a streaming call behind it ends then.
    """
    if not _DIFF_ID.fullmatch(diff_id):
        raise ValueError(f"not a sha256 diff ID: {diff_id!r}")
    if blob_digest is not None and not _DIFF_ID.fullmatch(blob_digest):
        raise ValueError(f"not a sha256 blob digest: {blob_digest!r}")
    return _checked_entries(chunks, diff_id, blob_digest, on_chunk, max_entries)


def _checked_entries(
    chunks: Iterable[Chunk],
    diff_id: str,
    blob_digest: str | None,
    on_chunk: Callable[[int], None] | None,
    max_entries: int,
) -> Generator[TarEntry, None, None]:
    blob_sha256 = hashlib.sha256() if blob_digest is not None else None
    try:
        source: Iterator[Chunk] = _chunks_from(chunks, on_chunk, blob_sha256)
        first: list[Chunk] = []  # enough chunks for the magic bytes (handed on, not kept)
        magic = b""
        while len(magic) < len(_ZSTD_MAGIC):
            chunk = next(source, b"")
            if not chunk:
                break
            first.append(chunk)
            magic += chunk[: len(_ZSTD_MAGIC) - len(magic)]
            del chunk
        rest = next(source, b"")
        fetched: _HashedBlocks[Chunk] | None = None
        if rest:
            # Decompression is the longest step: the chunks are received (and the blob
            # hashed) in a thread of their own, decompressed in another, parsed here.
            fetched = _HashedBlocks(_prepend([rest], source), ahead=1, hashed=False)
            source = fetched
        del rest
        source = _prepend(first, source)
        blocks: Iterator[bytes]
        if magic.startswith(_GZIP_MAGIC):
            blocks = _gunzip(source)
        elif magic.startswith(_ZSTD_MAGIC):
            blocks = _unzstd(source)
        else:
            blocks = (bytes(chunk) for chunk in source)  # an uncompressed layer (rare): its own bytes
        try:
            # A blob that came whole in its first chunk (most layers are small) is read
            # without threads: starting them costs more than they save there.
            hash_tar = blob_sha256 is None
            hashed: _HashedBlocks[bytes] | _InlineBlocks
            if fetched is not None:
                hashed = _HashedBlocks(blocks, hashed=hash_tar)
            else:
                hashed = _InlineBlocks(blocks, hashed=hash_tar)
            try:
                stream = _LayerStream(hashed)
                yield from _entries(stream, max_entries)
                tar_digest = stream.finish()
            finally:
                hashed.close()
        finally:
            if fetched is not None:
                fetched.close()
            # The source (a streaming call) ends now, not when the garbage collector gets to it.
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
    except _Outside as outside:
        raise outside.error from None
    except LayerContentError:
        raise
    except Exception as error:
        # Anything else raised while decoding untrusted bytes (zlib.error, ZstdError,
        # tarfile.ReadError, EOFError, ...) is the layer's content being wrong.
        raise LayerContentError(f"unreadable layer: {type(error).__name__}: {error}") from error
    if blob_sha256 is not None:
        # Every chunk was hashed: the decompressors read their input to its end.
        digest = "sha256:" + blob_sha256.hexdigest()
        if digest != blob_digest:
            raise LayerContentError(f"layer blob does not match its digest {blob_digest} (got {digest})")
    elif tar_digest != diff_id:
        raise LayerContentError(f"layer content does not match its diff ID {diff_id} (got {tar_digest})")


def summarize_layer(
    chunks: Iterable[Chunk],
    diff_id: str,
    *,
    blob_digest: str | None = None,
    on_chunk: Callable[[int], None] | None = None,
    max_entries: int = MAX_ENTRIES,
) -> LayerSummary:
    """Read a layer blob and summarize it; LayerContentError if it is not the layer it claims."""
    return summarize(
        layer_entries(chunks, diff_id, blob_digest=blob_digest, on_chunk=on_chunk, max_entries=max_entries)
    )
