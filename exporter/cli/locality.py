"""`report --view locality`: every running workload's cold start on every node its pods may
be scheduled on (exporter.core.placement), once (printed) or every `--every` seconds as
Prometheus metrics (`--listen-port`).

Wiring only: the workloads and exporter pods come from the Kubernetes API, each
distinct reference is resolved once per run through its registry, each node
answers what it holds (GET /pull-cost through the pod proxy), and
exporter.core.pull_cost.workload_locality does the accounting.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from dataclasses import dataclass

from exporter.cli.exit_codes import EXIT_OK, EXIT_USAGE
from exporter.core.placement import ClusterNode, may_schedule
from exporter.core.pull_cost import RemoteImage, WorkloadLocality, workload_locality
from exporter.outputs.locality_metrics import LocalityRun, LocalityStore

logger = logging.getLogger("layer_sharing_exporter.locality")

# Workloads exported when --top is not given: a few series each.
DEFAULT_TOP_N = 100
# report's exit codes for a run that yields nothing (exporter.cli.report).
EXIT_NO_DATA, EXIT_UNREACHABLE = 3, 4


@dataclass(frozen=True)
class LocalityFailedError(Exception):
    """A run that yields no figure: why, and report's exit code for it."""

    message: str
    exit_code: int

    def __str__(self) -> str:
        return self.message


def measure(args: argparse.Namespace) -> LocalityRun:
    """One run over the cluster as `args` say to reach it. Raises LocalityFailedError
    (nothing measured) and ValueError (bad flags)."""
    from exporter.cli.pull_cost import _one_line, _remote_image
    from exporter.cli.registry_access import registry_client, wanted_platform
    from exporter.sources import registry
    from exporter.sources.kubernetes import pod_proxy

    started = time.monotonic()
    wanted = wanted_platform(args)
    client = registry_client(args)  # a new one each run: its digest cache lasts one run, as tags move
    kubeconfig = args.kubeconfig or ""
    problems: list[str] = []
    parsed: dict[str, registry.ImageReference] = {}
    try:
        workloads = pod_proxy.running_workloads(kubeconfig, args.context)
        pods = pod_proxy.exporter_pods(
            kubeconfig, args.exporter_namespace, args.selector, args.scheme, context=args.context
        )
    except Exception as exc:  # the API server as a whole failed: say why, in one line
        raise LocalityFailedError(_one_line(str(exc)), EXIT_UNREACHABLE) from exc
    if not pods:
        raise LocalityFailedError(f"no running exporter pods match {args.selector!r}", EXIT_NO_DATA)
    try:
        nodes: dict[str, ClusterNode] | None = pod_proxy.cluster_nodes(kubeconfig, args.context)
    except Exception as exc:  # e.g. no RBAC for nodes: still an answer, with every node counted
        nodes = None
        problems.append(f"nodes not readable, every node answering counted for every workload: {_one_line(str(exc))}")
    for name, workload in workloads.items():
        for text in workload.images:
            try:
                parsed.setdefault(text, registry.parse_strict_reference(text))
            except ValueError as exc:
                problems.append(f"workload {name}: {exc}")
    texts = list(parsed)
    resolved: dict[str, RemoteImage] = {}
    for text, result in zip(texts, client.resolve_many([parsed[t] for t in texts], wanted), strict=True):
        if isinstance(result, registry.RegistryError):
            problems.append(f"{text}: {_one_line(str(result))}")
        else:
            resolved[text] = _remote_image(text, result)
    complete = {n: w for n, w in workloads.items() if all(r in resolved for r in w.images)}
    problems += [f"workload {n}: not every image resolved, left out" for n in workloads if n not in complete]
    images = [resolved[t] for t in dict.fromkeys(r for w in complete.values() for r in w.images)]
    holdings, unreachable = pod_proxy.fetch_holdings(
        kubeconfig, pods, args.port, args.timeout, images, context=args.context
    )
    if not holdings:
        raise LocalityFailedError("no exporter answered" + "".join(f"; {n}: {e}" for n, e in unreachable), EXIT_NO_DATA)
    localities: list[WorkloadLocality] = []
    for name, workload in complete.items():
        # Priced only where its pods may go; a node the API does not list (yet) is given the benefit.
        eligible = {
            node: held
            for node, held in holdings.items()
            if nodes is None or node not in nodes or may_schedule(nodes[node], workload.placement)
        }
        localities += workload_locality({name: [resolved[r] for r in workload.images]}, eligible)
    return LocalityRun(
        workloads=tuple(localities),
        nodes_answering=len(holdings),
        unreachable=tuple(unreachable),
        problems=tuple(problems),
        finished_at=time.time(),
        duration_seconds=time.monotonic() - started,
    )


def serve(args: argparse.Namespace) -> int:
    """Measure every `--every` seconds and serve the last run's figures on /metrics until SIGTERM."""
    from exporter.cli.serve import stop_on_termination
    from exporter.errors import ConfigError
    from exporter.outputs import webconfig
    from exporter.outputs.server import MetricsServer

    if args.every <= 0:
        print("layer-sharing-exporter report: --every must be positive", file=sys.stderr)
        return EXIT_USAGE
    try:
        web = webconfig.load(args.web_config_file) if args.web_config_file else None
    except ConfigError as exc:
        print(f"layer-sharing-exporter report: invalid --web-config-file: {exc}", file=sys.stderr)
        return EXIT_USAGE
    store = LocalityStore(top_n=args.top or DEFAULT_TOP_N)
    stop = stop_on_termination()
    last_start = [time.monotonic()]

    def run_forever() -> None:
        while not stop.is_set():
            last_start[0] = time.monotonic()
            store.publish(_run_once(args))
            stop.wait(args.every)

    def alive() -> bool:
        # A run may take long on a big cluster: stuck only past two periods and the timeouts.
        return time.monotonic() - last_start[0] < 2 * float(args.every) + 4 * float(args.timeout) + 60

    try:
        server = MetricsServer(store, alive, args.listen_address, args.listen_port, web)
    except OSError as exc:
        print(
            f"layer-sharing-exporter report: cannot listen on port {args.listen_port}: {exc.strerror}", file=sys.stderr
        )
        return EXIT_USAGE

    threads = [
        threading.Thread(target=run_forever, name="locality", daemon=True),
        threading.Thread(target=server.serve_forever, name="http", daemon=True),
    ]
    for thread in threads:
        thread.start()
    logger.info("serving the locality view on port %d, measured every %gs", server.port, args.every)
    stop.wait()
    server.shutdown()
    return EXIT_OK


def _run_once(args: argparse.Namespace) -> LocalityRun:
    """One run; a failure is the run's error (exported), never the end of the service."""
    try:
        run = measure(args)
    except (LocalityFailedError, ValueError) as exc:
        run = LocalityRun(error=str(exc), finished_at=time.time())
    except Exception as exc:  # a bug must not end the service: say it, try again next period
        logger.exception("locality run failed")
        run = LocalityRun(error=f"internal error: {exc}", finished_at=time.time())
    for problem in (*run.problems, *(f"node {n} unreachable: {e}" for n, e in run.unreachable)):
        logger.warning("%s", problem)
    if run.error:
        logger.error("locality run failed: %s", run.error)
    return run
