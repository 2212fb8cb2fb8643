"""The command line's flags, and how they combine with the environment and the config file."""

from __future__ import annotations

import argparse

from exporter import __version__
from exporter import config as config_mod
from exporter.cli import pull_cost, wasted
from exporter.cli.exit_codes import EXIT_USAGE
from exporter.cli.prometheus_flags import add_prometheus_flags
from exporter.cli.registry_access import add_registry_flags
from exporter.sources.kubernetes.pod_proxy import SCHEMES


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="layer-sharing-exporter", description="Shared versus unique image layer bytes on a node.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = _Parser(add_help=False)
    common.add_argument("--config", metavar="FILE", help="YAML config file; every option can be set there")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", parents=[common], help="export Prometheus metrics")
    config_mod.add_flags(serve, "serve")

    df = sub.add_parser("df", parents=[common], help="print the node's layer sharing as a table")
    config_mod.add_flags(df, "df")
    df.add_argument("--pods", action="store_true", help="show pods instead of images")
    df.add_argument("--image", metavar="REF", help="show one image's layers (tag, digest or ID)")
    df.add_argument(
        "--output",
        "-o",
        choices=("table", "wide", "json", "yaml"),
        default="table",
        help="table (default); wide adds columns; json and yaml give every figure as exact integers of bytes",
    )
    df.add_argument("--no-trunc", action="store_true", help="whole digests and history steps in the tables")

    report = sub.add_parser("report", help="a cluster-wide report from every exporter (Prometheus or the API)")
    add_report_arguments(report)
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
    add_registry_flags(catalog)
    pull_cost.add_parser(sub)
    wasted.add_parser(sub)
    return parser


def add_report_arguments(report: argparse.ArgumentParser) -> None:
    """The report's flags: those of `report`, and of `kubectl layer-sharing`."""
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
    add_prometheus_flags(report)  # credentials, TLS, tenant
    report.add_argument(
        "--exporter-namespace",
        "-n",
        "--namespace",
        dest="exporter_namespace",
        default="",
        help="namespace of the exporter pods (default: all)",
    )
    report.add_argument("--context", default="", help="the kubeconfig context to use (default: its current one)")
    report.add_argument(
        "--selector",
        default="app.kubernetes.io/name=layer-sharing-exporter",
        help="label selector of the exporter pods",
    )
    report.add_argument("--port", type=int, default=9877, help="the exporters' metrics port")
    report.add_argument(
        "--scheme",
        choices=SCHEMES,
        default="auto",
        help="how the exporters serve /metrics through the pod proxy (auto: as each pod's probes say; "
        "the chart's probes use https whenever its web config serves TLS)",
    )
    report.add_argument("--timeout", type=float, default=10.0, help="seconds per node (or per Prometheus query)")
    report.add_argument(
        "--view",
        default="nodes",
        help="table and csv: what to list: nodes (default), bases, workloads, images or wasted; "
        "pull-cost REF... (what each node would pull to run REF) or locality (every running workload's "
        "cold start per node) ask each exporter through the pod proxy",
    )
    report.add_argument("refs", nargs="*", metavar="REF", help="--view pull-cost: image references, pulled in order")
    # --platform and --registry-endpoint: the registry flags `wasted` adds (shared with --view wasted).
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
    serving = report.add_argument_group("--view locality as a service (the chart's locality Deployment)")
    serving.add_argument(
        "--listen-port",
        type=int,
        default=-1,
        metavar="PORT",
        help="measure every --every seconds and serve the figures as Prometheus metrics on PORT "
        "(/metrics, /healthz, /readyz) instead of printing once; --top caps the workloads exported (default 100)",
    )
    serving.add_argument("--listen-address", default="0.0.0.0", help="address to serve on (default 0.0.0.0)")
    serving.add_argument("--every", type=float, default=600.0, help="seconds between runs (default 600)")
    serving.add_argument("--web-config-file", default="", help="TLS and basic auth, as the exporter's serve takes it")
    add_registry_flags(report, timeout=False)  # --view wasted and pull-cost read registries
    wasted.add_cache_flags(report)


def build_kubectl_parser() -> argparse.ArgumentParser:
    """`kubectl layer-sharing`: the report as a kubectl plugin, named as typed, with kubectl's
    global flags (--kubeconfig, --context, -n/--namespace)."""
    parser = _Parser(prog="kubectl layer-sharing", description="A cluster-wide layer sharing report.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    add_report_arguments(parser)
    parser.set_defaults(command="report")
    return parser
