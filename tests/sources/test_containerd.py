"""The containerd layer store against an in-process fake gRPC server: snapshot usage,
namespaces, lazily pulled layers, manifest read retries."""

import hashlib
import json
import time
from collections.abc import Generator

import pytest

from exporter.core.accounting import account
from exporter.core.chain import chain_ids
from exporter.core.facts import ImageFacts
from exporter.core.pull_cost import RemoteImage, RemoteLayer, holdings_for, holdings_from_facts
from exporter.errors import BlobUnavailableError, RuntimeUnavailableError
from exporter.sources.containerd import MANIFEST_RETRY_SECONDS, ContainerdLayerStore, ContainerdOptions
from exporter.sources.grpc_client import RpcSession, read_only_channel
from exporter.sources.node import READ_ONLY_METHODS
from tests.fake_grpc import source_for
from tests.fakes import digest


def test_native_calls_carry_the_containerd_namespace(fake):
    runtime = source_for(fake, containerd_namespace="k8s.io")
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


def test_lazily_pulled_layers_are_counted_apart_not_missing(fake):
    """stargz, SOCI and nydus label a lazily pulled layer's snapshot
    containerd.io/snapshot/remote; its usage is 0 by design. (A real remote
    snapshotter is not run here: this is against the fake's Snapshots/Stat.)"""
    remote = sorted(fake.all_chain_ids())[0]
    fake.remote_snapshots.add(remote)
    runtime = source_for(fake)
    facts = runtime.snapshot()
    assert facts.remote_layers == {remote}
    report = account(facts)
    assert report.totals.remote_layers == 1 and report.totals.missing_layers == 0
    assert report.layers[remote].size == 0 and report.layers[remote].remote
    stats = fake.calls["containerd.services.snapshots.v1.Snapshots/Stat"]
    assert stats == 1  # only the layer that read as 0 bytes is asked about
    assert runtime.snapshot().remote_layers == {remote}
    assert fake.calls["containerd.services.snapshots.v1.Snapshots/Stat"] == stats  # cached
    assert runtime.errors["snapshot_usage"] == 0
    runtime.close()


