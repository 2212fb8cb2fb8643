"""The runtime source (CRI + layer store -> NodeFacts) and its fault handling, against an
in-process fake gRPC server (tests/integration/ run it against a real containerd)."""

import json
import logging

import grpc
import pytest

from exporter.core.accounting import account
from exporter.core.pull_cost import RemoteImage, RemoteLayer, holdings_for, holdings_from_facts
from exporter.errors import RuntimeUnavailableError
from exporter.sources.node import RuntimeOptions, RuntimeSource
from tests.fake_grpc import source_for
from tests.fakes import digest


def test_steady_state_refresh_asks_only_list_calls(fake):
    runtime = source_for(fake)
    facts = runtime.snapshot()
    assert len(facts.images) == 2 and len(facts.layer_usage) == 3
    before = dict(fake.calls)
    runtime.snapshot()
    extra = {k: v - before.get(k, 0) for k, v in fake.calls.items() if v - before.get(k, 0)}
    assert "runtime.v1.ImageService/ImageStatus" not in extra
    assert "containerd.services.snapshots.v1.Snapshots/Usage" not in extra
    assert all(count == 1 for count in extra.values())
    runtime.close()


def test_a_runtime_without_cri_is_unavailable_not_a_crash(tmp_path):
    # A gRPC server that knows none of the CRI services answers UNIMPLEMENTED.
    from concurrent import futures

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    server.add_insecure_port(f"unix://{tmp_path}/other.sock")
    server.start()
    runtime = RuntimeSource(RuntimeOptions(endpoint=f"unix://{tmp_path}/other.sock", rpc_timeout=2))
    try:
        with pytest.raises(RuntimeUnavailableError, match="UNIMPLEMENTED"):
            runtime.snapshot()
    finally:
        runtime.close()
        server.stop(None)


def test_missing_socket_is_runtime_unavailable(tmp_path):
    runtime = RuntimeSource(RuntimeOptions(endpoint=str(tmp_path / "none.sock"), rpc_timeout=0.5))
    with pytest.raises(RuntimeUnavailableError, match="UNAVAILABLE|DEADLINE"):
        runtime.snapshot()
    runtime.close()


def test_slow_runtime_hits_the_deadline(fake):
    fake.delay = 1.0
    runtime = source_for(fake, rpc_timeout_seconds=0.2)
    with pytest.raises(RuntimeUnavailableError, match="DEADLINE_EXCEEDED"):
        runtime.snapshot()
    runtime.close()


def test_snapshotter_is_read_from_the_runtime_when_none_is_configured(fake):
    # containerd 1.6 and 1.7 say it in Status(verbose) config.
    fake.snapshotter = "native"
    fake.status_config = {"containerd": {"snapshotter": "native"}, "sandboxImage": "p:1"}
    runtime = source_for(fake)
    facts = runtime.snapshot()
    assert (facts.snapshotter, facts.runtime_snapshotter) == ("native", "native")
    assert len(facts.layer_usage) == 3 and runtime.errors["snapshot_usage"] == 0
    runtime.close()


def test_snapshotter_from_the_image_filesystem_path_on_containerd_2(fake):
    # containerd 2.x's Status(verbose) no longer shows it; ImageFsInfo names its directory.
    fake.snapshotter = "native"
    fake.status_config = {"containerd": {"runtimes": {"runc": {"snapshotter": ""}}}}
    fake.imagefs_mountpoint = "/var/lib/containerd/io.containerd.snapshotter.v1.native"
    runtime = source_for(fake)
    facts = runtime.snapshot()
    assert facts.snapshotter == "native" and len(facts.layer_usage) == 3
    runtime.close()


def test_a_configured_snapshotter_that_is_not_the_runtimes_is_said_once_and_exported(fake, caplog):
    fake.snapshotter = "native"
    fake.status_config = {"containerd": {"snapshotter": "native"}}
    runtime = source_for(fake, snapshotter="overlayfs")
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            facts = runtime.snapshot()
    report = account(facts)
    assert (report.snapshotter, report.runtime_snapshotter, report.snapshotter_mismatch) == (
        "overlayfs",
        "native",
        True,
    )
    assert report.totals.missing_layers == report.totals.layers == 3
    said = [r.getMessage() for r in caplog.records if "unpacks images with" in r.getMessage()]
    assert len(said) == 1 and "'overlayfs'" in said[0] and "'native'" in said[0]
    assert runtime.errors["snapshot_usage"] == 3  # once per layer, not per refresh
    runtime.close()


def test_without_any_hint_containerds_default_is_read(fake):
    runtime = source_for(fake)
    facts = runtime.snapshot()
    assert (facts.snapshotter, facts.runtime_snapshotter) == ("overlayfs", "")
    assert not account(facts).snapshotter_mismatch
    runtime.close()


