"""`report --prometheus-url`'s client flags (exporter/cli/prometheus_flags.py) and its exit
codes when Prometheus gives no answer. The flags reaching a real Prometheus behind a real
TLS, bearer-token proxy are in tests/integration/test_report.py."""

from __future__ import annotations

import argparse
import socket

import pytest

from exporter.cli.args import build_parser
from exporter.cli.exit_codes import EXIT_UNREACHABLE, EXIT_USAGE
from exporter.cli.main import main
from exporter.cli.prometheus_flags import client_options, measured_pod_labels
from exporter.core.cluster import MeasuredPodLabels


def parse(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["report", *flags])


def test_flags_build_the_client_options(tmp_path):
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("t")
    ca.write_text("")
    args = parse(
        "--prometheus-url",
        "https://thanos-querier.openshift-monitoring.svc:9091",
        "--prometheus-bearer-token-file",
        str(token),
        "--prometheus-ca-file",
        str(ca),
        "--prometheus-header",
        "X-Team: platform",
        "--prometheus-header",
        "X-Empty:",
        "--prometheus-tenant",
        "team-a",
        "--prometheus-namespace-label",
        "exported_namespace",
    )
    options = client_options(args)
    assert (options.bearer_token, options.bearer_token_file, options.ca_file) == ("", str(token), str(ca))
    assert dict(options.headers) == {"X-Team": "platform", "X-Empty": ""}
    assert (options.tenant, options.insecure_skip_verify) == ("team-a", False)
    assert measured_pod_labels(args) == MeasuredPodLabels(namespace="exported_namespace")
    default = parse("--prometheus-url", "http://prometheus:9090")
    assert client_options(default).headers == {} and measured_pod_labels(default) == MeasuredPodLabels()


def test_a_token_and_a_token_file_are_refused_by_argparse(capsys):
    with pytest.raises(SystemExit) as exc:
        parse("--prometheus-url", "http://p", "--prometheus-bearer-token", "a", "--prometheus-bearer-token-file", "f")
    assert exc.value.code == EXIT_USAGE
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--prometheus-url", "http://p", "--prometheus-header", "no colon"], "is not 'NAME: VALUE'"),
        (["--prometheus-url", "http://p", "--prometheus-header", "Bad Name: v"], "is not 'NAME: VALUE'"),
        (
            [
                "--prometheus-url",
                "http://p",
                "--prometheus-bearer-token",
                "t",
                "--prometheus-header",
                "Authorization: x",
            ],
            "not both",
        ),
        (
            ["--prometheus-url", "http://p", "--prometheus-tenant", "a", "--prometheus-header", "x-scope-orgid: b"],
            "not both",
        ),
        (["--prometheus-url", "http://p", "--prometheus-insecure-skip-verify"], "need an https:// URL"),
        (["--prometheus-url", "https://p", "--prometheus-ca-file", "/nonexistent/ca.crt"], "no such readable file"),
        (["--prometheus-url", "https://p", "--prometheus-bearer-token-file", "/nonexistent"], "no such readable file"),
        (["--prometheus-tenant", "a"], "--prometheus-tenant only apply with --prometheus-url"),
        (["--prometheus-url", "http://p", "--prometheus-namespace-label", "exported-namespace"], "not a Prometheus"),
    ],
)
def test_bad_combinations_exit_2_naming_the_flag(capsys, flags, message):
    assert main(["report", *flags]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_refused_connection_says_so_and_exits_with_the_connection_error_code(capsys):
    with socket.socket() as held:  # a port that is certainly closed: bound, never listening
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        assert main(["report", "--prometheus-url", f"http://127.0.0.1:{port}", "--timeout", "2"]) == EXIT_UNREACHABLE
    err = capsys.readouterr().err
    assert f"cannot connect to http://127.0.0.1:{port}: connection refused" in err
    assert "no layer_sharing_up" not in err and EXIT_UNREACHABLE == 4
