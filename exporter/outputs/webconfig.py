"""TLS and basic auth for /metrics, from a Prometheus exporter-toolkit web
config file (the `--web.config.file` format of node_exporter and friends):

    tls_server_config:
      cert_file: /etc/tls/tls.crt
      key_file: /etc/tls/tls.key
      client_auth_type: RequireAndVerifyClientCert   # optional
      client_ca_file: /etc/tls/ca.crt                # optional
      min_version: TLS12                             # optional
    basic_auth_users:
      prometheus: $2y$10$...                         # bcrypt hashes

Health endpoints stay open to plain GETs so the kubelet's probes work; they
reveal nothing but "ok".

As exporter-toolkit does, the certificate, key and CA files are read again
when they change (cert-manager rotates them in place): each new connection
checks the files' identity and size, and a new TLS context is built when they
differ. A set of files that does not load (a rotation half-written) keeps the
previous context and says so once.
"""

from __future__ import annotations

import base64
import ctypes
import hashlib
import hmac
import logging
import os
import re
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exporter.documents import parse_document
from exporter.errors import ConfigError

logger = logging.getLogger(__name__)

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Go's tls.RequestClientCert and tls.RequireAnyClientCert ask for a client
# certificate but do not verify it (so they need no CA file).
_UNVERIFIED = frozenset({"RequestClientCert", "RequireAnyClientCert"})
# $2a$, $2b$ or $2y$, a two-digit cost, 22 characters of salt and 31 of hash.
_BCRYPT_HASH = re.compile(r"\$2[aby]\$[0-3][0-9]\$[./A-Za-z0-9]{53}")
_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


class TlsFiles:
    """`tls_server_config` and the TLS context built from its files, rebuilt when they change."""

    def __init__(self, base: Path, tls: Any) -> None:
        if not isinstance(tls, dict):
            raise ConfigError("web config: tls_server_config must be a mapping")
        self._base = base
        self._tls = tls
        self._lock = threading.Lock()
        self._signature = self._stat()
        self._context = _tls_context(base, tls)  # at start a bad file is a ConfigError

    def _paths(self) -> list[Path]:
        keys = ("cert_file", "key_file", "client_ca_file")
        return [self._base / str(self._tls[key]) for key in keys if self._tls.get(key)]

    def _stat(self) -> tuple[tuple[int, int, int, int] | None, ...]:
        signature: list[tuple[int, int, int, int] | None] = []
        for path in self._paths():
            try:
                st = os.stat(path)  # follows the Secret volume's ..data symlink
            except OSError:
                signature.append(None)
                continue
            signature.append((st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size))
        return tuple(signature)

    def context(self) -> ssl.SSLContext:
        """The context for a new connection: rebuilt first if a file changed."""
        signature = self._stat()
        if signature != self._signature:
            with self._lock:
                if signature != self._signature:
                    self._signature = signature
                    try:
                        self._context = _tls_context(self._base, self._tls)
                        logger.info("web config: TLS certificate files changed; reloaded them")
                    except ConfigError as exc:
                        logger.warning("%s; still serving the previous certificate", exc)
        return self._context


@dataclass
class WebConfig:
    tls: TlsFiles | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)
    # bcrypt is slow by design; remember credentials already verified.
    _verified: set[bytes] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Checked in place of an unknown user's hash, so an unknown user costs what a known one does.
    _dummy: bytes | None = None

    def cached_verdict(self, header: str | None) -> bool | None:
        """The verdict without bcrypt when there is one: True without users or for
        credentials verified before, False without usable Basic credentials; None
        when bcrypt must decide (`authorized`)."""
        if not self.users:
            return True
        credentials = _credentials(header)
        if credentials is None:
            return False
        user, password = credentials
        hashed = self.users.get(user)
        if hashed is None:
            return None  # unknown users go through bcrypt too, against the dummy hash
        key = hashlib.sha256(hashed + b"\0" + password).digest()
        with self._lock:
            if any(hmac.compare_digest(key, known) for known in self._verified):
                return True
        return None

    def authorized(self, header: str | None) -> bool:
        """Whether an Authorization header passes (always, without users). An
        unknown user is checked against a dummy hash of the same cost, as
        exporter-toolkit does, so timing does not tell which users exist."""
        verdict = self.cached_verdict(header)
        if verdict is not None:
            return verdict
        credentials = _credentials(header)
        if credentials is None:
            return False
        user, password = credentials
        import bcrypt  # only once users are configured: serve without them never loads it

        hashed = self.users.get(user)
        if not bcrypt.checkpw(password, hashed if hashed is not None else self._dummy_hash()):
            return False
        if hashed is None:
            return False
        key = hashlib.sha256(hashed + b"\0" + password).digest()
        with self._lock:
            self._verified.add(key)
        return True

    def _dummy_hash(self) -> bytes:
        """A hash of a random password at the configured users' cost (the highest)."""
        with self._lock:
            if self._dummy is None:
                import bcrypt

                cost = max(_cost(hashed) for hashed in self.users.values())
                self._dummy = bcrypt.hashpw(os.urandom(16).hex().encode(), bcrypt.gensalt(rounds=cost))
            return self._dummy


