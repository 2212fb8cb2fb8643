"""The containers/storage layer store adapter (CRI-O, podman): layers.json and images.json in, `LayerFacts` out.

Only translates, and only reads two metadata files (and `volatile-layers.json`
beside the first where present), never the layer contents:

- `<root>/overlay-layers/layers.json`: every layer's `id`, `parent`,
  `diff-digest` (the OCI diff ID), `diff-size`, `compressed-diff-digest`,
  `compressed-size`, `flags`;
- `<root>/overlay-images/images.json`: every image's `id` (its config digest's
  hex) and top `layer`.

c/storage names a layer by its chain in its own way (containers/image
`storage_dest.go` `layerID()`): the bottom layer's ID is its diff ID's hex, each
next one `sha256(parentID + "+" + diffIDhex)`; layers pulled by TOC (zstd:chunked)
hash `"@TOC=" + tocdigest` instead. The core names layers by OCI chain ID, so
each image's layers are found by that formula, and where it finds none, by
walking `parent` down from the image's top layer and matching `diff-digest`.

A layer's bytes are its `diff-size`: the size of the uncompressed tar stream
c/storage applied (headers and padding included), which is also what CRI-O
reports as an image's size. It is not the blocks the layer takes on disk.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

from exporter.core.facts import ImageFacts, LayerBlob, LayerFacts, SnapshotUsage
from exporter.errors import BlobUnavailableError, ParseError
from exporter.options import RUNTIME_COMMANDS, option

# Where CRI-O keeps containers/storage unless its storage.conf says otherwise.
DEFAULT_STORAGE_ROOT = "/var/lib/containers/storage"

logger = logging.getLogger(__name__)

# The graph driver whose metadata directories are read (CRI-O's default and
# the only one the chart mounts): overlay-layers/ and overlay-images/.
DRIVER = "overlay"
# The error stage problems with these files are counted under.
STAGE = "layer_store"

_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
# How often to re-read a file that changed while being read, before keeping
# the last good state until the next refresh.
_READ_ATTEMPTS = 3
_RETRY_PAUSE_SECONDS = 0.05


@dataclass(frozen=True, slots=True)
class StoredLayer:
    """One record of layers.json. Sizes are None where c/storage does not know them."""

    layer_id: str
    parent: str = ""
    diff_id: str = ""
    diff_size: int | None = None
    compressed_digest: str = ""
    compressed_size: int | None = None
    compression: int = 0


_Record = TypeVar("_Record")


@dataclass(frozen=True, slots=True)
class ParsedRecords(Generic[_Record]):
    """What one file held: the good records by ID, and a line per skipped record."""

    records: Mapping[str, _Record]
    problems: tuple[str, ...] = ()


def storage_layer_ids(diff_ids: Sequence[str]) -> tuple[str, ...]:
    """The c/storage layer IDs of a chain of diff IDs pulled without a TOC.

    >>> storage_layer_ids(["sha256:" + "a" * 64])[0] == "a" * 64
    True
    """
    out: list[str] = []
    for diff_id in diff_ids:
        component = diff_id.removeprefix("sha256:")
        out.append(hashlib.sha256(f"{out[-1]}+{component}".encode()).hexdigest() if out else component)
    return tuple(out)


def _load_array(data: bytes, what: str) -> list[object]:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise ParseError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(doc, list):
        raise ParseError(f"{what} is not a JSON array")
    return doc


def _optional(entry: Mapping[str, object], key: str, want: type, where: str) -> object:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, want) or (want is int and isinstance(value, bool)):
        raise ParseError(f"{where}: {key!r} is {type(value).__name__}, not {want.__name__}")
    return value


def _digest(entry: Mapping[str, object], key: str, where: str) -> str:
    value = _optional(entry, key, str, where)
    if value is None or value == "":
        return ""
    assert isinstance(value, str)
    if not _DIGEST.match(value):
        raise ParseError(f"{where}: {key!r} {value[:80]!r} is not a sha256 digest")
    return value


def _size(entry: Mapping[str, object], key: str, where: str) -> int | None:
    value = _optional(entry, key, int, where)
    assert value is None or isinstance(value, int)
    return value


def _layer(entry: object, index: int) -> StoredLayer | None:
    """One layers.json record; None for a layer still being written. Raises ParseError."""
    where = f"layer #{index}"
    if not isinstance(entry, dict):
        raise ParseError(f"{where} is {type(entry).__name__}, not an object")
    layer_id = entry.get("id")
    if not isinstance(layer_id, str) or not layer_id:
        raise ParseError(f"{where} has no id")
    where = f"layer {layer_id[:80]}"
    flags = _optional(entry, "flags", dict, where)
    if isinstance(flags, dict) and flags.get("incomplete") is True:
        return None  # being created or deleted: not a layer yet (c/storage skips it too)
    parent = _optional(entry, "parent", str, where)
    diff_id = _digest(entry, "diff-digest", where)
    toc_digest = _optional(entry, "toc-digest", str, where)
    diff_size = _size(entry, "diff-size", where)
    if diff_id and diff_size is None:
        # omitempty: with a diff digest set, an absent diff-size is a 0-byte diff.
        diff_size = 0
    if diff_size is not None and diff_size < 0:
        diff_size = None  # -1: a TOC layer whose size c/storage does not know
    if not diff_id and not toc_digest:
        diff_size = None  # a container's writable layer or an unfinished one: no image bytes
    compressed_digest = _digest(entry, "compressed-diff-digest", where)
    compressed_size = _size(entry, "compressed-size", where)
    if compressed_size is not None and compressed_size <= 0:
        compressed_size = None  # unset (c/storage omits 0) or nonsense: unknown, not 0
    compression = _size(entry, "compression", where) or 0
    return StoredLayer(
        layer_id=layer_id,
        parent=str(parent or ""),
        diff_id=diff_id,
        diff_size=diff_size,
        # compressed-size means nothing without the digest it measures (c/storage docs).
        compressed_digest=compressed_digest if compressed_size is not None else "",
        compressed_size=compressed_size if compressed_digest else None,
        compression=compression,
    )


def parse_layers(data: bytes, what: str = "layers.json") -> ParsedRecords[StoredLayer]:
    """layers.json (or volatile-layers.json): good records by ID, problems for the rest.

    Raises ParseError when the file as a whole is unreadable (not a JSON array).
    """
    records: dict[str, StoredLayer] = {}
    problems: list[str] = []
    for index, entry in enumerate(_load_array(data, what)):
        try:
            layer = _layer(entry, index)
        except ParseError as exc:
            problems.append(f"{what}: {exc}")
            continue
        if layer is None:
            continue
        if layer.layer_id in records:
            problems.append(f"{what}: layer {layer.layer_id[:80]} listed twice; the first record is kept")
            continue
        records[layer.layer_id] = layer
    return ParsedRecords(records, tuple(problems))


def parse_images(data: bytes, what: str = "images.json") -> ParsedRecords[str]:
    """images.json: each image's top layer ID by image ID (hex), problems for the rest."""
    records: dict[str, str] = {}
    problems: list[str] = []
    for index, entry in enumerate(_load_array(data, what)):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) or not entry["id"]:
            problems.append(f"{what}: image #{index} is not an object with an id")
            continue
        image_id, top = entry["id"], entry.get("layer")
        if top is not None and not isinstance(top, str):
            problems.append(f"{what}: image {image_id[:80]}: 'layer' is {type(top).__name__}, not str")
            continue
        records.setdefault(image_id, top or "")
    return ParsedRecords(records, tuple(problems))


