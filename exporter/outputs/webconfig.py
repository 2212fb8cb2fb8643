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
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from exporter.errors import ConfigError

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "RequestClientCert": ssl.CERT_OPTIONAL,
    "RequireAnyClientCert": ssl.CERT_REQUIRED,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}


@dataclass
class WebConfig:
    tls: ssl.SSLContext | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)
    # bcrypt is slow by design; remember credentials already verified.
    _verified: set[bytes] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def authorized(self, header: str | None) -> bool:
        """Whether an Authorization header passes (always, without users)."""
        if not self.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = self.users.get(user)
        if hashed is None:
            return False
        key = hashlib.sha256(hashed + b"\0" + password.encode()).digest()
        with self._lock:
            if any(hmac.compare_digest(key, known) for known in self._verified):
                return True
        import bcrypt  # only once users are configured: serve without them never loads it

        if not bcrypt.checkpw(password.encode(), hashed):
            return False
        with self._lock:
            self._verified.add(key)
        return True


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
        doc = yaml.safe_load(file.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"web config {file}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"web config {file}: not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"web config {file}: expected a mapping")
    unknown = set(doc) - {"tls_server_config", "basic_auth_users", "http_server_config"}
    if unknown:
        raise ConfigError(f"web config: unknown key {sorted(unknown)[0]!r}")
    config = WebConfig()
    tls = doc.get("tls_server_config")
    if tls:
        config.tls = _tls_context(file.parent, tls)
    users = doc.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        raise ConfigError("web config: basic_auth_users must map user names to bcrypt hashes")
    for user, hashed in users.items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(f"web config: basic_auth_users.{user} is not a bcrypt hash")
    config.users = {str(u): h.encode() for u, h in users.items()}
    return config


def _tls_context(base: Path, tls: Any) -> ssl.SSLContext:
    if not isinstance(tls, dict):
        raise ConfigError("web config: tls_server_config must be a mapping")
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
    if tls.get("client_ca_file"):
        context.load_verify_locations(_path(base, tls["client_ca_file"], "client_ca_file"))
    elif context.verify_mode != ssl.CERT_NONE:
        raise ConfigError(f"web config: client_auth_type {auth} needs client_ca_file")
    return context
