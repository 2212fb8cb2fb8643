"""TLS and basic auth for /metrics, with a real TLS client (Python's ssl) and
certificates made by the openssl command line."""

from __future__ import annotations

import base64
import http.client
import logging
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest

from exporter.errors import ConfigError
from exporter.outputs import webconfig
from tests.serving import serving


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        cwd=d,
    )
    for name in ("server", "client"):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            cwd=d,
        )
        (d / f"{name}.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            f"{name}.ext",
            "-out",
            f"{name}.crt",
            cwd=d,
        )
    return d


def serve(web: webconfig.WebConfig) -> Iterator[int]:
    with serving(web, refreshed=True) as served:
        yield served.port


HASH = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()


@pytest.fixture
def tls_port(pki: Path, tmp_path: Path) -> Iterator[int]:
    config = tmp_path / "web.yml"
    config.write_text(
        f"tls_server_config:\n  cert_file: {pki}/server.crt\n  key_file: {pki}/server.key\n"
        f"basic_auth_users:\n  prometheus: '{HASH}'\n"
    )
    yield from serve(webconfig.load(config))


def https_get(port: int, path: str, pki: Path, auth: str | None = None, cert: bool = False) -> tuple[int, bytes]:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if cert:
        context.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_tls_and_basic_auth(tls_port: int, pki: Path):
    status, body = https_get(tls_port, "/metrics", pki, auth="prometheus:s3cret")
    assert status == 200 and b"layer_sharing_physical_bytes 2450.0" in body
    assert https_get(tls_port, "/metrics", pki, auth="prometheus:s3cret")[0] == 200  # cached verification
    assert https_get(tls_port, "/metrics", pki)[0] == 401
    assert https_get(tls_port, "/metrics", pki, auth="prometheus:wrong")[0] == 401
    assert https_get(tls_port, "/metrics", pki, auth="nobody:s3cret")[0] == 401
    assert https_get(tls_port, "/healthz", pki) == (200, b"ok\n")  # probes need no credentials


def test_plain_http_to_the_tls_port_gets_nothing(tls_port: int):
    conn = http.client.HTTPConnection("127.0.0.1", tls_port, timeout=5)
    try:
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            conn.request("GET", "/metrics")
            conn.getresponse().read()
    finally:
        conn.close()


def test_client_certificates_when_required(pki: Path, tmp_path: Path):
    config = tmp_path / "mtls.yml"
    config.write_text(
        f"tls_server_config:\n  cert_file: {pki}/server.crt\n  key_file: {pki}/server.key\n"
        f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: {pki}/ca.crt\n"
    )
    for port in serve(webconfig.load(config)):
        assert https_get(port, "/metrics", pki, cert=True)[0] == 200
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            https_get(port, "/metrics", pki, cert=False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tls_server_config: {cert_file: /nope.crt, key_file: /nope.key}\n", "does not exist"),
        ("basic_auth_users: {admin: plaintext}\n", "not a bcrypt hash"),
        ("tls_server_config: {min_version: TLS10}\n", "min_version"),
        ("tls: {}\n", "unknown key 'tls'"),
        ("[1, 2]\n", "expected a mapping"),
    ],
)
def test_bad_web_configs_are_named(tmp_path: Path, text: str, message: str):
    path = tmp_path / "web.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        webconfig.load(path)


def test_bad_web_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from exporter.cli.main import main

    path = tmp_path / "web.yml"
    path.write_text("basic_auth_users: {admin: plaintext}\n")
    assert main(["serve", "--web-config-file", str(path), "--listen-address", "127.0.0.1:1"]) == 2
    assert "bcrypt" in capsys.readouterr().err


def _issue(pki: Path, name: str, out: Path) -> None:
    """A server certificate for localhost signed by the test CA, as `name`."""
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{out}/tls.key",
            "-out", f"{out}/tls.csr", cwd=out)  # fmt: skip
    (out / "ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", f"{out}/tls.csr", "-CA", f"{pki}/ca.crt", "-CAkey", f"{pki}/ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{out}/ext", "-out", f"{out}/tls.crt", cwd=out)  # fmt: skip


