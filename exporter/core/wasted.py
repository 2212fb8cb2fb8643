"""Wasted bytes: file bytes an image ships in one layer and hides with a later one.

An image's wasted bytes are the sizes (as the layer tar records them, regular
files only) of the file entries in its layers that its own merged view hides. A
later layer of the same image hides a lower file when it has:

- an entry at the same path that is not a directory (file, symlink, hard link,
  device, ...), or a non-directory at one of the file's parent directories;
- a directory at the same path, explicit or implied by an entry below it (the
  merged tree has a directory there, so the file is gone);
- a whiteout ``.wh.NAME`` of the file or of one of its parent directories;
- an opaque whiteout ``.wh..wh..opq`` in one of its parent directories.

Whiteouts only act on lower layers (OCI image-spec, layer.md), so an entry is
never hidden by its own layer. Whiteout entries are not files of the image. If a
layer lists the same path twice, the last entry is the layer's (tar semantics:
extracting it overwrites the earlier one), and the earlier one is not counted at
all. Hard links record size 0, so a hidden file still reachable through a hard
link in another path counts as wasted; paths are taken literally, so a file
written through a symlinked parent (``lib/x`` over ``lib -> usr/lib``) does not
hide ``usr/lib/x``: both can only make the figure smaller than the truth.

The node's wasted bytes count each distinct layer (chain ID: the same diff on the
same parents) once, and only the files hidden in every image that uses it: a file
that some image still shows costs its bytes whatever the others do.

dive's "potential wasted space" is a different figure: it adds up every copy of
each path that appears in more than one layer, the surviving top copy included,
so a file rewritten once counts twice there and once (the hidden lower copy) here.

Paths are not kept: a layer is summarized as 64-bit BLAKE2b hashes of its
normalized paths. Two different paths of one image share a hash with probability
about n²/2⁶⁵ (n = paths of the image; below 10⁻⁷ for a million), and the
consequence would be one file wrongly counted as hidden or not.
"""

from __future__ import annotations

import hashlib
import heapq
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Literal, TypeAlias

from exporter.core.facts import ImageFacts, NodeFacts

EntryKind: TypeAlias = Literal["file", "dir", "symlink", "hardlink", "other"]

WHITEOUT_PREFIX = ".wh."
OPAQUE_WHITEOUT = ".wh..wh..opq"
# Other ".wh..wh." names, and what is under them, are aufs bookkeeping (.wh..wh.plnk/...),
# which docker never extracted: not files of the image.
_AUFS_META_PREFIX = ".wh..wh."

# Sizes are stored in 4 bytes; the rare file of 4 GiB or more is kept aside.
_SIZE_ASIDE = 0xFFFFFFFF

_FILE, _DIR, _NONDIR = 0, 1, 2
_KIND_CODES: Mapping[str, int] = {"file": _FILE, "dir": _DIR, "symlink": _NONDIR, "hardlink": _NONDIR, "other": _NONDIR}


class LayerContentError(ValueError):
    """The layer's content cannot be summarized (corrupt, truncated, unsafe paths)."""


@dataclass(frozen=True, slots=True)
class TarEntry:
    """One entry of a layer tar, as its header records it."""

    path: str
    kind: EntryKind
    size: int = 0


def normalize_path(path: str) -> str:
    """The path relative to the layer root, as extracting the entry would resolve it.

    >>> normalize_path("./usr//bin/./env")
    'usr/bin/env'
    >>> normalize_path("/etc/../etc/passwd")
    'etc/passwd'
    >>> normalize_path("./")
    ''
    """
    wrapped = f"/{path}/"
    if "//" not in wrapped and "/./" not in wrapped and "/../" not in wrapped:
        return path  # already normal, as nearly every path a layer tool writes
    parts: list[str] = []
    for segment in path.split("/"):
        if segment == ".." and parts:
            parts.pop()
        elif segment == "..":
            raise LayerContentError(f"layer entry escapes the layer root: {path!r}")
        elif segment and segment != ".":
            parts.append(segment)
    return "/".join(parts)


