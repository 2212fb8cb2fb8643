"""The command line: `layer-sharing-exporter serve | df | report` (wiring only)."""
