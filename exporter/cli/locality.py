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
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from exporter.cli.exit_codes import EXIT_NO_DATA, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
from exporter.core.placement import ClusterNode, RunningWorkload
from exporter.core.pull_cost import (
    NodeHoldings,
    NodeRollout,
    RemoteImage,
    RolloutReport,
    WorkloadLocality,
    workload_locality,
)
from exporter.outputs.locality_metrics import LocalityRun, LocalityStore

if TYPE_CHECKING:
    from exporter.sources.kubernetes.pod_proxy import ExporterPod
    from exporter.sources.registry import ImageReference, Platform, RegistryClient

logger = logging.getLogger("layer_sharing_exporter.locality")

# Workloads exported when --top is not given: a few series each.
DEFAULT_TOP_N = 100


class LocalityFailedError(Exception):
    """A run that yields no figure: why, and report's exit code for it."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def measure(args: argparse.Namespace, client: RegistryClient | None = None) -> LocalityRun:
    """One run over the cluster as `args` say to reach it (`client`: a long-lived registry
    client, for its digest cache). Raises LocalityFailedError (nothing measured) and
    ValueError (bad flags)."""
    from exporter.cli.pull_cost import _one_line
    from exporter.cli.registry_access import registry_client
    from exporter.sources import registry
    from exporter.sources.kubernetes import pod_proxy

    started = time.monotonic()
    client = client or registry_client(args)
    kubeconfig = args.kubeconfig or ""
    problems: list[str] = []
    try:
        workloads = pod_proxy.running_workloads(kubeconfig, args.context)
    except Exception as exc:  # the API server as a whole failed: say why, in one line
        raise LocalityFailedError(_one_line(str(exc)), EXIT_UNREACHABLE) from exc
    pods = exporter_pods(args)
    try:
        nodes: dict[str, ClusterNode] | None = pod_proxy.cluster_nodes(kubeconfig, args.context)
    except Exception as exc:  # e.g. no RBAC for nodes: still an answer, with every node counted
        nodes = None
        problems.append(f"nodes not readable, every node answering counted for every workload: {_one_line(str(exc))}")
    parsed: dict[str, registry.ImageReference] = {}
    for name, workload in workloads.items():
        for text in workload.images:
            try:
                parsed.setdefault(text, registry.parse_strict_reference(text))
            except ValueError as exc:
                problems.append(f"workload {name}: {exc}")
    # Each node is priced with the images of its own platform (an arm64 node pulls arm64 layers).
    node_platforms = _node_platforms(args, nodes, [p.node for p in pods])
    by_platform: dict[registry.Platform, list[str]] = {}
    for node, platform in node_platforms.items():
        by_platform.setdefault(platform, []).append(node)
    resolved: dict[registry.Platform, dict[str, RemoteImage]] = {}
    not_built: dict[registry.Platform, set[str]] = {}  # references with no image for the platform
    for platform in by_platform:
        resolved[platform], not_built[platform], failures = _resolve(client, parsed, platform)
        problems += failures
        if not_built[platform] and len(by_platform) > 1:
            problems.append(f"{len(not_built[platform])} references have no {platform} image: their workloads "
                            f"are not priced on {platform} nodes")  # fmt: skip
    if not any(resolved.values()):
        raise LocalityFailedError(
            "no running workload's image resolved: " + "; ".join(problems[:3]) if problems else "no running workload",
            EXIT_NO_DATA,
        )
    holdings: dict[str, NodeHoldings] = {}
    unreachable: list[tuple[str, str]] = []
    for platform, platform_nodes in by_platform.items():
        wanted = [p for p in pods if p.node in platform_nodes]
        answers, failed = pod_proxy.fetch_holdings(
            kubeconfig, wanted, args.port, args.timeout, list(resolved[platform].values()), context=args.context
        )
        holdings.update(answers)
        unreachable += failed
    require_answers(holdings, unreachable)
    localities = []
    for name, workload in workloads.items():
        priced = _price(name, workload, holdings, nodes, node_platforms, resolved, not_built)
        if priced is None:
            problems.append(f"workload {name}: not every image resolved, left out")
        else:
            localities.append(priced)
    return LocalityRun(
        workloads=tuple(localities),
        nodes_answering=len(holdings),
        unreachable=tuple(unreachable),
        problems=tuple(problems),
        finished_at=time.time(),
        duration_seconds=time.monotonic() - started,
    )


def exporter_pods(args: argparse.Namespace) -> list[ExporterPod]:
    """The running exporter pods `args` select (both pull-cost views ask them). Raises
    LocalityFailedError: the API failing as a whole, or no exporter running."""
    from exporter.cli.pull_cost import _one_line
    from exporter.sources.kubernetes import pod_proxy

    try:
        pods = pod_proxy.exporter_pods(
            args.kubeconfig or "", args.exporter_namespace, args.selector, args.scheme, context=args.context
        )
    except Exception as exc:  # the API server as a whole failed: say why, in one line
        raise LocalityFailedError(_one_line(str(exc)), EXIT_UNREACHABLE) from exc
    if not pods:
        raise LocalityFailedError(f"no running exporter pods match {args.selector!r}", EXIT_NO_DATA)
    return pods


def require_answers(holdings: Mapping[str, NodeHoldings], unreachable: Sequence[tuple[str, str]]) -> None:
    """Raises LocalityFailedError when no exporter answered, naming each one's error."""
    if not holdings:
        raise LocalityFailedError("no exporter answered" + "".join(f"; {n}: {e}" for n, e in unreachable), EXIT_NO_DATA)


