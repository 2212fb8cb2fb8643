"""Which image on the node a reference names."""

from exporter.core.facts import ImageFacts
from exporter.core.references import reference_index, resolve_reference
from tests.fakes import digest


def test_every_name_of_an_image_resolves_to_its_id():
    image = ImageFacts(image_id=digest("i"), repo_tags=("docker.io/library/busybox:1",), repo_digests=("r@x",))
    index = reference_index([image])
    assert {resolve_reference(ref, index) for ref in (digest("i"), "busybox:1", "library/busybox:1", "r@x")} == {
        digest("i")
    }


def test_implicit_latest_and_unknown_references():
    index = {"docker.io/library/pause:latest": digest("p"), "localhost/app:latest": digest("a")}
    assert resolve_reference("pause", index) == digest("p")
    assert resolve_reference("localhost/app", index) == digest("a")
    assert resolve_reference("other", index) == "" and resolve_reference("", index) == ""
