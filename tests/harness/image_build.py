"""The project's image, built from its own Dockerfile with Debian's podman, and cached.

No container registry can be reached here, so the Dockerfile's two bases are made
from Debian packages first, from this machine's own apt sources, and tagged as the
`FROM`s the Dockerfile names (its ARG defaults):

- the build base (debian slim): `mmdebstrap --variant=minbase`;
- the runtime base (distroless python3): `mmdebstrap --variant=extract` of Debian's
  python3.11 and the libraries it links, with the symlinks, users and groups the
  distroless image adds, and no documentation, package manager state or shell.

pip inside the build reads this machine's pip configuration (index, extra indexes,
find-links, CA bundle), written to a file outside the project and mounted for the
build only, with the local directories it names; apt reads the sources the base
was made with. Nothing of either is written into the project or the image.

Everything is cached under `<repo>/.cache/image/`: the base tarballs (by recipe),
podman's own store (so an unchanged requirements.lock reuses the dependency layer)
and the built image as a docker-archive, keyed by the Dockerfile and every file it
copies. A fresh clone builds all of it once; one lock serialises test processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dockerfile_parse import DockerfileParser

from tests.harness.apt_sources import machine_codename, read_sources
from tests.harness.rootfs import RootfsUnavailableError, _mmdebstrap

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "image"
# Bump when a base recipe below changes, so cached base tarballs are made again.
RECIPE_VERSION = 1
# podman here refuses to start a container without explicit, low rlimits.
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")

# Distroless python3-debian12: Debian's python3.11 and what it links, plus glibc,
# OpenSSL, libstdc++ (the `cc` layer it is built on), tzdata and netbase.
RUNTIME_PACKAGES = (
    "base-files",
    "netbase",
    "tzdata",
    "libc6",
    "libssl3",
    "libgcc-s1",
    "libstdc++6",
    "libgomp1",
    "python3.11-minimal",
    "libpython3.11-stdlib",
)
# As distroless writes them: root, nobody, nonroot.
PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
PASSWD += "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
GROUP = "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"
# What neither distroless nor debian slim ship, and what mmdebstrap's extract leaves.
RUNTIME_CLEANUP = (
    "usr/share/doc usr/share/man usr/share/info usr/share/lintian usr/share/locale "
    "var/lib/apt var/cache/apt var/cache/debconf var/log/apt etc/apt var/lib/dpkg/info "
    "usr/bin/dpkg usr/bin/dpkg-deb usr/bin/dpkg-divert usr/bin/dpkg-maintscript-helper usr/bin/dpkg-query "
    "usr/bin/dpkg-realpath usr/bin/dpkg-split usr/bin/dpkg-statoverride usr/bin/dpkg-trigger "
    "usr/bin/debconf usr/bin/debconf-apt-progress usr/bin/debconf-communicate usr/bin/debconf-copydb "
    "usr/bin/debconf-escape usr/bin/debconf-set-selections usr/bin/debconf-show usr/bin/tar usr/bin/mawk"
)


class ImageBuildError(RuntimeError):
    """The image (or a base) could not be made; the message says why and where."""


@dataclass(frozen=True)
class BuiltImage:
    """The exporter image as a docker-archive tarball, ready for `ctr images import`."""

    ref: str
    archive: Path
    image_id: str  # sha256:<config digest>
    diff_ids: tuple[str, ...]
    built_seconds: float | None  # None: taken from the cache


def version() -> str:
    """exporter/__init__.py's __version__: the one source of every version."""
    match = re.search(r'^__version__ = "([^"]+)"', (ROOT / "exporter" / "__init__.py").read_text(), re.MULTILINE)
    if not match:
        raise ImageBuildError("exporter/__init__.py has no __version__")
    return match[1]


def image_ref(repository: str = "ghcr.io/layer-sharing-exporter/layer-sharing-exporter") -> str:
    return f"{repository}:{version()}"


def dockerfile_bases() -> dict[str, str]:
    """The Dockerfile's ARG defaults for its bases (BUILD_IMAGE, RUNTIME_IMAGE)."""
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    args = {}
    for instruction in parser.structure:
        if instruction["instruction"] == "ARG" and "=" in instruction["value"]:
            key, value = instruction["value"].split("=", 1)
            args[key] = value
    return {k: args[k] for k in ("BUILD_IMAGE", "RUNTIME_IMAGE")}


