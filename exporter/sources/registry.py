"""An OCI distribution registry, read-only: image references to their config's diff IDs.

Only GETs: `/v2/<name>/manifests/<ref>` (an index is resolved to the manifest
for the wanted platform) and `/v2/<name>/blobs/<config digest>`. Every document
read by digest is checked against that digest. Auth: anonymous, else the
credentials in the docker config (`$DOCKER_CONFIG/config.json`, else
`~/.docker/config.json`), sent as basic auth or exchanged for a bearer token
(the registry's `WWW-Authenticate` challenge says which).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import platform
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
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
_LOOPBACK = re.compile(r"^(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?$")
_MACHINE_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm"}


class RegistryError(Exception):
    """A registry could not be read (unreachable, refused, not found, or a bad document)."""


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
    """Reads manifests and configs from registries (GET only)."""

    def __init__(
        self,
        credentials: Mapping[str, tuple[str, str]] | None = None,
        timeout: float = 30.0,
        endpoints: Mapping[str, str] | None = None,
    ) -> None:
        self.credentials = dict(credentials or {})
        self.timeout = timeout
        # Registry name -> base URL (mirrors, or a registry whose API lives elsewhere).
        self.endpoints = dict(endpoints or {})
        self._tokens: dict[tuple[str, str], str] = {}

    def _base(self, registry: str) -> str:
        if registry in self.endpoints:
            return self.endpoints[registry].rstrip("/")
        return f"{'http' if _LOOPBACK.match(registry) else 'https'}://{registry}"

    def _get(self, ref: ImageReference, path: str, accept: str, limit: int) -> tuple[bytes, str]:
        url = f"{self._base(ref.registry)}/v2/{ref.repository}/{path}"
        scope = f"repository:{ref.repository}:pull"
        for attempt in range(2):
            request = urllib.request.Request(url, headers={"Accept": accept}, method="GET")
            authorization = self._authorization(ref.registry, scope)
            if authorization:
                request.add_header("Authorization", authorization)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    body = response.read(limit + 1)
                    if len(body) > limit:
                        raise RegistryError(f"{url}: more than {limit} bytes")
                    return body, response.headers.get("Content-Type", "")
            except urllib.error.HTTPError as exc:
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
        reference = ref.digest or ref.tag
        body, media_type = self._get(ref, f"manifests/{reference}", MANIFEST_ACCEPT, MAX_MANIFEST_BYTES)
        _check_digest(body, ref.digest, f"{ref.name}@{ref.digest}")
        doc = _document(body, f"manifest {ref.name}:{reference}")
        if doc.get("mediaType", media_type.split(";")[0]) in INDEX_MEDIA_TYPES or "manifests" in doc:
            digest = _platform_manifest(doc, wanted, f"{ref.name}:{reference}")
            body, _ = self._get(ref, f"manifests/{digest}", MANIFEST_ACCEPT, MAX_MANIFEST_BYTES)
            _check_digest(body, digest, f"{ref.name}@{digest}")
            doc = _document(body, f"manifest {ref.name}@{digest}")
        else:
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
        config = doc.get("config")
        config_digest = config.get("digest") if isinstance(config, dict) else None
        if not isinstance(config_digest, str) or not DIGEST_RE.match(config_digest):
            raise RegistryError(f"manifest {ref.name}@{digest} names no sha256 config")
        blob, _ = self._get(ref, f"blobs/{config_digest}", "*/*", MAX_CONFIG_BYTES)
        _check_digest(blob, config_digest, f"config {config_digest}")
        try:
            return image_details_from_config(_document(blob, f"config {config_digest}")), digest
        except ParseError as exc:
            raise RegistryError(f"config {config_digest} of {ref.name}: {exc}") from None


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
    raise RegistryError(f"{what} has no image for {wanted} (it has: {', '.join(offered) or 'none'})")
