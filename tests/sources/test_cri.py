"""CRI translation: verbose image info, pod identity, the runtime's status info (literal shapes and fuzzing)."""

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.core.accounting import account
from exporter.core.facts import history_per_layer
from exporter.errors import ParseError
from exporter.sources.cri import (
    image_details_from_verbose_info,
    pod_identity,
    sandbox_image_from_sandbox_info,
    sandbox_image_from_status_info,
    snapshotter_from_status_info,
)
from exporter.sources.oci import MAX_LAYERS
from tests.fake_grpc import source_for
from tests.fakes import digest

# Property-based: whatever the runtime hands over, the parsers return or raise
# ParseError; nothing else escapes.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


def verbose(spec: object) -> dict[str, str]:
    return {"info": json.dumps({"chainID": digest(9), "imageSpec": spec})}


def test_diff_ids_and_history_from_containerd_verbose_info():
    spec = {
        "rootfs": {"type": "layers", "diff_ids": [digest(1), digest(2)]},
        "history": [{"created_by": "ADD x /"}, {"created_by": "ENV A=1", "empty_layer": True}, {"created_by": "RUN y"}],
    }
    details = image_details_from_verbose_info(verbose(spec))
    assert details.diff_ids == (digest(1), digest(2))
    assert [h.created_by for h in history_per_layer(details.diff_ids, details.history)] == ["ADD x /", "RUN y"]


@pytest.mark.parametrize(
    ("info", "message"),
    [
        ({}, "no 'info' key"),
        ({"info": "{not json"}, "not valid JSON"),
        ({"info": "[]"}, "not a JSON object"),
        ({"info": "{}"}, "no imageSpec"),
        (verbose({"rootfs": {"diff_ids": "x"}}), "not a list"),
        (verbose({"rootfs": {"diff_ids": ["md5:abc"]}}), "not a sha256 digest"),
        (verbose({"rootfs": {"diff_ids": [digest(1)] * (MAX_LAYERS + 1)}}), "more than 125"),
    ],
)
def test_malformed_verbose_info_is_a_clear_parse_error(info, message):
    with pytest.raises(ParseError, match=message):
        image_details_from_verbose_info(info)


def test_pod_identity_prefers_kubelet_labels():
    labels = {"io.kubernetes.pod.name": "web", "io.kubernetes.pod.namespace": "prod", "io.kubernetes.pod.uid": "u1"}
    assert pod_identity(labels, "x", "y", "z") == pod_identity({}, "prod", "web", "u1")


def test_sandbox_image_from_containerd_1x_and_2x_status():
    assert sandbox_image_from_status_info({"config": json.dumps({"sandboxImage": "registry.k8s.io/pause:3.9"})}) == (
        "registry.k8s.io/pause:3.9"
    )
    assert sandbox_image_from_status_info({"config": json.dumps({"pinnedImages": {"sandbox": "p:1"}})}) == "p:1"
    assert sandbox_image_from_status_info({"config": "garbage"}) == ""
    assert sandbox_image_from_status_info({}) == ""


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["info", "other"]), st.text(max_size=200) | json_values.map(json.dumps)))
def test_fuzz_verbose_info(info):
    with contextlib.suppress(ParseError):
        image_details_from_verbose_info(info)


@settings(max_examples=300, deadline=None)
@given(json_values.map(lambda v: {"info": json.dumps({"imageSpec": {"rootfs": {"diff_ids": v}, "history": v}})}))
def test_fuzz_image_spec_shapes(info):
    with contextlib.suppress(ParseError):
        image_details_from_verbose_info(info)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=30), st.text(max_size=30)))
def test_fuzz_labels_and_status(labels):
    who = pod_identity(labels)
    assert isinstance(who.name, str)
    assert isinstance(sandbox_image_from_status_info(labels), str)


def test_125_layers_is_accepted():
    spec = {"rootfs": {"diff_ids": [digest(i) for i in range(MAX_LAYERS)]}}
    assert len(image_details_from_verbose_info(verbose(spec)).diff_ids) == MAX_LAYERS