def _credentials(header: str | None) -> tuple[str, bytes] | None:
    """User and password from a Basic Authorization header (the scheme's name in any case)."""
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        user, colon, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    if not colon:
        return None
    return user, password.encode()


def _cost(hashed: bytes) -> int:
    """bcrypt's cost from `$2y$10$...` (4-31); load() has checked the form."""
    return min(31, max(4, int(hashed.split(b"$")[2])))


def _path(base: Path, value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"web config: {key} must be a file path")
    path = (base / value) if not Path(value).is_absolute() else Path(value)
    if not path.is_file():
        raise ConfigError(f"web config: {key} {path} does not exist")
    return str(path)


def load(path: str | Path) -> WebConfig:
    """Read and check a web config file; ConfigError names what is wrong."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(f"web config {file}: {exc.strerror or exc}") from None
    doc = parse_document(text, f"web config {file}") or {}
    if not isinstance(doc, dict):
        raise ConfigError(f"web config {file}: expected a mapping")
    unknown = set(doc) - {"tls_server_config", "basic_auth_users", "http_server_config"}
    if unknown:
        raise ConfigError(f"web config: unknown key {sorted(unknown)[0]!r}")
    config = WebConfig()
    tls = doc.get("tls_server_config")
    if tls:
        config.tls = TlsFiles(file.parent, tls)
    users = doc.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        raise ConfigError("web config: basic_auth_users must map user names to bcrypt hashes")
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not _BCRYPT_HASH.fullmatch(hashed):
            raise ConfigError(f"web config: basic_auth_users.{user} is not a bcrypt hash")
    config.users = {str(u): h.encode() for u, h in users.items()}
    return config


def _tls_context(base: Path, tls: dict[str, Any]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    version = tls.get("min_version", "TLS12")
    if version not in _VERSIONS:
        raise ConfigError(f"web config: min_version must be one of {', '.join(_VERSIONS)}, got {version!r}")
    context.minimum_version = _VERSIONS[version]
    try:
        context.load_cert_chain(
            _path(base, tls.get("cert_file"), "cert_file"), _path(base, tls.get("key_file"), "key_file")
        )
    except ssl.SSLError as exc:
        raise ConfigError(f"web config: cannot load the certificate and key: {exc.reason or exc}") from None
    auth = tls.get("client_auth_type", "NoClientCert")
    if auth not in _CLIENT_AUTH:
        raise ConfigError(f"web config: client_auth_type must be one of {', '.join(_CLIENT_AUTH)}")
    context.verify_mode = _CLIENT_AUTH[auth]
    if auth in _UNVERIFIED:
        _accept_any_client_certificate(context, auth)
    elif tls.get("client_ca_file"):
        try:
            context.load_verify_locations(_path(base, tls["client_ca_file"], "client_ca_file"))
        except ssl.SSLError as exc:
            raise ConfigError(f"web config: cannot load client_ca_file: {exc.reason or exc}") from None
    elif context.verify_mode != ssl.CERT_NONE:
        raise ConfigError(f"web config: client_auth_type {auth} needs client_ca_file")
    return context


# OpenSSL's SSL_VERIFY_PEER and SSL_VERIFY_FAIL_IF_NO_PEER_CERT.
_SSL_VERIFY_PEER = 0x01
_SSL_VERIFY_FAIL_IF_NO_PEER_CERT = 0x02
_VerifyCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_void_p)
# Kept for the life of the process: OpenSSL holds a pointer to it.
_ACCEPT_ANY = _VerifyCallback(lambda preverify_ok, store: 1)


def _accept_any_client_certificate(context: ssl.SSLContext, auth: str) -> None:
    """Ask for a client certificate and accept any (Go's RequestClientCert and
    RequireAnyClientCert). Python's ssl has no verify callback, so OpenSSL's is
    set on the context's SSL_CTX; the pointer is checked against the verify mode
    Python just set before anything is written."""
    try:
        libssl = ctypes.CDLL(ssl._ssl.__file__)  # type: ignore[attr-defined]
        libssl.SSL_CTX_get_verify_mode.argtypes = [ctypes.c_void_p]
        libssl.SSL_CTX_get_verify_mode.restype = ctypes.c_int
        libssl.SSL_CTX_set_verify.argtypes = [ctypes.c_void_p, ctypes.c_int, _VerifyCallback]
        libssl.SSL_CTX_set_verify.restype = None
        # CPython's SSLContext object: the PyObject header, then its SSL_CTX pointer.
        ssl_ctx = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
        required = context.verify_mode == ssl.CERT_REQUIRED
        mode = _SSL_VERIFY_PEER | (_SSL_VERIFY_FAIL_IF_NO_PEER_CERT if required else 0)
        if not ssl_ctx or libssl.SSL_CTX_get_verify_mode(ssl_ctx) != mode:
            raise OSError("unexpected SSLContext layout")
        libssl.SSL_CTX_set_verify(ssl_ctx, mode, _ACCEPT_ANY)
    except (OSError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"web config: client_auth_type {auth} is not supported by this Python's ssl ({exc})"
        ) from None
