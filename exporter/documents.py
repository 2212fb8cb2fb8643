"""The YAML documents the exporter reads: its config file and its web config file."""

from __future__ import annotations

from typing import Any

import yaml

from exporter.errors import ConfigError


def parse_document(text: str, what: str) -> Any:
    """The data of a YAML document; ConfigError naming `what` if it is not one."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what}: not valid YAML: {str(exc).splitlines()[0]}") from None
