"""The pull-cost endpoint's wire format: the question a report asks a node
(GET /pull-cost?image=REF,CONFIG&layer=DIFF_ID,BLOB&...) and the node's answer.

Both sides use it: the node's server (exporter.outputs.pull_cost) reads
questions and writes answers, the report (exporter.sources.kubernetes.pod_proxy)
writes questions and reads answers. Pure: no I/O.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping, Sequence

from exporter.core.pull_cost import PULL_MODELS, NodeHoldings, RemoteImage, RemoteLayer


def holdings_dict(holdings: NodeHoldings) -> dict[str, object]:
    """What a node answers for a layer list (`holdings_for`): JSON for the report to rebuild NodeHoldings."""
    return {
        "model": holdings.model,
        "chains": dict(sorted(holdings.chains.items())),
        "blobs": sorted(holdings.blobs),
        "diff_bytes": dict(sorted(holdings.diff_bytes.items())),
        "diff_sized": holdings.diff_sized,
        "keeps_layer_blobs": holdings.keeps_layer_blobs,
        "listed": dict(sorted(holdings.listed.items())),
    }


# -- the node's read-only endpoint: GET /pull-cost?image=REF,CONFIG&layer=DIFF_ID,BLOB&... --------
#
# The layer list is ordered: each `image` starts an image (its reference, for the
# kubelet's names, and its config digest), the `layer`s after it are its layers
# bottom-up (diff ID and compressed blob digest). Sizes are not sent: the node
# answers what it holds, the report knows what the registry declares.

PATH = "/pull-cost"
# Longest query one request carries (the report splits longer lists by image):
# well under the request-line limits of HTTP servers and proxies (8 KiB and up).
QUERY_LIMIT = 7000
MAX_LAYERS = 4096  # per request: bounds the work of one question
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_REF = re.compile(r"[^\s,]{1,512}")


def image_query(image: RemoteImage) -> list[tuple[str, str]]:
    """One image's part of the question, as (name, value) pairs."""
    pairs = [("image", f"{image.ref},{image.config_digest}")]
    pairs += [("layer", f"{layer.diff_id},{layer.digest}") for layer in image.layers]
    return pairs


def holdings_queries(images: Sequence[RemoteImage], limit: int = QUERY_LIMIT) -> list[list[tuple[str, str]]]:
    """The questions to ask a node about `images`, each under `limit` characters once
    encoded (an image is never split: its chain IDs need its whole layer list)."""
    queries: list[list[tuple[str, str]]] = []
    length = limit + 1
    for image in images:
        pairs = image_query(image)
        size = len(urllib.parse.urlencode(pairs)) + 1
        if length + size > limit:
            queries.append([])
            length = 0
        queries[-1] += pairs
        length += size
    return queries


def images_from_query(pairs: Sequence[tuple[str, str]]) -> list[RemoteImage]:
    """The ordered layer list a question names; ValueError naming what is wrong."""
    images: list[tuple[str, str, list[RemoteLayer]]] = []
    layers = 0
    for name, value in pairs:
        if name == "image":
            ref, _, config = value.rpartition(",")
            if not _REF.fullmatch(ref) or not _DIGEST.fullmatch(config):
                raise ValueError(f"image={value!r} is not REF,CONFIG_DIGEST")
            images.append((ref, config, []))
        elif name == "layer":
            diff_id, _, blob = value.partition(",")
            if not _DIGEST.fullmatch(diff_id) or not _DIGEST.fullmatch(blob):
                raise ValueError(f"layer={value!r} is not DIFF_ID,BLOB_DIGEST")
            if not images:
                raise ValueError("a layer before any image")
            layers += 1
            if layers > MAX_LAYERS:
                raise ValueError(f"more than {MAX_LAYERS} layers in one question")
            images[-1][2].append(RemoteLayer(blob, 0, diff_id))
        else:
            raise ValueError(f"unknown parameter {name!r} (image, layer)")
    if not images:
        raise ValueError("no image asked: ?image=REF,CONFIG_DIGEST&layer=DIFF_ID,BLOB_DIGEST...")
    return [RemoteImage(ref, "", config, 0, tuple(found)) for ref, config, found in images]


def holdings_from_dict(data: object) -> NodeHoldings:
    """A node's answer back as NodeHoldings; ValueError when it is not one."""
    if not isinstance(data, Mapping):
        raise ValueError("the answer is not a JSON object")
    try:
        model = data["model"]
        chains, blobs, diff_bytes = data["chains"], data["blobs"], data["diff_bytes"]
        diff_sized, keeps, listed = data["diff_sized"], data["keeps_layer_blobs"], data.get("listed", {})
    except KeyError as exc:
        raise ValueError(f"the answer lacks {exc}") from None
    if (
        model not in PULL_MODELS
        or not isinstance(chains, Mapping)
        or not all(v is None or _is_bytes(v) for v in chains.values())
        or not isinstance(blobs, list)
        or not all(isinstance(b, str) for b in blobs)
        or not isinstance(diff_bytes, Mapping)
        or not all(_is_bytes(v) for v in diff_bytes.values())
        or not isinstance(listed, Mapping)
        or not all(_is_bytes(v) for v in listed.values())
        or not isinstance(diff_sized, bool)
        or not isinstance(keeps, bool)
    ):
        raise ValueError("the answer's fields are not of the expected types")
    return NodeHoldings(model, dict(chains), frozenset(blobs), dict(diff_bytes), diff_sized, keeps, dict(listed))


def _is_bytes(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