def copied_sources() -> list[Path]:
    """Every file of the build context the Dockerfile COPYs (not --from a stage)."""
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    files: list[Path] = []
    for instruction in parser.structure:
        if instruction["instruction"] != "COPY" or "--from=" in instruction["value"]:
            continue
        *sources, _ = instruction["value"].split()
        for source in sources:
            path = ROOT / source
            if path.is_dir():
                files += sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
            else:
                files.append(path)
    return files


def _apt_sources(codename: str) -> list[str]:
    """One-line entries for the Debian archive, its updates and security suites, from apt's config."""
    wanted = {codename, f"{codename}-updates", f"{codename}-security"}
    lines = []
    for source in read_sources():
        official = source.signed_by is None or "debian-archive-keyring" in source.signed_by
        if "deb" not in source.types or "main" not in source.components or not official:
            continue
        for uri in source.uris:
            for suite in source.suites:
                if suite in wanted and not uri.startswith("cdrom:"):
                    lines.append(f"deb {uri.rstrip('/')} {suite} main")
    if not any(f" {codename} main" in line for line in lines):
        raise ImageBuildError(f"apt's configuration names no Debian archive for {codename}")
    return sorted(set(lines))


@dataclass(frozen=True)
class BaseRecipe:
    ref: str
    options: tuple[str, ...]

    def key(self, sources: list[str]) -> str:
        text = json.dumps([RECIPE_VERSION, self.ref, self.options, sources])
        return hashlib.sha256(text.encode()).hexdigest()[:12]


def base_recipes() -> list[BaseRecipe]:
    bases = dockerfile_bases()
    return [
        BaseRecipe(bases["BUILD_IMAGE"], ("--variant=minbase",)),
        BaseRecipe(bases["RUNTIME_IMAGE"], ("--variant=extract", "--include=" + ",".join(RUNTIME_PACKAGES))),
    ]


def _distroless_tree(extracted: Path, out: Path) -> None:
    """mmdebstrap's extract (which runs no hooks) made into what distroless ships: without
    RUNTIME_CLEANUP, with python3/python links, users and groups, and a 1777 /tmp."""
    drop = tuple("./" + p for p in RUNTIME_CLEANUP.split())
    added = {"./etc/passwd": PASSWD.encode(), "./etc/group": GROUP.encode()}
    with tarfile.open(extracted) as source, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as target:
        for member in source:
            if member.name in added or any(member.name == d or member.name.startswith(d + "/") for d in drop):
                continue
            if member.name == "./tmp":
                member.mode = 0o1777
            target.addfile(member, source.extractfile(member) if member.isfile() else None)
        for name, content in added.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), 0o644
            target.addfile(info, io.BytesIO(content))
        for link in ("./usr/bin/python3", "./usr/bin/python"):
            info = tarfile.TarInfo(link)
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, "python3.11", 0o777
            target.addfile(info)
        home = tarfile.TarInfo("./home/nonroot")
        home.type, home.mode, home.uid, home.gid = tarfile.DIRTYPE, 0o700, 65532, 65532
        target.addfile(home)


def _run(command: list[str], what: str, timeout: float = 1800, **kw: object) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, **kw)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise ImageBuildError(f"{what} failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-4000:]}")
    return str(result.stdout)


def base_tarball(recipe: BaseRecipe) -> Path:
    """The recipe's root filesystem tarball, made once with mmdebstrap."""
    codename = machine_codename()
    sources = _apt_sources(codename)
    safe = re.sub(r"[^A-Za-z0-9.-]+", "_", recipe.ref)
    out = CACHE / "bases" / f"{safe}-{recipe.key(sources)}.tar"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        mmdebstrap = _mmdebstrap()
    except RootfsUnavailableError as exc:
        raise ImageBuildError(str(exc)) from None
    partial = out.with_suffix(".partial.tar")
    mode = "--mode=root" if os.geteuid() == 0 else "--mode=unshare"
    command = [mmdebstrap, mode, "--format=tar", "--quiet", *recipe.options, codename, str(partial), *sources]
    try:
        _run(command, f"mmdebstrap for {recipe.ref}", timeout=900)
    except ImageBuildError:
        partial.unlink(missing_ok=True)
        raise
    if "--variant=extract" in recipe.options:
        _distroless_tree(partial, out)
        partial.unlink()
    else:
        partial.rename(out)
    return out


