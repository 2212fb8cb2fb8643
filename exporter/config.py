"""Configuration: defaults < environment < YAML file < command-line flags.

Each setting is declared once, as an `option` field of the options class that
uses it (exporter.options); `Config` gathers those classes. The file's keys and
their types, the flags and their help, and the checks are all derived from
those declarations, and each options object is handed as it is to what it
configures. The file also holds the base-image catalog. Invalid values raise
`ConfigError` with a message naming the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.analysis import AnalysisOptions
from exporter.core.bases import BaseSpec
from exporter.documents import parse_document
from exporter.errors import ConfigError, ParseError
from exporter.options import RUNTIME_COMMANDS, Option, option, section
from exporter.outputs.collector import MetricsOptions
from exporter.sources.grpc_client import normalize_endpoint
from exporter.sources.node import RuntimeOptions
from exporter.sources.oci import DIGEST_RE

LOG_LEVELS = ("debug", "info", "warning", "error")
# Config file keys that were renamed: the old name is still read.
RENAMED_KEYS = {"namespace": "containerd_namespace"}


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """The HTTP endpoint and the refresh loop of `serve`."""

    listen_address: str = option("0.0.0.0:9877", "host:port for /metrics", flag="--listen-address")
    refresh_interval_seconds: float = option(
        30.0, "seconds between runtime refreshes", flag="--refresh-interval", positive=True
    )
    web_config_file: str = option(
        "",
        "TLS and basic auth for /metrics (Prometheus exporter-toolkit web config format)",
        flag="--web-config-file",
        metavar="FILE",
    )
    kubernetes: bool = option(
        False, "attribute pods to workloads from the Kubernetes API (watches this node's pods)", flag="--kubernetes"
    )
    kubeconfig: str = option(
        "", "kubeconfig for --kubernetes (default: in-cluster)", flag="--kubeconfig", metavar="FILE"
    )


@dataclass(frozen=True, slots=True)
class Config:
    runtime: RuntimeOptions = section(RuntimeOptions)
    serve: ServeOptions = section(ServeOptions)
    analysis: AnalysisOptions = section(AnalysisOptions)
    metrics: MetricsOptions = section(MetricsOptions, "metrics")
    log_level: str = option("info", "log level", flag="--log-level", commands=RUNTIME_COMMANDS, choices=LOG_LEVELS)
    bases: tuple[BaseSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: where it sits in Config, its file key, its type and its declaration."""

    path: tuple[str, ...]  # attribute names from Config down to the field
    key: str  # the file key; "section.key" for a setting under a section
    type: type
    default: Any
    option: Option

    @property
    def dest(self) -> str:
        """The argparse destination of its flag."""
        return "option_" + self.key.replace(".", "_")


def _settings(cls: type, path: tuple[str, ...] = (), prefix: str = "") -> Iterator[Setting]:
    hints = typing.get_type_hints(cls)
    instance = cls()
    for field in dataclasses.fields(cls):
        if "section" in field.metadata:
            name = field.metadata["section"]
            yield from _settings(hints[field.name], (*path, field.name), f"{prefix}{name}." if name else prefix)
        elif "option" in field.metadata:
            declared: Option = field.metadata["option"]
            key = prefix + (declared.key or field.name)
            yield Setting((*path, field.name), key, hints[field.name], getattr(instance, field.name), declared)


SETTINGS: tuple[Setting, ...] = tuple(_settings(Config))
_BY_KEY = {setting.key: setting for setting in SETTINGS}
assert len(_BY_KEY) == len(SETTINGS), "two settings share a config file key"
_SECTIONS = {key.split(".")[0] for key in _BY_KEY if "." in key}


