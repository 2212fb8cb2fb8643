"""Errors that cross layers: raised by sources or config, handled by the service and the CLI.

They live here, not in the module that raises them, so that the service and
the command line can catch them without importing an adapter.
"""

from __future__ import annotations


class ParseError(ValueError):
    """The runtime returned something that is not the expected shape."""


class RuntimeUnavailableError(Exception):
    """The runtime did not answer (socket missing, restarting, too slow)."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names it."""
