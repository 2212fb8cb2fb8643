"""`layer-sharing-exporter pull-cost REF [REF...]`: what this node would fetch and unpack to run images.

Each reference is resolved through its registry for the node's platform (the
`catalog` command's client and docker-config auth; loopback registries in plain
HTTP), reading manifests and configs only. The runtime is asked (read-only) what
it holds of what those images need, and nothing else: CRI's image list and
containerd's content and snapshot listings, then its snapshots of their chains
(a containers/storage node's records are read whole); exporter.core.pull_cost
does the accounting. Exit codes: 0 ok, 1 a reference could not be resolved or the
runtime did not answer (one line naming which), 2 a malformed reference or bad
flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from exporter import config as config_mod
from exporter.cli.exit_codes import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from exporter.cli.registry_access import add_registry_flags, registry_client, wanted_platform
from exporter.cli.runtime import runtime_source
from exporter.core.pull_cost import RemoteImage, RemoteLayer, pull_costs
from exporter.errors import ConfigError, RuntimeUnavailableError
from exporter.outputs import pull_cost as pull_cost_out
from exporter.sources.node import PullView
from exporter.sources.registry import RegistryError, ResolvedImage, parse_strict_reference

PROG = "layer-sharing-exporter pull-cost"


def add_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    """The `pull-cost` subcommand and its flags."""
    parser = subparsers.add_parser(
        "pull-cost",
        help="bytes this node would fetch and unpack to pull image references (asks their registries)",
        description="For each reference, in order: the config and layer blobs the runtime would download "
        "(fetch), and the layers it would unpack, given what the node holds; then the total.",
    )
    parser.add_argument("refs", nargs="+", metavar="REF", help="image references (tag or digest), pulled in order")
    parser.add_argument("--config", metavar="FILE", help="YAML config file (how to reach the runtime)")
    # The runtime flags `df` takes: this command reads the node the same way.
    config_mod.add_flags(parser, "df")
    add_registry_flags(parser)
    parser.add_argument("--output", "-o", choices=("table", "json"), default="table")


def _fail(message: str, code: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return code


def run_pull_cost(args: argparse.Namespace) -> int:
    try:
        wanted = wanted_platform(args)
        client = registry_client(args)
        refs = [(text, parse_strict_reference(text)) for text in args.refs]
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except RegistryError as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)
    try:
        config = config_mod.resolve(args)
    except ConfigError as exc:
        return _fail(f"invalid configuration: {exc}", EXIT_USAGE)
    # Writable layers are no part of a pull; their sizes cost a shim round trip per container.
    config = config_mod.with_settings(config, {"collect_writable_layers": False})
    runtime = runtime_source(config)
    try:
        # The registries and the runtime (its image list and store listings) are asked at
        # the same time; the layer store then only about what the resolved images need.
        with ThreadPoolExecutor(max_workers=1) as pool:
            resolving = pool.submit(client.resolve_many, [ref for _, ref in refs], wanted)
            try:
                view: PullView | RuntimeUnavailableError = runtime.pull_view()
            except RuntimeUnavailableError as exc:
                view = exc
            resolved = resolving.result()
        images = []
        for (text, _), result in zip(refs, resolved, strict=True):
            if isinstance(result, RegistryError):
                return _fail(f"{text}: {_one_line(str(result))}", EXIT_UNAVAILABLE)
            images.append(_remote_image(text, result))
        try:
            if isinstance(view, RuntimeUnavailableError):
                raise view  # said only now: a reference that did not resolve is said first
            node = runtime.pull_holdings(images, view)
        except RuntimeUnavailableError as exc:
            return _fail(f"the runtime did not answer: {_one_line(str(exc))}", EXIT_UNAVAILABLE)
    finally:
        runtime.close()
    costs, total = pull_costs(images, node.holdings)
    if args.output == "json":
        print(pull_cost_out.to_json(costs, total))
    else:
        store = f"{node.layer_store}/{node.snapshotter}" if node.layer_store == "containerd" else node.layer_store
        print(pull_cost_out.to_table(costs, dataclasses.replace(total, ref="total"), str(wanted), store))
    return EXIT_OK


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _remote_image(text: str, resolved: ResolvedImage) -> RemoteImage:
    """What a reference resolved to, as the accounting takes it."""
    layers = tuple(
        RemoteLayer(blob.digest, blob.size, diff_id)
        for blob, diff_id in zip(resolved.layers, resolved.details.diff_ids, strict=True)
    )
    return RemoteImage(
        ref=text,
        manifest_digest=resolved.manifest_digest,
        config_digest=resolved.config.digest,
        config_size=resolved.config.size,
        layers=layers,
        chain_ids=resolved.details.chain_ids,
    )
