"""`df`: one refresh of the node, printed as tables or JSON."""

from __future__ import annotations

import argparse
import sys

from exporter.cli.args import EXIT_OK, EXIT_UNAVAILABLE
from exporter.cli.runtime import runtime_source
from exporter.config import Config
from exporter.core.accounting import account
from exporter.errors import RuntimeUnavailableError
from exporter.formatting import human_bytes
from exporter.outputs import df as df_mod


def df(config: Config, args: argparse.Namespace) -> int:
    runtime = runtime_source(config, keep_history=bool(args.image))
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
                f"{image.name} ({image.image_id}): size {human_bytes(image.size)}, "
                f"shared {human_bytes(image.shared)}, unique {human_bytes(image.unique)}, "
                f"base {image.base}{f':{image.base_version}' if image.base_version else ''} ({image.base_source})\n"
            )
            print(df_mod.image_layers_table(rows))
        return EXIT_OK
    if args.output == "json":
        print(df_mod.to_json(df_mod.report_dict(report)))
    elif args.pods:
        print(df_mod.summary(report) + "\n\n" + df_mod.pods_table(report))
    else:
        tables = [df_mod.summary(report), df_mod.images_table(report), df_mod.bases_table(report)]
        if report.duplicates:
            tables.append(df_mod.duplicates_table(report))
        print("\n\n".join(tables))
    return EXIT_OK
