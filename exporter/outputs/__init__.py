"""Outputs: the Prometheus collector and HTTP serving, `df`, and the cluster report's renderers."""
