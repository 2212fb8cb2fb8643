"""`serve`: the runtime source, the refresh loop and the HTTP server, wired and run until SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from exporter import __version__
from exporter import config as config_mod
from exporter.cli.args import EXIT_OK, EXIT_USAGE
from exporter.cli.memory import limit_malloc_arenas, release_free_memory
from exporter.cli.runtime import runtime_source
from exporter.config import Config
from exporter.errors import ConfigError
from exporter.service import Refresher

logger = logging.getLogger("exporter")


def serve(config: Config) -> int:
    from exporter.outputs import webconfig
    from exporter.outputs.server import MetricsServer  # the df path needs no HTTP server

    host, port = config_mod.split_listen_address(config.listen_address)
    try:
        web = webconfig.load(config.web_config_file) if config.web_config_file else None
    except ConfigError as exc:
        print(f"layer-sharing-exporter: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    limit_malloc_arenas()
    runtime = runtime_source(config)
    workloads = None
    if config.kubernetes:
        from exporter.sources.kubernetes.workloads import PodWorkloads

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
