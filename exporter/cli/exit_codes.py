"""The exit codes the commands share (the report adds its own: exporter.cli.report)."""

EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE = 0, 1, 2
