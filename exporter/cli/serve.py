"""`serve`: the runtime source, the refresh loop and the HTTP server, wired and run until SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from exporter import __version__
from exporter import config as config_mod
from exporter.cli.args import EXIT_OK, EXIT_USAGE
from exporter.cli.runtime import runtime_source
from exporter.config import Config
from exporter.core.state import WasteReport
from exporter.errors import ConfigError
from exporter.service import Refresher
from exporter.sources.node import RuntimeSource

if TYPE_CHECKING:
    from exporter.analysis import LayerAnalyzer

logger = logging.getLogger("exporter")


def _analyzer(
    config: Config, runtime: RuntimeSource, publish: Callable[[WasteReport], None]
) -> LayerAnalyzer | None:
    """The background wasted-bytes analysis, unless it is off or the layer store has no blobs to read."""
    reader = runtime.blob_reader()
    if config.analysis_cpu <= 0 or reader is None:
        return None
    from pathlib import Path

    from exporter.analysis import AnalysisOptions, LayerAnalyzer

    options = AnalysisOptions(
        cpu_fraction=config.analysis_cpu,
        state_dir=Path(config.state_dir) if config.state_dir else None,
        retry_seconds=config.content_recheck_seconds,
    )
    return LayerAnalyzer(reader, options, publish=publish)


def serve(config: Config) -> int:
    from exporter.outputs import webconfig
    from exporter.outputs.metrics_store import MetricsStore
    from exporter.outputs.server import MetricsServer  # the df path needs no HTTP server

    host, port = config_mod.split_listen_address(config.listen_address)
    try:
        web = webconfig.load(config.web_config_file) if config.web_config_file else None
    except ConfigError as exc:
        print(f"layer-sharing-exporter: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    runtime = runtime_source(config)
    workloads = None
    if config.kubernetes:
        from exporter.sources.kubernetes.workloads import PodWorkloads

        kube = PodWorkloads(config.node_name, config.kubeconfig)
        if kube.start():
            workloads = kube.workloads
    store = MetricsStore(config.metrics)
    analyzer = _analyzer(config, runtime, store.publish_waste)
    refresher = Refresher(
        runtime,
        store,
        config.bases,
        config.refresh_interval_seconds,
        workloads=workloads,
        observer=analyzer,
    )
    try:
        server = MetricsServer(store, refresher.loop_alive, host, port, web)
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
    if analyzer is not None:
        analysis = threading.Thread(target=analyzer.run, args=(stop,), name="analysis", daemon=True)
        analysis.start()
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
    if analyzer is not None:
        analyzer.stop()
    server.shutdown()
    loop.join(timeout=config.rpc_timeout_seconds + 1)
    if analyzer is not None:
        analysis.join(timeout=config.rpc_timeout_seconds + 1)
    runtime.close()
    return EXIT_OK
