"""The YAML documents the exporter reads: its config file and its web config file."""

from __future__ import annotations

import json
from typing import Any

from exporter.errors import ConfigError


def parse_document(text: str, what: str) -> Any:
    """The data of a YAML document; ConfigError naming `what` if it is not one.

    JSON, which the chart writes (a YAML subset), is read without loading a YAML
    parser: PyYAML costs the long-running exporter about 2 MiB of memory.
    """
    if text.lstrip().startswith("{"):
        try:
            return json.loads(text)
        except ValueError:
            pass  # YAML's flow style rather than JSON: the YAML parser decides
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what}: not valid YAML: {str(exc).splitlines()[0]}") from None
