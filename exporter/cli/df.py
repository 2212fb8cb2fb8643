"""`df`: one refresh of the node, printed as tables or JSON."""

from __future__ import annotations

import argparse
import sys

from exporter.analysis import analyse_image
from exporter.cli.exit_codes import EXIT_OK, EXIT_UNAVAILABLE
from exporter.cli.runtime import runtime_source
from exporter.config import Config
from exporter.core.accounting import NodeReport, account
from exporter.core.facts import NodeFacts
from exporter.errors import RuntimeUnavailableError
from exporter.formatting import human_bytes
from exporter.outputs import df as df_mod
from exporter.sources.node import RuntimeSource


def _image(runtime: RuntimeSource, facts: NodeFacts, report: NodeReport, args: argparse.Namespace) -> int:
    """One image's layers, with its wasted bytes read from the layer blobs now."""
    image = report.image(args.image)
    if image is None:
        print(f"layer-sharing-exporter: no image {args.image!r} on this node", file=sys.stderr)
        return EXIT_UNAVAILABLE
    image_facts = next(f for f in facts.images if f.image_id == image.image_id)
    waste = analyse_image(runtime, facts, image_facts) if runtime.keeps_blobs else None
    rows = df_mod.image_layers(report, facts, image, waste)
    if args.output in ("json", "yaml"):
        print(df_mod.serialize(df_mod.image_dict(image, rows, waste), args.output))
        return EXIT_OK
    wasted = ""
    if waste is not None:
        wasted = f", wasted {human_bytes(waste.wasted_bytes) if waste.wasted_bytes is not None else 'unknown'}"
    print(
        f"{image.name} ({image.image_id}): size {human_bytes(image.size)}, "
        f"shared {human_bytes(image.shared)}, unique {human_bytes(image.unique)}{wasted}, "
        f"base {image.base}{f':{image.base_version}' if image.base_version else ''} ({image.base_source})\n"
    )
    print(df_mod.image_layers_table(rows, _style(args)))
    if waste is not None:
        print("\n" + df_mod.image_waste_text(waste))
    return EXIT_OK


def df(config: Config, args: argparse.Namespace) -> int:
    runtime = runtime_source(config, keep_history=bool(args.image))
    try:
        facts = runtime.snapshot()
        report = account(facts, config.bases)
        if args.image:
            return _image(runtime, facts, report, args)
    except RuntimeUnavailableError as exc:
        print(f"layer-sharing-exporter: runtime {config.runtime.endpoint} unreachable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    finally:
        runtime.close()
    style = _style(args)
    if args.output in ("json", "yaml"):
        print(df_mod.serialize(df_mod.report_dict(report), args.output))
    elif args.pods:
        print(df_mod.summary(report) + "\n\n" + df_mod.pods_table(report, style))
    else:
        tables = [df_mod.summary(report), df_mod.images_table(report, style), df_mod.bases_table(report)]
        if report.duplicates:
            tables.append(df_mod.duplicates_table(report, style))
        print("\n\n".join(tables))
    return EXIT_OK


def _style(args: argparse.Namespace) -> df_mod.Style:
    return df_mod.Style(wide=args.output == "wide", full=args.no_trunc)
