"""Command line: `layer-sharing-exporter serve | df`.

Wiring only: parse flags into a Config, build the adapter and the refresher,
and run. Exit codes: 0 ok, 1 runtime unreachable (df), 2 bad flags or config.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from exporter import __version__
from exporter import config as config_mod
from exporter.config import Config, ConfigError
from exporter.runtime import ContainerdRuntime, RuntimeOptions, RuntimeUnavailableError
from exporter.service import Refresher

logger = logging.getLogger("exporter")

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
    common.add_argument("--snapshotter", help="snapshotter holding the layers (default overlayfs)")
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
        help="extra PromQL matchers, e.g. 'job=\"layer-sharing-exporter\"'",
    )
    report.add_argument("--exporter-namespace", default="", help="namespace of the exporter pods (default: all)")
    report.add_argument(
        "--selector",
        default="app.kubernetes.io/name=layer-sharing-exporter",
        help="label selector of the exporter pods",
    )
    report.add_argument("--port", type=int, default=9877, help="the exporters' metrics port")
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
    return parser


_FLAG_KEYS = (
    "runtime_endpoint",
    "namespace",
    "snapshotter",
    "rpc_timeout_seconds",
    "log_level",
    "listen_address",
    "refresh_interval_seconds",
    "node_name",
    "web_config_file",
    "kubernetes",
    "kubeconfig",
)


def resolve_config(args: argparse.Namespace) -> Config:
    """defaults < environment < --config file < flags."""
    config = config_mod.from_environment()
    if args.config:
        config = config_mod.load_file(args.config, config)
    flags: dict[str, Any] = {k: getattr(args, k) for k in _FLAG_KEYS if getattr(args, k, None) is not None}
    return config_mod.validate(dataclasses.replace(config, **flags))


def runtime_options(config: Config, keep_history: bool = False) -> RuntimeOptions:
    return RuntimeOptions(
        endpoint=config.runtime_endpoint,
        namespace=config.namespace,
        snapshotter=config.snapshotter,
        rpc_timeout=config.rpc_timeout_seconds,
        node_name=config.node_name,
        host_root=config.host_root,
        collect_writable_layers=config.collect_writable_layers,
        writable_refresh_seconds=config.writable_refresh_seconds,
        content_recheck_seconds=config.content_recheck_seconds,
        keep_history=keep_history,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "report":
        from exporter.report_cli import run_report

        return run_report(args)
    try:
        config = resolve_config(args)
    except ConfigError as exc:
        print(f"layer-sharing-exporter: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.command == "serve":
        return serve(config)
    return df(config, args)


def serve(config: Config) -> int:
    from exporter import webconfig
    from exporter.server import MetricsServer  # the df path needs no HTTP server

    host, port = config_mod.split_listen_address(config.listen_address)
    try:
        web = webconfig.load(config.web_config_file) if config.web_config_file else None
    except ConfigError as exc:
        print(f"layer-sharing-exporter: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    limit_malloc_arenas()
    runtime = ContainerdRuntime(runtime_options(config))
    workloads = None
    if config.kubernetes:
        from exporter.kube import PodWorkloads

        kube = PodWorkloads(config.node_name, config.kubeconfig)
        if kube.start():
            workloads = kube.workloads
    refresher = Refresher(
        runtime, config.bases, config.refresh_interval_seconds, after_refresh=release_free_memory, workloads=workloads
    )
    try:
        server = MetricsServer(refresher, config.metrics, host, port, web)
    except OSError as exc:
        print(f"layer-sharing-exporter: cannot listen on {config.listen_address}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    loop = threading.Thread(target=refresher.run, args=(stop,), name="refresh", daemon=True)
    http = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    loop.start()
    http.start()
    logger.info(
        "layer-sharing-exporter %s serving on %s://%s:%d, runtime %s every %gs",
        __version__,
        "https" if web and web.tls else "http",
        host,
        server.port,
        config.runtime_endpoint,
        config.refresh_interval_seconds,
    )
    stop.wait()
    server.shutdown()
    loop.join(timeout=config.rpc_timeout_seconds + 1)
    runtime.close()
    return EXIT_OK


def kubectl_main() -> int:
    """`kubectl layer-sharing ...` (installed as kubectl-layer_sharing) is the report."""
    return main(["report", *sys.argv[1:]])


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread malloc arenas (gRPC and HTTP threads each get one).

    The same as MALLOC_ARENA_MAX=2, set before any thread starts: it measured
    less RSS on a busy node (benchmarks/). No-op off glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def release_free_memory() -> None:
    """Hand memory freed by a refresh back to the OS (glibc malloc_trim); no-op elsewhere."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def df(config: Config, args: argparse.Namespace) -> int:
    # Imported per command, as the report is: `serve` never loads them (its
    # memory is budgeted, benchmarks/busy_node.py).
    from exporter import df as df_mod
    from exporter.accounting import account

    runtime = ContainerdRuntime(runtime_options(config, keep_history=bool(args.image)))
    try:
        facts = runtime.snapshot()
    except RuntimeUnavailableError as exc:
        print(f"layer-sharing-exporter: runtime {config.runtime_endpoint} unreachable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        runtime.close()
    report = account(facts, config.bases)
    if args.image:
        image = report.image(args.image)
        if image is None:
            print(f"layer-sharing-exporter: no image {args.image!r} on this node", file=sys.stderr)
            return EXIT_UNAVAILABLE
        rows = df_mod.image_layers(report, facts, image)
        if args.output == "json":
            print(df_mod.to_json({"image": image.name, "image_id": image.image_id, "layers": rows}))
        else:
            print(
                f"{image.name} ({image.image_id}): size {df_mod.human_bytes(image.size)}, "
                f"shared {df_mod.human_bytes(image.shared)}, unique {df_mod.human_bytes(image.unique)}, "
                f"base {image.base}\n"
            )
            print(df_mod.image_layers_table(rows))
        return EXIT_OK
    if args.output == "json":
        print(df_mod.to_json(df_mod.report_dict(report)))
    elif args.pods:
        print(df_mod.summary(report) + "\n\n" + df_mod.pods_table(report))
    else:
        print("\n\n".join((df_mod.summary(report), df_mod.images_table(report), df_mod.bases_table(report))))
    return EXIT_OK
