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


class BlobUnavailableError(Exception):
    """A content blob could not be read (gone from the store, or the read failed).

    `missing` says the store does not hold it (containerd's NOT_FOUND), e.g.
    layers garbage-collected after unpack with `discard_unpacked_layers`.
    """

    def __init__(self, message: str, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing
