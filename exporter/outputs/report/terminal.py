"""The report on a terminal: a totals line and one view as a rich table."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from exporter.core.cluster import ClusterReport
from exporter.formatting import human_bytes
from exporter.outputs.report.views import BYTE_HEADERS, cell_text, rows


def print_table(report: ClusterReport, view: str, sort: str = "", top: int = 0) -> None:
    """The totals line and one view as a rich table on the terminal."""
    saved = report.logical - report.physical
    console = Console()
    console.print(
        f"[bold]{len(report.nodes)} nodes[/bold]: {human_bytes(report.physical)} of image layers on disk for "
        f"{human_bytes(report.logical)} without sharing (saves {human_bytes(saved)}); "
        f"{human_bytes(report.reclaimable)} held by unused images (image GC assumes "
        f"{human_bytes(report.unused_logical)}); {human_bytes(report.duplicate_bytes)} in "
        f"{report.duplicate_layers} duplicate layer copies; {human_bytes(report.content)} compressed kept"
    )
    headers, data = rows(report, view, sort, top)
    table = Table(title=view)
    for header in headers:
        table.add_column(header, justify="right" if header in BYTE_HEADERS else "left")
    for row in data:
        table.add_row(*(cell_text(h, v) for h, v in zip(headers, row, strict=True)))
    console.print(table)
