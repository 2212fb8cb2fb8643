"""OCI formats: manifests, indexes and configs (literal documents and fuzzing)."""

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.core.facts import DeclaredBase
from exporter.errors import ParseError
from exporter.sources.oci import Index, Manifest, image_details_from_config, parse_manifest_or_index
from tests.fakes import digest

# Property-based: whatever the runtime hands over, the parsers return or raise
# ParseError; nothing else escapes.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=30,
)


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


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_fuzz_manifests(blob):
    with contextlib.suppress(ParseError):
        parse_manifest_or_index(blob)


def test_manifest_annotations_declare_the_base():
    manifest = {
        "config": {"digest": digest(5)},
        "layers": [],
        "annotations": {
            "org.opencontainers.image.base.name": "docker.io/library/debian:12",
            "org.opencontainers.image.base.digest": digest(8),
            "other": "x",
        },
    }
    parsed = parse_manifest_or_index(json.dumps(manifest).encode())
    assert isinstance(parsed, Manifest)
    assert parsed.declared_base == DeclaredBase("docker.io/library/debian:12", digest(8))
    plain = parse_manifest_or_index(json.dumps({**manifest, "annotations": {"a": "b"}}).encode())
    assert isinstance(plain, Manifest) and plain.declared_base is None
    odd = parse_manifest_or_index(json.dumps({**manifest, "annotations": ["not", "a", "map"]}).encode())
    assert isinstance(odd, Manifest) and odd.declared_base is None


def test_config_created_and_labels():
    config = {
        "created": "2024-01-02T03:04:05.123456789Z",
        "config": {"Labels": {"org.opencontainers.image.base.name": "alpine:3.20", "n": 1}},
        "rootfs": {"diff_ids": [digest(1)]},
    }
    details = image_details_from_config(config)
    assert details.created == 1704164645.123456
    assert details.declared_base == DeclaredBase("alpine:3.20", "")
    for created in ("0001-01-01T00:00:00Z", "2024-01-02 03:04", "", 17, None):
        assert image_details_from_config({**config, "created": created}).created is None
    assert image_details_from_config({**config, "created": "1970-01-01T00:00:00Z"}).created == 0
    assert image_details_from_config({**config, "config": {"Labels": None}}).declared_base is None
