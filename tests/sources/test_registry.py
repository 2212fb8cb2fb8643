"""The registry adapter against the loopback OCI registry: tags, digests, a multi-arch
index, basic auth and the bearer-token flow from a docker config, and refusals."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.sources.registry import (
    Platform,
    PlatformMissingError,
    RegistryClient,
    RegistryError,
    docker_config_path,
    load_credentials,
    parse_reference,
)
from tests.harness.images import Blob, BuiltImage, ImageSpec, data_layer
from tests.harness.registry import Registry

AMD64 = Platform("linux", "amd64")


def _image(name: str, architecture: str = "amd64") -> BuiltImage:
    return ImageSpec(
        [f"x/{name}:1"],
        [data_layer(f"reg-{name}-a", 1000), data_layer(f"reg-{name}-b", 500)],
        architecture=architecture,
        created="2024-05-06T07:08:09Z",
    ).build()


@pytest.fixture
def registry() -> Iterator[Registry]:
    served = Registry().start()
    yield served
    served.stop()


def test_config_by_tag_and_by_digest(registry: Registry):
    image = _image("base")
    ref = registry.push("team/base", "12", image)
    client = RegistryClient()
    details, manifest_digest = client.image_config(parse_reference(ref), AMD64)
    assert details.diff_ids == image.diff_ids and details.created == 1714979289.0
    assert manifest_digest == image.manifest.digest
    by_digest = parse_reference(f"{registry.host}/team/base@{image.manifest.digest}")
    assert client.image_config(by_digest, AMD64)[0].diff_ids == image.diff_ids
    assert all(r.startswith("GET ") for r in registry.requests)  # read-only


def test_index_is_resolved_for_the_platform(registry: Registry):
    amd, arm = _image("multi"), _image("multi-arm", "arm64")
    ref, index = registry.push_index("team/multi", "1", {"amd64": amd, "arm64": arm})
    client = RegistryClient()
    assert client.image_config(parse_reference(ref), AMD64)[0].diff_ids == amd.diff_ids
    details, digest = client.image_config(parse_reference(ref), Platform("linux", "arm64", "v8"))
    assert details.diff_ids == arm.diff_ids and digest == arm.manifest.digest
    with pytest.raises(RegistryError, match=r"no image for linux/s390x \(it has: linux/amd64, linux/arm64\)"):
        client.image_config(parse_reference(ref), Platform("linux", "s390x"))
    assert client.image_config(parse_reference(f"{registry.host}/team/multi@{index.digest}"), AMD64)[0].diff_ids == (
        amd.diff_ids
    )


def test_bytes_not_matching_their_digest_are_refused(registry: Registry):
    image = _image("tampered")
    ref = registry.push("team/tampered", "1", image)
    registry.blobs[image.config.digest] = Blob(image.config.media_type, image.config.data.replace(b"linux", b"Linux"))
    with pytest.raises(RegistryError, match="do not match the digest"):
        RegistryClient().image_config(parse_reference(ref), AMD64)


def test_not_found_and_unreachable_say_so(registry: Registry):
    with pytest.raises(RegistryError, match="404"):
        RegistryClient().image_config(parse_reference(f"{registry.host}/team/absent:1"), AMD64)
    with pytest.raises(RegistryError, match="127.0.0.1:9/v2/x/manifests/1"):
        RegistryClient(timeout=2).image_config(parse_reference("127.0.0.1:9/x:1"), AMD64)


def _docker_config(tmp_path: Path, host: str, user: str, password: str) -> Path:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {f"http://{host}/v1/": {"auth": auth}}, "credsStore": "desktop"}))
    return path


@pytest.mark.parametrize("bearer", [False, True], ids=["basic", "bearer"])
def test_protected_registry_with_docker_config_credentials(tmp_path: Path, bearer: bool):
    registry = Registry(auth=("robot", "s3cret"), bearer=bearer).start()
    try:
        image = _image("private")
        ref = parse_reference(registry.push("team/private", "1", image))
        credentials = load_credentials(_docker_config(tmp_path, registry.host, "robot", "s3cret"))
        assert credentials == {registry.host: ("robot", "s3cret")}
        assert RegistryClient(credentials).image_config(ref, AMD64)[0].diff_ids == image.diff_ids
        with pytest.raises(RegistryError, match=f"no credentials for {registry.host}"):
            RegistryClient().image_config(ref, AMD64)
        wrong = load_credentials(_docker_config(tmp_path, registry.host, "robot", "wrong"))
        with pytest.raises(RegistryError, match="401"):
            RegistryClient(wrong).image_config(ref, AMD64)
    finally:
        registry.stop()


def test_docker_config_location_and_shapes(tmp_path: Path):
    assert docker_config_path({"DOCKER_CONFIG": "/etc/d"}) == Path("/etc/d/config.json")
    assert docker_config_path({"HOME": "/home/u"}) == Path("/home/u/.docker/config.json")
    assert load_credentials(tmp_path / "absent.json") == {}
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"auths": {"reg.example:5000": {"username": "u", "password": "p"}, "bad": 3}}))
    assert load_credentials(path) == {"reg.example:5000": ("u", "p")}
    path.write_text("{not json")
    with pytest.raises(RegistryError, match="docker config"):
        load_credentials(path)


def test_references():
    assert parse_reference("alpine").name == "docker.io/library/alpine"
    assert parse_reference("alpine").tag == "latest"
    assert parse_reference("team/app@sha256:" + "a" * 64).repository == "team/app"
    with pytest.raises(ValueError, match="not a sha256"):
        parse_reference("x/y@md5:abc")


def test_resolve_gives_the_blobs_a_pull_fetches_and_reads_each_document_once(registry: Registry):
    image = _image("resolved")
    ref = parse_reference(registry.push("team/resolved", "1", image))
    index_ref, _ = registry.push_index("team/resolved", "multi", {"amd64": image, "arm64": _image("r-arm", "arm64")})
    client = RegistryClient()
    resolved = client.resolve(ref, AMD64)
    assert resolved.manifest_digest == image.manifest.digest
    assert (resolved.config.digest, resolved.config.size) == (image.config.digest, len(image.config.data))
    assert [(b.digest, b.size) for b in resolved.layers] == [(b.digest, len(b.data)) for b in image.layers]
    assert resolved.details.diff_ids == image.diff_ids
    registry.requests.clear()
    by_digest = parse_reference(f"{registry.host}/team/resolved@{image.manifest.digest}")
    assert client.resolve(by_digest, AMD64) == resolved == client.resolve(ref, AMD64)
    assert client.image_config(ref, AMD64)[0] == resolved.details
    assert registry.requests == []  # every document was read already
    assert client.resolve(parse_reference(index_ref), AMD64) == resolved
    assert registry.requests == ["GET /v2/team/resolved/manifests/multi"]  # the index only


def test_resolve_refuses_a_manifest_that_disagrees_with_its_config(registry: Registry):
    image = _image("mismatch")
    doc = json.loads(image.manifest.data)
    doc["layers"] = doc["layers"][:1]
    short = Blob(image.manifest.media_type, json.dumps(doc).encode())
    registry.blobs[short.digest] = short
    registry.blobs[image.config.digest] = image.config
    registry.tags[("team/mismatch", "1")] = short.digest
    with pytest.raises(RegistryError, match="1 layers but its config 2 diff IDs"):
        RegistryClient().resolve(parse_reference(f"{registry.host}/team/mismatch:1"), AMD64)
    doc = json.loads(image.manifest.data)
    doc["config"]["size"] += 1
    wrong_size = Blob(image.manifest.media_type, json.dumps(doc).encode())
    registry.blobs[wrong_size.digest] = wrong_size
    registry.tags[("team/mismatch", "2")] = wrong_size.digest
    with pytest.raises(RegistryError, match="the manifest says"):
        RegistryClient().resolve(parse_reference(f"{registry.host}/team/mismatch:2"), AMD64)


def test_a_long_lived_client_asks_tags_again_by_head_and_reads_a_digest_once(registry: Registry):
    """new_run (the locality service, each run): a tag is asked again by HEAD (registries that
    count pulls, Docker Hub, count manifest GETs), a document by digest read again only when
    the tag moved to one the last run did not see; what no run uses is dropped."""
    first, moved = _image("long"), _image("long-2")
    ref = parse_reference(registry.push("team/long", "1", first))
    client = RegistryClient()
    assert client.resolve(ref, AMD64).manifest_digest == first.manifest.digest
    client.new_run()
    registry.requests.clear()
    assert client.resolve(ref, AMD64).manifest_digest == first.manifest.digest
    assert registry.requests == ["HEAD /v2/team/long/manifests/1"]
    registry.push("team/long", "1", moved)  # the tag moves
    client.new_run()
    registry.requests.clear()
    assert client.resolve(ref, AMD64).manifest_digest == moved.manifest.digest
    assert registry.requests == [
        "HEAD /v2/team/long/manifests/1",
        "GET /v2/team/long/manifests/1",
        f"GET /v2/team/long/blobs/{moved.config.digest}",
    ]
    client.new_run()
    client.new_run()  # two runs without `first`: gone from memory
    registry.requests.clear()
    by_digest = parse_reference(f"{registry.host}/team/long@{first.manifest.digest}")
    assert client.resolve(by_digest, AMD64).manifest_digest == first.manifest.digest
    assert registry.requests[0] == f"GET /v2/team/long/manifests/{first.manifest.digest}"


def test_a_one_shot_client_never_sends_head(registry: Registry):
    ref = parse_reference(registry.push("team/once", "1", _image("once")))
    RegistryClient().resolve(ref, AMD64)
    assert not [r for r in registry.requests if r.startswith("HEAD ")]


@pytest.mark.parametrize("bearer", [False, True], ids=["basic", "bearer"])
def test_a_long_lived_client_reads_rotated_credentials_each_run(tmp_path: Path, bearer: bool):
    """A Secret's docker config rotated under the locality service (ECR's 12-hour tokens): the
    next run uses the new credentials, not a header or token made from the old ones."""
    registry = Registry(auth=("robot", "first"), bearer=bearer).start()
    try:
        image = _image("rotated")
        ref = parse_reference(registry.push("team/rotated", "1", image))
        path = _docker_config(tmp_path, registry.host, "robot", "first")
        client = RegistryClient(load_credentials=lambda: load_credentials(path))
        assert client.resolve(ref, AMD64).manifest_digest == image.manifest.digest
        registry.auth = ("robot", "second")  # rotated at the registry and in the file
        registry.tokens.clear()
        _docker_config(tmp_path, registry.host, "robot", "second")
        client.new_run()
        assert client.resolve(ref, AMD64).manifest_digest == image.manifest.digest
    finally:
        registry.stop()


def test_a_platform_an_index_lacks_is_its_own_error(registry: Registry):
    ref, _ = registry.push_index("team/amd-only", "1", {"amd64": _image("amd-only")})
    with pytest.raises(PlatformMissingError, match="no image for linux/arm64"):
        RegistryClient().resolve(parse_reference(ref), Platform("linux", "arm64"))
