"""The runtime source a command reads, built from the configuration."""

from __future__ import annotations

import dataclasses

from exporter.config import Config
from exporter.sources.node import RuntimeSource


def runtime_source(config: Config, keep_history: bool = False) -> RuntimeSource:
    """The node's runtime, read-only, as `config` says to reach it (`keep_history`: for `df --image`)."""
    options = config.runtime
    if keep_history:
        options = dataclasses.replace(options, cri=dataclasses.replace(options.cri, keep_history=True))
    return RuntimeSource(options)
