"""How a setting is declared: once, as a field of the options class that uses it.

An options class (RuntimeOptions, AnalysisOptions, MetricsOptions, ...) is a
frozen dataclass whose settings are `option(...)` fields. Their metadata says
the config file key, the command-line flag and its help, and the bounds;
exporter.config derives the file's keys, types, flags and checks from it, and
hands each options object to what it configures as it is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

SERVE = ("serve",)
RUNTIME_COMMANDS = ("serve", "df")


@dataclass(frozen=True, slots=True)
class Option:
    help: str
    key: str = ""  # the config file key ("" = the field's name)
    flag: str = ""  # the command-line flag ("" = none: file only)
    commands: tuple[str, ...] = SERVE  # the subcommands that take the flag
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    positive: bool = False  # > 0
    metavar: str | None = None


def option(
    default: Any,
    help: str,  # noqa: A002 - argparse's word
    *,
    key: str = "",
    flag: str = "",
    commands: tuple[str, ...] = SERVE,
    choices: tuple[str, ...] = (),
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
    metavar: str | None = None,
) -> Any:
    """A dataclass field that is a setting (see the module docstring)."""
    meta = Option(help, key, flag, commands, choices, minimum, maximum, positive, metavar)
    return dataclasses.field(default=default, metadata={"option": meta})


def section(factory: Any, name: str = "") -> Any:
    """A field holding another options class: its settings sit at the top level of
    the config file, or under `name:` when a name is given."""
    return dataclasses.field(default_factory=factory, metadata={"section": name})
