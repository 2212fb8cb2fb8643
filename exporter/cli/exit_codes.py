"""The exit codes the commands share."""

EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE = 0, 1, 2
# The report's: 1 partial (some nodes unreachable), 3 no data, 4 its source unreachable.
EXIT_PARTIAL, EXIT_NO_DATA, EXIT_UNREACHABLE = 1, 3, 4
