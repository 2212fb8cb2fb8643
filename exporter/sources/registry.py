"""An OCI distribution registry, read-only: image references to their config's diff IDs
and their manifest's layer blobs.

Only GETs: `/v2/<name>/manifests/<ref>` (an index is resolved to the manifest
for the wanted platform) and `/v2/<name>/blobs/<config digest>`; layer blobs
only through `read_blob` (the `wasted` command). Every document read by digest is checked against that digest.
A client reads each manifest and config once (they are cached by digest, and
a tag by the digest it resolved to). Auth: anonymous, else the
credentials in the docker config (`$DOCKER_CONFIG/config.json`, else
`~/.docker/config.json`), sent as basic auth or exchanged for a bearer token
(the registry's `WWW-Authenticate` challenge says which).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import platform
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

from exporter.core.references import normalize_repository, split_reference
from exporter.errors import ParseError
from exporter.sources.oci import (
    DIGEST_RE,
    INDEX_MEDIA_TYPES,
    MAX_MANIFEST_BYTES,
    ImageDetails,
    image_details_from_config,
    load_json,
)

MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
# An image config is small; a larger blob is not one.
MAX_CONFIG_BYTES = 16 * 1024 * 1024
# Registries spoken to in plain HTTP, as containerd does by default.
logger = logging.getLogger(__name__)
_LOOPBACK = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$")
_MACHINE_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm"}


class RegistryError(Exception):
    """A registry could not be read (unreachable, refused, not found, or a bad document)."""


class PlatformMissingError(RegistryError):
    """An index offers no image for the platform asked (not a fault: the image is not built for it)."""


@dataclass(frozen=True, slots=True)
class BlobDescriptor:
    """A blob a manifest names: what a pull would fetch."""

    digest: str
    size: int
    media_type: str = ""


@dataclass(frozen=True, slots=True)
class ResolvedImage:
    """What a reference names for one platform: its manifest's blobs and its config."""

    manifest_digest: str
    config: BlobDescriptor
    layers: tuple[BlobDescriptor, ...]
    details: ImageDetails


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def node_platform() -> Platform:
    """This machine's platform, as OCI names it."""
    machine = platform.machine().lower()
    return Platform("linux", _MACHINE_ARCH.get(machine, machine), "v7" if machine == "armv7l" else "")


def parse_platform(text: str) -> Platform:
    """
    >>> parse_platform("linux/arm64/v8")
    Platform(os='linux', architecture='arm64', variant='v8')
    """
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValueError(f"platform {text!r} is not os/architecture[/variant]")
    return Platform(*parts)


@dataclass(frozen=True, slots=True)
class ImageReference:
    """Where an image lives: registry host, repository, and tag or digest."""

    registry: str
    repository: str
    tag: str
    digest: str

    @property
    def name(self) -> str:
        """The reference without tag or digest."""
        return f"{self.registry}/{self.repository}"


def parse_reference(ref: str) -> ImageReference:
    """A reference in the usual form; a first component without a dot, colon or `localhost` is Docker Hub's.

    >>> parse_reference("localhost:5000/team/base:1.2")
    ImageReference(registry='localhost:5000', repository='team/base', tag='1.2', digest='')
    >>> parse_reference("debian:12")
    ImageReference(registry='docker.io', repository='library/debian', tag='12', digest='')
    """
    repo, tag, digest = split_reference(ref.strip())
    if not repo:
        raise ValueError(f"{ref!r} is not an image reference")
    if digest and not DIGEST_RE.match(digest):
        raise ValueError(f"{ref!r}: {digest!r} is not a sha256 digest")
    registry, _, repository = normalize_repository(repo).partition("/")
    if not tag and not digest:
        tag = "latest"
    return ImageReference(registry, repository, tag, digest)


# The distribution reference grammar (distribution/reference regexp.go), per part.
_HOST = re.compile(
    r"^(?:(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*"
    r"|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$"
)
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^\w[\w.-]{0,127}$")