def _node_platforms(
    args: argparse.Namespace, nodes: Mapping[str, ClusterNode] | None, names: Sequence[str]
) -> dict[str, Platform]:
    """Each node's platform: --platform for all when given, else its kubernetes.io/os and
    kubernetes.io/arch labels, else this machine's."""
    from exporter.cli.registry_access import wanted_platform
    from exporter.sources.registry import Platform

    default = wanted_platform(args)
    out = {}
    for name in names:
        labels = (nodes or {}).get(name, ClusterNode(name)).labels
        os_name, arch = labels.get("kubernetes.io/os"), labels.get("kubernetes.io/arch")
        out[name] = Platform(os_name, arch) if os_name and arch and not args.platform else default
    return out


def _resolve(
    client: RegistryClient, parsed: Mapping[str, ImageReference], platform: Platform
) -> tuple[dict[str, RemoteImage], set[str], list[str]]:
    """Each reference for `platform` (the client reads each document once): those resolved,
    those with no image for the platform, and what else failed."""
    from exporter.cli.pull_cost import _one_line, _remote_image
    from exporter.sources.registry import PlatformMissingError, RegistryError

    texts = list(parsed)
    resolved, not_built, problems = {}, set(), []
    for text, result in zip(texts, client.resolve_many([parsed[t] for t in texts], platform), strict=True):
        if isinstance(result, PlatformMissingError):
            not_built.add(text)
        elif isinstance(result, RegistryError):
            problems.append(f"{text} ({platform}): {_one_line(str(result))}")
        else:
            resolved[text] = _remote_image(text, result)
    return resolved, not_built, problems


def _price(
    name: str,
    workload: RunningWorkload,
    holdings: Mapping[str, NodeHoldings],
    nodes: Mapping[str, ClusterNode] | None,
    node_platforms: Mapping[str, Platform],
    resolved: Mapping[Platform, Mapping[str, RemoteImage]],
    not_built: Mapping[Platform, set[str]],
) -> WorkloadLocality | None:
    """The workload's cold start on each node its pods may go to, with that node's platform's
    images. A platform its images are not built for is not a node of its; any other failure
    to resolve leaves the workload out (None), rather than pricing it on fewer nodes. A node
    the API does not list (yet) is given the benefit of the doubt."""
    rollouts: list[NodeRollout] = []
    refs: tuple[str, ...] = ()
    for platform in dict.fromkeys(node_platforms.values()):
        images = resolved[platform]
        unresolved = [r for r in workload.images if r not in images]
        if any(r not in not_built[platform] for r in unresolved):
            return None
        if unresolved:
            continue
        eligible = {
            node: held
            for node, held in holdings.items()
            if node_platforms.get(node) == platform
            and (nodes is None or node not in nodes or workload.may_run_on(nodes[node]))
        }
        (one,) = workload_locality({name: [images[r] for r in workload.images]}, eligible)
        rollouts += one.rollout.nodes
        refs = one.refs
    if not refs:
        return None
    return WorkloadLocality(name, refs, RolloutReport(tuple(sorted(rollouts, key=lambda n: n.node))))


def serve(args: argparse.Namespace) -> int:
    """Measure every `--every` seconds and serve the last run's figures on /metrics until SIGTERM."""
    from exporter.cli.main import configure_logging
    from exporter.cli.registry_access import registry_client, wanted_platform
    from exporter.cli.serve import stop_on_termination, wait_for_termination
    from exporter.errors import ConfigError
    from exporter.outputs import webconfig
    from exporter.outputs.server import MetricsServer
    from exporter.sources.registry import RegistryError

    configure_logging("info")
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

    try:
        wanted_platform(args)  # bad flags end the service now, not each run
        client = registry_client(args)  # one for the service's life: documents by digest are read once
    except (ValueError, RegistryError) as exc:
        print(f"layer-sharing-exporter report: {exc}", file=sys.stderr)
        return EXIT_USAGE

    def run_forever() -> None:
        while not stop.is_set():
            last_start[0] = time.monotonic()
            client.new_run()
            store.publish(_run_once(args, client))
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
    wait_for_termination(stop)
    server.shutdown()
    return EXIT_OK


def _run_once(args: argparse.Namespace, client: RegistryClient) -> LocalityRun:
    """One run; a failure is the run's error (exported), never the end of the service."""
    started = time.monotonic()
    try:
        run = measure(args, client)
    except (LocalityFailedError, ValueError) as exc:
        run = _failed(str(exc), started)
    except Exception as exc:  # a bug must not end the service: say it, try again next period
        logger.exception("locality run failed")
        run = _failed(f"internal error: {exc}", started)
    for problem in (*run.problems, *(f"node {n} unreachable: {e}" for n, e in run.unreachable)):
        logger.warning("%s", problem)
    if run.error:
        logger.error("locality run failed: %s", run.error)
    return run


def _failed(error: str, started: float) -> LocalityRun:
    return LocalityRun(error=error, finished_at=time.time(), duration_seconds=time.monotonic() - started)
