"""`serve`: the runtime source, the refresh loop, the layer analysis and the HTTP server, run until SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from exporter import __version__
from exporter import config as config_mod
from exporter.analysis import LayerAnalyzer
from exporter.cli.exit_codes import EXIT_OK, EXIT_USAGE
from exporter.cli.runtime import runtime_source
from exporter.config import Config
from exporter.errors import ConfigError
from exporter.outputs import webconfig
from exporter.outputs.metrics_store import MetricsStore
from exporter.outputs.server import MetricsServer
from exporter.service import Refresher
from exporter.sources.kubernetes.workloads import PodWorkloads

logger = logging.getLogger("exporter")


def stop_on_termination() -> threading.Event:
    """An event SIGTERM or SIGINT sets (the kubelet stops a pod with SIGTERM)."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def wait_for_termination(stop: threading.Event) -> None:
    """Block the main thread until `stop` is set. In slices: a signal the kernel hands to
    another thread does not wake a main thread blocked on a lock, and Python runs its handler
    only in the main thread, so an unbounded wait could miss SIGTERM for good (seen once in CI:
    the pod would then be killed at its grace period)."""
    while not stop.wait(0.5):
        pass


def serve(config: Config) -> int:
    host, port = config_mod.split_listen_address(config.serve.listen_address)
    try:
        web = webconfig.load(config.serve.web_config_file) if config.serve.web_config_file else None
    except ConfigError as exc:
        print(f"layer-sharing-exporter: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    runtime = runtime_source(config)
    workloads = None
    if config.serve.kubernetes:
        kube = PodWorkloads(config.runtime.node_name, config.serve.kubeconfig)
        if kube.start():
            workloads = kube.workloads
    store = MetricsStore(config.metrics, lambda: runtime.calls)
    analyzer = None
    if config.analysis.cpu_fraction > 0:
        analyzer = LayerAnalyzer(runtime, config.analysis, publish=store.publish_waste)
    refresher = Refresher(
        runtime,
        store,
        config.bases,
        config.serve.refresh_interval_seconds,
        workloads=workloads,
        observer=analyzer,
    )
    try:
        server = MetricsServer(store, refresher.loop_alive, host, port, web)
    except OSError as exc:
        print(
            f"layer-sharing-exporter: cannot listen on {config.serve.listen_address}: {exc.strerror}", file=sys.stderr
        )
        return EXIT_USAGE
    stop = stop_on_termination()
    threads = [
        threading.Thread(target=refresher.run, args=(stop,), name="refresh", daemon=True),
        threading.Thread(target=server.serve_forever, name="http", daemon=True),
    ]
    if analyzer is not None:
        threads.append(threading.Thread(target=analyzer.run, args=(stop,), name="analysis", daemon=True))
    for thread in threads:
        thread.start()
    logger.info(
        "layer-sharing-exporter %s serving on %s://%s:%d, runtime %s every %gs",
        __version__,
        "https" if web and web.tls else "http",
        host,
        server.port,
        config.runtime.endpoint,
        config.serve.refresh_interval_seconds,
    )
    wait_for_termination(stop)
    if analyzer is not None:
        analyzer.stop()
    server.shutdown()
    for thread in threads:
        if thread.name != "http":
            thread.join(timeout=config.runtime.rpc_timeout + 1)
    runtime.close()
    return EXIT_OK