def _manifest_for(image_id: str, layer: bytes) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": image_id, "size": 2},
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _sha(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_failed_manifest_read_is_retried_with_backoff(fake, tmp_path):
    image_id = digest("i1")
    layer = b"compressed layer bytes"
    manifest = _manifest_for(image_id, layer)
    fake.blobs = {_sha(manifest): manifest, _sha(layer): layer}
    fake.image_targets = [_sha(manifest)]
    fake.failing_reads = 1
    channel, _ = read_only_channel(f"unix://{fake.socket}", READ_ONLY_METHODS)
    now = [1000.0]
    store = ContainerdLayerStore(
        RpcSession(channel, 1.0, (("containerd-namespace", "k8s.io"),)), ContainerdOptions(), clock=lambda: now[0]
    )
    images = [ImageFacts(image_id=image_id, diff_ids=(digest("a"),))]
    assert store.read(images).layer_blobs[image_id] == ()  # the read failed: unknown for now
    reads = fake.calls["content/Read"]
    now[0] += 1
    store.read(images)
    assert fake.calls["content/Read"] == reads  # backing off, not asking every refresh
    now[0] += MANIFEST_RETRY_SECONDS
    facts = store.read(images)
    assert [blob.digest for blob in facts.layer_blobs[image_id]] == [_sha(layer)]
    assert facts.present_blobs[_sha(layer)] == len(layer)
    assert store.session.errors["content"] == 1
    channel.close()


def test_manifest_retries_back_off_exponentially(fake):
    fake.image_targets = []  # the record is not there (yet)
    channel, _ = read_only_channel(f"unix://{fake.socket}", READ_ONLY_METHODS)
    now = [0.0]
    store = ContainerdLayerStore(
        RpcSession(channel, 1.0, (("containerd-namespace", "k8s.io"),)), ContainerdOptions(), clock=lambda: now[0]
    )
    images = [ImageFacts(image_id=digest("i1"), diff_ids=(digest("a"),))]
    asked_at = []
    for second in range(200):
        now[0] = float(second)
        before = fake.calls["containerd.services.images.v1.Images/List"]
        store.read(images)
        if fake.calls["containerd.services.images.v1.Images/List"] > before:
            asked_at.append(second)
    assert asked_at == [0, 15, 45, 105]
    channel.close()


def test_a_manifest_missing_from_the_content_store_is_found_once_it_is_back(fake):
    image_id = digest("i1")
    layer = b"layer"
    manifest = _manifest_for(image_id, layer)
    fake.image_targets = [_sha(manifest)]
    fake.blobs = {_sha(layer): layer}  # the manifest blob is not there (yet)
    channel, _ = read_only_channel(f"unix://{fake.socket}", READ_ONLY_METHODS)
    now = [0.0]
    store = ContainerdLayerStore(
        RpcSession(channel, 1.0, (("containerd-namespace", "k8s.io"),)), ContainerdOptions(), clock=lambda: now[0]
    )
    images = [ImageFacts(image_id=image_id, diff_ids=(digest("a"),))]
    assert store.read(images).layer_blobs[image_id] == ()
    fake.blobs[_sha(manifest)] = manifest
    now[0] += MANIFEST_RETRY_SECONDS
    assert [b.digest for b in store.read(images).layer_blobs[image_id]] == [_sha(layer)]
    channel.close()


def _blob_store(fake, **options):
    runtime = source_for(fake, layer_store="containerd", **options)
    store = runtime.layer_store
    assert isinstance(store, ContainerdLayerStore)
    return runtime, store


def test_a_blob_is_read_in_one_streaming_call_and_its_chunks_are_the_blob(fake):
    blob = bytes(range(256)) * 10_000  # 2.56 MB: several chunks
    fake.blobs["sha256:" + "b" * 64] = blob
    runtime, store = _blob_store(fake)
    chunks = list(store.read_blob("sha256:" + "b" * 64, len(blob)))
    assert len(chunks) > 1
    assert b"".join(chunks) == blob
    assert fake.calls["content/Read"] == 1
    assert b"".join(store.read_blob("sha256:" + "b" * 64, 1000)) == blob[:1000]  # never more than asked for
    runtime.close()


def test_a_slow_read_goes_on_past_the_calls_deadline_and_gives_exactly_the_blob(fake):
    """A slow disk (or a reader pacing itself): a call that brought bytes before its
    deadline is continued from where it stopped, whatever the whole blob takes."""
    blob = bytes(range(256)) * 10_000
    fake.blobs["sha256:" + "b" * 64] = blob
    fake.chunk_delay = 0.1
    runtime, store = _blob_store(fake, rpc_timeout_seconds=0.35)
    assert b"".join(store.read_blob("sha256:" + "b" * 64, len(blob))) == blob
    assert fake.calls["content/Read"] > 1
    runtime.close()


def test_a_read_that_brings_nothing_before_its_deadline_is_the_runtime_not_answering(fake):
    fake.blobs["sha256:" + "b" * 64] = b"x" * 1000
    fake.chunk_delay = 1.0
    runtime, store = _blob_store(fake, rpc_timeout_seconds=0.2)
    with pytest.raises(RuntimeUnavailableError, match="DEADLINE_EXCEEDED"):
        list(store.read_blob("sha256:" + "b" * 64, 1000))
    assert fake.calls["content/Read"] == 2  # asked once more, then given up
    runtime.close()


def test_a_missing_blob_says_it_is_missing(fake):
    runtime = source_for(fake, layer_store="containerd")
    store = runtime.layer_store
    assert isinstance(store, ContainerdLayerStore)
    with pytest.raises(BlobUnavailableError) as raised:
        list(store.read_blob("sha256:" + "c" * 64, 10))
    assert raised.value.missing
    runtime.close()


def test_a_reader_that_stops_early_leaves_no_call_behind(fake):
    blob = bytes(range(256)) * 10_000
    fake.blobs["sha256:" + "d" * 64] = blob
    runtime, store = _blob_store(fake)
    chunks = store.read_blob("sha256:" + "d" * 64, len(blob))
    assert next(chunks) == blob[:300_000]
    assert isinstance(chunks, Generator)
    chunks.close()  # the call is cancelled
    deadline = time.monotonic() + 5
    while fake.content_reads_active and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.content_reads_active == 0
    assert fake.calls["content/Read"] == 1
    runtime.close()


# -- the targeted read pull-cost makes ----------------------------------------------


def _remote(ref: str, config: str, diffs: list[str]) -> RemoteImage:
    return RemoteImage(ref, "", config, 2, tuple(RemoteLayer(digest("blob-" + x), 10, x) for x in diffs))


def _asked(fake, *names: str) -> list[RemoteImage]:
    """Images as the registry would give them: the fake's own by image ID, or new ones by their diffs."""
    return [
        _remote(f"x/{n}:1", digest(n), fake.images[digest(n)])
        if digest(n) in fake.images
        else _remote(f"x/{n}:1", digest(n), [digest(x) for x in n.split("-")])
        for n in names
    ]


def _targeted_and_whole(fake, images):
    """The targeted read's holdings, the whole refresh's restricted to `images`, and the targeted read's calls."""
    runtime = source_for(fake, layer_store="containerd")
    try:
        before = dict(fake.calls)
        targeted = runtime.pull_holdings(images)
        calls = {k: v - before.get(k, 0) for k, v in fake.calls.items() if v - before.get(k, 0)}
        whole = holdings_for(holdings_from_facts(runtime.snapshot()), images)
    finally:
        runtime.close()
    return targeted.holdings, whole, calls


def test_pull_holdings_ask_about_the_requested_layers_only(fake):
    """i1 (a, b) and i2 (a, c) are on the node. Asked: i1 again, and a new image (a, d): one
    Usage per distinct chain, no ImageStatus, one content listing and one snapshot listing
    (is d's diff stored on another parent?), whatever else the node holds."""
    fake.tags = {digest("i1"): ["x/i1:1"]}
    images = _asked(fake, "i1", "a-d")
    targeted, whole, calls = _targeted_and_whole(fake, images)
    assert targeted == whole
    assert set(targeted.chains) == set(chain_ids([digest("a"), digest("b")])) and targeted.listed == {"x/i1:1": 1}
    assert digest("i1") in targeted.blobs and targeted.keeps_layer_blobs
    assert calls == {
        "runtime.v1.RuntimeService/Version": 1,
        "runtime.v1.RuntimeService/Status": 1,
        "runtime.v1.ImageService/ListImages": 1,
        "runtime.v1.ImageService/ImageFsInfo": 1,
        "containerd.services.snapshots.v1.Snapshots/Usage": 3,  # a, a+b, a+d
        "containerd.services.snapshots.v1.Snapshots/List": 1,
        "content/List": 1,
    }


def test_a_diff_stored_on_another_parent_is_found_by_one_snapshot_listing(fake):
    fake.images[digest("i3")] = [digest("x"), digest("d")]
    fake.remote_snapshots.add(chain_ids([digest("x"), digest("d")])[1])  # lazily pulled: no bytes to tell
    targeted, whole, calls = _targeted_and_whole(fake, _asked(fake, "b-c-d"))
    assert targeted == whole and not targeted.chains
    assert targeted.diff_bytes == {digest("b"): 100, digest("c"): 100}  # on parent a; d's only copy is remote
    assert calls["containerd.services.snapshots.v1.Snapshots/List"] == 1


def test_a_remote_chain_is_present_with_no_bytes(fake):
    remote = chain_ids(fake.images[digest("i1")])[1]
    fake.remote_snapshots.add(remote)
    targeted, whole, calls = _targeted_and_whole(fake, _asked(fake, "i1"))
    assert targeted == whole and targeted.chains[remote] == 0
    assert calls["containerd.services.snapshots.v1.Snapshots/Stat"] == 1  # only the chain that read as 0 bytes


def test_a_chain_whose_bytes_cannot_be_read_is_present_with_bytes_unknown(fake):
    """Usage fails, Stat finds the snapshot: the layer is there (not fetched again), its bytes
    unknown (None), never taken as missing; said once."""
    bottom = chain_ids(fake.images[digest("i1")])[0]
    fake.failing_usage.add(bottom)
    runtime = source_for(fake, layer_store="containerd")
    try:
        holdings = runtime.pull_holdings(_asked(fake, "i1")).holdings
    finally:
        runtime.close()
    assert holdings.chains[bottom] is None and len(holdings.chains) == 2
    assert runtime.errors["snapshot_usage"] == 1


def test_a_snapshot_neither_usage_nor_stat_can_tell_fails_the_read(fake):
    bottom = chain_ids(fake.images[digest("i1")])[0]
    fake.failing_usage.add(bottom)
    fake.failing_stat.add(bottom)
    runtime = source_for(fake, layer_store="containerd")
    try:
        with pytest.raises(RuntimeUnavailableError, match=f"whether layer {bottom}"):
            runtime.pull_holdings(_asked(fake, "i1"))
    finally:
        runtime.close()


def _pulled(fake, image_id: str, *, labelled_layers: bool, kept: bool) -> None:
    """The content store after a CRI pull of `image_id`: its manifest (labelled as the pull
    labels it) and config, and its layer blobs unless discarded."""
    diffs = fake.images[image_id]
    layers = [f"layer {image_id} {x}".encode() for x in diffs]
    config = json.dumps({"rootfs": {"type": "layers", "diff_ids": diffs}}).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": image_id, "size": 2},
            "layers": [
                {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": _sha(b), "size": len(b)}
                for b in layers
            ],
        }
    ).encode()
    fake.blobs[_sha(manifest)], fake.blobs[image_id] = manifest, config
    fake.image_targets.append(_sha(manifest))
    labels = {"containerd.io/gc.ref.content.config": image_id}
    if labelled_layers:
        labels |= {f"containerd.io/gc.ref.content.l.{n}": _sha(b) for n, b in enumerate(layers)}
    fake.blob_labels[_sha(manifest)] = labels
    if kept:
        fake.blobs |= {_sha(b): b for b in layers}


@pytest.mark.parametrize(
    ("labelled", "kept", "reads"),
    [(True, True, 0), (False, False, 4), (True, False, 2)],
    ids=["kept", "discarded", "never-fetched"],
)
def test_discarded_layer_blobs_are_told_as_a_whole_refresh_tells_them(fake, labelled, kept, reads):
    """Kept (the manifest's labels name its layers, all there): nothing is read. Discarded
    (the pull left the layers out of the labels): the manifests and configs are read.
    Labelled but missing (never fetched, or dropped since): the configs are read."""
    for image_id in fake.images:
        _pulled(fake, image_id, labelled_layers=labelled, kept=kept)
    targeted, whole, calls = _targeted_and_whole(fake, _asked(fake, "a-d"))
    assert targeted == whole and targeted.keeps_layer_blobs is kept
    assert calls.get("content/Read", 0) == reads