def test_one_failed_image_filesystem_answer_does_not_switch_the_snapshotter(fake):
    fake.snapshotter = "native"
    fake.imagefs_mountpoint = "/var/lib/containerd/io.containerd.snapshotter.v1.native"
    runtime = source_for(fake)
    assert runtime.snapshot().snapshotter == "native"
    fake.imagefs_mountpoint = ""  # ImageFsInfo says nothing this time
    facts = runtime.snapshot()
    assert facts.snapshotter == "native" and len(facts.layer_usage) == 3
    assert runtime.errors["snapshot_usage"] == 0


def test_auto_reads_containers_storage_when_the_runtime_is_crio(fake, tmp_path):
    from exporter.sources.containers_storage import storage_layer_ids
    from exporter.sources.node import choose_layer_store

    assert choose_layer_store("auto", "cri-o") == "containers-storage"
    assert choose_layer_store("auto", "containerd") == "containerd"
    assert choose_layer_store("containerd", "cri-o") == "containerd"
    fake.runtime_name = "cri-o"
    diffs = fake.images[next(iter(fake.images))]
    ids = storage_layer_ids(diffs)
    (tmp_path / "overlay-layers").mkdir()
    (tmp_path / "overlay-images").mkdir()
    (tmp_path / "overlay-layers" / "layers.json").write_text(
        json.dumps(
            [
                {"id": ids[0], "diff-digest": diffs[0], "diff-size": 3, "compressed-diff-digest": digest("z0")},
                {
                    "id": ids[1],
                    "parent": ids[0],
                    "diff-digest": diffs[1],
                    "diff-size": 5,
                    "compressed-diff-digest": digest("z1"),
                    "compressed-size": 2,
                },
            ]
        )
    )
    (tmp_path / "overlay-images" / "images.json").write_text("[]")
    runtime = source_for(fake, storage_root=str(tmp_path))
    assert runtime.layer_store is None  # auto: not asked yet
    facts = runtime.snapshot()
    assert facts.layer_store == "containers-storage" and facts.snapshotter == "overlay"
    assert sorted(u.size for u in facts.layer_usage.values()) == [3, 5]
    # No containerd call: the layers came from the files.
    assert not [m for m in fake.calls if m.startswith("containerd.")]
    # Not every layer has a compressed size: CRI's size is kept, not a partial sum.
    assert {i.compressed_size for i in facts.images} == {1}
    runtime.close()


def test_explicit_containerd_store_on_containerd(fake):
    runtime = source_for(fake, layer_store="containerd")
    assert runtime.layer_store is not None and runtime.layer_store.name == "containerd"
    assert runtime.snapshot().layer_store == "containerd"
    runtime.close()


def _asked(fake) -> list[RemoteImage]:
    """The fake's images as a registry would give them (pull-cost's question)."""
    return [
        RemoteImage(f"x/{n}:1", "", image_id, 2, tuple(RemoteLayer(digest(d), 10, d) for d in diffs))
        for n, (image_id, diffs) in enumerate(fake.images.items())
    ]


def test_pull_holdings_read_the_snapshotter_the_runtime_unpacks_with(fake):
    fake.snapshotter = "native"
    fake.status_config = {"containerd": {"snapshotter": "native"}}
    runtime = source_for(fake)
    read = runtime.pull_holdings(_asked(fake))
    runtime.close()
    assert (read.layer_store, read.snapshotter) == ("containerd", "native")
    assert len(read.holdings.chains) == 3 and not read.holdings.diff_sized  # native copies its parent
    assert "containerd.services.snapshots.v1.Snapshots/List" not in fake.calls  # no diff's bytes to look for


def test_pull_holdings_on_containers_storage_read_its_files_whole(fake, tmp_path):
    fake.runtime_name = "cri-o"
    (tmp_path / "overlay-layers").mkdir()
    (tmp_path / "overlay-images").mkdir()
    (tmp_path / "overlay-layers" / "layers.json").write_text("[]")
    (tmp_path / "overlay-images" / "images.json").write_text("[]")
    runtime = source_for(fake, storage_root=str(tmp_path))
    images = _asked(fake)
    read = runtime.pull_holdings(images)
    assert read.holdings == holdings_for(holdings_from_facts(runtime.snapshot()), images)
    runtime.close()
    assert (read.layer_store, read.holdings.model) == ("containers-storage", "containers-storage")
    assert not [m for m in fake.calls if m.startswith("containerd.")]


def test_pull_holdings_from_a_runtime_that_does_not_answer(tmp_path):
    runtime = RuntimeSource(RuntimeOptions(endpoint=str(tmp_path / "none.sock"), rpc_timeout=0.5))
    with pytest.raises(RuntimeUnavailableError, match="UNAVAILABLE|DEADLINE"):
        runtime.pull_holdings([])
    runtime.close()
