"""The runtime source (CRI + layer store -> NodeFacts) and its fault handling, against an
in-process fake gRPC server (tests/integration/ run it against a real containerd)."""

import json

import grpc
import pytest

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
    runtime = source_for(fake, rpc_timeout=0.2)
    with pytest.raises(RuntimeUnavailableError, match="DEADLINE_EXCEEDED"):
        runtime.snapshot()
    runtime.close()


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
