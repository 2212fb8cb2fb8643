"""Missing data made visible, never a quiet zero, on real containerd releases
(bookworm's 1.6 and Debian sid's 2.x, tests/harness/releases.py): the snapshotter
the CRI plugin really uses, a wrong one said and exported, and an old pause
image still running after `sandbox_image` changed.

Lazily pulled (remote) layers and failed manifest reads are tested against the
fake runtime only (tests/sources/test_containerd.py): a remote snapshotter
(stargz, SOCI, nydus) cannot be run here, and a real content store cannot be
made to fail one read without also collecting the image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.harness.containerd import Binaries, Containerd
from tests.harness.images import ImageSpec, busybox_layer, data_layer
from tests.harness.pods import ContainerSpec, PodMaker
from tests.harness.releases import ReleaseUnavailableError, containerd_release
from tests.integration.conftest import run_cli, start_exporter, stop_exporter

KIB = 1024


def binaries_for(series: str) -> Binaries:
    try:
        return containerd_release(series)
    except ReleaseUnavailableError as exc:
        pytest.fail(f"could not get containerd {series} from Debian: {exc}")


def df_json(containerd: Containerd, *extra: str) -> dict[str, Any]:
    result = run_cli("df", "--runtime-endpoint", containerd.endpoint, "--output", "json", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("series", ["1.6", "2"], ids=lambda v: f"containerd-{v}")
def test_the_snapshotter_the_runtime_uses_is_read_and_a_wrong_one_is_exported(series: str, tmp_path: Path):
    containerd = Containerd(tmp_path / "containerd", binaries=binaries_for(series), snapshotter="native")
    try:
        containerd.start()
        app = ImageSpec(["localhost/app:1"], [busybox_layer(), data_layer("native-app", 150 * KIB)]).build()
        containerd.import_image(app.write_tar(tmp_path / "app.tar"))
        usage = containerd.snapshot_usage()  # the native snapshotter's own figures
        committed = sum(size for key, (size, _) in usage.items() if key.startswith("sha256:"))

        # No --snapshotter: the runtime's own (1.6: Status config; 2.x: the image filesystem's path).
        data = df_json(containerd)
        assert (data["runtime"]["snapshotter"], data["runtime"]["runtime_snapshotter"]) == ("native", "native")
        assert data["totals"]["physical"] == committed > 0
        assert data["totals"]["missing_layers"] == 0

        # A wrong setting: every layer missing, said once, and an alert-able series.
        exporter = start_exporter(
            containerd.endpoint, tmp_path, "--snapshotter", "overlayfs", "--refresh-interval", "0.5"
        )
        try:
            exporter.wait_for(lambda: (exporter.value("layer_sharing_refreshes_total") or 0) >= 3, what="refreshes")
            mismatch = exporter.value(
                "layer_sharing_snapshotter_mismatch", snapshotter="overlayfs", runtime_snapshotter="native"
            )
            assert mismatch == 1
            assert exporter.value("layer_sharing_missing_layers") == exporter.value("layer_sharing_layers") == 2
            assert exporter.log().count("the runtime unpacks images with 'native'") == 1
        finally:
            assert stop_exporter(exporter) == 0
        exporter = start_exporter(containerd.endpoint, tmp_path, "--refresh-interval", "0.5")
        try:
            exporter.wait_for(lambda: exporter.value("layer_sharing_physical_bytes") == committed, what="exact")
            assert exporter.value("layer_sharing_snapshotter_mismatch", snapshotter="native",
                                  runtime_snapshotter="native") == 0  # fmt: skip
        finally:
            assert stop_exporter(exporter) == 0
    finally:
        containerd.cleanup()


@pytest.mark.parametrize("series", ["1.6", "1.7", "2"], ids=lambda v: f"containerd-{v}")
def test_an_old_pause_image_running_pods_use_is_not_reclaimable(series: str, tmp_path: Path):
    """`sandbox_image` changed and containerd restarted: pods started before
    still run the old pause image. Before, 1.6 counted it as reclaimable (1.7
    and 2.x keep the pin they gave it, so there it was already in use)."""
    old_ref, new_ref = "localhost/pause:old", "localhost/pause:new"
    containerd = Containerd(tmp_path / "containerd", binaries=binaries_for(series), sandbox_image=old_ref)
    try:
        containerd.start()
        old_pause = ImageSpec([old_ref], [busybox_layer(), data_layer("old-pause", 40 * KIB)],
                              entrypoint=("/bin/sleep", "1000000")).build()  # fmt: skip
        new_pause = ImageSpec([new_ref], [busybox_layer(), data_layer("new-pause", 30 * KIB)],
                              entrypoint=("/bin/sleep", "1000000")).build()  # fmt: skip
        app = ImageSpec(["localhost/app:1"], [busybox_layer(), data_layer("app", 20 * KIB)]).build()
        for image in (old_pause, new_pause, app):
            containerd.import_image(image.write_tar(tmp_path / f"{image.image_id[7:19]}.tar"))
        maker = PodMaker(containerd.endpoint, str(containerd.pod_logs))
        try:
            maker.run_pod("default", "started-before", [ContainerSpec("app", "localhost/app:1")])
        finally:
            maker.close()

        containerd.stop()  # pods survive a containerd restart
        containerd.sandbox_image = new_ref
        containerd.write_config()
        containerd.start()

        data = df_json(containerd)
        in_use = {image["name"]: image["in_use"] for image in data["images"]}
        assert in_use == {old_ref: True, new_ref: True, "localhost/app:1": True}
        assert data["totals"]["reclaimable"] == 0
    finally:
        containerd.cleanup()
