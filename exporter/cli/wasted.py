"""`layer-sharing-exporter wasted REF...`: wasted bytes of images, straight from their registries.

For nodes that keep no layer blobs (containerd with discard_unpacked_layers,
as on EKS; CRI-O) and for CI pipelines: each reference is resolved as
`catalog` resolves it (same client, same docker-config auth), each distinct
layer blob is read once, checked against its digest and its diff ID, and
summarized as the exporter's analysis summarizes it; the figures are then the
ones a node holding those blobs computes (exporter.core.wasted). Summaries are
kept by diff ID in a local cache, so a second run fetches no layer it has seen.

Exit codes: 0 ok, 1 a registry or a layer could not be read (the other
images' figures are still printed), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.cli.exit_codes import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from exporter.cli.registry_access import add_registry_flags, registry_client, wanted_platform
from exporter.core.cluster import ClusterReport
from exporter.core.facts import ImageFacts
from exporter.core.wasted import ImageWaste, LayerContentError, waste_figures
from exporter.formatting import human_bytes, short_digest, table
from exporter.sources.layer_state import SummaryStore
from exporter.sources.layer_tar import summarize_layer
from exporter.sources.registry import (
    BlobDescriptor,
    ImageReference,
    Platform,
    RegistryClient,
    RegistryError,
    ResolvedImage,
    parse_strict_reference,
)

PROG = "layer-sharing-exporter wasted"


def default_cache_dir(env: dict[str, str] | None = None) -> Path:
    """$XDG_CACHE_HOME/layer-sharing-exporter/layers, else ~/.cache/..."""
    env = dict(os.environ) if env is None else env
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "layer-sharing-exporter" / "layers"


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """The `wasted` subcommand and its flags."""
    parser = subparsers.add_parser(
        "wasted",
        help="wasted bytes of images read from their registries (nodes without layer blobs, CI)",
        description="Bytes of files an image's later layers hide (deleted, overwritten, under an opaque "
        "directory), computed from the layer blobs in the images' registries: each distinct layer is read "
        "once, and its summary cached by diff ID.",
    )
    parser.add_argument("refs", nargs="+", metavar="REF", help="image references (tag or digest)")
    parser.add_argument("--output", "-o", choices=("table", "json"), default="table")
    add_registry_flags(parser)
    add_cache_flags(parser)


def add_cache_flags(parser: argparse.ArgumentParser) -> None:
    """The summary cache."""
    parser.add_argument(
        "--cache-dir", default="", metavar="DIR", help="layer summaries by diff ID (default: ~/.cache/...)"
    )
    parser.add_argument("--no-cache", action="store_true", help="keep summaries in memory only")


@dataclass(frozen=True, slots=True)
class _Layer:
    """A distinct layer to summarize, and one place to read its blob."""

    diff_id: str
    blob: BlobDescriptor
    ref: ImageReference


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


@dataclass(frozen=True, slots=True)
class RegistryWaste:
    """What the registries said about some references: each one's image (None: unresolved),
    the figures of every image whose layers all summarize, why the others have none, and
    the figure over the distinct layers of them all (None unless every image has one)."""

    images: dict[str, ResolvedImage]
    figures: Mapping[str, ImageWaste]  # by image ID (config digest)
    errors: dict[str, str]
    node_wasted_bytes: int | None
    layers: int
    fetched: int

    def wasted_bytes(self, text: str) -> int | None:
        image = self.images.get(text)
        waste = self.figures.get(image.config.digest) if image else None
        return waste.wasted_bytes if waste else None


def registry_waste(
    refs: Sequence[tuple[str, ImageReference]], client: RegistryClient, store: SummaryStore, wanted: Platform
) -> RegistryWaste:
    """Resolve the references, summarize each distinct layer not in `store` once (from the first
    image naming it), and compute the figures as a node holding those layers would."""
    resolved = client.resolve_many([ref for _, ref in refs], wanted)
    errors: dict[str, str] = {}
    images: dict[str, tuple[ImageReference, ResolvedImage]] = {}
    for (text, ref), result in zip(refs, resolved, strict=True):
        if isinstance(result, RegistryError):
            errors[text] = str(result)
        else:
            images[text] = (ref, result)

    # Each distinct layer once for all the references, from the first image naming it.
    layers: dict[str, _Layer] = {}
    for ref, image in images.values():
        for diff_id, blob in zip(image.details.diff_ids, image.layers, strict=True):
            layers.setdefault(diff_id, _Layer(diff_id, blob, ref))
    store.load(layers)
    fetched = 0
    unreadable: dict[str, str] = {}
    for layer in layers.values():
        if layer.diff_id in store:
            continue
        try:
            store.put(layer.diff_id, summarize_layer(client.read_blob(layer.ref, layer.blob), layer.diff_id))
            fetched += 1
        except (RegistryError, LayerContentError) as exc:
            unreadable[layer.diff_id] = f"layer {layer.diff_id} (blob {layer.blob.digest}): {exc}"

    facts = [ImageFacts(image_id=image.config.digest, diff_ids=image.details.diff_ids) for _, image in images.values()]
    figures = waste_figures(facts, store.summaries, {})
    for text, (_, image) in images.items():
        missing = [unreadable[d] for d in image.details.diff_ids if d in unreadable]
        if missing:
            errors[text] = "; ".join(missing)
    return RegistryWaste(
        {text: image for text, (_, image) in images.items()},
        figures.images,
        errors,
        figures.node_wasted_bytes,
        len(layers),
        fetched,
    )


def fill_in_wasted(report: ClusterReport, args: argparse.Namespace) -> list[str]:
    """The wasted bytes of the report's images no node could analyse, from their registries
    (each distinct layer read once, summaries cached); what could not be had, as messages.
    Raises ValueError for a bad registry flag."""
    client, store, wanted = _client_and_store(args)
    refs, problems = [], []
    for row in report.images:
        if row.wasted is None:
            try:
                refs.append((row.image, parse_strict_reference(row.image)))
            except ValueError:
                problems.append(f"{row.image}: not a registry reference (only an image ID on the nodes)")
    if not refs:
        return problems
    result = registry_waste(refs, client, store, wanted)
    report.images = [
        dataclasses.replace(row, wasted=wasted, wasted_from="registry")
        if row.wasted is None and (wasted := result.wasted_bytes(row.image)) is not None
        else row
        for row in report.images
    ]
    return problems + [f"{text}: {error}" for text, error in result.errors.items()]


def _client_and_store(args: argparse.Namespace) -> tuple[RegistryClient, SummaryStore, Platform]:
    """From the registry flags (ValueError: a bad one)."""
    wanted = wanted_platform(args)
    client = registry_client(args)
    store = SummaryStore(None if args.no_cache else Path(args.cache_dir) if args.cache_dir else default_cache_dir())
    return client, store, wanted


def run_wasted(args: argparse.Namespace) -> int:
    try:
        client, store, wanted = _client_and_store(args)
        refs = [(text, parse_strict_reference(text)) for text in args.refs]
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    result = registry_waste(refs, client, store, wanted)
    images, figures, errors = result.images, result.figures, result.errors
    fetched, layer_count = result.fetched, result.layers
    rows = []
    for text, _ in refs:
        found = images.get(text)
        waste = figures.get(found.config.digest) if found else None
        rows.append(
            {
                "ref": text,
                "image_id": found.config.digest if found else None,
                "manifest_digest": found.manifest_digest if found else None,
                "wasted_bytes": waste.wasted_bytes if waste else None,
                "layer_wasted_bytes": list(waste.layer_wasted_bytes) if waste else None,
                "error": errors.get(text),
            }
        )
    if args.output == "json":
        document = {
            "images": rows,
            # Over the distinct layers of all the images, as the node figure (layer_sharing_wasted_bytes).
            "wasted_bytes": result.node_wasted_bytes,
            "layers": layer_count,
            "layers_fetched": fetched,
            "platform": str(wanted),
        }
        print(json.dumps(document, indent=2))
    else:
        print(
            table(
                ("IMAGE", "IMAGE ID", "LAYERS", "WASTED"),
                [
                    (
                        text,
                        short_digest(images[text].config.digest) if text in images else "-",
                        len(images[text].layers) if text in images else "-",
                        human_bytes(wasted) if (wasted := result.wasted_bytes(text)) is not None else "unavailable",
                    )
                    for text, _ in refs
                ],
            )
        )
        total = result.node_wasted_bytes
        print(
            f"\n{layer_count} distinct layers ({fetched} fetched, the rest from the cache); wasted over the "
            f"distinct layers: {human_bytes(total) if total is not None else 'unavailable'}"
        )
    for text, message in errors.items():
        print(f"{PROG}: {text}: {message}", file=sys.stderr)
    return EXIT_UNAVAILABLE if errors else EXIT_OK
