"""Images with real Debian layers, shaped like a Dockerfile's, and the figures to expect.

From the two mmdebstrap trees (tests/harness/rootfs.py), tar to tar:

  0 base     the minbase tree (thousands of files), like `FROM debian`;
  1 apt      `RUN apt-get update && apt-get install ...`: every entry of the
             with-packages tree that is new or changed, apt's lists and
             pkgcache.bin/srcpkgcache.bin included;
  2 cleanup  `RUN rm -rf /var/lib/apt/lists/* && apt-get clean ...`: whiteouts
             (files, a non-empty directory, an empty one), an opaque directory,
             a rewritten config file, a file where a directory was;
  3 app      a few files, one overwriting a file of layer 1.

Two images: "clean" (0 1 2 3) and "apt" (0 1 3, no cleanup), so a file
hidden in one is visible in the other. Layers come as gzip and zstd blobs of
the same tar (same diff ID); the registry serves either.

The expected "wasted bytes" (file bytes in an image's layers that its own
merged view hides) come from `hidden_entries`, a plain layer-by-layer merge,
independent of the exporter.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import posixpath
import random
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

import zstandard

from tests.harness import rootfs
from tests.harness.images import Blob, BuiltImage, ImageSpec

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "realistic"
GZIP_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+zstd"
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
# Entries this module makes up get fixed metadata, so layers are deterministic.
GENERATED_MTIME = 1_700_000_000
CHUNK = 1 << 20

Compression = Literal["gzip", "zstd"]

_KINDS = {
    tarfile.REGTYPE: "file",
    tarfile.AREGTYPE: "file",
    tarfile.DIRTYPE: "dir",
    tarfile.SYMTYPE: "symlink",
    tarfile.LNKTYPE: "hardlink",
    tarfile.CHRTYPE: "char",
    tarfile.BLKTYPE: "block",
    tarfile.FIFOTYPE: "fifo",
}


@dataclass(frozen=True)
class Entry:
    """One tar entry: normalized path (no "./", no trailing "/"), size as recorded, kind."""

    path: str
    size: int
    kind: str  # file, dir, symlink, hardlink, char, block, fifo

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def parent(self) -> str:
        return posixpath.dirname(self.path)

    @property
    def is_whiteout(self) -> bool:
        """A `.wh.` marker (opaque ones included): never part of the merged view."""
        return self.name.startswith(WHITEOUT)


@dataclass(frozen=True)
class LayerTar:
    created_by: str
    entries: tuple[Entry, ...]
    diff_id: str  # sha256 of the uncompressed tar
    size: int  # of the uncompressed tar
    gzip: Blob
    zstd: Blob

    def blob(self, compression: Compression) -> Blob:
        return self.gzip if compression == "gzip" else self.zstd

    @property
    def file_bytes(self) -> int:
        return sum(e.size for e in self.entries if e.kind == "file")


@dataclass(frozen=True)
class RealisticLayers:
    base: LayerTar
    apt: LayerTar
    cleanup: LayerTar
    app: LayerTar


@dataclass(frozen=True)
class RealisticImage:
    name: str
    image: BuiltImage
    layers: tuple[LayerTar, ...]
    hidden: tuple[tuple[int, Entry], ...]  # (index of the layer holding it, entry) for each hidden entry

    @property
    def wasted_bytes(self) -> int:
        return sum(entry.size for _, entry in self.hidden if entry.kind == "file")

    @property
    def wasted_by_layer(self) -> tuple[int, ...]:
        """Hidden file bytes per layer of this image, as the layer holding them."""
        totals = [0] * len(self.layers)
        for index, entry in self.hidden:
            if entry.kind == "file":
                totals[index] += entry.size
        return tuple(totals)


# --- the reference figures --------------------------------------------------


def _ancestors(path: str) -> Iterator[str]:
    while "/" in path:
        path = path.rsplit("/", 1)[0]
        yield path


def hidden_entries(layers: Sequence[Sequence[Entry]]) -> list[tuple[int, Entry]]:
    """Every entry of `layers` (bottom first) that the merged view hides, with its layer index.

    A layer hides a lower entry P when it has: a non-directory at P or at an
    ancestor of P (a directory replaced by a file hides what was under it);
    a directory at P when P was not a directory; `.wh.NAME` for P or an
    ancestor; `.wh..wh..opq` in an ancestor directory (hides everything of
    the layers below under it); any entry below P when P was not a directory.
    A path repeated in one layer hides its earlier copy. Markers are never
    part of the view.
    """
    merged: dict[str, tuple[Entry, int]] = {}
    hidden: list[tuple[int, Entry]] = []
    for index, layer in enumerate(layers):
        subtree_gone: set[str] = set()  # these paths and everything below them
        below_gone: set[str] = set()  # everything strictly below these paths
        gone_unless_dir: set[str] = set()  # these paths, when not directories
        for entry in layer:
            if entry.name == OPAQUE:
                below_gone.add(entry.parent)
            elif entry.is_whiteout:
                subtree_gone.add(posixpath.join(entry.parent, entry.name.removeprefix(WHITEOUT)))
            elif entry.kind == "dir":
                gone_unless_dir.add(entry.path)
            else:
                subtree_gone.add(entry.path)
            if not entry.is_whiteout:
                gone_unless_dir.update(_ancestors(entry.path))
        for path, (lower, lower_index) in list(merged.items()):
            ancestors = set(_ancestors(path))
            if (
                path in subtree_gone
                or ancestors & subtree_gone
                or ancestors & below_gone
                or (path in gone_unless_dir and lower.kind != "dir")
            ):
                del merged[path]
                hidden.append((lower_index, lower))
        for entry in layer:
            if entry.is_whiteout:
                continue
            if entry.path in merged and merged[entry.path][1] == index:  # the same path twice in one layer
                hidden.append((index, merged[entry.path][0]))
            merged[entry.path] = (entry, index)
    return hidden


def wasted_bytes(layers: Sequence[Sequence[Entry]]) -> int:
    """Σ recorded sizes of regular files in `layers` that the merged view hides."""
    return sum(entry.size for _, entry in hidden_entries(layers) if entry.kind == "file")


# --- reading and writing tars -----------------------------------------------


def _normalize(name: str) -> str:
    return name.removeprefix("./").rstrip("/")


def entry_of(info: tarfile.TarInfo) -> Entry:
    return Entry(_normalize(info.name), info.size, _KINDS.get(info.type, "other"))


def tar_entries(tar: IO[bytes]) -> list[Entry]:
    """The entries of an uncompressed tar stream."""
    with tarfile.open(fileobj=tar, mode="r|") as archive:
        return [entry_of(info) for info in archive if _normalize(info.name) not in ("", ".")]


def decompress(blob: Blob) -> bytes:
    """A layer blob's uncompressed tar."""
    if blob.media_type == GZIP_MEDIA_TYPE:
        return gzip.decompress(blob.data)
    if blob.media_type == ZSTD_MEDIA_TYPE:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob.data)) as reader:
            return reader.read()
    raise ValueError(f"not a layer media type: {blob.media_type}")


