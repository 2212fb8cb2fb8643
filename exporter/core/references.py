"""Image references: which image on the node a reference names (pure)."""

from __future__ import annotations

from collections.abc import Iterable

from exporter.core.facts import ImageFacts


def reference_index(images: Iterable[ImageFacts]) -> dict[str, str]:
    """Every name an image answers to (ID, tags, repo digests) -> its image ID."""
    images = tuple(images)
    index: dict[str, str] = {}
    for image in images:
        for ref in (image.image_id, *image.repo_tags, *image.repo_digests):
            index.setdefault(ref, image.image_id)
    for image in images:
        # CRI-O's image IDs are bare hex, containerd's "sha256:<hex>": a
        # reference in the other spelling names the same image.
        hex_id = image.image_id.removeprefix("sha256:")
        for alias in (hex_id, "sha256:" + hex_id):
            index.setdefault(alias, image.image_id)
    return index


def resolve_reference(ref: str, ref_to_id: dict[str, str]) -> str:
    """Image ID for a reference, trying Docker Hub's implicit names too.

    >>> resolve_reference("busybox", {"docker.io/library/busybox:latest": "sha256:b"})
    'sha256:b'
    """
    if not ref:
        return ""
    candidates = [ref]
    if "/" not in ref.split(":", 1)[0]:
        candidates.append("docker.io/library/" + ref)
    elif ref.count("/") == 1 and "." not in ref.split("/", 1)[0]:
        candidates.append("docker.io/" + ref)
    if ":" not in ref.rsplit("/", 1)[-1] and "@" not in ref:
        candidates += [c + ":latest" for c in candidates]
    for candidate in candidates:
        if candidate in ref_to_id:
            return ref_to_id[candidate]
    return ""
