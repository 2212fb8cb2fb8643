"""The machine's own Debian mirror, read from apt's configuration.

The harness fetches Debian packages (containerd releases, root filesystems)
from whatever mirror this machine is set up to use, so nothing here names a
host. Both formats apt reads are understood: deb822 `*.sources` files and
one-line `sources.list` / `*.list` entries.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ETC_APT = Path("/etc/apt")
OS_RELEASE = Path("/etc/os-release")

# `deb [opt=val ...] uri suite [component ...]`
_ONE_LINE = re.compile(r"^(?P<type>deb(?:-src)?)\s+(?:\[(?P<options>[^\]]*)\]\s*)?(?P<uri>\S+)\s+(?P<rest>.+)$")


class MirrorNotFoundError(RuntimeError):
    """apt's configuration names no Debian archive for this machine's suite."""


@dataclass(frozen=True)
class AptSource:
    """One source entry (a deb822 stanza or a one-line entry)."""

    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None
    origin: Path


def machine_codename(os_release: Path = OS_RELEASE) -> str:
    """VERSION_CODENAME from os-release (e.g. "bookworm")."""
    for line in os_release.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "VERSION_CODENAME" and value.strip().strip("\"'"):
            return value.strip().strip("\"'")
    raise MirrorNotFoundError(f"{os_release} has no VERSION_CODENAME")


def _deb822_stanzas(text: str) -> list[dict[str, str]]:
    stanzas: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if fields:
                stanzas.append(fields)
            fields, key = {}, ""
        elif line[0] in " \t" and key:
            # A continuation line (e.g. an inline Signed-By key block).
            fields[key] += "\n" + line.strip()
        else:
            name, _, value = line.partition(":")
            key = name.strip().lower()  # field names are case-insensitive
            fields[key] = value.strip()
    if fields:
        stanzas.append(fields)
    return stanzas


def _parse_sources(path: Path) -> list[AptSource]:
    entries = []
    for fields in _deb822_stanzas(path.read_text()):
        if fields.get("enabled", "yes").strip().lower() == "no":
            continue
        entries.append(
            AptSource(
                types=tuple(fields.get("types", "").split()),
                uris=tuple(fields.get("uris", "").split()),
                suites=tuple(fields.get("suites", "").split()),
                components=tuple(fields.get("components", "").split()),
                signed_by=fields.get("signed-by") or None,
                origin=path,
            )
        )
    return entries


def _parse_list(path: Path) -> list[AptSource]:
    entries = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        match = _ONE_LINE.match(line)
        if not match:
            continue
        options = dict(opt.partition("=")[::2] for opt in (match["options"] or "").split())
        suite, *components = match["rest"].split()
        entries.append(
            AptSource(
                types=(match["type"],),
                uris=(match["uri"],),
                suites=(suite,),
                components=tuple(components),
                signed_by=options.get("signed-by") or None,
                origin=path,
            )
        )
    return entries


def read_sources(etc_apt: Path = ETC_APT) -> list[AptSource]:
    """Every enabled entry, in the order apt reads them."""
    entries = []
    main_list = etc_apt / "sources.list"
    if main_list.is_file():
        entries += _parse_list(main_list)
    parts = etc_apt / "sources.list.d"
    # apt ignores (with a notice) files with other extensions, e.g. `.disabled`.
    for path in sorted(parts.iterdir()) if parts.is_dir() else []:
        if path.suffix == ".sources" and path.is_file():
            entries += _parse_sources(path)
        elif path.suffix == ".list" and path.is_file():
            entries += _parse_list(path)
    return entries


def _is_debian_archive(source: AptSource, codename: str) -> bool:
    # The main archive serves the plain codename suite with `main`; -security,
    # -updates, backports and third-party repositories (component "stable",
    # suite "nodistro", ...) do not match both.
    return "deb" in source.types and codename in source.suites and "main" in source.components and bool(source.uris)


def debian_mirror(codename: str | None = None, etc_apt: Path = ETC_APT, os_release: Path = OS_RELEASE) -> str:
    """URI of the mirror serving the main Debian archive for `codename` (default: this machine's)."""
    codename = codename or machine_codename(os_release)
    sources = read_sources(etc_apt)
    candidates = [s for s in sources if _is_debian_archive(s, codename)]
    # A third-party repository can also publish a `<codename> main`; one signed
    # by Debian's own keyring (or by apt's default keys) is the archive.
    official = [s for s in candidates if s.signed_by is None or "debian-archive-keyring" in s.signed_by]
    for source in official or candidates:
        for uri in source.uris:
            if not uri.startswith("cdrom:"):
                return uri.rstrip("/")
    read = sorted({str(s.origin) for s in sources}) or ["(no source files)"]
    raise MirrorNotFoundError(
        f"no enabled `deb` entry for suite {codename!r} with component main in {etc_apt} (read: {', '.join(read)})"
    )
