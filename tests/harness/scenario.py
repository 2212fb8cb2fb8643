"""The sample node used by the demo and the integration tests.

It holds every trap the accounting must get right: a base shared at several
depths, the same diff on different parents (not shared), one image under two
tags, a two-container pod, two pods on one image, an exited container that
still pins its image, an unused image, and an empty layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tests.harness.containerd import PAUSE_REF, Containerd
from tests.harness.images import BuiltImage, ImageSpec, busybox_layer, data_layer, empty_layer
from tests.harness.pods import ContainerSpec, PodHandle, PodMaker

KIB = 1024


def sample_images() -> dict[str, ImageSpec]:
    bb = busybox_layer()
    base_os = data_layer("base-os", 300 * KIB)
    other_os = data_layer("other-os", 250 * KIB)
    app_a = data_layer("app-a", 200 * KIB)
    # Build times (config `created`), as real builds record them.
    return {
        "pause": ImageSpec(
            [PAUSE_REF], [bb], entrypoint=("/bin/sleep", "1000000"), created="2023-06-01T00:00:00.000000001Z"
        ),
        "base": ImageSpec(["localhost/base:1"], [bb, base_os], created="2024-01-15T10:00:00Z"),
        "app-a": ImageSpec(
            ["localhost/app-a:1", "localhost/app-a:latest"], [bb, base_os, app_a], created="2024-02-01T09:30:00Z"
        ),
        "app-b": ImageSpec(
            ["localhost/app-b:1"], [bb, base_os, data_layer("app-b", 400 * KIB)], created="2024-02-02T09:30:00Z"
        ),
        # app-a's top diff again, on another parent: a different layer on disk.
        "app-c": ImageSpec(["localhost/app-c:1"], [bb, other_os, app_a], created="2024-03-01T00:00:00Z"),
        "tool": ImageSpec(
            ["localhost/tool:1"],
            [bb, base_os, empty_layer(), data_layer("tool", 100 * KIB)],
            created="2022-12-31T23:59:59Z",
        ),
        "job": ImageSpec(
            ["localhost/job:1"], [bb, other_os, data_layer("job", 50 * KIB)], created="2024-04-01T00:00:00Z"
        ),
    }


# Pods: (namespace, name, [(container name, image ref, command)])
SAMPLE_PODS: list[tuple[str, str, list[ContainerSpec]]] = [
    ("default", "web-1", [ContainerSpec("app", "localhost/app-a:1"), ContainerSpec("sidecar", "localhost/app-b:1")]),
    ("default", "web-2", [ContainerSpec("app", "localhost/app-a:latest")]),
    ("batch", "job-1", [ContainerSpec("job", "localhost/job:1", ("/bin/busybox", "true"))]),
    ("other", "solo", [ContainerSpec("app", "localhost/app-c:1")]),
]

SAMPLE_CATALOG_YAML = """\
bases:
  - name: base-os
    image: localhost/base:1
  - name: other-os
    diff_ids: {other_os_diff_ids}
"""


@dataclass
class SampleNode:
    containerd: Containerd
    images: dict[str, BuiltImage]
    pods: list[PodHandle] = field(default_factory=list)

    def catalog_yaml(self) -> str:
        diff_ids = list(self.images["job"].diff_ids[:2])
        return SAMPLE_CATALOG_YAML.format(other_os_diff_ids=diff_ids)


def build_images(specs: dict[str, ImageSpec], out_dir: Path) -> dict[str, tuple[BuiltImage, Path]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    built = {}
    for key, spec in specs.items():
        image = spec.build()
        built[key] = (image, image.write_tar(out_dir / f"{key}.tar"))
    return built


def populate(containerd: Containerd, image_dir: Path) -> SampleNode:
    """Import the sample images and run the sample pods on a started containerd."""
    built = build_images(sample_images(), image_dir)
    # The pause image first: pods need it.
    for key in ["pause", *[k for k in built if k != "pause"]]:
        containerd.import_image(built[key][1])
    node = SampleNode(containerd, {k: v[0] for k, v in built.items()})
    maker = PodMaker(containerd.endpoint, str(containerd.pod_logs))
    try:
        for namespace, name, containers in SAMPLE_PODS:
            node.pods.append(maker.run_pod(namespace, name, containers))
    finally:
        maker.close()
    return node