def test_writable_layers_are_asked_at_most_once_per_interval(fake):
    runtime = source_for(fake, writable_refresh_seconds=3600)
    for _ in range(3):
        runtime.snapshot()
    assert fake.calls["runtime.v1.RuntimeService/ListContainerStats"] == 1
    runtime.forget_runtime_state()  # e.g. after containerd restarted
    runtime.snapshot()
    assert fake.calls["runtime.v1.RuntimeService/ListContainerStats"] == 2
    runtime.close()


def test_malformed_image_is_skipped_counted_and_not_retried(fake):
    bad = digest("bad")
    fake.images[bad] = [digest("z")]
    fake.broken_info.add(bad)
    runtime = source_for(fake)
    facts = runtime.snapshot()
    assert {i.image_id for i in facts.images} == {digest("i1"), digest("i2")}
    assert runtime.errors["image_parse"] == 1
    runtime.snapshot()
    assert runtime.errors["image_parse"] == 1
    assert fake.calls["runtime.v1.ImageService/ImageStatus"] == 3
    runtime.close()


def test_image_deleted_between_list_and_status_is_simply_gone(fake):
    fake.vanished.add(digest("i2"))
    runtime = source_for(fake)
    facts = runtime.snapshot()
    assert [i.image_id for i in facts.images] == [digest("i1")]
    assert sum(runtime.errors.values()) == 0
    runtime.close()


def test_an_old_pause_image_a_running_sandbox_uses_stays_in_use(fake):
    """After `sandbox_image` changes (containerd 1.6), pods started before still
    run the old pause image: it is in use, not reclaimable."""
    old, new = digest("i1"), digest("i2")
    fake.tags = {old: ["localhost/pause:old"], new: ["localhost/pause:new"]}
    fake.status_config = {"sandboxImage": "localhost/pause:new"}
    fake.sandboxes = {"s-old": "localhost/pause:old"}
    runtime = source_for(fake)
    facts = runtime.snapshot()
    assert facts.sandbox_image_ids == {old, new}
    report = account(facts)
    assert all(image.in_use for image in report.images)
    assert report.totals.reclaimable == 0
    asked = fake.calls["runtime.v1.RuntimeService/PodSandboxStatus"]
    assert asked == 1
    runtime.snapshot()
    assert fake.calls["runtime.v1.RuntimeService/PodSandboxStatus"] == asked  # a sandbox's image never changes
    fake.sandboxes = {}
    assert runtime.snapshot().sandbox_image_ids == {new}  # that pod is gone: the old image is reclaimable
    runtime.close()


def test_sandbox_image_and_snapshotter_from_verbose_info_shapes():
    # Literal shapes from containerd 1.6, 1.7 and 2.x (PodSandboxStatus verbose info["info"]).
    info = {"info": json.dumps({"pid": 1, "image": "registry.k8s.io/pause:3.6", "snapshotter": "overlayfs"})}
    assert sandbox_image_from_sandbox_info(info) == "registry.k8s.io/pause:3.6"
    assert sandbox_image_from_sandbox_info({"info": "garbage"}) == sandbox_image_from_sandbox_info({}) == ""
    config = {"containerd": {"snapshotter": "overlayfs", "runtimes": {"runc": {"snapshotter": ""}}}}
    assert snapshotter_from_status_info({"config": json.dumps(config)}) == "overlayfs"
    assert snapshotter_from_status_info({"config": json.dumps({"containerd": {"runtimes": {}}})}) == ""
    assert snapshotter_from_status_info({"config": "[1]"}) == snapshotter_from_status_info({}) == ""


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["info", "config"]), st.text(max_size=200) | json_values.map(json.dumps)))
def test_fuzz_sandbox_and_snapshotter_info(info):
    assert isinstance(sandbox_image_from_sandbox_info(info), str)
    assert isinstance(snapshotter_from_status_info(info), str)


# -- CRI-O's shapes -------------------------------------------------------------

