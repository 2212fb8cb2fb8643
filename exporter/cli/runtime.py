"""The runtime source a command reads, built from the configuration."""

from __future__ import annotations

from exporter.config import Config
from exporter.sources.node import RuntimeOptions, RuntimeSource


def runtime_options(config: Config, keep_history: bool = False) -> RuntimeOptions:
    return RuntimeOptions(
        endpoint=config.runtime_endpoint,
        namespace=config.namespace,
        snapshotter=config.snapshotter,
        layer_store=config.layer_store,
        storage_root=config.storage_root,
        rpc_timeout=config.rpc_timeout_seconds,
        node_name=config.node_name,
        host_root=config.host_root,
        collect_writable_layers=config.collect_writable_layers,
        writable_refresh_seconds=config.writable_refresh_seconds,
        content_recheck_seconds=config.content_recheck_seconds,
        keep_history=keep_history,
    )


def runtime_source(config: Config, keep_history: bool = False) -> RuntimeSource:
    """The node's runtime, read-only, as `config` says to reach it."""
    return RuntimeSource(runtime_options(config, keep_history))
