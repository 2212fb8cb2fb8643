import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.facts import HistoryEntry
from exporter.parse import (
    MAX_LAYERS,
    Index,
    Manifest,
    ParseError,
    history_per_layer,
    image_details_from_verbose_info,
    normalize_endpoint,
    parse_manifest_or_index,
    pod_identity,
    sandbox_image_from_status_info,
)
from tests.fakes import digest


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


def test_125_layers_is_accepted():
    spec = {"rootfs": {"diff_ids": [digest(i) for i in range(MAX_LAYERS)]}}
    assert len(image_details_from_verbose_info(verbose(spec)).diff_ids) == MAX_LAYERS


def test_history_that_disagrees_with_layers_is_not_trusted():
    steps = history_per_layer((digest(1), digest(2)), (HistoryEntry("only one"),))
    assert steps == (None, None)


def test_manifest_and_index():
    manifest = {"config": {"digest": digest(5)}, "layers": [{"digest": digest(6), "size": 42}]}
    parsed = parse_manifest_or_index(json.dumps(manifest).encode())
    assert isinstance(parsed, Manifest) and parsed.config_digest == digest(5) and parsed.layers[0].size == 42
    index = {"mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [{"digest": digest(7)}]}
    assert parse_manifest_or_index(json.dumps(index).encode()) == Index((digest(7),))


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"null",
        b'{"layers": []}',
        b'{"config": {"digest": "x"}, "layers": []}',
        json.dumps({"config": {"digest": digest(1)}, "layers": [{"digest": digest(2), "size": -1}]}).encode(),
        json.dumps({"config": {"digest": digest(1)}, "layers": [{"digest": digest(2), "size": True}]}).encode(),
        b'{"manifests": [1]}',
        b"[" * 100000,
    ],
)
def test_malformed_manifests_are_parse_errors(blob):
    with pytest.raises(ParseError):
        parse_manifest_or_index(blob)


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


@pytest.mark.parametrize("bad", ["tcp://1.2.3.4:5", "relative/path", "unix://relative", ""])
def test_bad_endpoints_are_refused(bad):
    with pytest.raises(ParseError):
        normalize_endpoint(bad)


# Property-based: whatever the runtime hands over, the parsers return or raise
# ParseError; nothing else escapes.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


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


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_fuzz_manifests(blob):
    with contextlib.suppress(ParseError):
        parse_manifest_or_index(blob)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=30), st.text(max_size=30)))
def test_fuzz_labels_and_status(labels):
    who = pod_identity(labels)
    assert isinstance(who.name, str)
    assert isinstance(sandbox_image_from_status_info(labels), str)
