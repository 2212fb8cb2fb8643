"""Layer summaries kept on disk, so a restart reads no layer blob again.

One file per diff ID (named by its hex digest) in an optional state directory. A
layer's content never changes, so a summary stays valid as long as its format
version does. The format, all integers little-endian:

    magic "LSXWASTE" | version u16 | diff ID digest (32 bytes) | index item size u8
    | counts u64 x 6: files, big files, dirs, non-dirs, whiteouts, opaque dirs
    | total file bytes u64 | the summary's arrays, in field order | sha256 of all before

Anything that does not read back exactly (missing, truncated, corrupt, another
program's file, another version, another layer) is discarded, never trusted:
the layer is simply read again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import struct
import sys
import tempfile
import time
from array import array
from collections.abc import Callable, Iterable, Mapping
from hashlib import sha256
from pathlib import Path

from exporter.core.wasted import LayerSummary

log = logging.getLogger(__name__)

MAGIC = b"LSXWASTE"
VERSION = 1
_PREFIX = struct.Struct("<8sH32s")  # magic, version, diff ID digest: what only a file needs
_COUNTS = struct.Struct("<B7Q")  # index item size, the six counts, total file bytes
_CHECKSUM_BYTES = 32
_DIFF_ID = re.compile(r"sha256:([0-9a-f]{64})")
_STATE_NAME = re.compile(r"[0-9a-f]{64}")
_TMP_SUFFIX = ".tmp"
# A temporary file this old is left over from a crash, not a save in progress.
_STALE_TMP_SECONDS = 3600

# (field, typecode; None: the index typecode of the layer)
_ARRAYS: tuple[tuple[str, str | None], ...] = (
    ("file_hashes", "Q"),
    ("file_numbers", None),
    ("file_sizes", "I"),
    ("big_file_numbers", "Q"),
    ("big_file_sizes", "Q"),
    ("dir_hashes", "Q"),
    ("dir_starts", None),
    ("dir_ends", None),
    ("nondir_hashes", "Q"),
    ("whiteout_hashes", "Q"),
    ("opaque_hashes", "Q"),
)


class _UnusableError(Exception):
    """The file is not a summary this version can trust."""


def _digest_hex(diff_id: str) -> str:
    match = _DIFF_ID.fullmatch(diff_id)
    if match is None:
        raise ValueError(f"not a sha256 diff ID: {diff_id!r}")
    return match.group(1)


def _little_endian(values: array[int]) -> bytes:
    if sys.byteorder == "little":
        return values.tobytes()
    swapped = array(values.typecode, values)
    swapped.byteswap()
    return swapped.tobytes()


def _pack(summary: LayerSummary) -> bytes:
    """The body of a summary file: the counts and the arrays."""
    counts = _COUNTS.pack(
        summary.file_numbers.itemsize,
        summary.file_count,
        len(summary.big_file_numbers),
        len(summary.dir_hashes),
        len(summary.nondir_hashes),
        len(summary.whiteout_hashes),
        len(summary.opaque_hashes),
        summary.total_file_bytes,
    )
    return b"".join([counts, *(_little_endian(getattr(summary, name)) for name, _ in _ARRAYS)])


def _unpack(data: bytes) -> LayerSummary:
    """The summary _pack() made; _UnusableError if the bytes do not hold one."""
    if len(data) < _COUNTS.size:
        raise _UnusableError("shorter than its counts")
    index_size, files, big, dirs, nondirs, whiteouts, opaques, total = _COUNTS.unpack_from(data)
    index_code = {2: "H", 4: "I"}.get(index_size)
    if index_code is None:
        raise _UnusableError(f"index item size {index_size}")
    lengths = {
        "file_hashes": files,
        "file_numbers": files,
        "file_sizes": files,
        "big_file_numbers": big,
        "big_file_sizes": big,
        "dir_hashes": dirs,
        "dir_starts": dirs,
        "dir_ends": dirs,
        "nondir_hashes": nondirs,
        "whiteout_hashes": whiteouts,
        "opaque_hashes": opaques,
    }
    offset = _COUNTS.size
    fields: dict[str, array[int]] = {}
    for name, code in _ARRAYS:
        values = array(code or index_code)
        size = lengths[name] * values.itemsize
        if offset + size > len(data):
            raise _UnusableError("shorter than its counts say")
        values.frombytes(data[offset : offset + size])
        if sys.byteorder != "little":
            values.byteswap()
        fields[name] = values
        offset += size
    if offset != len(data):
        raise _UnusableError("longer than its counts say")
    # The checksum rules out damage; these bounds keep a wrong writer from causing IndexError later.
    if any(max(fields[name], default=0) > files for name in ("dir_ends", "dir_starts")) or any(
        max(fields[name], default=-1) >= files for name in ("file_numbers", "big_file_numbers")
    ):
        raise _UnusableError("file numbers out of range")
    try:
        return LayerSummary(**fields, total_file_bytes=total)
    except ValueError as error:
        raise _UnusableError(str(error)) from error


def encode(diff_id: str, summary: LayerSummary) -> bytes:
    """The file content for one summary."""
    payload = _PREFIX.pack(MAGIC, VERSION, bytes.fromhex(_digest_hex(diff_id))) + _pack(summary)
    return payload + sha256(payload).digest()


def decode(diff_id: str, data: bytes) -> LayerSummary:
    """The summary in a file's content; an exception if it cannot be trusted."""
    if len(data) < _PREFIX.size + _COUNTS.size + _CHECKSUM_BYTES or not data.startswith(MAGIC):
        raise _UnusableError("not a layer summary file")
    payload, checksum = data[:-_CHECKSUM_BYTES], data[-_CHECKSUM_BYTES:]
    _, version, digest = _PREFIX.unpack_from(payload)
    if version != VERSION:
        raise _UnusableError(f"format version {version}, this exporter reads {VERSION}")
    if sha256(payload).digest() != checksum:
        raise _UnusableError("checksum mismatch (truncated or corrupt)")
    if digest.hex() != _digest_hex(diff_id):
        raise _UnusableError("it is the summary of another layer")
    return _unpack(payload[_PREFIX.size :])


