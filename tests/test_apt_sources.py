"""apt_sources reads the mirror from apt's configuration files (literal ones here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness.apt_sources import MirrorNotFoundError, debian_mirror, machine_codename, read_sources

# Hosts are placeholders under the reserved .example domain.
DEB822 = """\
# The archive, served by two mirrors; apt tries them in order.
Types: deb deb-src
URIs: http://first.example/debian/ http://second.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# a comment inside a stanza
URIs: http://first.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

DISABLED = """\
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
Enabled: no
"""

INLINE_KEY = """\
types: deb
uris: http://keyed.example/debian
suites: trixie
components: main
signed-by:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGRzAAAB
 -----END PGP PUBLIC KEY BLOCK-----
"""

ONE_LINE = """\
# deb http://commented.example/debian bookworm main
deb-src http://src.example/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://list.example/debian bookworm main # ok
deb http://list.example/debian-security bookworm-security main
"""

THIRD_PARTY = """\
Types: deb
URIs: http://vendor.example/apt
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/vendor.gpg
"""


def _etc_apt(tmp_path: Path, files: dict[str, str]) -> Path:
    parts = tmp_path / "sources.list.d"
    parts.mkdir(parents=True)
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def test_deb822_first_uri_of_the_codename_entry(tmp_path: Path) -> None:
    etc = _etc_apt(tmp_path, {"sources.list.d/debian.sources": DEB822})
    assert debian_mirror("bookworm", etc_apt=etc) == "http://first.example/debian"


def test_security_only_is_not_the_archive(tmp_path: Path) -> None:
    etc = _etc_apt(tmp_path, {"sources.list.d/security.list": ONE_LINE.splitlines()[-1] + "\n"})
    with pytest.raises(MirrorNotFoundError, match="bookworm"):
        debian_mirror("bookworm", etc_apt=etc)


def test_disabled_and_other_extensions_are_skipped(tmp_path: Path) -> None:
    etc = _etc_apt(
        tmp_path,
        {
            "sources.list.d/a-disabled.sources": DISABLED,
            "sources.list.d/b.sources.disabled": DEB822,
            "sources.list.d/c.list.save": ONE_LINE,
            "sources.list.d/d.list": ONE_LINE,
        },
    )
    assert [s.origin.name for s in read_sources(etc)] == ["d.list"] * 3
    assert debian_mirror("bookworm", etc_apt=etc) == "http://list.example/debian"


def test_one_line_entries(tmp_path: Path) -> None:
    etc = _etc_apt(tmp_path, {"sources.list": ONE_LINE})
    sources = read_sources(etc)
    assert [(s.types, s.uris, s.suites, s.components) for s in sources] == [
        (("deb-src",), ("http://src.example/debian",), ("bookworm",), ("main",)),
        (("deb",), ("http://list.example/debian",), ("bookworm",), ("main",)),
        (("deb",), ("http://list.example/debian-security",), ("bookworm-security",), ("main",)),
    ]
    assert sources[1].signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg"
    # deb-src comes first but only a binary archive counts.
    assert debian_mirror("bookworm", etc_apt=etc) == "http://list.example/debian"


def test_multiline_fields_and_lowercase_names(tmp_path: Path) -> None:
    etc = _etc_apt(tmp_path, {"sources.list.d/keyed.sources": INLINE_KEY})
    (source,) = read_sources(etc)
    assert source.suites == ("trixie",)
    assert source.signed_by is not None and "BEGIN PGP" in source.signed_by
    assert debian_mirror("trixie", etc_apt=etc) == "http://keyed.example/debian"


def test_debian_keyring_wins_over_a_third_party_codename_main(tmp_path: Path) -> None:
    etc = _etc_apt(tmp_path, {"sources.list.d/a-vendor.sources": THIRD_PARTY, "sources.list.d/debian.sources": DEB822})
    assert debian_mirror("bookworm", etc_apt=etc) == "http://first.example/debian"


def test_sources_list_is_read_before_the_parts_directory(tmp_path: Path) -> None:
    etc = _etc_apt(tmp_path, {"sources.list": ONE_LINE, "sources.list.d/debian.sources": DEB822})
    assert debian_mirror("bookworm", etc_apt=etc) == "http://list.example/debian"


def test_codename_from_os_release(tmp_path: Path) -> None:
    os_release = tmp_path / "os-release"
    os_release.write_text('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n')
    etc = _etc_apt(tmp_path / "apt", {"sources.list.d/debian.sources": DEB822})
    assert machine_codename(os_release) == "bookworm"
    assert debian_mirror(etc_apt=etc, os_release=os_release) == "http://first.example/debian"


def test_no_sources_at_all(tmp_path: Path) -> None:
    with pytest.raises(MirrorNotFoundError, match="no source files"):
        debian_mirror("bookworm", etc_apt=tmp_path)