def parse_strict_reference(ref: str) -> ImageReference:
    """A reference checked against the distribution grammar (ValueError names what is wrong).

    >>> parse_strict_reference("localhost:5000/app:1").tag
    '1'
    >>> parse_strict_reference("App:1")
    Traceback (most recent call last):
    ValueError: 'App:1' is not an image reference: repository 'library/App' is not lowercase [a-z0-9._-/]
    """
    parsed = parse_reference(ref)
    problem = ""
    if ref != ref.strip() or any(c.isspace() for c in ref):
        problem = "it contains white space"
    elif ref.endswith((":", "@")):
        problem = "its tag or digest is empty"
    elif not _HOST.match(parsed.registry):
        problem = f"registry {parsed.registry!r} is not host[:port]"
    elif len(parsed.repository) > 255 or not all(_PATH_COMPONENT.match(c) for c in parsed.repository.split("/")):
        problem = f"repository {parsed.repository!r} is not lowercase [a-z0-9._-/]"
    elif parsed.tag and not _TAG.match(parsed.tag):
        problem = f"tag {parsed.tag!r} is not [A-Za-z0-9_.-] (at most 128)"
    if problem:
        raise ValueError(f"{ref!r} is not an image reference: {problem}")
    return parsed


def docker_config_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "config.json"
    return Path(env.get("HOME") or Path.home()) / ".docker" / "config.json"


def load_credentials(path: Path) -> dict[str, tuple[str, str]]:
    """Registry host -> (user, password) from a docker config.json (`auths`); {} when absent.

    Credential helpers (`credsStore`, `credHelpers`) are not run: only what the file holds.
    """
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise RegistryError(f"docker config {path}: {exc}") from None
    auths = doc.get("auths") if isinstance(doc, dict) else None
    credentials: dict[str, tuple[str, str]] = {}
    for key, entry in (auths or {}).items() if isinstance(auths, dict) else ():
        if not isinstance(entry, dict):
            continue
        host = urllib.parse.urlsplit(key if "//" in key else f"//{key}").netloc or key
        user, password = entry.get("username"), entry.get("password")
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise RegistryError(f"docker config {path}: auths[{key!r}].auth is not base64 user:password") from None
        if isinstance(user, str) and isinstance(password, str) and user:
            credentials[host] = (user, password)
    return credentials


def _challenge(header: str) -> tuple[str, dict[str, str]]:
    """The scheme and parameters of a WWW-Authenticate header."""
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    return scheme.lower(), params