def load(directory: Path, diff_id: str) -> LayerSummary | None:
    """The saved summary of a layer, or None; never raises.

    A file that cannot be trusted is deleted, with one warning, so it is neither
    trusted nor reported again; the caller reads the layer and saves it anew.
    """
    try:
        path = directory / _digest_hex(diff_id)
    except ValueError as error:
        log.warning("layer summary not loaded: %s", error)
        return None
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        log.warning("layer summary %s discarded: cannot read it: %s", path, error)
        return None
    try:
        return decode(diff_id, data)
    except Exception as error:  # whatever the bytes are, they only cost a re-read
        log.warning("layer summary %s discarded: %s", path, error)
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)
        return None


def save(directory: Path, diff_id: str, summary: LayerSummary) -> None:
    """Write a layer's summary atomically (a reader sees the old file or the new one).

    Not fsynced: after a power loss a torn file fails its checksum and is read again.
    Raises OSError if the directory cannot be written.
    """
    name = _digest_hex(diff_id)
    data = encode(diff_id, summary)
    handle, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=_TMP_SUFFIX)
    try:
        with os.fdopen(handle, "wb") as tmp:
            tmp.write(data)
        os.replace(tmp_name, directory / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise


def prune(directory: Path, keep: Iterable[str], now: float) -> int:
    """Delete the summaries of layers not in `keep` (diff IDs) and temporary files
    older than an hour at Unix time `now` (left by a crash).

    Only files this module writes are touched. Returns how many were deleted; never raises.
    """
    kept = {match.group(1) for diff_id in keep if (match := _DIFF_ID.fullmatch(diff_id))}
    deleted = 0
    try:
        entries = list(os.scandir(directory))
    except OSError as error:
        log.warning("layer summaries not pruned: %s", error)
        return 0
    for entry in entries:
        try:
            ours = _STATE_NAME.fullmatch(entry.name) is not None and entry.name not in kept
            stale = (
                entry.name.startswith(".")
                and entry.name.endswith(_TMP_SUFFIX)
                and now - entry.stat(follow_symlinks=False).st_mtime > _STALE_TMP_SECONDS
            )
            if (ours or stale) and entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                deleted += 1
        except OSError as error:
            log.warning("layer summary %s not pruned: %s", entry.path, error)
    return deleted


class SummaryStore:
    """Layer summaries by diff ID, in memory and, given a state directory, on disk.

    A directory that cannot be written is said once and then left alone: the
    summaries are kept in memory only, and the analysis goes on.
    """

    def __init__(self, directory: Path | None, wall: Callable[[], float] = time.time) -> None:
        self._directory = directory
        self._wall = wall
        self._summaries: dict[str, LayerSummary] = {}
        self._pruned_for: frozenset[str] = frozenset()

    def __contains__(self, diff_id: str) -> bool:
        return diff_id in self._summaries

    def __getitem__(self, diff_id: str) -> LayerSummary:
        return self._summaries[diff_id]

    @property
    def summaries(self) -> Mapping[str, LayerSummary]:
        return self._summaries

    def load(self, diff_ids: Iterable[str]) -> None:
        """Take the saved summaries of these layers that are not in memory yet."""
        if self._directory is None:
            return
        for diff_id in diff_ids:
            if diff_id not in self._summaries:
                summary = load(self._directory, diff_id)
                if summary is not None:
                    self._summaries[diff_id] = summary

    def put(self, diff_id: str, summary: LayerSummary) -> None:
        self._summaries[diff_id] = summary
        if self._directory is None:
            return
        try:
            self._directory.mkdir(parents=True, exist_ok=True)
            save(self._directory, diff_id, summary)
        except OSError as exc:
            log.warning("state directory %s not usable, summaries kept in memory only: %s", self._directory, exc)
            self._directory = None

    def keep_only(self, diff_ids: Iterable[str]) -> None:
        """Forget the layers no image uses any more, in memory and on disk."""
        wanted = frozenset(diff_ids)
        for stale in self._summaries.keys() - wanted:
            del self._summaries[stale]
        if self._directory is not None and wanted != self._pruned_for:
            prune(self._directory, wanted, self._wall())
            self._pruned_for = wanted
