"""Prometheus text exposition (an exporter's /metrics body) into the report's `NodeSamples`."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from exporter.core.cluster import NodeSamples, Sample


def samples_from_exposition(node: str, text: str) -> NodeSamples:
    """Parse one exporter's /metrics body (Prometheus text format)."""
    samples = tuple(
        Sample(s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("layer_sharing_")
    )
    return NodeSamples(node, samples)
