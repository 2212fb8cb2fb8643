"""Other containerd releases, from Debian's own packages (nothing vendored).

bookworm's containerd (1.6) is installed by scripts/setup.sh. trixie has 1.7
and sid 2.x: `apt-get download containerd` from this machine's mirror
(tests/harness/apt_sources.py) with a private, suite-specific apt
directory (signatures checked against Debian's archive keyring), then
`dpkg-deb -x` into a cache directory. Their binaries link only libc and run
here with bookworm's runc.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.harness.apt_sources import MirrorNotFoundError, debian_mirror
from tests.harness.containerd import Binaries

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "containerd-releases"
SUITES = {"1.7": "trixie", "2": "sid"}
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class ReleaseUnavailableError(RuntimeError):
    """A containerd release could not be fetched; the message says why."""


def _apt(suite_dir: Path, *args: str, cwd: Path | None = None) -> None:
    options = [
        f"-o=Dir::Etc::sourcelist={suite_dir / 'sources.list'}",
        "-o=Dir::Etc::sourceparts=-",
        f"-o=Dir::State::Lists={suite_dir / 'lists'}",
        f"-o=Dir::Cache={suite_dir / 'cache'}",
        "-o=Debug::NoLocking=1",
        "-o=APT::Sandbox::User=root",
    ]
    result = subprocess.run(["apt-get", *options, *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise ReleaseUnavailableError(f"apt-get {' '.join(args)} for {suite_dir.name} failed: {result.stderr.strip()}")


def containerd_release(series: str) -> Binaries:
    """Binaries of containerd `series` ("1.7" or "2"), fetched once and cached."""
    if series == "1.6":
        return Binaries()
    suite = SUITES[series]
    suite_dir = CACHE / suite
    bin_dir = suite_dir / "root" / "usr" / "bin"
    if (bin_dir / "containerd").exists():
        return Binaries(str(bin_dir))
    if not shutil.which("apt-get") or not Path(KEYRING).exists():
        raise ReleaseUnavailableError("apt-get and debian-archive-keyring are needed to fetch containerd " + series)
    for sub in ("lists/partial", "cache/archives/partial", "debs"):
        (suite_dir / sub).mkdir(parents=True, exist_ok=True)
    try:
        # The machine's own mirror serves every suite of the archive.
        mirror = debian_mirror()
    except MirrorNotFoundError as error:
        raise ReleaseUnavailableError(str(error)) from error
    (suite_dir / "sources.list").write_text(f"deb [signed-by={KEYRING}] {mirror} {suite} main\n")
    _apt(suite_dir, "update")
    debs = suite_dir / "debs"
    _apt(suite_dir, "download", "containerd", cwd=debs)
    (deb,) = debs.glob("containerd_*.deb")
    result = subprocess.run(["dpkg-deb", "-x", str(deb), str(suite_dir / "root")], capture_output=True, text=True)
    if result.returncode != 0:
        raise ReleaseUnavailableError(f"dpkg-deb -x {deb.name} failed: {result.stderr.strip()}")
    return Binaries(str(bin_dir))
