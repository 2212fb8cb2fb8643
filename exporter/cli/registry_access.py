"""How the commands that read registries reach them: one set of flags, one client.

`catalog`, `pull-cost`, `wasted` and `report --view wasted|pull-cost` read
image manifests, configs and blobs from registries with the docker config's
credentials; the platform of an index and the registries' endpoints are flags.
"""

from __future__ import annotations

import argparse

from exporter.sources.registry import (
    Platform,
    RegistryClient,
    docker_config_path,
    load_credentials,
    node_platform,
    parse_platform,
)


def add_registry_flags(parser: argparse.ArgumentParser, timeout: bool = True) -> None:
    """--platform, --registry-endpoint and (unless the command has its own) --timeout."""
    parser.add_argument(
        "--platform", default="", help="os/architecture[/variant] to resolve an index for (default: this machine's)"
    )
    parser.add_argument(
        "--registry-endpoint",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="where a registry's API is served (mirrors; Docker Hub's API is not at docker.io); repeatable",
    )
    if timeout:
        parser.add_argument("--timeout", type=float, default=30.0, help="seconds per registry request")


def registry_endpoint(text: str) -> tuple[str, str]:
    """A --registry-endpoint NAME=URL; ValueError naming it when malformed."""
    name, sep, url = text.partition("=")
    if not sep or not name or not url.startswith(("http://", "https://")):
        raise ValueError(f"--registry-endpoint {text!r} is not NAME=http(s)://HOST[:PORT]")
    return name, url


def wanted_platform(args: argparse.Namespace) -> Platform:
    """The platform the flags ask for, else this machine's; ValueError when malformed."""
    return parse_platform(args.platform) if args.platform else node_platform()


def registry_client(args: argparse.Namespace) -> RegistryClient:
    """A client with the docker config's credentials and the flags' endpoints and timeout.

    Raises ValueError (a malformed flag) and RegistryError (an unreadable docker config).
    """
    endpoints = dict(registry_endpoint(e) for e in args.registry_endpoint)
    return RegistryClient(None, args.timeout, endpoints, lambda: load_credentials(docker_config_path()))