def _server_name(port: int, pki: Path) -> str:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        peer: Any = tls.getpeercert()
        subject = {key: value for ((key, value),) in peer["subject"]}
        return str(subject["commonName"])


def test_a_rotated_certificate_is_served_without_a_restart(pki: Path, tmp_path: Path):
    """cert-manager rotates the Secret; the kubelet swaps the volume's ..data
    symlink to a new directory. New connections see the new certificate."""
    volume = tmp_path / "secret"
    volume.mkdir()
    first, second = tmp_path / "v1", tmp_path / "v2"
    for directory, name in ((first, "before-rotation"), (second, "after-rotation")):
        directory.mkdir()
        _issue(pki, name, directory)
    (volume / "..data").symlink_to(first)
    for file in ("tls.crt", "tls.key"):
        (volume / file).symlink_to(f"..data/{file}")
    config = volume / "web.yml"
    config.write_text("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n")
    for port in serve(webconfig.load(config)):
        assert _server_name(port, pki) == "before-rotation"
        swap = volume / "..data_tmp"
        swap.symlink_to(second)
        swap.replace(volume / "..data")  # atomically, as the kubelet does
        assert _server_name(port, pki) == "after-rotation"
        assert https_get(port, "/healthz", pki) == (200, b"ok\n")


def test_a_half_written_rotation_keeps_the_previous_certificate(pki: Path, tmp_path: Path, caplog):
    _issue(pki, "current", tmp_path)
    config = tmp_path / "web.yml"
    config.write_text("tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n")
    for port in serve(webconfig.load(config)):
        good_key = (tmp_path / "tls.key").read_bytes()
        (tmp_path / "tls.key").write_bytes(b"not yet\n")
        with caplog.at_level(logging.WARNING):
            assert _server_name(port, pki) == "current"
        assert "still serving the previous certificate" in caplog.text
        (tmp_path / "tls.key").write_bytes(good_key)
        assert _server_name(port, pki) == "current"


def _self_signed_client(tmp_path: Path) -> tuple[Path, Path]:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=anyone",
            "-keyout", "anyone.key", "-out", "anyone.crt", cwd=tmp_path)  # fmt: skip
    return tmp_path / "anyone.crt", tmp_path / "anyone.key"


def _get_with_client_cert(port: int, pki: Path, cert: tuple[Path, Path] | None) -> int:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if cert:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=5)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().status
    finally:
        conn.close()


def test_require_any_client_cert_needs_no_ca_and_accepts_any_certificate(pki: Path, tmp_path: Path):
    """exporter-toolkit's RequireAnyClientCert (Go's tls.RequireAnyClientCert):
    a client certificate is required but not verified, so no client_ca_file."""
    config = tmp_path / "any.yml"
    config.write_text(
        f"tls_server_config:\n  cert_file: {pki}/server.crt\n  key_file: {pki}/server.key\n"
        "  client_auth_type: RequireAnyClientCert\n"
    )
    for port in serve(webconfig.load(config)):
        assert _get_with_client_cert(port, pki, _self_signed_client(tmp_path)) == 200  # signed by nobody known
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            _get_with_client_cert(port, pki, None)


def test_request_client_cert_accepts_with_or_without_one(pki: Path, tmp_path: Path):
    config = tmp_path / "request.yml"
    config.write_text(
        f"tls_server_config:\n  cert_file: {pki}/server.crt\n  key_file: {pki}/server.key\n"
        "  client_auth_type: RequestClientCert\n"
    )
    for port in serve(webconfig.load(config)):
        assert _get_with_client_cert(port, pki, _self_signed_client(tmp_path)) == 200
        assert _get_with_client_cert(port, pki, None) == 200
