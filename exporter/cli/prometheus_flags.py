"""`report --prometheus-url`'s client flags: credentials, TLS, headers, tenant, and the
label the measured pod's namespace arrives under.

Named after Prometheus's own client configuration (http_config): a bearer token
or a file holding it (`authorization.credentials`/`credentials_file`), a CA file
and insecure_skip_verify (`tls_config`), extra headers (`http_headers`), plus the
X-Scope-OrgID tenant header of Mimir, Cortex and Thanos Receive. Only argparse is
imported here: `serve` builds the same parser and must not load the report.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exporter.core.cluster import MeasuredPodLabels
    from exporter.sources.prometheus_api import ClientOptions


def add_prometheus_flags(report: argparse.ArgumentParser) -> None:
    """Add the Prometheus client flags to the `report` subparser."""
    group = report.add_argument_group(
        "Prometheus client (--prometheus-url)",
        "as Prometheus's http_config: authorization, tls_config, http_headers",
    )
    token = group.add_mutually_exclusive_group()
    token.add_argument(
        "--prometheus-bearer-token",
        default="",
        metavar="TOKEN",
        help="send 'Authorization: Bearer TOKEN' (visible in the process list: prefer the file)",
    )
    token.add_argument(
        "--prometheus-bearer-token-file",
        default="",
        metavar="FILE",
        help="read the bearer token from FILE, e.g. /var/run/secrets/kubernetes.io/serviceaccount/token "
        "(OpenShift's Thanos Querier)",
    )
    group.add_argument(
        "--prometheus-ca-file", default="", metavar="FILE", help="CA certificates to trust for an https URL"
    )
    group.add_argument(
        "--prometheus-insecure-skip-verify",
        action="store_true",
        help="do not verify the server's certificate (tests only)",
    )
    group.add_argument(
        "--prometheus-header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="an extra request header, as curl -H; repeatable",
    )
    group.add_argument(
        "--prometheus-tenant",
        default="",
        metavar="ID",
        help="tenant of a multi-tenant store, sent as X-Scope-OrgID (Mimir, Cortex, Thanos Receive)",
    )
    group.add_argument(
        "--prometheus-namespace-label",
        default="",
        metavar="LABEL",
        help="label the measured pods' namespace arrives under: namespace, or exported_namespace where the scrape "
        "does not honour the exporter's labels (OpenShift user-workload monitoring; the chart's "
        "measuredPodLabels.namespace). Default: either, as each series has it",
    )


# RFC 9110 token characters.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_FLAGS = (
    "prometheus_bearer_token",
    "prometheus_bearer_token_file",
    "prometheus_ca_file",
    "prometheus_insecure_skip_verify",
    "prometheus_header",
    "prometheus_tenant",
    "prometheus_namespace_label",
)


def _headers(values: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, colon, content = value.partition(":")
        name = name.strip()
        if not colon or not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"--prometheus-header {value!r} is not 'NAME: VALUE'")
        headers[name] = content.strip()
    return headers


def client_options(args: argparse.Namespace) -> ClientOptions:
    """The Prometheus client options the flags ask for; ValueError names a bad flag."""
    from exporter.sources.prometheus_api import TENANT_HEADER, ClientOptions

    if not args.prometheus_url:
        given = [f"--{name.replace('_', '-')}" for name in _FLAGS if getattr(args, name)]
        if given:
            raise ValueError(f"{', '.join(given)} only apply with --prometheus-url")

    headers = _headers(args.prometheus_header)
    token = bool(args.prometheus_bearer_token or args.prometheus_bearer_token_file)
    if token and any(name.lower() == "authorization" for name in headers):
        raise ValueError("give a bearer token or an Authorization header, not both")
    if args.prometheus_tenant and any(name.lower() == TENANT_HEADER.lower() for name in headers):
        raise ValueError(f"give --prometheus-tenant or a {TENANT_HEADER} header, not both")
    for flag, path in (
        ("--prometheus-bearer-token-file", args.prometheus_bearer_token_file),
        ("--prometheus-ca-file", args.prometheus_ca_file),
    ):
        if path and not os.access(path, os.R_OK):
            raise ValueError(f"{flag} {path}: no such readable file")
    tls = args.prometheus_ca_file or args.prometheus_insecure_skip_verify
    if tls and not args.prometheus_url.lower().startswith("https:"):
        raise ValueError("--prometheus-ca-file and --prometheus-insecure-skip-verify need an https:// URL")
    return ClientOptions(
        bearer_token=args.prometheus_bearer_token,
        bearer_token_file=args.prometheus_bearer_token_file,
        ca_file=args.prometheus_ca_file,
        insecure_skip_verify=args.prometheus_insecure_skip_verify,
        headers=headers,
        tenant=args.prometheus_tenant,
    )


def measured_pod_labels(args: argparse.Namespace) -> MeasuredPodLabels:
    """Where the measured pod's namespace is read from (empty: either name)."""
    from exporter.core.cluster import MeasuredPodLabels

    label = args.prometheus_namespace_label
    if label and not _LABEL_NAME.fullmatch(label):
        raise ValueError(f"--prometheus-namespace-label {label!r} is not a Prometheus label name")
    return MeasuredPodLabels(namespace=label)
