"""`layer-sharing-exporter report`: wiring of a source, the pure cluster view, and a renderer.

Exit codes: 0 every node answered; 1 some nodes were unreachable (the report
covers the rest); 2 bad arguments; 3 no data at all (the source answered with
an error or holds no exporter); 4 the source could not be reached (Prometheus
refused the connection, no such host, TLS failed, timed out).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from exporter.cli import prometheus_flags
from exporter.cli.exit_codes import EXIT_NO_DATA, EXIT_OK, EXIT_PARTIAL, EXIT_UNREACHABLE, EXIT_USAGE
from exporter.core.cluster import ClusterReport, MeasuredPodLabels, build_report, build_report_from_aggregates
from exporter.outputs.report import formats, html, terminal, views
from exporter.sources import prometheus_api

PULL_COST_VIEWS = ("pull-cost", "locality")


def _fail(message: str, code: int) -> int:
    print(f"layer-sharing-exporter report: {message}", file=sys.stderr)
    return code


def run_report(args: argparse.Namespace) -> int:
    fmt, *rest = args.output
    if fmt not in ("table", "json", "csv", "html") or len(rest) > 1 or (fmt == "html" and not rest):
        return _fail("--output is table, json, csv or html FILE", EXIT_USAGE)
    if args.view in PULL_COST_VIEWS:
        return _run_pull_cost_view(args, fmt, rest[0] if rest else "")
    if args.refs:
        return _fail(f"references are for --view pull-cost, not --view {args.view}", EXIT_USAGE)
    if args.view not in views.VIEWS:  # checked here, not by argparse: `serve` never imports the report
        return _fail(f"--view is one of {', '.join((*views.VIEWS, *PULL_COST_VIEWS))}", EXIT_USAGE)
    if args.sort and args.sort not in views.SORT_KEYS[args.view]:
        return _fail(
            f"cannot sort {args.view} by {args.sort!r}; use one of {', '.join(views.SORT_KEYS[args.view])}", EXIT_USAGE
        )
    try:
        options = prometheus_flags.client_options(args)
        pod_labels = prometheus_flags.measured_pod_labels(args)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        report = _collect(args, options, pod_labels)
    except Exception as exc:  # the source as a whole failed: say why, in one line
        unreachable_source = isinstance(exc, prometheus_api.PrometheusUnreachableError)
        return _fail(str(exc), EXIT_UNREACHABLE if unreachable_source else EXIT_NO_DATA)
    if args.view == "wasted" and report.nodes:
        # Images no node could analyse (discarded blobs, CRI-O): from their registries.
        from exporter.cli.wasted import fill_in_wasted

        try:
            for problem in fill_in_wasted(report, args):
                print(f"layer-sharing-exporter report: wasted bytes of {problem}", file=sys.stderr)
        except ValueError as exc:
            return _fail(str(exc), EXIT_USAGE)
    unreachable = report.unreachable
    if not report.nodes:
        if args.prometheus_url:
            selector = f" matching {{{args.prometheus_selector}}}" if args.prometheus_selector else ""
            return _fail(f"{args.prometheus_url} holds no layer_sharing_up series{selector}", EXIT_NO_DATA)
        return _fail("no exporter answered" + "".join(f"; {n}: {e}" for n, e in unreachable), EXIT_NO_DATA)
    if fmt == "json":
        print(formats.to_json(report))
    elif fmt == "csv":
        print(formats.to_csv(*views.rows(report, args.view, args.sort, args.top)), end="")
    elif fmt == "html":
        Path(rest[0]).write_text(html.to_html(report))
        print(f"wrote {rest[0]} ({len(report.nodes)} nodes)", file=sys.stderr)
    else:
        terminal.print_table(report, args.view, args.sort, args.top)
    for node, error in unreachable:
        print(f"layer-sharing-exporter report: node {node} unreachable: {error}", file=sys.stderr)
    return EXIT_PARTIAL if unreachable else EXIT_OK


def _collect(
    args: argparse.Namespace, options: prometheus_api.ClientOptions, pod_labels: MeasuredPodLabels
) -> ClusterReport:
    if args.prometheus_url:
        # Prometheus ranks the images (topk): by the column the images view sorts on.
        rank = args.sort if args.view == "images" and args.sort in prometheus_api.IMAGE_RANKS else "size"
        # A table or CSV shows one view (and the node totals): ask only for that.
        table_only = args.output[0] in ("table", "csv")
        aggregates = prometheus_api.fetch(
            args.prometheus_url,
            args.prometheus_selector,
            args.timeout,
            views=(args.view,) if table_only else prometheus_api.VIEWS,
            images_cap=max(args.top, prometheus_api.IMAGES_CAP),
            image_rank=rank,
            options=options,
            pod_labels=pod_labels,
        )
        return build_report_from_aggregates(aggregates)
    from exporter.sources import exposition
    from exporter.sources.kubernetes import pod_proxy

    pods = pod_proxy.exporter_pods(
        args.kubeconfig or "", args.exporter_namespace, args.selector, args.scheme, context=args.context
    )
    if not pods:
        raise RuntimeError(f"no running exporter pods match {args.selector!r}")
    progress = None
    if sys.stderr.isatty():
        from rich.progress import Progress

        progress = Progress(transient=True)
        progress.start()
        task = progress.add_task("reading exporters", total=len(pods))
    try:
        texts, failed = pod_proxy.fetch_through_pod_proxy(
            args.kubeconfig or "",
            pods,
            args.port,
            args.timeout,
            on_done=(lambda: progress.advance(task)) if progress else None,
            context=args.context,
        )
    finally:
        if progress:
            progress.stop()
    nodes = []
    for node, text in sorted(texts.items()):
        try:
            nodes.append(exposition.samples_from_exposition(node, text))
        except ValueError as exc:
            failed.append((node, f"unreadable metrics: {exc}"))
    return build_report(nodes, failed)


def _run_pull_cost_view(args: argparse.Namespace, fmt: str, html_file: str) -> int:
    """`--view pull-cost REF...` (and `--view locality`, exporter.cli.locality): references
    resolved once, here; each node answers what it holds for their layers (GET /pull-cost
    through the pod proxy); the accounting is exporter.core.pull_cost's, the node command's own."""
    from exporter.cli import locality
    from exporter.cli.pull_cost import _one_line, _remote_image
    from exporter.cli.registry_access import registry_client, wanted_platform
    from exporter.core.pull_cost import rollout
    from exporter.outputs.report import pull_cost as out
    from exporter.sources import registry
    from exporter.sources.kubernetes import pod_proxy

    view = args.view
    if args.listen_port >= 0 and view != "locality":
        return _fail("--listen-port serves --view locality only", EXIT_USAGE)
    if args.prometheus_url:
        return _fail(f"--view {view} asks each exporter through the pod proxy; it does not read Prometheus", EXIT_USAGE)
    if view == "locality":
        if args.refs:
            return _fail("--view locality takes no references: it reads every running workload's images", EXIT_USAGE)
        return _run_locality_view(args, fmt, html_file)
    if not args.refs:
        return _fail("--view pull-cost needs image references: report --view pull-cost REF [REF...]", EXIT_USAGE)
    try:
        wanted = wanted_platform(args)
        parsed = [registry.parse_strict_reference(text) for text in args.refs]
        client = registry_client(args)
    except (ValueError, registry.RegistryError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        pods = locality.exporter_pods(args)
        # Each distinct reference once, manifests and configs concurrently (the client caches them).
        images = []
        for text, result in zip(args.refs, client.resolve_many(parsed, wanted), strict=True):
            if isinstance(result, registry.RegistryError):
                return _fail(f"{text}: {_one_line(str(result))}", EXIT_PARTIAL)
            images.append(_remote_image(text, result))
        holdings, unreachable = pod_proxy.fetch_holdings(
            args.kubeconfig or "", pods, args.port, args.timeout, images, context=args.context
        )
        locality.require_answers(holdings, unreachable)
    except locality.LocalityFailedError as exc:
        return _fail(exc.message, exc.exit_code)
    report = rollout(images, holdings)
    if fmt == "json":
        print(out.rollout_json(args.refs, report, unreachable))
    else:
        _print_rows(fmt, html_file, *out.rollout_rows(report, args.top), out.rollout_summary(args.refs, report))
    for node, error in unreachable:
        print(f"layer-sharing-exporter report: node {node} unreachable: {error}", file=sys.stderr)
    return EXIT_PARTIAL if unreachable else EXIT_OK


def _run_locality_view(args: argparse.Namespace, fmt: str, html_file: str) -> int:
    """`--view locality`: printed once, or served as metrics every --every seconds (--listen-port)."""
    from exporter.cli import locality
    from exporter.outputs.report import pull_cost as out

    if args.listen_port >= 0:
        return locality.serve(args)
    try:
        run = locality.measure(args)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except locality.LocalityFailedError as exc:
        return _fail(exc.message, exc.exit_code)
    for problem in run.problems:
        print(f"layer-sharing-exporter report: {problem}", file=sys.stderr)
    localities = run.workloads
    if fmt == "json":
        print(out.locality_json(localities, run.unreachable))
    elif fmt == "html":
        Path(html_file).write_text(out.locality_html(localities))
        print(f"wrote {html_file} ({run.nodes_answering} nodes)", file=sys.stderr)
    else:
        summary = f"{len(localities)} workloads on {run.nodes_answering} nodes answering (cold start: bytes fetched)"
        _print_rows(fmt, html_file, *out.locality_rows(localities, args.top), summary)
        if fmt == "table":
            _print_rows(fmt, html_file, *out.locality_matrix(localities), "Node x workload: bytes fetched")
    for node, error in run.unreachable:
        print(f"layer-sharing-exporter report: node {node} unreachable: {error}", file=sys.stderr)
    return EXIT_PARTIAL if run.unreachable or run.problems else EXIT_OK


def _print_rows(fmt: str, html_file: str, headers: list[str], data: list[list[object]], summary: str) -> None:
    from exporter.outputs.report import pull_cost as out

    if fmt == "csv":
        print(formats.to_csv(headers, data), end="")
        return
    if fmt == "html":
        Path(html_file).write_text(out.page_html(summary, headers, data))
        print(f"wrote {html_file}", file=sys.stderr)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(summary, markup=False, highlight=False, soft_wrap=True)
    table = Table()
    columns = out.byte_columns(headers)
    for header, is_bytes in zip(headers, columns, strict=True):
        table.add_column(header, justify="right" if is_bytes else "left")
    for row in data:
        table.add_row(*(out.cell_text(v, b) for b, v in zip(columns, row, strict=True)))
    console.print(table)