# -- reading files that another process rewrites ---------------------------------

_Stamp = tuple[int, int, int]  # (inode, size, mtime ns): c/storage replaces the file by rename
_MISSING: _Stamp = (-1, -1, -1)
_UNREADABLE: _Stamp = (-2, -2, -2)


@dataclass
class _WatchedFile(Generic[_Record]):
    """One metadata file, parsed again only when it changed; the last good parse is kept."""

    path: Path
    parse: Callable[[bytes, str], ParsedRecords[_Record]]
    optional: bool = False  # volatile-layers.json exists only where volatile layers were made
    stamp: _Stamp | None = None
    good: ParsedRecords[_Record] = field(default_factory=lambda: ParsedRecords({}))
    failed_stamp: _Stamp | None = None

    def read(self, report: _Reporter) -> ParsedRecords[_Record]:
        try:
            stamp = _stamp(os.stat(self.path))
        except FileNotFoundError:
            if not self.optional and self.failed_stamp != _MISSING:
                self.failed_stamp = _MISSING  # counted once, until the file appears
                report.problem(f"{self.path} does not exist: is --storage-root right, and mounted?")
            # c/storage replaces these files by rename, so a missing one is gone, not being written.
            if self.stamp is not None:
                self.stamp, self.good = None, ParsedRecords({})
            return self.good
        except OSError as exc:
            if self.failed_stamp != _UNREADABLE:
                self.failed_stamp = _UNREADABLE  # counted once, until it can be read
                report.problem(f"{self.path}: {exc.strerror or exc}; keeping the last good state")
            return self.good
        if stamp in (self.stamp, self.failed_stamp):
            return self.good
        for attempt in range(_READ_ATTEMPTS):
            try:
                stamp, data = _read_stable(self.path)
                parsed = self.parse(data, self.path.name)
            except (ParseError, OSError) as exc:
                if attempt + 1 < _READ_ATTEMPTS:
                    time.sleep(_RETRY_PAUSE_SECONDS)  # maybe caught mid-rewrite: read again
                    continue
                self.failed_stamp = stamp
                message = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                report.problem(f"{self.path}: {message}; keeping the last good state")
                return self.good
            break
        self.stamp, self.good, self.failed_stamp = stamp, parsed, None
        for problem in parsed.problems:
            report.problem(f"{self.path.parent.name}/{problem}; skipped")
        return self.good