class Podman:
    """podman on the cache's own store (overlay), so nothing on the machine is touched."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root = root or CACHE / "storage"
        # podman keeps the runroot in its database, so it is fixed per store; and it
        # refuses a runroot path longer than 50 characters.
        self.runroot = Path(tempfile.gettempdir()) / f"lse-podman-{hashlib.sha256(bytes(root)).hexdigest()[:8]}"

    def command(self, *args: str) -> list[str]:
        podman = shutil.which("podman")
        if podman is None:
            raise ImageBuildError("podman is not installed (Debian package podman; run scripts/setup.sh --test)")
        return [
            podman,
            "--root",
            str(self.root),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            "overlay",
            "--events-backend",
            "file",
            "--cgroup-manager",
            "cgroupfs",
            *args,
        ]

    def run(self, *args: str, timeout: float = 600) -> str:
        return _run(self.command(*args), f"podman {args[0]}", timeout=timeout)

    def exists(self, ref: str) -> bool:
        return subprocess.run(self.command("image", "exists", ref), capture_output=True).returncode == 0

    def remove_older_untagged(self, before: float) -> None:
        """Earlier builds' images: untagged and made before `before`, leaves first. An image
        a kept one builds on (the dependency layers this build reused) refuses removal and stays."""
        for _ in range(64):
            images = json.loads(self.run("images", "-a", "--format", "json"))
            removed = 0
            for image in images:
                if not image.get("Names") and image.get("Created", before) < before:
                    removed += subprocess.run(self.command("rmi", image["Id"]), capture_output=True).returncode == 0
            if not removed:
                return


def ensure_bases(podman: Podman) -> None:
    """Import each base tarball under the Dockerfile's FROM name (once per tarball)."""
    for recipe in base_recipes():
        tarball = base_tarball(recipe)
        label = f"lse.base.tarball={tarball.name}"
        if podman.exists(recipe.ref):
            labels = podman.run("image", "inspect", "--format", "{{json .Labels}}", recipe.ref)
            if tarball.name in labels:
                continue
        # The runtime base's default command, as distroless sets it.
        changes = ["--change", f"LABEL {label}"]
        if "distroless" in recipe.ref:
            changes += ["--change", 'ENTRYPOINT ["/usr/bin/python3.11"]']
        else:
            changes += ["--change", 'CMD ["bash"]']
        podman.run("import", *changes, str(tarball), recipe.ref)


def _pip_settings() -> dict[str, str]:
    """index-url, extra-index-url, find-links, cert and trusted-host from `pip config list`
    (environment included), as pip itself resolves them."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=False
    ).stdout
    wanted = {"index-url", "extra-index-url", "find-links", "cert", "trusted-host"}
    settings: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        if name in wanted:
            settings[name] = value.strip().strip("'\"")  # later lines (environment) win, as in pip
    return settings


def pip_build_mounts(workdir: Path) -> list[str]:
    """`-v` options giving the build's pip this machine's configuration, read-only:
    a pip.conf written under `workdir` and every local path it names, at the same paths."""
    settings = _pip_settings()
    local: set[str] = set()
    mounts = []
    if cert := settings.get("cert"):
        # Not over the build's own bundle, which its ca-certificates package rewrites.
        mounts += ["-v", f"{cert}:/run/pip-ca-bundle.crt:ro"]
        settings["cert"] = "/run/pip-ca-bundle.crt"
    for key in ("index-url", "extra-index-url", "find-links"):
        for item in settings.get(key, "").split():
            path = item.removeprefix("file://").rstrip("/")
            if path.startswith("/") and os.path.exists(path):
                # A local index's pages link to files beside it (../../files/...).
                local.add(os.path.dirname(path) if key.endswith("index-url") else path)
    conf = workdir / "pip.conf"
    conf.write_text("[global]\n" + "".join(f"{k} = {v}\n" for k, v in sorted(settings.items())))
    mounts += ["-v", f"{conf}:/etc/pip.conf:ro"]
    for path in sorted(local):
        mounts += ["-v", f"{path}:{path}:ro"]
    return mounts


def inputs_key() -> str:
    """A digest of the Dockerfile, .dockerignore, every copied file and the bases' recipes."""
    digest = hashlib.sha256()
    codename = machine_codename()
    sources = _apt_sources(codename)
    for recipe in base_recipes():
        digest.update(recipe.key(sources).encode())
    for path in [ROOT / "Dockerfile", ROOT / ".dockerignore", *copied_sources()]:
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0")
        digest.update(path.read_bytes() if path.exists() else b"(missing)")
    return digest.hexdigest()[:16]


