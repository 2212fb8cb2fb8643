"""OCI formats: manifests, indexes and configs (literal documents and fuzzing)."""

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.errors import ParseError
from exporter.sources.oci import Index, Manifest, parse_manifest_or_index
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
