"""The containerd layer store against an in-process fake gRPC server: snapshot usage, namespaces."""

from collections.abc import Generator

import pytest

from exporter.errors import BlobUnavailableError
from exporter.sources.containerd import BLOB_READ_RANGE, ContainerdLayerStore
from tests.fake_grpc import source_for


def test_native_calls_carry_the_containerd_namespace(fake):
    runtime = source_for(fake, namespace="k8s.io")
    runtime.snapshot()
    assert any(m.get("containerd-namespace") == "k8s.io" for m in fake.metadata)
    runtime.close()


def test_missing_snapshot_is_reported_once_and_the_rest_exported(fake):
    missing = sorted(fake.all_chain_ids())[0]
    fake.missing_snapshots.add(missing)
    runtime = source_for(fake)
    facts = runtime.snapshot()
    assert missing not in facts.layer_usage and len(facts.layer_usage) == 2
    runtime.snapshot()
    assert runtime.errors["snapshot_usage"] == 1
    runtime.close()


def test_a_blob_is_read_in_ranged_calls_and_its_chunks_are_the_blob(fake):
    blob = bytes(range(256)) * 10_000  # 2.56 MB: several ranges
    fake.blobs["sha256:" + "b" * 64] = blob
    runtime = source_for(fake)
    store = runtime.layer_store
    assert isinstance(store, ContainerdLayerStore)
    chunks = list(store.read_blob("sha256:" + "b" * 64, len(blob)))
    assert b"".join(chunks) == blob
    assert max(map(len, chunks)) <= BLOB_READ_RANGE
    assert fake.calls["content/Read"] == -(-len(blob) // BLOB_READ_RANGE)  # one call per range
    runtime.close()


def test_a_missing_blob_says_it_is_missing(fake):
    runtime = source_for(fake)
    store = runtime.layer_store
    assert isinstance(store, ContainerdLayerStore)
    with pytest.raises(BlobUnavailableError) as raised:
        list(store.read_blob("sha256:" + "c" * 64, 10))
    assert raised.value.missing
    runtime.close()


def test_a_reader_that_stops_early_leaves_no_call_behind(fake):
    blob = bytes(range(256)) * 10_000
    fake.blobs["sha256:" + "d" * 64] = blob
    runtime = source_for(fake)
    store = runtime.layer_store
    assert isinstance(store, ContainerdLayerStore)
    chunks = store.read_blob("sha256:" + "d" * 64, len(blob))
    assert next(chunks) == blob[:300_000]
    assert isinstance(chunks, Generator)
    chunks.close()  # the range fetched ahead is cancelled
    assert fake.calls["content/Read"] <= 2
    runtime.close()
