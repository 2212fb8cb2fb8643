"""`layer-sharing-exporter catalog REF...`: base image references to catalog YAML.

Reads each image's config from its registry (read-only, for the node's
platform unless --platform says otherwise) and prints catalog entries
`{name, version, diff_ids}` to paste under `bases:`. Exit codes: 0 ok, 1 a
registry could not be read, 2 bad arguments or entries that would not make a
valid catalog.
"""

from __future__ import annotations

import argparse
import sys

import yaml

from exporter.cli.exit_codes import EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE
from exporter.cli.registry_access import registry_client, wanted_platform
from exporter.config import parse_bases
from exporter.core.bases import short_digest
from exporter.errors import ConfigError
from exporter.sources.registry import RegistryError, parse_reference


def _fail(message: str, code: int) -> int:
    print(f"layer-sharing-exporter catalog: {message}", file=sys.stderr)
    return code


def run_catalog(args: argparse.Namespace) -> int:
    try:
        wanted = wanted_platform(args)
        # NAME=REF names the family; a bare REF is named by its repository.
        specs = [
            (s.partition("=")[0], parse_reference(s.partition("=")[2])) if "=" in s else ("", parse_reference(s))
            for s in args.refs
        ]
        client = registry_client(args)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except RegistryError as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)
    try:
        entries = []
        for name, ref in specs:
            details, _ = client.image_config(ref, wanted)
            entries.append(
                {
                    "name": name or ref.name,
                    "version": ref.tag or short_digest(ref.digest),
                    "diff_ids": list(details.diff_ids),
                }
            )
    except RegistryError as exc:
        return _fail(str(exc), EXIT_UNAVAILABLE)
    try:
        parse_bases(entries)
    except ConfigError as exc:
        return _fail(f"these references do not make a valid catalog: {exc}", EXIT_USAGE)
    print(f"# layer-sharing-exporter catalog, platform {wanted}")
    print(yaml.safe_dump({"bases": entries}, sort_keys=False, width=200), end="")
    return EXIT_OK
