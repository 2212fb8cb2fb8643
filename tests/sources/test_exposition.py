"""Prometheus text exposition into the report's samples."""

from __future__ import annotations

from exporter.sources.exposition import samples_from_exposition
from tests.sample_cluster import exposition


def test_only_layer_sharing_samples_are_kept_with_their_labels():
    node = samples_from_exposition("node-a", exposition("node-a") + "other_metric 1\n")
    assert node.node == "node-a" and node.samples
    assert all(s.name.startswith("layer_sharing_") for s in node.samples)
    up = [s for s in node.samples if s.name == "layer_sharing_up"]
    assert [(s.labels, s.value) for s in up] == [({}, 1.0)]