def _copy(info: tarfile.TarInfo, name: str) -> tarfile.TarInfo:
    # A fresh header: only the fields a layer needs (no stray PAX records).
    out = tarfile.TarInfo(name)
    for field in ("type", "mode", "uid", "gid", "uname", "gname", "mtime", "size", "linkname"):
        setattr(out, field, getattr(info, field))
    out.devmajor, out.devminor = info.devmajor, info.devminor
    return out


def _generated(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime = kind, size, mode, GENERATED_MTIME
    info.uname = info.gname = "root"
    return info


class _LayerWriter:
    """Writes one layer tar to a temporary file, recording its entries."""

    def __init__(self, created_by: str, work: Path) -> None:
        self.created_by = created_by
        self.entries: list[Entry] = []
        self._file = tempfile.NamedTemporaryFile(dir=work, suffix=".tar")  # noqa: SIM115 - closed in finish()
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115

    def add(self, info: tarfile.TarInfo, data: IO[bytes] | bytes | None = None) -> None:
        self.entries.append(entry_of(info))
        self._tar.addfile(info, io.BytesIO(data) if isinstance(data, bytes) else data)

    def finish(self) -> LayerTar:
        self._tar.close()
        size = self._file.tell()
        digest = hashlib.sha256()
        gz_out, zst_out = io.BytesIO(), io.BytesIO()
        self._file.seek(0)
        with (
            gzip.GzipFile(fileobj=gz_out, mode="wb", compresslevel=6, mtime=0) as gz,
            zstandard.ZstdCompressor(level=3).stream_writer(zst_out, size=size, closefd=False) as zst,
        ):
            while chunk := self._file.read(CHUNK):
                digest.update(chunk)
                gz.write(chunk)
                zst.write(chunk)
        self._file.close()
        return LayerTar(
            self.created_by,
            tuple(self.entries),
            "sha256:" + digest.hexdigest(),
            size,
            Blob(GZIP_MEDIA_TYPE, gz_out.getvalue()),
            Blob(ZSTD_MEDIA_TYPE, zst_out.getvalue()),
        )


@dataclass(frozen=True)
class _Node:
    info: tarfile.TarInfo
    signature: tuple[object, ...]  # what "changed" compares: not mtime (the trees were built apart)


def _index(tar_path: Path) -> dict[str, _Node]:
    nodes: dict[str, _Node] = {}
    with tarfile.open(tar_path, mode="r|") as archive:
        for info in archive:
            content: object = info.linkname
            if info.isreg():
                source = archive.extractfile(info)
                assert source is not None
                digest = hashlib.sha256()
                while chunk := source.read(CHUNK):
                    digest.update(chunk)
                content = digest.hexdigest()
            signature = (info.type, info.size, info.mode, info.uid, info.gid, content)
            nodes[_normalize(info.name)] = _Node(info, signature)
    return nodes


def _stream(tar_path: Path, keep: Callable[[str, tarfile.TarInfo], bool], layer: _LayerWriter) -> None:
    with tarfile.open(tar_path, mode="r|") as archive:
        for info in archive:
            path = _normalize(info.name)
            if path not in ("", ".") and keep(path, info):
                layer.add(_copy(info, path), archive.extractfile(info) if info.isreg() else None)


def _add_dirs(layer: _LayerWriter, paths: Iterable[str], tree: Mapping[str, _Node], done: set[str]) -> None:
    """Parent directories of generated entries, with the tree's ownership and mode."""
    for path in paths:
        for directory in [*reversed(list(_ancestors(path)))]:
            if directory not in done:
                done.add(directory)
                info = _generated(directory, tarfile.DIRTYPE, mode=0o755)
                if directory in tree:
                    source = tree[directory].info
                    info.mode, info.uid, info.gid = source.mode, source.uid, source.gid
                layer.add(info)


def _base_layer(minbase: Path, work: Path) -> LayerTar:
    layer = _LayerWriter("/bin/sh -c #(nop) ADD file:minbase.tar in / ", work)
    # Base images ship an empty /dev: the runtime mounts its own.
    _stream(minbase, lambda _path, info: not (info.ischr() or info.isblk()), layer)
    return layer.finish()


def _apt_layer(base: Mapping[str, _Node], tree: Mapping[str, _Node], packages: rootfs.Rootfs, work: Path) -> LayerTar:
    layer = _LayerWriter(f"RUN apt-get update && apt-get install -y {' '.join(packages.packages)}", work)
    changed = {p for p, node in tree.items() if p not in ("", ".") and base.get(p, node).signature != node.signature}
    changed |= {p for p in tree if p not in base}
    for path in list(changed):
        # A hard link needs its target in the same layer; parents come along as in an overlay upper dir.
        if tree[path].info.islnk():
            changed.add(_normalize(tree[path].info.linkname))
    changed |= {a for p in list(changed) for a in _ancestors(p)}
    _stream(packages.path, lambda path, _info: path in changed, layer)
    # Anything the install removed (nothing, with these packages) is whited out.
    removed = sorted(p for p in base if p not in tree and p not in ("", "."))
    tops = [p for p in removed if not any(a in base and a not in tree for a in _ancestors(p))]
    _add_dirs(layer, tops, tree, changed)
    for path in tops:
        layer.add(_generated(posixpath.join(posixpath.dirname(path), WHITEOUT + posixpath.basename(path))))
    return layer.finish()


MOTD = b"This image was cleaned up after apt-get install.\n"
UPDATE_MOTD = b"# dynamic motd disabled in this image\n"
DOC_README = b"Documentation was removed to keep the image small.\n"


def _cleanup_layer(tree: Mapping[str, _Node], work: Path) -> LayerTar:
    layer = _LayerWriter(
        "RUN rm -rf /var/lib/apt/lists/* /etc/cron.daily /usr/share/doc && apt-get clean"
        " && mkdir -p /usr/share/doc/app && echo ... > /usr/share/doc/app/README"
        " && rm -r /etc/update-motd.d && echo ... > /etc/update-motd.d && echo ... > /etc/motd",
        work,
    )
    lists = "var/lib/apt/lists"
    removed = sorted(p for p in tree if posixpath.dirname(p) == lists)  # files, lock, partial/
    removed += [p for p in ("var/cache/apt/pkgcache.bin", "var/cache/apt/srcpkgcache.bin") if p in tree]
    removed.append("etc/cron.daily")  # a directory with files
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = [
        (_generated(posixpath.join(posixpath.dirname(p), WHITEOUT + posixpath.basename(p))), None) for p in removed
    ]
    # `rm -rf /usr/share/doc && mkdir ...`: overlayfs makes the new directory opaque.
    entries += [
        (_generated("usr/share/doc", tarfile.DIRTYPE, mode=0o755), None),
        (_generated(f"usr/share/doc/{OPAQUE}"), None),
        (_generated("usr/share/doc/app", tarfile.DIRTYPE, mode=0o755), None),
        (_generated("usr/share/doc/app/README", size=len(DOC_README)), DOC_README),
        (_generated("etc/update-motd.d", size=len(UPDATE_MOTD)), UPDATE_MOTD),  # a file where a directory was
        (_generated("etc/motd", size=len(MOTD)), MOTD),  # a config file rewritten
    ]
    done = {"usr/share/doc", "usr/share/doc/app"}
    for info, data in sorted(entries, key=lambda pair: pair[0].name):
        _add_dirs(layer, [info.name], tree, done)
        layer.add(info, data)
    return layer.finish()


def _app_layer(work: Path) -> LayerTar:
    layer = _LayerWriter("COPY app/ /app/ && COPY ca-bundle.crt /etc/ssl/certs/ca-certificates.crt", work)
    rng = random.Random("realistic-app")
    files = {
        "app/main.py": b"import sys\n\nprint('hello from the app', sys.argv[1:])\n",
        "app/config.json": json.dumps({"listen": ":8080", "workers": 4}, sort_keys=True).encode(),
        "app/data/model.bin": rng.randbytes(256 * 1024),
        # Replaces the bundle the apt layer installed: hidden in both images.
        "etc/ssl/certs/ca-certificates.crt": b"-----BEGIN CERTIFICATE-----\nprivate CA\n-----END CERTIFICATE-----\n",
    }
    done: set[str] = set()
    for path, data in files.items():
        _add_dirs(layer, [path], {}, done)
        layer.add(_generated(path, size=len(data)), data)
    return layer.finish()


# --- caching ------------------------------------------------------------------


def _save(layers: RealisticLayers, directory: Path) -> None:
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    meta = {}
    for name, layer in vars(layers).items():
        (partial / f"{name}.tar.gz").write_bytes(layer.gzip.data)
        (partial / f"{name}.tar.zst").write_bytes(layer.zstd.data)
        meta[name] = {
            "created_by": layer.created_by,
            "diff_id": layer.diff_id,
            "size": layer.size,
            "entries": [[e.path, e.size, e.kind] for e in layer.entries],
        }
    (partial / "layers.json").write_text(json.dumps(meta))
    shutil.rmtree(directory, ignore_errors=True)
    partial.rename(directory)
    # Layers of earlier sources or trees are dead weight (~400 MB each).
    for stale in directory.parent.iterdir():
        if stale.is_dir() and stale != directory and len(stale.name) == len(directory.name):
            shutil.rmtree(stale, ignore_errors=True)


def _load(directory: Path) -> RealisticLayers | None:
    with contextlib.suppress(FileNotFoundError):
        meta = json.loads((directory / "layers.json").read_text())
        return RealisticLayers(
            **{
                name: LayerTar(
                    m["created_by"],
                    tuple(Entry(path, size, kind) for path, size, kind in m["entries"]),
                    m["diff_id"],
                    m["size"],
                    Blob(GZIP_MEDIA_TYPE, (directory / f"{name}.tar.gz").read_bytes()),
                    Blob(ZSTD_MEDIA_TYPE, (directory / f"{name}.tar.zst").read_bytes()),
                )
                for name, m in meta.items()
            }
        )
    return None


_LOADED: dict[Path, RealisticLayers] = {}


def realistic_layers(cache_dir: Path = CACHE) -> RealisticLayers:
    """The four layers, built once from the cached root filesystems.

    Cached on disk keyed by the rootfs tarballs and this module's source, so
    an edit here rebuilds them; held in memory for the rest of the process.
    """
    minbase = rootfs.minbase_rootfs()
    packages = rootfs.packages_rootfs()
    key = hashlib.sha256(
        "\n".join([minbase.path.name, packages.path.name, Path(__file__).read_text()]).encode()
    ).hexdigest()[:16]
    directory = cache_dir / key
    if directory in _LOADED:
        return _LOADED[directory]
    layers = _load(directory)
    if layers is None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        base_tree, tree = _index(minbase.path), _index(packages.path)
        layers = RealisticLayers(
            base=_base_layer(minbase.path, cache_dir),
            apt=_apt_layer(base_tree, tree, packages, cache_dir),
            cleanup=_cleanup_layer(tree, cache_dir),
            app=_app_layer(cache_dir),
        )
        _save(layers, directory)
    _LOADED[directory] = layers
    return layers


# --- images -------------------------------------------------------------------


def build_image(
    refs: Sequence[str], layers: Sequence[LayerTar], compression: Compression = "gzip", name: str = ""
) -> RealisticImage:
    """An image of `layers` as `compression` blobs, with its reference figures."""
    blobs = [layer.blob(compression) for layer in layers]
    diff_ids = [layer.diff_id for layer in layers]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/bin/sleep", "100000"], "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": layer.created_by} for layer in layers],
    }
    config_blob = Blob("application/vnd.oci.image.config.v1+json", json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_blob.descriptor(),
        "layers": [blob.descriptor() for blob in blobs],
    }
    manifest_blob = Blob("application/vnd.oci.image.manifest.v1+json", json.dumps(manifest, sort_keys=True).encode())
    # The spec only carries the references (write_tar and the registry read no layers from it).
    image = BuiltImage(ImageSpec(refs, layers=()), config_blob, manifest_blob, blobs, tuple(diff_ids))
    hidden = hidden_entries([layer.entries for layer in layers])
    return RealisticImage(name, image, tuple(layers), tuple(hidden))


def realistic_images(compression: Compression = "gzip", cache_dir: Path = CACHE) -> dict[str, RealisticImage]:
    """{"clean": base+apt+cleanup+app, "apt": base+apt+app}, referenced as localhost/realistic-<name>:<compression>."""
    layers = realistic_layers(cache_dir)
    stacks = {
        "clean": (layers.base, layers.apt, layers.cleanup, layers.app),
        "apt": (layers.base, layers.apt, layers.app),
    }
    return {
        name: build_image([f"localhost/realistic-{name}:{compression}"], stack, compression, name)
        for name, stack in stacks.items()
    }


if __name__ == "__main__":  # a summary, for the README and for eyeballing
    for compression in ("gzip", "zstd"):
        for image in realistic_images(compression).values():
            print(image.name, compression, image.wasted_bytes, image.wasted_by_layer)
    for name, layer in vars(realistic_layers()).items():
        print(name, len(layer.entries), layer.file_bytes, layer.size, len(layer.gzip.data), len(layer.zstd.data))
