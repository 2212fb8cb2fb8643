"""The command line's flags, and how they combine with the environment and the config file."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from exporter import __version__
from exporter import config as config_mod
from exporter.config import Config
from exporter.sources.node import DEFAULT_STORAGE_ROOT, LAYER_STORES

EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="layer-sharing-exporter", description="Shared versus unique image layer bytes on a node.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = _Parser(add_help=False)
    common.add_argument(
        "--runtime-endpoint",
        help="CRI socket: unix:///path or /path "
        "(default: $CONTAINER_RUNTIME_ENDPOINT, else unix:///run/containerd/containerd.sock)",
    )
    common.add_argument("--config", metavar="FILE", help="YAML config file; every option can be set there")
    common.add_argument("--namespace", help="containerd namespace of the CRI plugin (default k8s.io)")
    common.add_argument(
        "--snapshotter", help="snapshotter holding the layers (default: the one the runtime's CRI plugin uses)"
    )
    common.add_argument(
        "--layer-store",
        choices=LAYER_STORES,
        help="where layer sizes come from: containerd's snapshotter, or containers-storage (CRI-O) metadata files; "
        "auto picks containers-storage when the CRI runtime is cri-o (default auto)",
    )
    common.add_argument(
        "--storage-root",
        metavar="DIR",
        help="containers-storage graph root holding overlay-layers/ and overlay-images/ "
        f"(default {DEFAULT_STORAGE_ROOT})",
    )
    common.add_argument(
        "--rpc-timeout", type=float, dest="rpc_timeout_seconds", help="seconds per runtime call (default 5)"
    )
    common.add_argument("--log-level", choices=config_mod.LOG_LEVELS, help="default info")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", parents=[common], help="export Prometheus metrics")
    serve.add_argument("--listen-address", help="host:port for /metrics (default 0.0.0.0:9877)")
    serve.add_argument(
        "--refresh-interval",
        type=float,
        dest="refresh_interval_seconds",
        help="seconds between runtime refreshes (default 30)",
    )
    serve.add_argument("--node-name", help="node name reported (default $NODE_NAME)")
    serve.add_argument(
        "--kubernetes",
        action="store_true",
        default=None,
        help="attribute pods to workloads from the Kubernetes API (watches this node's pods)",
    )
    serve.add_argument("--kubeconfig", metavar="FILE", help="kubeconfig for --kubernetes (default: in-cluster)")
    serve.add_argument(
        "--web-config-file",
        metavar="FILE",
        help="TLS and basic auth for /metrics (Prometheus exporter-toolkit web config format)",
    )

    serve.add_argument(
        "--analysis-cpu",
        type=float,
        dest="analysis_cpu",
        metavar="FRACTION",
        help="fraction of one core the wasted-bytes analysis may use (default 0.25; 0 turns it off)",
    )
    serve.add_argument(
        "--state-dir",
        metavar="DIR",
        help="directory keeping per-layer analysis summaries across restarts (default: memory only)",
    )

    df = sub.add_parser("df", parents=[common], help="print the node's layer sharing as a table")
    df.add_argument("--pods", action="store_true", help="show pods instead of images")
    df.add_argument("--image", metavar="REF", help="show one image's layers (tag, digest or ID)")
    df.add_argument("--output", "-o", choices=("table", "json"), default="table")

    report = sub.add_parser("report", help="a cluster-wide report from every exporter (Prometheus or the API)")
    source = report.add_mutually_exclusive_group()
    source.add_argument("--prometheus-url", metavar="URL", help="read the exporters' metrics from Prometheus")
    source.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="read each exporter pod through the API server's pod "
        "proxy (default when no --prometheus-url; in-cluster config or ~/.kube/config)",
    )
    report.add_argument(
        "--prometheus-selector",
        default="",
        metavar="MATCHERS",
        help="extra PromQL matchers for every query, e.g. 'cluster=\"prod-eu\"' (one cluster of a Thanos or Mimir)",
    )
    report.add_argument("--exporter-namespace", default="", help="namespace of the exporter pods (default: all)")
    report.add_argument(
        "--selector",
        default="app.kubernetes.io/name=layer-sharing-exporter",
        help="label selector of the exporter pods",
    )
    report.add_argument("--port", type=int, default=9877, help="the exporters' metrics port")
    report.add_argument(
        "--scheme",
        choices=("auto", "http", "https"),
        default="auto",
        help="how the exporters serve /metrics through the pod proxy (auto: as each pod's probes say; "
        "https when the chart's webConfig.tls is on)",
    )
    report.add_argument("--timeout", type=float, default=10.0, help="seconds per node (or per Prometheus query)")
    report.add_argument(
        "--view", default="nodes", help="table and csv: what to list: nodes (default), bases, workloads or images"
    )
    report.add_argument("--sort", default="", help="column to sort by (default: the largest bytes first)")
    report.add_argument("--top", type=int, default=0, help="show only the first N rows")
    report.add_argument(
        "--output",
        "-o",
        nargs="+",
        default=["table"],
        metavar="FORMAT",
        help="table (default), json, csv, or html FILE (a self-contained page)",
    )
    catalog = sub.add_parser(
        "catalog",
        help="resolve base image references to catalog entries (name, version, diff_ids) from their registries",
    )
    catalog.add_argument(
        "refs",
        nargs="+",
        metavar="[NAME=]REF",
        help="image references (tag or digest); NAME= names the family (default: the reference without tag)",
    )
    catalog.add_argument(
        "--platform", default="", help="os/architecture[/variant] of an index to read (default: this machine's)"
    )
    catalog.add_argument(
        "--registry-endpoint",
        action="append",
        default=[],
        metavar="NAME=URL",
        help="where a registry's API is served (mirrors; Docker Hub's API is not at docker.io); repeatable",
    )
    catalog.add_argument("--timeout", type=float, default=30.0, help="seconds per registry request")
    return parser


_FLAG_KEYS = (
    "runtime_endpoint",
    "namespace",
    "snapshotter",
    "layer_store",
    "storage_root",
    "rpc_timeout_seconds",
    "log_level",
    "listen_address",
    "refresh_interval_seconds",
    "node_name",
    "web_config_file",
    "kubernetes",
    "kubeconfig",
    "analysis_cpu",
    "state_dir",
)


def resolve_config(args: argparse.Namespace) -> Config:
    """defaults < environment < --config file < flags."""
    config = config_mod.from_environment()
    if args.config:
        config = config_mod.load_file(args.config, config)
    flags: dict[str, Any] = {k: getattr(args, k) for k in _FLAG_KEYS if getattr(args, k, None) is not None}
    return config_mod.validate(dataclasses.replace(config, **flags))