class RegistryClient:
    """Reads manifests and configs from registries (GET, and HEAD for the tags of a long-lived
    client's last run)."""

    def __init__(
        self,
        credentials: Mapping[str, tuple[str, str]] | None = None,
        timeout: float = 30.0,
        endpoints: Mapping[str, str] | None = None,
        load_credentials: Callable[[], Mapping[str, tuple[str, str]]] | None = None,
    ) -> None:
        # A long-lived client reads the credentials again each run (a rotated Secret's file).
        self._load_credentials = load_credentials
        self.credentials = dict(credentials if credentials is not None else (load_credentials or dict)())
        self.timeout = timeout
        # Registry name -> base URL (mirrors, or a registry whose API lives elsewhere).
        self.endpoints = dict(endpoints or {})
        self._tokens: dict[tuple[str, str], str] = {}
        # What a digest names never changes: each document is read once per client.
        self._tags: dict[tuple[str, str, str], str] = {}  # (registry, repository, tag) -> digest
        self._manifests: dict[str, dict[str, object]] = {}  # manifest or index by digest
        self._configs: dict[str, tuple[ImageDetails, int]] = {}  # config digest -> details, bytes
        # A long-lived client's last run (new_run): what it read, kept for one more run.
        self._previous_tags: set[tuple[str, str, str]] = set()
        self._previous_manifests: dict[str, dict[str, object]] = {}
        self._previous_configs: dict[str, tuple[ImageDetails, int]] = {}
        # Threads resolving references at once still read each document once: one lock per document.
        self._locks: dict[tuple[str, ...], threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def _lock(self, *key: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(key, threading.Lock())

    def _base(self, registry: str) -> str:
        if registry in self.endpoints:
            return self.endpoints[registry].rstrip("/")
        return f"{'http' if _LOOPBACK.match(registry) else 'https'}://{registry}"

    def new_run(self) -> None:
        """A new run of a long-lived client (the locality service): tags are asked again (they
        move), by HEAD first, and a document by digest is read again only if the last run did
        not use it (what a digest names never changes). Memory holds at most two runs' documents;
        registries that count pulls (Docker Hub) count GETs of manifests, not HEADs."""
        self._previous_tags = set(self._tags)
        self._tags.clear()
        self._previous_manifests, self._manifests = self._manifests, {}
        self._previous_configs, self._configs = self._configs, {}
        self._locks.clear()  # runs are sequential: no worker holds one now
        if self._load_credentials is not None:
            try:
                credentials = dict(self._load_credentials())
            except RegistryError as exc:  # a half-written file: keep the last ones, say why
                logger.warning("registry credentials not reloaded: %s", exc)
                return
            changed = {
                r for r in credentials.keys() | self.credentials.keys() if credentials.get(r) != self.credentials.get(r)
            }
            self.credentials = credentials
            # Tokens and basic headers made from credentials that changed are made again.
            self._tokens = {key: token for key, token in self._tokens.items() if key[0] not in changed}

    def _head_digest(self, ref: ImageReference, tag: str) -> str:
        """The digest a tag names now, from a HEAD's Docker-Content-Digest ("" if not said:
        the GET that follows says what is wrong, if anything)."""
        try:
            _, headers = self._request(ref, f"manifests/{tag}", MANIFEST_ACCEPT, 0, "HEAD")
        except RegistryError:
            return ""
        digest = str(headers.get("Docker-Content-Digest", ""))
        return digest if DIGEST_RE.match(digest) else ""

    def _get(self, ref: ImageReference, path: str, accept: str, limit: int) -> tuple[bytes, str]:
        body, headers = self._request(ref, path, accept, limit, "GET")
        return body, str(headers.get("Content-Type", ""))

    def _request(self, ref: ImageReference, path: str, accept: str, limit: int, method: str) -> tuple[bytes, Message]:
        """One GET or HEAD of a registry API path, answering a 401's challenge once: the body
        (at most `limit` bytes) and the headers."""
        url = f"{self._base(ref.registry)}/v2/{ref.repository}/{path}"
        scope = f"repository:{ref.repository}:pull"
        for attempt in range(2):
            request = urllib.request.Request(url, headers={"Accept": accept}, method=method)
            authorization = self._authorization(ref.registry, scope)
            if authorization:
                request.add_header("Authorization", authorization)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    body = response.read(limit + 1) if method == "GET" else b""
                    if len(body) > limit:
                        raise RegistryError(f"{url}: more than {limit} bytes")
                    return body, response.headers
            except urllib.error.HTTPError as exc:
                exc.close()  # its connection; the status and headers stay readable
                if exc.code == 401 and attempt == 0 and self._authenticate(ref.registry, scope, exc):
                    continue
                raise RegistryError(self._refusal(ref.registry, url, exc)) from None
            except (urllib.error.URLError, OSError) as exc:
                raise RegistryError(f"{url}: {getattr(exc, 'reason', exc)}") from None
        raise RegistryError(f"{url}: refused after authenticating")

    def _refusal(self, registry: str, url: str, exc: urllib.error.HTTPError) -> str:
        if exc.code == 401:
            if registry not in self.credentials:
                return f"{url}: 401 Unauthorized, and the docker config has no credentials for {registry}"
            return f"{url}: 401 Unauthorized with the docker config's credentials for {registry}"
        return f"{url}: {exc.code} {exc.reason}"

    def _authorization(self, registry: str, scope: str) -> str:
        token = self._tokens.get((registry, scope))
        return f"Bearer {token}" if token else self._tokens.get((registry, "basic"), "")

    def _authenticate(self, registry: str, scope: str, exc: urllib.error.HTTPError) -> bool:
        """Answer a 401's challenge: basic credentials, or a bearer token from the realm."""
        scheme, params = _challenge(exc.headers.get("WWW-Authenticate", ""))
        credentials = self.credentials.get(registry)
        basic = (
            "Basic " + base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode() if credentials else ""
        )
        if scheme == "basic":
            if not basic:
                return False
            self._tokens[(registry, "basic")] = basic
            return True
        if scheme != "bearer" or not params.get("realm"):
            return False
        query = {"scope": params.get("scope", scope)}
        if params.get("service"):
            query["service"] = params["service"]
        request = urllib.request.Request(
            params["realm"] + ("&" if "?" in params["realm"] else "?") + urllib.parse.urlencode(query), method="GET"
        )
        if basic:
            request.add_header("Authorization", basic)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                doc = load_json(response.read(1024 * 1024), "token response")
        except urllib.error.HTTPError as token_exc:
            token_exc.close()
            who = (
                f"with the docker config's credentials for {registry}"
                if credentials
                else f"and the docker config has no credentials for {registry}"
            )
            raise RegistryError(f"token from {params['realm']}: {token_exc.code} {token_exc.reason}, {who}") from None
        except (urllib.error.URLError, OSError) as token_exc:
            raise RegistryError(f"token from {params['realm']}: {getattr(token_exc, 'reason', token_exc)}") from None
        except ParseError as parse_exc:
            raise RegistryError(str(parse_exc)) from None
        token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"token from {params['realm']}: no token in the response")
        self._tokens[(registry, scope)] = token
        return True

    def image_config(self, ref: ImageReference, wanted: Platform) -> tuple[ImageDetails, str]:
        """The config of the image `ref` names for `wanted` (an index is resolved), and the manifest digest."""
        digest, doc = self._image_manifest(ref, wanted)
        config = doc.get("config")
        config_digest = config.get("digest") if isinstance(config, dict) else None
        if not isinstance(config_digest, str) or not DIGEST_RE.match(config_digest):
            raise RegistryError(f"manifest {ref.name}@{digest} names no sha256 config")
        return self._config(ref, config_digest)[0], digest

    def resolve(self, ref: ImageReference, wanted: Platform) -> ResolvedImage:
        """The manifest's config and layer blobs of the image `ref` names for `wanted`, and its config's details."""
        digest, doc = self._image_manifest(ref, wanted)
        what = f"manifest {ref.name}@{digest}"
        config = _descriptor(doc.get("config"), f"{what} config")
        layers = doc.get("layers")
        if not isinstance(layers, list):
            raise RegistryError(f"{what} has no layers list")
        blobs = tuple(_descriptor(layer, f"{what} layer {i}") for i, layer in enumerate(layers))
        details, size = self._config(ref, config.digest)
        if size != config.size:
            raise RegistryError(f"{what}: config {config.digest} is {size} bytes, the manifest says {config.size}")
        if len(details.diff_ids) != len(blobs):
            raise RegistryError(f"{what} has {len(blobs)} layers but its config {len(details.diff_ids)} diff IDs")
        return ResolvedImage(digest, config, blobs, details)

    def resolve_many(
        self, refs: Sequence[ImageReference], wanted: Platform, workers: int = 8
    ) -> list[ResolvedImage | RegistryError]:
        """`resolve` for each reference, several at a time; each result or its error, in order.

        Tags are read first, so that a digest a tag resolves to is never read
        again by a reference naming that digest at the same moment.
        """
        tags = list(dict.fromkeys((r.registry, r.repository, r.tag) for r in refs if not r.digest))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for tag in tags:
                pool.submit(self._prefetch, ImageReference(tag[0], tag[1], tag[2], ""))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            return list(pool.map(lambda ref: self._resolve_or_error(ref, wanted), refs))

    def _prefetch(self, ref: ImageReference) -> None:
        with contextlib.suppress(RegistryError):  # said when the reference is resolved
            self._manifest(ref, ref.tag)

    def _resolve_or_error(self, ref: ImageReference, wanted: Platform) -> ResolvedImage | RegistryError:
        try:
            return self.resolve(ref, wanted)
        except RegistryError as exc:
            return exc

    def _image_manifest(self, ref: ImageReference, wanted: Platform) -> tuple[str, dict[str, object]]:
        """The digest and document of the image manifest `ref` names for `wanted` (an index is resolved)."""
        digest, doc = self._manifest(ref, ref.digest or ref.tag)
        if doc.get("mediaType") in INDEX_MEDIA_TYPES or "manifests" in doc:
            digest = _platform_manifest(doc, wanted, f"{ref.name}:{ref.digest or ref.tag}")
            digest, doc = self._manifest(ref, digest)
        return digest, doc

    def _manifest(self, ref: ImageReference, reference: str) -> tuple[str, dict[str, object]]:
        """A manifest or index by tag or digest, and its digest (read once per digest)."""
        # By digest, one document whatever the repository names it.
        key = (reference,) if DIGEST_RE.match(reference) else (ref.registry, ref.repository, reference)
        with self._lock("manifest", *key):
            return self._read_manifest(ref, reference)

    def _read_manifest(self, ref: ImageReference, reference: str) -> tuple[str, dict[str, object]]:
        by_digest = bool(DIGEST_RE.match(reference))
        digest = reference if by_digest else self._tags.get((ref.registry, ref.repository, reference), "")
        tag_key = (ref.registry, ref.repository, reference)
        if not digest and tag_key in self._previous_tags:
            digest = self._head_digest(ref, reference)  # a tag the last run saw: maybe still the same
        if digest in self._manifests:
            if not by_digest:
                self._tags[tag_key] = digest
            return digest, self._manifests[digest]
        if digest in self._previous_manifests:
            self._manifests[digest] = self._previous_manifests[digest]
            if not by_digest:
                self._tags[(ref.registry, ref.repository, reference)] = digest
            return digest, self._manifests[digest]
        body, media_type = self._get(ref, f"manifests/{reference}", MANIFEST_ACCEPT, MAX_MANIFEST_BYTES)
        what = f"{ref.name}@{reference}" if by_digest else f"{ref.name}:{reference}"
        _check_digest(body, reference if by_digest else "", what)
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        doc = _document(body, f"manifest {what}")
        # The Content-Type says what a document without a mediaType is.
        doc.setdefault("mediaType", media_type.split(";")[0].strip())
        self._manifests[digest] = doc
        if not by_digest:
            self._tags[(ref.registry, ref.repository, reference)] = digest
        return digest, doc

    def _config(self, ref: ImageReference, config_digest: str) -> tuple[ImageDetails, int]:
        """A config's details and its size in bytes (read once per digest)."""
        with self._lock("config", config_digest):
            return self._read_config(ref, config_digest)

    def _read_config(self, ref: ImageReference, config_digest: str) -> tuple[ImageDetails, int]:
        cached = self._configs.get(config_digest) or self._previous_configs.get(config_digest)
        if cached is not None:
            self._configs[config_digest] = cached
            return cached
        blob, _ = self._get(ref, f"blobs/{config_digest}", "*/*", MAX_CONFIG_BYTES)
        _check_digest(blob, config_digest, f"config {config_digest}")
        try:
            details = image_details_from_config(_document(blob, f"config {config_digest}"))
        except ParseError as exc:
            raise RegistryError(f"config {config_digest} of {ref.name}: {exc}") from None
        self._configs[config_digest] = (details, len(blob))
        return details, len(blob)

    def read_blob(self, ref: ImageReference, blob: BlobDescriptor, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
        """A blob's bytes as they arrive (layers: `wasted` reads each distinct one once).

        The whole blob is checked against its digest and size as it ends: a
        mismatch raises RegistryError after the last chunk, so a consumer that
        reads to the end never takes wrong bytes for the blob. Credentials are
        never sent on to where a registry redirects a blob (a storage bucket).
        """
        url = f"{self._base(ref.registry)}/v2/{ref.repository}/blobs/{blob.digest}"
        scope = f"repository:{ref.repository}:pull"
        for attempt in range(2):
            request = urllib.request.Request(url, headers={"Accept": "*/*"}, method="GET")
            authorization = self._authorization(ref.registry, scope)
            if authorization:
                request.add_unredirected_header("Authorization", authorization)
            try:
                response = urllib.request.urlopen(request, timeout=self.timeout)  # noqa: S310 - http(s) only
            except urllib.error.HTTPError as exc:
                exc.close()
                if exc.code == 401 and attempt == 0 and self._authenticate(ref.registry, scope, exc):
                    continue
                raise RegistryError(self._refusal(ref.registry, url, exc)) from None
            except (urllib.error.URLError, OSError) as exc:
                raise RegistryError(f"{url}: {getattr(exc, 'reason', exc)}") from None
            with response:
                hasher, size = hashlib.sha256(), 0
                while True:
                    try:
                        chunk = response.read(chunk_bytes)
                    except OSError as exc:
                        raise RegistryError(f"{url}: {exc}") from None
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > blob.size:
                        raise RegistryError(f"{url}: more than the {blob.size} bytes the manifest says")
                    hasher.update(chunk)
                    yield chunk
                if size != blob.size or "sha256:" + hasher.hexdigest() != blob.digest:
                    raise RegistryError(f"{url}: the registry's bytes do not match the digest and size")
            return
        raise RegistryError(f"{url}: refused after authenticating")


def _descriptor(value: object, what: str) -> BlobDescriptor:
    if not isinstance(value, dict):
        raise RegistryError(f"{what} is not a descriptor")
    digest, size, media_type = value.get("digest"), value.get("size"), value.get("mediaType", "")
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise RegistryError(f"{what} has no sha256 digest")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise RegistryError(f"{what} has no size")
    return BlobDescriptor(digest, size, media_type if isinstance(media_type, str) else "")


def _document(body: bytes, what: str) -> dict[str, object]:
    try:
        doc = load_json(body, what)
    except ParseError as exc:
        raise RegistryError(str(exc)) from None
    if not isinstance(doc, dict):
        raise RegistryError(f"{what} is not a JSON object")
    return doc


def _check_digest(body: bytes, digest: str, what: str) -> None:
    if digest and "sha256:" + hashlib.sha256(body).hexdigest() != digest:
        raise RegistryError(f"{what}: the registry's bytes do not match the digest")


def _platform_manifest(index: Mapping[str, object], wanted: Platform, what: str) -> str:
    """The digest of the index entry for `wanted` (a variant matches when the index names none)."""
    manifests = index.get("manifests")
    offered = []
    for entry in manifests if isinstance(manifests, list) else ():
        if not isinstance(entry, dict) or not isinstance(entry.get("platform"), dict):
            continue
        plat = entry["platform"]
        have = Platform(str(plat.get("os", "")), str(plat.get("architecture", "")), str(plat.get("variant", "")))
        offered.append(str(have))
        digest = entry.get("digest")
        if (
            (have.os, have.architecture) == (wanted.os, wanted.architecture)
            and (not have.variant or not wanted.variant or have.variant == wanted.variant)
            and isinstance(digest, str)
            and DIGEST_RE.match(digest)
        ):
            return digest
    raise PlatformMissingError(f"{what} has no image for {wanted} (it has: {', '.join(offered) or 'none'})")
