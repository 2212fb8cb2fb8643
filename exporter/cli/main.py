"""`layer-sharing-exporter`: parse the flags, then run one command.

Exit codes: 0 ok, 1 runtime unreachable (df) or registry unreadable
(catalog), 2 bad flags or config; the report has its own (exporter.cli.report).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from exporter import config as config_mod
from exporter.cli.args import build_kubectl_parser, build_parser
from exporter.cli.exit_codes import EXIT_USAGE
from exporter.errors import ConfigError


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "report":
        from exporter.cli.report import run_report

        return run_report(args)
    if args.command == "catalog":
        from exporter.cli.catalog import run_catalog

        return run_catalog(args)
    if args.command == "pull-cost":
        from exporter.cli.pull_cost import run_pull_cost

        return run_pull_cost(args)
    if args.command == "wasted":
        from exporter.cli.wasted import run_wasted

        return run_wasted(args)
    try:
        config = config_mod.resolve(args)
    except ConfigError as exc:
        print(f"layer-sharing-exporter: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    configure_logging(config.log_level)
    if args.command == "serve":
        from exporter.cli.serve import serve

        return serve(config)
    from exporter.cli.df import df

    return df(config, args)


def configure_logging(level: str) -> None:
    """Timestamped lines on stderr, as the long-running commands (serve, the locality service) log."""
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def kubectl_main(argv: Sequence[str] | None = None) -> int:
    """`kubectl layer-sharing ...` (installed as kubectl-layer_sharing) is the report."""
    from exporter.cli.report import run_report

    return run_report(build_kubectl_parser().parse_args(argv))