def _get(config: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        config = getattr(config, name)
    return config


def _replace(config: Any, path: tuple[str, ...], value: Any) -> Any:
    """`config` with the field at `path` set to `value` (frozen dataclasses all the way down)."""
    if len(path) == 1:
        return dataclasses.replace(config, **{path[0]: value})
    inner = getattr(config, path[0])
    return dataclasses.replace(config, **{path[0]: _replace(inner, path[1:], value)})


def with_settings(config: Config, values: Mapping[str, Any]) -> Config:
    """`config` with settings replaced by file key (values already typed)."""
    for key, value in values.items():
        config = _replace(config, _BY_KEY[key].path, value)
    return config


def setting_value(config: Config, key: str) -> Any:
    return _get(config, _BY_KEY[key].path)


def _list_item_type(want: Any) -> type | None:
    """For a list setting, declared `tuple[X, ...]`, its items' type X (else None)."""
    if typing.get_origin(want) is tuple:
        item, ellipsis = typing.get_args(want)
        assert ellipsis is Ellipsis, f"list settings are declared tuple[X, ...], not {want}"
        return typing.cast(type, item)
    return None


def _typed_list(key: str, value: Any, item: type) -> tuple[Any, ...]:
    """A YAML list (or nothing) as the tuple a list setting holds; each item checked."""
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{key}: expected a list of {item.__name__}, got {type(value).__name__} {value!r}")
    return tuple(_typed(f"{key}[{i}]", element, item) for i, element in enumerate(value))


def _typed(key: str, value: Any, want: type | tuple[type, ...]) -> Any:
    item = _list_item_type(want)
    if item is not None:
        return _typed_list(key, value, item)
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
    """Apply a config document (already loaded) on top of `base`."""
    config = base or Config()
    if not isinstance(data, Mapping):
        raise ConfigError("config file: expected a mapping at the top level")
    data = {RENAMED_KEYS.get(key, key): value for key, value in data.items()}
    top_level = {key for key in _BY_KEY if "." not in key}
    _check_keys("", data, top_level | _SECTIONS | {"bases"})
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SECTIONS:
            inner = value or {}
            if not isinstance(inner, Mapping):
                raise ConfigError(f"{key}: expected a mapping")
            known = {k.split(".", 1)[1] for k in _BY_KEY if k.startswith(key + ".")}
            _check_keys(f"{key}: ", inner, known)
            values.update({f"{key}.{k}": v for k, v in inner.items()})
        elif key != "bases":
            values[key] = value
    typed = {key: _typed(key, value, _BY_KEY[key].type) for key, value in values.items()}
    config = with_settings(config, typed)
    if "bases" in data:
        config = dataclasses.replace(config, bases=parse_bases(data["bases"]))
    return validate(config)


def load_file(path: str | Path, base: Config | None = None) -> Config:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    return from_mapping(parse_document(text, f"config file {path}") or {}, base)


def from_environment(env: Mapping[str, str] | None = None) -> Config:
    """Defaults, with the variables a DaemonSet sets."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if env.get("CONTAINER_RUNTIME_ENDPOINT"):
        values["runtime_endpoint"] = env["CONTAINER_RUNTIME_ENDPOINT"]
    # The DaemonSet sets NODE_NAME from the downward API; elsewhere the host is the node.
    values["node_name"] = env.get("NODE_NAME") or socket.gethostname()
    return with_settings(Config(), values)


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


def _check(setting: Setting, value: Any) -> None:
    declared = setting.option
    if isinstance(value, tuple):
        for element in value:  # a list setting: each item against the declaration
            _check(dataclasses.replace(setting, type=type(element)), element)
        return
    if declared.choices and value not in declared.choices:
        raise ConfigError(f"{setting.key}: expected one of {', '.join(declared.choices)}, got {value!r}")
    if declared.positive and value <= 0:
        raise ConfigError(f"{setting.key}: must be > 0, got {value}")
    if declared.minimum is not None and value < declared.minimum:
        raise ConfigError(f"{setting.key}: must be >= {declared.minimum:g}, got {value}")
    if declared.maximum is not None and value > declared.maximum:
        raise ConfigError(f"{setting.key}: must be <= {declared.maximum:g}, got {value}")


def validate(config: Config) -> Config:
    """Check every setting against its declaration, and what a type alone does not; normalize the endpoint."""
    for setting in SETTINGS:
        _check(setting, _get(config, setting.path))
    try:
        endpoint = normalize_endpoint(config.runtime.endpoint)
    except ParseError as exc:
        raise ConfigError(f"runtime_endpoint: {exc}") from None
    split_listen_address(config.serve.listen_address)
    if config.metrics.image_gc_low_threshold_percent >= config.metrics.image_gc_high_threshold_percent:
        raise ConfigError(
            "metrics.image_gc_low_threshold_percent: must be below image_gc_high_threshold_percent "
            f"({config.metrics.image_gc_low_threshold_percent} >= {config.metrics.image_gc_high_threshold_percent}), "
            "as the kubelet requires"
        )
    if not config.runtime.containerd_namespace:
        raise ConfigError("containerd_namespace: must not be empty")
    if not config.runtime.containers_storage.storage_root.startswith("/"):
        raise ConfigError(
            f"storage_root: expected an absolute path, got {config.runtime.containers_storage.storage_root!r}"
        )
    return with_settings(config, {"runtime_endpoint": endpoint})


# -- command-line flags ------------------------------------------------------------


def add_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """The flags of `command`'s settings, with their help and defaults, as declared."""
    for setting in SETTINGS:
        declared = setting.option
        if not declared.flag or command not in declared.commands:
            continue
        shown = f'"{setting.default}"' if setting.default == "" else setting.default
        help_text = f"{declared.help} (default {shown}; config key {setting.key})"
        item = _list_item_type(setting.type)
        if item is not None:  # a list setting: the flag may be given several times
            parser.add_argument(
                declared.flag,
                dest=setting.dest,
                action="append",
                type=item,
                choices=declared.choices or None,
                metavar=declared.metavar,
                default=None,
                help=help_text,
            )
            continue
        if setting.type is bool:
            parser.add_argument(
                declared.flag,
                dest=setting.dest,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
            continue
        parser.add_argument(
            declared.flag,
            dest=setting.dest,
            type=setting.type,
            choices=declared.choices or None,
            metavar=declared.metavar,
            default=None,
            help=help_text,
        )


def with_flags(config: Config, args: argparse.Namespace) -> Config:
    """`config` with the settings given as flags."""
    given = {
        setting.key: tuple(value) if isinstance(value, list) else value
        for setting in SETTINGS
        if (value := getattr(args, setting.dest, None)) is not None
    }
    return validate(with_settings(config, given))


def resolve(args: argparse.Namespace) -> Config:
    """A command's configuration: defaults < environment < its --config file < its flags."""
    config = from_environment()
    if args.config:
        config = load_file(args.config, config)
    return with_flags(config, args)