def archive_config(archive: Path) -> tuple[str, tuple[str, ...]]:
    """(image ID, diff IDs) from a docker-archive's manifest.json and config."""
    with tarfile.open(archive) as tar:
        manifest = json.load(_member(tar, "manifest.json"))
        config_name = manifest[0]["Config"]
        config_bytes = _member(tar, config_name).read()
    config = json.loads(config_bytes)
    return "sha256:" + hashlib.sha256(config_bytes).hexdigest(), tuple(config["rootfs"]["diff_ids"])


def _member(tar: tarfile.TarFile, name: str) -> io.BufferedReader:
    extracted = tar.extractfile(name)
    if extracted is None:
        raise ImageBuildError(f"{name} missing from the archive")
    return extracted  # type: ignore[return-value]


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build_image() -> BuiltImage:
    """The exporter image from the project's Dockerfile, built once per set of inputs."""
    ref = image_ref()
    with _locked("build"):
        key = inputs_key()
        archive = CACHE / f"layer-sharing-exporter-{version()}-{key}.tar"
        if archive.exists():
            image_id, diff_ids = archive_config(archive)
            return BuiltImage(ref, archive, image_id, diff_ids, None)
        podman = Podman()
        workdir = Path(tempfile.mkdtemp(prefix="lse-img-build-"))
        try:
            started, started_at = time.monotonic(), time.time()
            ensure_bases(podman)
            podman.run(
                "build",
                "--pull=never",
                "--network=host",
                *ULIMITS,
                *pip_build_mounts(workdir),
                "--layers",
                "-f",
                str(ROOT / "Dockerfile"),
                "-t",
                ref,
                str(ROOT),
                timeout=1800,
            )
            built_seconds = time.monotonic() - started
            partial = archive.with_suffix(".partial.tar")
            partial.unlink(missing_ok=True)
            podman.run("save", "--format", "docker-archive", "-o", str(partial), ref)
            partial.rename(archive)
            # Older archives of this version are stale now.
            for old in CACHE.glob("layer-sharing-exporter-*.tar"):
                if old != archive:
                    old.unlink(missing_ok=True)
            podman.remove_older_untagged(started_at)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        image_id, diff_ids = archive_config(archive)
        return BuiltImage(ref, archive, image_id, diff_ids, built_seconds)


def build_standin(name: str, ref: str, files: dict[str, bytes], entrypoint: list[str]) -> BuiltImage:
    """A small image on the runtime base: `files` (path in the image -> content) and an
    entrypoint. For sidecars whose real image cannot be had here; cached by content."""
    digest = hashlib.sha256(json.dumps([ref, entrypoint, sorted(files)]).encode())
    for path in sorted(files):
        digest.update(files[path])
    base = dockerfile_bases()["RUNTIME_IMAGE"]
    with _locked("build"):
        codename = machine_codename()
        runtime_recipe = base_recipes()[1]
        digest.update(runtime_recipe.key(_apt_sources(codename)).encode())
        archive = CACHE / f"standin-{name}-{digest.hexdigest()[:16]}.tar"
        if archive.exists():
            image_id, diff_ids = archive_config(archive)
            return BuiltImage(ref, archive, image_id, diff_ids, None)
        podman = Podman()
        context = Path(tempfile.mkdtemp(prefix="lse-standin-"))
        try:
            started = time.monotonic()
            ensure_bases(podman)
            lines = [f"FROM {base}"]
            for n, (path, content) in enumerate(sorted(files.items())):
                (context / f"f{n}").write_bytes(content)
                lines.append(f"COPY f{n} {path}")
            lines.append(f"ENTRYPOINT {json.dumps(entrypoint)}")
            (context / "Containerfile").write_text("\n".join(lines) + "\n")
            podman.run("build", "--pull=never", *ULIMITS, "-t", ref, str(context), timeout=600)
            partial = archive.with_suffix(".partial.tar")
            partial.unlink(missing_ok=True)
            podman.run("save", "--format", "docker-archive", "-o", str(partial), ref)
            partial.rename(archive)
            for old in CACHE.glob(f"standin-{name}-*.tar"):
                if old != archive:
                    old.unlink(missing_ok=True)
            built_seconds = time.monotonic() - started
        finally:
            shutil.rmtree(context, ignore_errors=True)
        image_id, diff_ids = archive_config(archive)
        return BuiltImage(ref, archive, image_id, diff_ids, built_seconds)


if __name__ == "__main__":  # `python -m tests.harness.image_build`: build (or find) the image, say where
    image = build_image()
    took = "cached" if image.built_seconds is None else f"built in {image.built_seconds:.0f} s"
    print(f"{image.ref} {image.image_id} ({took}): {image.archive}")
