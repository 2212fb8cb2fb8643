"""Real Debian root filesystems as tarballs, built with mmdebstrap and cached.

Synthetic layers hold a handful of files; a real base image holds thousands,
and a real `apt-get install` layer also leaves apt's package lists and caches
behind. These trees are built from this machine's suite and its own mirror
(tests/harness/apt_sources.py), once, into `<repo>/.cache/rootfs/`.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.harness.apt_sources import debian_mirror, machine_codename

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "rootfs"
# Small, quick to download, and a typical `apt-get install` in a Dockerfile.
EXTRA_PACKAGES = ("ca-certificates", "curl")
# Bump when the mmdebstrap recipe changes, so cached tarballs are rebuilt.
RECIPE_VERSION = 1


class RootfsUnavailableError(RuntimeError):
    """mmdebstrap is missing or failed; the message says why."""


@dataclass(frozen=True)
class Rootfs:
    path: Path
    suite: str
    packages: tuple[str, ...]
    built_seconds: float | None  # None: taken from the cache


def _mmdebstrap() -> str:
    found = shutil.which("mmdebstrap")
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RootfsUnavailableError("mmdebstrap is not installed (Debian package mmdebstrap)")
    result = subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "mmdebstrap"],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    found = shutil.which("mmdebstrap")
    if result.returncode != 0 or not found:
        raise RootfsUnavailableError(f"apt-get install mmdebstrap failed: {result.stderr.strip()}")
    return found


def _command(out: Path, suite: str, mirror: str, packages: Sequence[str], keep_apt_state: bool) -> list[str]:
    command = [
        # As root, plain chroot works everywhere (unshare needs user namespaces).
        "--mode=root" if os.geteuid() == 0 else "--mode=unshare",
        "--variant=minbase",
        "--format=tar",
        "--quiet",
    ]
    if packages:
        command.append("--include=" + ",".join(packages))
    if keep_apt_state:
        # What `apt-get update && apt-get install` leaves in a layer: the
        # package lists and pkgcache.bin/srcpkgcache.bin. The .debs go, as
        # Debian's container images configure apt to delete them.
        command += [
            "--skip=cleanup/apt/lists",
            "--skip=cleanup/apt/cache",
            '--customize-hook=rm -f "$1"/var/cache/apt/archives/*.deb',
        ]
    return [*command, suite, str(out), mirror]


def build_rootfs(
    packages: Sequence[str] = (),
    *,
    keep_apt_state: bool = False,
    suite: str | None = None,
    cache_dir: Path = CACHE,
) -> Rootfs:
    """A minbase tree of `suite` (default: this machine's) plus `packages`, as a tarball.

    Cached by suite, variant, package list and recipe; a lock keeps parallel
    test processes from building the same tree twice.
    """
    suite = suite or machine_codename()
    packages = tuple(sorted(set(packages)))
    recipe = f"{RECIPE_VERSION} {suite} minbase {','.join(packages)} keep_apt_state={keep_apt_state}"
    key = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    label = "+".join(packages) or "base"
    out = cache_dir / f"{suite}-minbase-{label}-{key}.tar"
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / f".{out.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if out.exists():
            return Rootfs(out, suite, packages, None)
        mmdebstrap = _mmdebstrap()
        partial = out.with_suffix(".partial.tar")
        started = time.monotonic()
        result = subprocess.run(
            [mmdebstrap, *_command(partial, suite, debian_mirror(suite), packages, keep_apt_state)],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            raise RootfsUnavailableError(f"mmdebstrap {recipe} failed: {result.stderr.strip()[-2000:]}")
        partial.rename(out)
        return Rootfs(out, suite, packages, time.monotonic() - started)


def minbase_rootfs(cache_dir: Path = CACHE) -> Rootfs:
    """`mmdebstrap --variant=minbase`, cleaned up as a base image is."""
    return build_rootfs(cache_dir=cache_dir)


def packages_rootfs(packages: Sequence[str] = EXTRA_PACKAGES, cache_dir: Path = CACHE) -> Rootfs:
    """minbase plus `packages`, with the apt state an install layer leaves behind."""
    return build_rootfs(packages, keep_apt_state=True, cache_dir=cache_dir)
