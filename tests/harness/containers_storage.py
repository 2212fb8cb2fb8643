"""A real containers/storage (the store CRI-O uses), written by podman from the harness's OCI images.

No CRI-O server can be had here, but c/storage can: podman shares it with
CRI-O and writes the same `overlay-layers/layers.json` and
`overlay-images/images.json`. Each store lives in its own `--root` and
`--runroot`, so nothing on the machine is touched.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from tests.harness.images import BuiltImage


class Podman:
    """podman on a private c/storage graph root (overlay driver)."""

    def __init__(self, workdir: Path) -> None:
        self.root = workdir / "storage"
        # podman refuses a runroot path longer than 50 characters (pytest's are longer).
        self.runroot = Path(tempfile.mkdtemp(prefix="lse-run-"))
        self.archives = workdir / "archives"
        self.archives.mkdir(parents=True, exist_ok=True)

    def run(self, *args: str) -> str:
        podman = shutil.which("podman")
        if podman is None:
            raise RuntimeError("podman is not installed (run scripts/setup.sh --test)")
        command = [
            podman,
            "--root",
            str(self.root),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            "overlay",
            "--events-backend",
            "file",
            *args,
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def load(self, image: BuiltImage) -> None:
        """Load the image under all its references (podman load takes one name per archive)."""
        first, *others = image.spec.refs
        archive = write_single_ref_tar(image, first, self.archives / f"{image.image_id[7:19]}.tar")
        self.run("load", "-i", str(archive))
        for ref in others:
            self.run("tag", first, ref)

    def layers(self) -> list[dict[str, Any]]:
        """layers.json as podman wrote it."""
        records: list[dict[str, Any]] = json.loads((self.root / "overlay-layers" / "layers.json").read_text())
        return records

    def images(self) -> list[dict[str, Any]]:
        """images.json as podman wrote it."""
        records: list[dict[str, Any]] = json.loads((self.root / "overlay-images" / "images.json").read_text())
        return records

    def cleanup(self) -> None:
        # c/storage bind-mounts its overlay/ directory privately while it works,
        # and a podman that failed midway can leave that mount behind.
        for mount in reversed(_mounts_under(self.root)):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.rmtree(self.runroot, ignore_errors=True)


def write_single_ref_tar(image: BuiltImage, ref: str, path: Path) -> Path:
    """An OCI image-layout tarball naming the image once, by its full reference."""
    index = {
        "schemaVersion": 2,
        "manifests": [image.manifest.descriptor(annotations={"org.opencontainers.image.ref.name": ref})],
    }
    with tarfile.open(path, "w") as tar:

        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps(index).encode())
        seen: set[str] = set()
        for blob in (image.config, image.manifest, *image.layers):
            if blob.digest not in seen:
                seen.add(blob.digest)
                add("blobs/sha256/" + blob.digest.removeprefix("sha256:"), blob.data)
    return path


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mounts") as f:
        targets = [line.split()[1].replace("\\040", " ") for line in f]
    return [target for target in targets if target.startswith(str(path))]
