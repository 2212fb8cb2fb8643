"""Build OCI image-layout tarballs in Python (there is no registry here).

Layers are deterministic gzip'd tars, so the same layer spec always yields the
same diff ID and blob digest: images built separately share layers exactly as
images pulled from one registry would.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
# A symlink target in a layer spec is written as Link("busybox").


@dataclass(frozen=True)
class Link:
    target: str


FileSpec = Mapping[str, "bytes | Link"]


@dataclass(frozen=True)
class Layer:
    """One layer: files (path -> content) and the history line that made it."""

    files: FileSpec
    created_by: str = ""

    def tar_bytes(self) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
            dirs: set[str] = set()
            for path in sorted(self.files):
                parts = path.split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    d = "/".join(parts[:i])
                    if d not in dirs:
                        dirs.add(d)
                        info = tarfile.TarInfo(d)
                        info.type = tarfile.DIRTYPE
                        info.mode = 0o755
                        tar.addfile(info)
                content = self.files[path]
                info = tarfile.TarInfo(path)
                info.mode = 0o755
                if isinstance(content, Link):
                    info.type = tarfile.SYMTYPE
                    info.linkname = content.target
                    tar.addfile(info)
                else:
                    info.size = len(content)
                    tar.addfile(info, io.BytesIO(content))
        return buf.getvalue()


def busybox_layer() -> Layer:
    """A runnable root: /bin/busybox with sh, sleep and true linked to it."""
    return Layer(
        files={
            "bin/busybox": BUSYBOX.read_bytes(),
            "bin/sh": Link("busybox"),
            "bin/sleep": Link("busybox"),
            "bin/true": Link("busybox"),
        },
        created_by="/bin/sh -c #(nop) ADD file:busybox in /",
    )


def data_layer(name: str, size: int, seed: int | None = None) -> Layer:
    """A layer holding one incompressible file, so its size is predictable."""
    rng = random.Random(seed if seed is not None else name)
    return Layer(files={f"data/{name}.bin": rng.randbytes(size)}, created_by=f"COPY {name}.bin /data/")


def empty_layer() -> Layer:
    """A layer with no files (e.g. `RUN true` that changed nothing)."""
    return Layer(files={}, created_by="RUN true")


@dataclass
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self, **extra: object) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data), **extra}


@dataclass
class ImageSpec:
    """An image: its references, layers and config extras."""

    refs: Sequence[str]
    layers: Sequence[Layer]
    entrypoint: Sequence[str] = ("/bin/sleep", "100000")
    architecture: str = "amd64"
    extra_history: Sequence[dict[str, object]] = field(default_factory=list)
    # The config's `created` (RFC 3339) and `config.Labels`; the manifest's annotations.
    created: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    def build(self) -> BuiltImage:
        layer_blobs = []
        diff_ids = []
        history: list[dict[str, object]] = list(self.extra_history)
        for layer in self.layers:
            raw = layer.tar_bytes()
            diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
            gz = gzip.compress(raw, compresslevel=6, mtime=0)
            layer_blobs.append(Blob("application/vnd.oci.image.layer.v1.tar+gzip", gz))
            history.append({"created_by": layer.created_by or "layer"})
        # An empty_layer history entry between layers (like ENV), to prove it is skipped.
        history.insert(min(1, len(history)), {"created_by": "ENV APP=1", "empty_layer": True})
        config: dict[str, object] = {
            "architecture": self.architecture,
            "os": "linux",
            "config": {"Entrypoint": list(self.entrypoint), **({"Labels": dict(self.labels)} if self.labels else {})},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": history,
        }
        if self.created:
            config["created"] = self.created
        config_blob = Blob("application/vnd.oci.image.config.v1+json", json.dumps(config, sort_keys=True).encode())
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_blob.descriptor(),
            "layers": [b.descriptor() for b in layer_blobs],
            **({"annotations": dict(self.annotations)} if self.annotations else {}),
        }
        manifest_blob = Blob(
            "application/vnd.oci.image.manifest.v1+json", json.dumps(manifest, sort_keys=True).encode()
        )
        return BuiltImage(self, config_blob, manifest_blob, layer_blobs, tuple(diff_ids))


@dataclass
class BuiltImage:
    spec: ImageSpec
    config: Blob
    manifest: Blob
    layers: list[Blob]
    diff_ids: tuple[str, ...]

    @property
    def image_id(self) -> str:
        return self.config.digest

    def write_tar(self, path: Path) -> Path:
        """Write an OCI image layout tarball that `ctr images import` accepts."""
        return write_images_tar([self], path)


def write_images_tar(images: Sequence[BuiltImage], path: Path) -> Path:
    """One OCI image layout holding several images (one `ctr images import`)."""
    manifests = [
        image.manifest.descriptor(
            annotations={"io.containerd.image.name": ref, "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1]}
        )
        for image in images
        for ref in image.spec.refs
    ]
    with tarfile.open(path, "w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps({"schemaVersion": 2, "manifests": manifests}).encode())
        seen: set[str] = set()
        for image in images:
            for blob in (image.config, image.manifest, *image.layers):
                if blob.digest not in seen:
                    seen.add(blob.digest)
                    add("blobs/sha256/" + blob.digest.removeprefix("sha256:"), blob.data)
    return path
