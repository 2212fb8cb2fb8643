"""Configuration: defaults < environment < YAML file < command-line flags.

Every option can be set in the YAML file; the file also holds the base-image
catalog. Invalid values raise `ConfigError` with a message naming the key.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.core.bases import BaseSpec
from exporter.documents import parse_document
from exporter.errors import ConfigError, ParseError
from exporter.outputs.collector import MetricsOptions
from exporter.sources.grpc_client import normalize_endpoint
from exporter.sources.node import DEFAULT_STORAGE_ROOT, LAYER_STORES
from exporter.sources.oci import DIGEST_RE

DEFAULT_ENDPOINT = "unix:///run/containerd/containerd.sock"
DEFAULT_LISTEN = "0.0.0.0:9877"
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class Config:
    runtime_endpoint: str = DEFAULT_ENDPOINT
    namespace: str = "k8s.io"
    # "" = the one the runtime's CRI plugin uses (read from CRI Status / ImageFsInfo).
    snapshotter: str = ""
    # Where layer sizes come from: auto (by the CRI runtime's name), containerd or containers-storage.
    layer_store: str = "auto"
    storage_root: str = DEFAULT_STORAGE_ROOT
    listen_address: str = DEFAULT_LISTEN
    refresh_interval_seconds: float = 30.0
    rpc_timeout_seconds: float = 5.0
    content_recheck_seconds: float = 300.0
    collect_writable_layers: bool = True
    writable_refresh_seconds: float = 120.0
    node_name: str = ""
    host_root: str = ""
    log_level: str = "info"
    web_config_file: str = ""
    # Workload attribution from the Kubernetes API (kubeconfig "" = in-cluster, else ~/.kube/config).
    kubernetes: bool = False
    kubeconfig: str = ""
    # Wasted-bytes analysis: fraction of one core it may use (0 = off), and
    # where its per-layer summaries survive restarts ("" = memory only).
    analysis_cpu: float = 0.25
    state_dir: str = ""
    metrics: MetricsOptions = field(default_factory=MetricsOptions)
    bases: tuple[BaseSpec, ...] = ()


_SCALAR_TYPES: dict[str, type] = {
    "runtime_endpoint": str,
    "namespace": str,
    "snapshotter": str,
    "layer_store": str,
    "storage_root": str,
    "listen_address": str,
    "refresh_interval_seconds": float,
    "rpc_timeout_seconds": float,
    "content_recheck_seconds": float,
    "collect_writable_layers": bool,
    "writable_refresh_seconds": float,
    "node_name": str,
    "host_root": str,
    "log_level": str,
    "web_config_file": str,
    "kubernetes": bool,
    "kubeconfig": str,
    "analysis_cpu": float,
    "state_dir": str,
}
_METRICS_TYPES: dict[str, type] = {
    "images_top_n": int,
    "pods": bool,
    "bases_top_n": int,
    "layers_top_n": int,
}


def _typed(key: str, value: Any, want: type | tuple[type, ...]) -> Any:
    if want is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
        names = " or ".join(w.__name__ for w in (want if isinstance(want, tuple) else (want,)))
        raise ConfigError(f"{key}: expected {names}, got {type(value).__name__} {value!r}")
    return value


def _check_keys(where: str, given: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ConfigError(f"{where}unknown key {unknown[0]!r} (known: {', '.join(sorted(allowed))})")


def parse_bases(value: Any) -> tuple[BaseSpec, ...]:
    """The base-image catalog: a list of {name, version?, diff_ids | image}.

    Entries with the same name are versions of one family: each needs its own
    non-empty version.
    """
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigError("bases: expected a list of {name, version, diff_ids | image}")
    specs = []
    seen: dict[str, list[tuple[int, str]]] = {}
    for i, entry in enumerate(value):
        where = f"bases[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping")
        _check_keys(f"{where}: ", entry, {"name", "version", "diff_ids", "image"})
        name = _typed(f"{where}.name", entry.get("name"), str)
        if not name:
            raise ConfigError(f"{where}.name: must not be empty")
        version = entry.get("version")
        # A YAML 3.10 is the float 3.1: versions must be strings (or integers).
        version = "" if version is None else str(_typed(f"{where}.version", version, (str, int)))
        for j, other in seen.get(name, ()):
            if not version or not other or version == other:
                raise ConfigError(
                    f"bases[{j}] and {where} are both named {name!r}"
                    + (f" with version {version!r}" if version and version == other else "")
                    + ": entries of one name are versions of a family, each needs its own version"
                )
        seen.setdefault(name, []).append((i, version))
        diff_ids = entry.get("diff_ids") or []
        image = entry.get("image") or ""
        if not isinstance(diff_ids, list):
            raise ConfigError(f"{where}.diff_ids: expected a list of sha256 digests")
        for d in diff_ids:
            if not isinstance(d, str) or not DIGEST_RE.match(d):
                raise ConfigError(f"{where}.diff_ids: {d!r} is not a sha256:<64 hex> digest")
        _typed(f"{where}.image", image, str)
        if bool(diff_ids) == bool(image):
            raise ConfigError(f"{where}: give exactly one of diff_ids or image")
        specs.append(BaseSpec(name=name, diff_ids=tuple(diff_ids), image=image, version=version))
    return tuple(specs)


def from_mapping(data: Mapping[str, Any], base: Config | None = None) -> Config:
    """Apply a YAML document (already loaded) on top of `base`."""
    config = base or Config()
    if not isinstance(data, Mapping):
        raise ConfigError("config file: expected a mapping at the top level")
    _check_keys("", data, set(_SCALAR_TYPES) | {"metrics", "bases"})
    changes: dict[str, Any] = {k: _typed(k, v, _SCALAR_TYPES[k]) for k, v in data.items() if k in _SCALAR_TYPES}
    if "metrics" in data:
        metrics = data["metrics"] or {}
        if not isinstance(metrics, Mapping):
            raise ConfigError("metrics: expected a mapping")
        _check_keys("metrics: ", metrics, set(_METRICS_TYPES))
        values = {k: _typed(f"metrics.{k}", v, _METRICS_TYPES[k]) for k, v in metrics.items()}
        changes["metrics"] = dataclasses.replace(config.metrics, **values)
    if "bases" in data:
        changes["bases"] = parse_bases(data["bases"])
    return validate(dataclasses.replace(config, **changes))


def load_file(path: str | Path, base: Config | None = None) -> Config:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    return from_mapping(parse_document(text, f"config file {path}") or {}, base)


def from_environment(env: Mapping[str, str] | None = None) -> Config:
    """Defaults, with the variables a DaemonSet sets."""
    env = os.environ if env is None else env
    changes: dict[str, Any] = {}
    if env.get("CONTAINER_RUNTIME_ENDPOINT"):
        changes["runtime_endpoint"] = env["CONTAINER_RUNTIME_ENDPOINT"]
    # The DaemonSet sets NODE_NAME from the downward API; elsewhere the host is the node.
    changes["node_name"] = env.get("NODE_NAME") or socket.gethostname()
    return dataclasses.replace(Config(), **changes)


def split_listen_address(address: str) -> tuple[str, int]:
    """host:port (host may be empty or [v6]).

    >>> split_listen_address(":9877")
    ('0.0.0.0', 9877)
    >>> split_listen_address("[::1]:8080")
    ('::1', 8080)
    """
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"listen_address: expected host:port, got {address!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def validate(config: Config) -> Config:
    """Check values that a type alone does not; normalize the endpoint."""
    try:
        endpoint = normalize_endpoint(config.runtime_endpoint)
    except ParseError as exc:
        raise ConfigError(f"runtime_endpoint: {exc}") from None
    split_listen_address(config.listen_address)
    for key in (
        "refresh_interval_seconds",
        "rpc_timeout_seconds",
        "content_recheck_seconds",
        "writable_refresh_seconds",
    ):
        if getattr(config, key) <= 0:
            raise ConfigError(f"{key}: must be > 0, got {getattr(config, key)}")
    if not 0 <= config.analysis_cpu <= 64:
        raise ConfigError(f"analysis_cpu: expected a fraction of one core, 0 (off) to 64, got {config.analysis_cpu}")
    if config.log_level not in LOG_LEVELS:
        raise ConfigError(f"log_level: expected one of {', '.join(LOG_LEVELS)}, got {config.log_level!r}")
    for key in ("images_top_n", "bases_top_n", "layers_top_n"):
        if getattr(config.metrics, key) < 0:
            raise ConfigError(f"metrics.{key}: must be >= 0")
    if not config.namespace:
        raise ConfigError("namespace: must not be empty")
    if config.layer_store not in LAYER_STORES:
        raise ConfigError(f"layer_store: expected one of {', '.join(LAYER_STORES)}, got {config.layer_store!r}")
    if not config.storage_root.startswith("/"):
        raise ConfigError(f"storage_root: expected an absolute path, got {config.storage_root!r}")
    return dataclasses.replace(config, runtime_endpoint=endpoint)