def _stamp(st: os.stat_result) -> _Stamp:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _read_stable(path: Path) -> tuple[_Stamp, bytes]:
    """The file's bytes, if it was not replaced or changed while being read (else ParseError)."""
    with open(path, "rb") as f:
        before = _stamp(os.fstat(f.fileno()))
        data = f.read()
        after = _stamp(os.fstat(f.fileno()))
    if before != after or _stamp(os.stat(path)) != after or len(data) != after[1]:
        raise ParseError("changed while being read")
    return after, data


class _Reporter:
    """Counts each problem under the error stage, and logs each distinct one once."""

    def __init__(self, errors: Counter[str]) -> None:
        self.errors = errors
        self._logged: set[str] = set()

    def problem(self, message: str) -> None:
        self.errors[STAGE] += 1
        if message not in self._logged:
            if len(self._logged) > 10_000:
                self._logged.clear()  # bounded: a flood of distinct problems is logged again, not kept
            self._logged.add(message)
            logger.warning("%s", message)


# -- the store -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContainersStorageOptions:
    storage_root: str = option(
        DEFAULT_STORAGE_ROOT,
        "containers-storage graph root holding overlay-layers/ and overlay-images/ (CRI-O's `root` in storage.conf)",
        flag="--storage-root",
        commands=RUNTIME_COMMANDS,
        metavar="DIR",
    )


