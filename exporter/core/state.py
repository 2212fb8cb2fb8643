"""What a scrape shows: the latest node report and the exporter's own health (plain data)."""

from __future__ import annotations

from dataclasses import dataclass, field

from exporter.core.accounting import NodeReport
from exporter.core.facts import NodeFacts


@dataclass(frozen=True, slots=True)
class ExporterState:
    """One published refresh: the report, the facts it came from, and how the refresh went."""

    generation: int = 0
    up: bool = False
    report: NodeReport | None = None
    facts: NodeFacts | None = None
    last_error: str = "no refresh yet"
    last_duration_seconds: float = 0.0
    last_success_timestamp: float = 0.0
    refreshes: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
