"""The realistic images (tests/harness/realistic.py) through CRI PullImage, gzip and
zstd, on a real containerd: the merged view containerd builds is exactly the
one the reference figures assume (every entry not hidden, nothing else)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.containerd import Containerd
from tests.harness.pods import PodMaker
from tests.harness.realistic import RealisticImage, realistic_images
from tests.harness.registry import Registry


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Containerd, Registry]]:
    containerd = Containerd(tmp_path_factory.mktemp("containerd"))
    registry = Registry().start()
    try:
        containerd.start()
        yield containerd, registry
    finally:
        registry.stop()
        containerd.cleanup()


def _chain_id(diff_ids: tuple[str, ...]) -> str:
    chain = diff_ids[0]
    for diff_id in diff_ids[1:]:
        chain = "sha256:" + hashlib.sha256(f"{chain} {diff_id}".encode()).hexdigest()
    return chain


def _expected_view(image: RealisticImage) -> set[str]:
    hidden = {(index, entry) for index, entry in image.hidden}
    return {
        entry.path
        for index, layer in enumerate(image.layers)
        for entry in layer.entries
        if not entry.is_whiteout and (index, entry) not in hidden
    }


def _mounted_view(containerd: Containerd, image: RealisticImage, target: Path) -> set[str]:
    # ctr's lease ends when it exits, so the view may be collected at once;
    # its mount is read-only lowerdirs (the image's own snapshots), which stay.
    out = containerd.ctr("snapshots", "view", "--mounts", f"view-{target.name}", _chain_id(image.image.diff_ids))
    (mount,) = json.loads(out)
    target.mkdir(parents=True)
    options = ",".join(mount["Options"])
    subprocess.run(["mount", "-t", mount["Type"], mount["Source"], "-o", options, str(target)], check=True)
    try:
        seen = set()
        for directory, dirs, files in os.walk(target):
            relative = Path(directory).relative_to(target)
            seen |= {str(relative / name) for name in [*dirs, *files]}
        return seen
    finally:
        subprocess.run(["umount", str(target)], check=True)
        containerd.ctr("snapshots", "rm", f"view-{target.name}", check=False)


@pytest.mark.parametrize("compression", ["gzip", "zstd"])
def test_pulled_realistic_images_show_the_reference_view(node, tmp_path, compression):
    containerd, registry = node
    maker = PodMaker(containerd.endpoint, str(containerd.pod_logs))
    try:
        for name, image in realistic_images(compression).items():
            ref = registry.push(f"realistic-{name}", compression, image.image)
            assert maker.pull_image(ref) == image.image.image_id
            view = _mounted_view(containerd, image, tmp_path / name)
            expected = _expected_view(image)
            assert view == expected, (sorted(view - expected)[:20], sorted(expected - view)[:20])
    finally:
        maker.close()