class ContainersStorageLayerStore:
    """Layer sizes and compressed sizes from containers/storage's metadata files."""

    name = "containers-storage"
    keeps_blobs = False  # only metadata files: layer contents are unpacked, never kept as blobs

    def __init__(self, options: ContainersStorageOptions, errors: Counter[str] | None = None) -> None:
        self.options = options
        self.errors: Counter[str] = Counter() if errors is None else errors
        self._report = _Reporter(self.errors)
        root = Path(options.storage_root)
        self._layers = _WatchedFile(root / f"{DRIVER}-layers" / "layers.json", parse_layers)
        self._volatile = _WatchedFile(root / f"{DRIVER}-layers" / "volatile-layers.json", parse_layers, optional=True)
        self._images = _WatchedFile(root / f"{DRIVER}-images" / "images.json", parse_images)
        self._formula_ids: dict[str, tuple[str, ...]] = {}
        # The parses the caches were built from.
        self._checked_from: tuple[object, ...] | None = None
        self._stored: dict[str, StoredLayer] = {}
        self._present: dict[str, int] = {}
        self._last: tuple[tuple[object, ...], frozenset[str], LayerFacts] | None = None
        self._reported_unmatched: set[str] = set()

    def read(self, images: Sequence[ImageFacts]) -> LayerFacts:
        """The layers of `images`, as the files say now (or as they last parsed well)."""
        volatile = self._volatile.read(self._report)
        durable = self._layers.read(self._report)
        tops = self._images.read(self._report)
        # Parses are compared by identity: a file parsed again is a new object.
        if self._checked_from is None or not _same(self._checked_from, (volatile, durable)):
            # Checked once per change of the files, so each problem is counted once.
            self._stored = self._valid_layers({**volatile.records, **durable.records})
            self._present = dict(_compressed_sizes(self._stored.values()))
            self._checked_from = (volatile, durable)
        # The same files and the same images (an image ID names fixed diff IDs): the same facts.
        image_ids = frozenset(image.image_id for image in images)
        sources = (volatile, durable, tops)
        if self._last is not None and _same(self._last[0], sources) and self._last[1] == image_ids:
            return self._last[2]
        facts = self._facts(images, self._stored, tops.records)
        self._last = (sources, image_ids, facts)
        return facts

    def _facts(
        self, images: Sequence[ImageFacts], stored: Mapping[str, StoredLayer], tops: Mapping[str, str]
    ) -> LayerFacts:
        usage: dict[str, SnapshotUsage] = {}
        blobs: dict[str, tuple[LayerBlob, ...]] = {}
        present = self._present
        compressed: dict[str, int] = {}
        unmatched: set[str] = set()
        for image in images:
            layers = self._image_layers(image, stored, tops)
            image_blobs = []
            for chain_id, layer in zip(image.chain_ids, layers, strict=True):
                if layer is None:
                    continue
                if layer.diff_size is not None:
                    usage.setdefault(chain_id, SnapshotUsage(size=layer.diff_size))
                if layer.compressed_digest in present:
                    image_blobs.append(LayerBlob(layer.compressed_digest, present[layer.compressed_digest]))
            blobs[image.image_id] = tuple(image_blobs)
            if image_blobs and len(image_blobs) == len(layers):
                # CRI-O's Image.size is uncompressed; the layers' records give what a pull transfers.
                compressed[image.image_id] = sum(blob.size for blob in image_blobs)
            if any(layer is None for layer in layers):
                unmatched.add(image.image_id)
        for image_id in sorted(unmatched - self._reported_unmatched):
            # Not an error: a pull in progress, or a storage root that is not
            # the runtime's. The missing_layers metric says how many.
            logger.warning("image %s: some layers are not in %s", image_id, self._layers.path)
        self._reported_unmatched = unmatched
        image_ids = {image.image_id for image in images}
        for stale in self._formula_ids.keys() - image_ids:
            del self._formula_ids[stale]
        wanted = {blob.digest for image_blobs in blobs.values() for blob in image_blobs}
        return LayerFacts(
            layer_usage=usage,
            layer_blobs=blobs,
            present_blobs={d: s for d, s in present.items() if d in wanted},
            snapshotter=DRIVER,
            compressed_sizes=compressed,
        )

    def use_snapshotter(self, name: str) -> None:
        """c/storage keeps every image in one graph root: there is no snapshotter to choose."""

    def read_blob(self, digest: str, size: int) -> Iterator[bytes]:
        raise BlobUnavailableError(f"containers-storage keeps no layer blobs to read {digest} from")

    def forget_runtime_state(self) -> None:
        """Nothing to forget: the files are re-read whenever they change."""

    def _valid_layers(self, layers: Mapping[str, StoredLayer]) -> dict[str, StoredLayer]:
        """Layers whose parents all exist, down to a root (a missing parent or a cycle is skipped)."""
        state: dict[str, bool] = {}  # layer ID -> its whole chain is sound
        for start in layers:
            path: list[str] = []
            on_path: set[str] = set()
            layer_id = start
            verdict = True
            while layer_id not in state:
                if layer_id in on_path:
                    self._report.problem(f"layers.json: layer {layer_id[:80]} is its own ancestor (a cycle); skipped")
                    verdict = False
                    break
                layer = layers.get(layer_id)
                if layer is None:
                    self._report.problem(f"layers.json: parent layer {layer_id[:80]} does not exist; children skipped")
                    verdict = False
                    break
                path.append(layer_id)
                on_path.add(layer_id)
                if not layer.parent:
                    break
                layer_id = layer.parent
            else:
                verdict = state[layer_id]
            for seen in path:
                state[seen] = verdict
        return {k: v for k, v in layers.items() if state.get(k)}

    def _image_layers(
        self, image: ImageFacts, stored: Mapping[str, StoredLayer], tops: Mapping[str, str]
    ) -> list[StoredLayer | None]:
        """The stored layer of each of the image's layers, bottom-up (None where none is found)."""
        ids = self._formula_ids.get(image.image_id)
        if ids is None:
            ids = self._formula_ids[image.image_id] = storage_layer_ids(image.diff_ids)
        found: list[StoredLayer | None] = []
        for layer_id, diff_id in zip(ids, image.diff_ids, strict=True):
            layer = stored.get(layer_id)
            found.append(layer if layer is not None and layer.diff_id == diff_id else None)
        if all(found) or not found:
            return found
        # TOC-identified layers (and anything else the formula misses): walk
        # down from the image's top layer, matching diff IDs position by position.
        top = tops.get(image.image_id.removeprefix("sha256:"))
        chain = list(_walk_down(top, stored)) if top else []
        chain.reverse()
        if len(chain) != len(image.diff_ids):
            return found
        for i, (layer, diff_id) in enumerate(zip(chain, image.diff_ids, strict=True)):
            if found[i] is None and layer.diff_id in (diff_id, ""):
                found[i] = layer
        return found


def _same(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    return len(a) == len(b) and all(x is y for x, y in zip(a, b, strict=True))


def _walk_down(top: str, stored: Mapping[str, StoredLayer]) -> Iterator[StoredLayer]:
    layer_id: str = top
    for _ in range(len(stored)):  # _valid_layers removed cycles; this bounds the walk anyway
        layer = stored.get(layer_id)
        if layer is None:
            return
        yield layer
        if not layer.parent:
            return
        layer_id = layer.parent


def _compressed_sizes(layers: Iterable[StoredLayer]) -> Iterator[tuple[str, int]]:
    """Each compressed digest's size once.

    The same blob can be recorded on two layers (one diff on two parents). A
    record without a `compression` kind is preferred last: podman 4.3 records
    the uncompressed size there when it rebuilt a layer from another's diff.
    """
    best: dict[str, tuple[bool, int]] = {}  # digest -> (no compression kind, size): the least wins
    for layer in layers:
        if layer.compressed_size is None:
            continue
        candidate = (layer.compression == 0, layer.compressed_size)
        seen = best.get(layer.compressed_digest)
        if seen is None or candidate < seen:
            best[layer.compressed_digest] = candidate
    for digest, (_, size) in best.items():
        yield digest, size
