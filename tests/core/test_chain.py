import hashlib

from exporter.core.chain import chain_ids
from tests.fakes import digest


def test_first_chain_id_is_the_first_diff_id():
    assert chain_ids([digest(1)]) == (digest(1),)


def test_chain_id_follows_the_oci_definition():
    a, b, c = digest(1), digest(2), digest(3)
    ab = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    abc = "sha256:" + hashlib.sha256(f"{ab} {c}".encode()).hexdigest()
    assert chain_ids([a, b, c]) == (a, ab, abc)


def test_same_diff_on_another_parent_is_another_layer():
    assert chain_ids([digest(1), digest(9)])[1] != chain_ids([digest(2), digest(9)])[1]


def test_known_vector_from_the_image_spec_shape():
    # Empty input yields no layers; one image with no layers is valid (scratch).
    assert chain_ids([]) == ()
