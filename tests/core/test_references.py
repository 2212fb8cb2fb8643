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


def test_an_image_id_resolves_in_either_spelling():
    # CRI-O's image IDs are bare hex; a reference may still carry "sha256:" (and the other way round).
    crio = ImageFacts(image_id="ab" * 32)
    containerd = ImageFacts(image_id="sha256:" + "cd" * 32)
    index = reference_index([crio, containerd])
    assert resolve_reference("sha256:" + "ab" * 32, index) == "ab" * 32
    assert resolve_reference("cd" * 32, index) == "sha256:" + "cd" * 32