# cri-o server/image_status.go `createImageInfo` (cri-o f954a17e50, v1.36.0-191;
# this shape since v1.18.0): one key "info", JSON {labels, imageSpec}, no chainID.
# Written from the Go structs for the image localhost/a:1 (see docs/deployment.md).
CRIO_IMAGE_STATUS_INFO = {
    "info": '{"labels":{"example.label":"v"},"imageSpec":{"created":"2024-01-01T00:00:00Z",'
    '"architecture":"amd64","os":"linux","config":{"Cmd":["/a.txt"],"Labels":{"example.label":"v"}},'
    '"rootfs":{"type":"layers","diff_ids":["sha256:d27797be47d841995e0b75fdcd84a81e38e9655bd250106dddcbd4db5df71eca",'
    '"sha256:53a321d930a6b6c25ff8c47faa5af09cda1e69940975519544a3f4881a9678b7"]},'
    '"history":[{"created":"2024-01-01T00:00:00Z","created_by":"layer 0"},'
    '{"created":"2024-01-01T00:00:00Z","created_by":"layer 1"}]}}'
}
# cri-o server/runtime_status.go `createRuntimeInfo` (v1.33+): {"config": {sandboxImage, crio: <RuntimeConfig>}}.
CRIO_STATUS_INFO = {
    "config": '{"sandboxImage":"registry.k8s.io/pause:3.10.1","crio":{"DefaultRuntime":"crun","Runtimes":{}}}'
}


def test_diff_ids_and_history_from_crio_verbose_info():
    details = image_details_from_verbose_info(CRIO_IMAGE_STATUS_INFO)
    assert details.diff_ids == (
        "sha256:d27797be47d841995e0b75fdcd84a81e38e9655bd250106dddcbd4db5df71eca",
        "sha256:53a321d930a6b6c25ff8c47faa5af09cda1e69940975519544a3f4881a9678b7",
    )
    assert [h.created_by for h in history_per_layer(details.diff_ids, details.history)] == ["layer 0", "layer 1"]


def test_sandbox_image_from_crio_status():
    assert sandbox_image_from_status_info(CRIO_STATUS_INFO) == "registry.k8s.io/pause:3.10.1"


def test_crio_image_ids_and_manifest_annotations_reach_the_facts(fake):
    # CRI-O: image IDs are bare hex (internal/storage/image_id.go), and ImageStatus
    # carries the OCI manifest's annotations in Image.spec.annotations
    # (internal/storage/image.go buildImageCacheItem, since v1.26.0).
    base = {
        "org.opencontainers.image.base.name": "docker.io/library/base:1",
        "org.opencontainers.image.base.digest": "sha256:" + "0" * 64,
    }
    hex_id = digest("crio-image").removeprefix("sha256:")
    fake.runtime_name = "cri-o"
    fake.images = {hex_id: [digest("a"), digest("b")]}
    fake.annotations = {hex_id: base}
    runtime = source_for(fake, layer_store="containerd")
    facts = runtime.snapshot()
    assert [(i.image_id, dict(i.annotations)) for i in facts.images] == [(hex_id, base)]
    assert facts.runtime_name == "cri-o"
    runtime.close()


def test_facts_do_not_depend_on_the_order_the_runtime_lists_in(fake):
    """containerd lists images, pods and containers in Go map order: equal facts
    let the refresh loop keep its report, so the order must not make them differ."""
    fake.sandboxes = {f"s{n}": "" for n in range(5)}
    fake.containers = {f"c{n}": (f"s{n}", digest("i1") if n % 2 else digest("i2")) for n in range(5)}
    runtime = source_for(fake)
    first = runtime.snapshot()
    fake.images = dict(reversed(fake.images.items()))
    fake.sandboxes = dict(reversed(fake.sandboxes.items()))
    fake.containers = dict(reversed(fake.containers.items()))
    second = runtime.snapshot()
    assert second == first and second is not first
    assert [i.image_id for i in first.images] == sorted([digest("i1"), digest("i2")])
    assert [c.container_id for c in first.containers] == [f"c{n}" for n in range(5)]
    assert [p.sandbox_id for p in first.pods] == [f"s{n}" for n in range(5)]
    runtime.close()