def path_hash(path: str) -> int:
    """The 64-bit hash a summary keeps in place of a normalized path."""
    digest = hashlib.blake2b(path.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _index_typecode(count: int) -> str:
    return "H" if count <= 0xFFFF else "I"


@dataclass(frozen=True, slots=True)
class LayerSummary:
    """What one layer holds, as far as hiding goes: hashes, sizes and ranges, no paths.

    A layer's content never changes, so callers key summaries by diff ID. Files
    are numbered 0..file_count-1 in path order, which puts the files under any
    one directory in one contiguous range of numbers. About 14 bytes per file
    (16 for layers of more than 65,535 files), plus 12-16 per directory.
    """

    file_hashes: array[int]  # 'Q', sorted: path hash of every regular file
    file_numbers: array[int]  # 'H'/'I', parallel to file_hashes: the file's number
    file_sizes: array[int]  # 'I', by file number; _SIZE_ASIDE: see big_file_*
    big_file_numbers: array[int]  # 'Q', sorted: files of 4 GiB or more
    big_file_sizes: array[int]  # 'Q', parallel to big_file_numbers
    dir_hashes: array[int]  # 'Q', sorted: every directory, implied ones and the root included
    dir_starts: array[int]  # 'H'/'I', parallel: the files under the directory are
    dir_ends: array[int]  # numbered [start, end)
    nondir_hashes: array[int]  # 'Q', sorted: symlinks, hard links, devices (not regular files)
    whiteout_hashes: array[int]  # 'Q', sorted: paths whited out for the lower layers
    opaque_hashes: array[int]  # 'Q', sorted: directories made opaque for the lower layers
    total_file_bytes: int

    def __post_init__(self) -> None:
        count = len(self.file_hashes)
        index_code = _index_typecode(count)
        shapes = (
            (self.file_hashes, "Q", count),
            (self.file_numbers, index_code, count),
            (self.file_sizes, "I", count),
            (self.big_file_numbers, "Q", len(self.big_file_sizes)),
            (self.big_file_sizes, "Q", len(self.big_file_numbers)),
            (self.dir_hashes, "Q", len(self.dir_hashes)),
            (self.dir_starts, index_code, len(self.dir_hashes)),
            (self.dir_ends, index_code, len(self.dir_hashes)),
            (self.nondir_hashes, "Q", len(self.nondir_hashes)),
            (self.whiteout_hashes, "Q", len(self.whiteout_hashes)),
            (self.opaque_hashes, "Q", len(self.opaque_hashes)),
        )
        if any(values.typecode != code or len(values) != length for values, code, length in shapes):
            raise ValueError("inconsistent layer summary arrays")

    @property
    def file_count(self) -> int:
        return len(self.file_hashes)

    def file_size(self, number: int) -> int:
        size: int = self.file_sizes[number]
        if size != _SIZE_ASIDE:
            return size
        found = bisect_left(self.big_file_numbers, number)
        return int(self.big_file_sizes[found])

    def file_number(self, hashed: int) -> int | None:
        """The number of the file at that path hash, if the layer has one."""
        found = bisect_left(self.file_hashes, hashed)
        if found < len(self.file_hashes) and self.file_hashes[found] == hashed:
            return int(self.file_numbers[found])
        return None

    def dir_range(self, hashed: int) -> tuple[int, int] | None:
        """The numbers [start, end) of the files under the directory at that path hash."""
        found = bisect_left(self.dir_hashes, hashed)
        if found < len(self.dir_hashes) and self.dir_hashes[found] == hashed:
            return int(self.dir_starts[found]), int(self.dir_ends[found])
        return None

    def bytes_of(self, mask: int) -> int:
        """The total size of the files whose bits are set in the mask."""
        if mask == (1 << self.file_count) - 1:
            return self.total_file_bytes
        return sum(self.file_size(number) for number in bit_indices(mask))

    def nbytes(self) -> int:
        """The bytes the summary takes in memory (its arrays' headers included)."""
        arrays = (
            self.file_hashes,
            self.file_numbers,
            self.file_sizes,
            self.big_file_numbers,
            self.big_file_sizes,
            self.dir_hashes,
            self.dir_starts,
            self.dir_ends,
            self.nondir_hashes,
            self.whiteout_hashes,
            self.opaque_hashes,
        )
        return sys.getsizeof(self) + sum(sys.getsizeof(values) for values in arrays)


def bit_indices(mask: int) -> Iterator[int]:
    """The positions of the set bits, lowest first.

    >>> list(bit_indices(0b10110))
    [1, 2, 4]
    """
    # bin() and str.find do the scanning in C; shifting a big int per bit would not.
    bits = bin(mask)[:1:-1]
    found = bits.find("1")
    while found >= 0:
        yield found
        found = bits.find("1", found + 1)


@dataclass(slots=True)
class _Listing:
    """One layer's entries after normalization, last entry per path winning."""

    kinds: dict[str, int]  # path -> _FILE/_DIR/_NONDIR
    sizes: dict[str, int]  # regular file path -> size
    whiteouts: set[str]
    opaques: set[str]

    def file_paths(self) -> list[str]:
        """Regular files in path order: the order that numbers them."""
        return sorted(path for path, kind in self.kinds.items() if kind == _FILE)


def _parent(path: str) -> str:
    return path.rpartition("/")[0]


def _read_listing(entries: Iterable[TarEntry]) -> _Listing:
    kinds: dict[str, int] = {}
    sizes: dict[str, int] = {}
    whiteouts: set[str] = set()
    opaques: set[str] = set()
    for entry in entries:
        path = normalize_path(entry.path)
        if not path:
            continue  # the layer root: always a directory, hides nothing
        parent, _, name = path.rpartition("/")
        if name == OPAQUE_WHITEOUT:
            opaques.add(parent)
            continue
        if _AUFS_META_PREFIX in path and any(part.startswith(_AUFS_META_PREFIX) for part in path.split("/")):
            continue
        if name.startswith(WHITEOUT_PREFIX):
            target = name[len(WHITEOUT_PREFIX) :]
            whiteouts.add(f"{parent}/{target}" if parent else target)
            continue
        kind = _KIND_CODES[entry.kind]
        kinds[path] = kind
        if kind == _FILE:
            if entry.size < 0:
                raise LayerContentError(f"negative size for {entry.path!r}")
            sizes[path] = entry.size
        else:
            sizes.pop(path, None)
    return _Listing(kinds, sizes, whiteouts, opaques)


def _sorted_hashes(paths: Iterable[str]) -> array[int]:
    return array("Q", sorted({path_hash(path) for path in paths}))


def summarize(entries: Iterable[TarEntry]) -> LayerSummary:
    """Summarize one layer from its tar entries (in tar order).

    Raises LayerContentError for a path escaping the layer root or a negative size.
    Memory while it runs is about 200 bytes per entry of this one layer (the paths);
    the summary it returns keeps none of them.
    """
    listing = _read_listing(entries)
    files = listing.file_paths()
    count = len(files)
    index_code = _index_typecode(count)

    hashes = [path_hash(path) for path in files]
    by_hash = sorted(range(count), key=hashes.__getitem__)
    sizes = [listing.sizes[path] for path in files]
    big = [(number, size) for number, size in enumerate(sizes) if size >= _SIZE_ASIDE]

    # Every directory: the explicit ones and every parent of anything in the layer.
    dirs = {""} | {path for path, kind in listing.kinds.items() if kind == _DIR}
    for path in chain(map(_parent, chain(listing.kinds, listing.whiteouts)), listing.opaques):
        while path not in dirs:
            dirs.add(path)
            path = _parent(path)
    dir_rows = []
    for path in dirs:
        if path:
            # The files under path/ sort between path + "/" and path + "0" ("0" follows "/").
            start, end = bisect_left(files, path + "/"), bisect_left(files, path + "0")
        else:
            start, end = 0, count
        dir_rows.append((path_hash(path), start, end))
    dir_rows.sort()

    return LayerSummary(
        file_hashes=array("Q", [hashes[number] for number in by_hash]),
        file_numbers=array(index_code, by_hash),
        file_sizes=array("I", [min(size, _SIZE_ASIDE) for size in sizes]),
        big_file_numbers=array("Q", [number for number, _ in big]),
        big_file_sizes=array("Q", [size for _, size in big]),
        dir_hashes=array("Q", [row[0] for row in dir_rows]),
        dir_starts=array(index_code, [row[1] for row in dir_rows]),
        dir_ends=array(index_code, [row[2] for row in dir_rows]),
        nondir_hashes=_sorted_hashes(path for path, kind in listing.kinds.items() if kind == _NONDIR),
        whiteout_hashes=_sorted_hashes(listing.whiteouts),
        opaque_hashes=_sorted_hashes(listing.opaques),
        total_file_bytes=sum(sizes),
    )


def file_paths(summary: LayerSummary, entries: Iterable[TarEntry], numbers: Iterable[int]) -> dict[int, str]:
    """The paths of some files of a layer, from the layer's entries read again.

    Summaries keep no paths, so `df --image` re-reads the one layer it reports on.
    Raises LayerContentError if the entries are not the ones the summary was made from.
    """
    files = _read_listing(entries).file_paths()
    if len(files) != summary.file_count:
        raise LayerContentError("the layer's entries do not match its summary")
    found: dict[int, str] = {}
    for number in numbers:
        if not 0 <= number < len(files) or summary.file_number(path_hash(files[number])) != number:
            raise LayerContentError("the layer's entries do not match its summary")
        found[number] = files[number]
    return found


def _range_mask(start: int, end: int) -> int:
    return ((1 << (end - start)) - 1) << start


def _hidings(layers: Sequence[LayerSummary]) -> Iterator[tuple[int, int, int]]:
    """(lower, upper, mask): the files of layer `lower` hidden first by layer `upper`.

    Each hidden file appears once, with the nearest layer above that hides it.
    Work is about (layers below each layer) x (its entries), done with C-level set
    operations; memory beyond the summaries is two sets for one layer at a time.
    """
    for lower_index, lower in enumerate(layers):
        if not lower.file_count:
            continue
        everything = (1 << lower.file_count) - 1
        lower_files = set(lower.file_hashes)
        lower_dirs = set(lower.dir_hashes)
        hidden = 0
        for upper_index in range(lower_index + 1, len(layers)):
            upper = layers[upper_index]
            mask = 0
            # Entries of any kind hide a lower file at their own path.
            at_path = chain(upper.file_hashes, upper.nondir_hashes, upper.dir_hashes, upper.whiteout_hashes)
            for hashed in lower_files.intersection(at_path):
                number = lower.file_number(hashed)
                if number is not None:
                    mask |= 1 << number
            # Non-directories, whiteouts and opaque directories hide what is under them.
            below_path = chain(upper.file_hashes, upper.nondir_hashes, upper.whiteout_hashes, upper.opaque_hashes)
            for hashed in lower_dirs.intersection(below_path):
                span = lower.dir_range(hashed)
                if span is not None:
                    mask |= _range_mask(*span)
            mask &= ~hidden
            if mask:
                hidden |= mask
                yield lower_index, upper_index, mask
                if hidden == everything:
                    break


@dataclass(frozen=True, slots=True)
class ImageWaste:
    """One image's wasted bytes, in total and per layer (bottom-up)."""

    wasted_bytes: int
    layer_wasted_bytes: tuple[int, ...]
    hidden: tuple[int, ...]  # per layer: bit n set = file number n is hidden


def image_wasted(layers: Sequence[LayerSummary]) -> ImageWaste:
    """The wasted bytes of one image, given its layers bottom-up."""
    hidden = [0] * len(layers)
    for lower, _, mask in _hidings(layers):
        hidden[lower] |= mask
    per_layer = tuple(layer.bytes_of(mask) for layer, mask in zip(layers, hidden, strict=True))
    return ImageWaste(wasted_bytes=sum(per_layer), layer_wasted_bytes=per_layer, hidden=tuple(hidden))


@dataclass(frozen=True, slots=True)
class HiddenFile:
    """One hidden file: its size, which layer holds it and which layer above hides it."""

    size: int
    layer: int  # index of the layer holding it, bottom-up
    file_number: int  # its number in that layer (file_paths() turns it into a path)
    hidden_by: int  # index of the nearest layer above that hides it


def largest_hidden(layers: Sequence[LayerSummary], limit: int) -> list[HiddenFile]:
    """The `limit` largest hidden files of one image, largest first."""
    candidates = (
        HiddenFile(layers[lower].file_size(number), lower, number, upper)
        for lower, upper, mask in _hidings(layers)
        for number in bit_indices(mask)
    )
    return heapq.nlargest(limit, candidates, key=lambda hidden: hidden.size)


@dataclass(frozen=True, slots=True)
class NodeWaste:
    """The node's wasted bytes (each distinct layer once) and every image's own figure."""

    wasted_bytes: int
    layer_wasted_bytes: Mapping[str, int]  # chain ID -> bytes hidden in every image using it
    image_wasted_bytes: Mapping[str, int]
    images: Mapping[str, ImageWaste]  # what image_wasted() gave for each image


def hidden_everywhere(images: Mapping[str, Sequence[str]], computed: Mapping[str, ImageWaste]) -> dict[str, int]:
    """Per distinct layer (chain ID), the files hidden in every image that uses it, as a mask.

    `images` gives every image's chain IDs bottom-up, `computed` its image_wasted().
    The node's wasted bytes are these files' sizes (LayerSummary.bytes_of), so a
    caller can get them one layer at a time, and only for the non-zero masks.
    """
    masks: dict[str, int] = {}
    for image, chain_ids in images.items():
        hidden = computed[image].hidden
        if len(hidden) != len(chain_ids):
            raise ValueError(f"computed waste of {image} is for another layer list")
        for chain_id, mask in zip(chain_ids, hidden, strict=True):
            masks[chain_id] = masks.get(chain_id, mask) & mask
    return masks


def node_wasted(
    images: Mapping[str, Sequence[tuple[str, LayerSummary]]],
    computed: Mapping[str, ImageWaste] | None = None,
) -> NodeWaste:
    """The node's wasted bytes, from every image's (chain ID, summary) layers bottom-up.

    `computed` may hold image_wasted() results the caller kept, by image; they must
    be for the same layers.
    """
    summaries: dict[str, LayerSummary] = {}
    wastes: dict[str, ImageWaste] = {}
    for image, layers in images.items():
        wastes[image] = (computed or {}).get(image) or image_wasted([summary for _, summary in layers])
        for chain_id, summary in layers:
            summaries.setdefault(chain_id, summary)
    masks = hidden_everywhere({image: [chain_id for chain_id, _ in layers] for image, layers in images.items()}, wastes)
    per_layer = {chain_id: summaries[chain_id].bytes_of(mask) for chain_id, mask in masks.items()}
    return NodeWaste(
        wasted_bytes=sum(per_layer.values()),
        layer_wasted_bytes=per_layer,
        image_wasted_bytes={image: waste.wasted_bytes for image, waste in wastes.items()},
        images=wastes,
    )


@dataclass(frozen=True, slots=True)
class LayerSource:
    """Where a layer's content can be read: a compressed blob that holds it."""

    diff_id: str
    digest: str
    size: int


def layer_sources(facts: NodeFacts) -> dict[str, LayerSource | None]:
    """Every diff ID of the node's images (bottom-up, image by image) and a blob that holds it.

    A layer pulled in two compressions has two blobs: one the store still holds
    is preferred. None: no manifest on the node names a blob for it.
    """
    found: dict[str, LayerSource | None] = {}
    for image in facts.images:
        blobs = facts.layer_blobs.get(image.image_id, ())
        if len(blobs) == len(image.diff_ids):
            for diff_id, blob in zip(image.diff_ids, blobs, strict=True):
                current = found.get(diff_id)
                if current is None or (
                    current.digest not in facts.present_blobs and blob.digest in facts.present_blobs
                ):
                    found[diff_id] = LayerSource(diff_id, blob.digest, blob.size)
        for diff_id in image.diff_ids:
            found.setdefault(diff_id, None)
    return found


@dataclass(frozen=True, slots=True)
class WasteFigures:
    """What the summaries at hand tell: a figure per image whose every layer is
    summarized, and the node's once every image's is (a partial one would be wrong)."""

    images: Mapping[str, ImageWaste]
    node_wasted_bytes: int | None


def waste_figures(
    images: Sequence[ImageFacts], summaries: Mapping[str, LayerSummary], known: Mapping[str, ImageWaste]
) -> WasteFigures:
    """The wasted bytes the node's summaries allow; `known` holds image_wasted()
    results the caller kept from an earlier call, by image ID (not computed again)."""
    complete = {
        image.image_id: [
            (chain_id, summaries[diff_id]) for chain_id, diff_id in zip(image.chain_ids, image.diff_ids, strict=True)
        ]
        for image in images
        if all(diff_id in summaries for diff_id in image.diff_ids)
    }
    if len(complete) == len({image.image_id for image in images}):
        node = node_wasted(complete, {image_id: known[image_id] for image_id in complete if image_id in known})
        return WasteFigures(node.images, node.wasted_bytes)
    return WasteFigures(
        {
            image_id: known.get(image_id) or image_wasted([summary for _, summary in layers])
            for image_id, layers in complete.items()
        },
        None,
    )
