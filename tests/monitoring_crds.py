"""The Prometheus Operator's CRD schemas (tests/data/prometheus-operator), and a
check of monitoring.coreos.com objects against them.

jsonschema checks types, enums, patterns, minimums and required fields. It
does not reject undeclared fields: the CRDs never say additionalProperties:
false, and the API server silently prunes such fields from a structural CRD.
`unknown_fields` finds them, as the API server's strict field validation does.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

DATA = Path(__file__).resolve().parent / "data" / "prometheus-operator"
FILES = {
    "ServiceMonitor": "servicemonitor.json",
    "PodMonitor": "podmonitor.json",
    "PrometheusRule": "prometheusrule.json",
}


@cache
def crd_document(kind: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((DATA / FILES[kind]).read_text())
    assert document["kind"] == kind and "v0.93.0" in document["source"]
    return document


def unknown_fields(obj: Any, schema: dict[str, Any], path: str = "", top: bool = True) -> list[str]:
    """Paths of fields the schema does not declare (the API server would prune them)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found: list[str] = []
    if isinstance(obj, dict):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        for key, value in obj.items():
            where = f"{path}.{key}" if path else key
            if top and key in ("apiVersion", "kind", "metadata"):
                continue  # ObjectMeta is the API server's own, not the CRD schema's
            if properties is not None and key in properties:
                found += unknown_fields(value, properties[key], where, top=False)
            elif isinstance(additional, dict):
                found += unknown_fields(value, additional, where, top=False)
            elif additional is not True:
                found.append(where)
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, value in enumerate(obj):
            found += unknown_fields(value, schema["items"], f"{path}[{i}]", top=False)
    return found


def problems(obj: dict[str, Any]) -> list[str]:
    """Every schema error and undeclared field of one monitoring.coreos.com object."""
    document = crd_document(obj["kind"])
    assert obj["apiVersion"] == document["apiVersion"]
    schema = document["schema"]
    errors = sorted(Draft202012Validator(schema).iter_errors(obj), key=lambda e: list(e.absolute_path))
    found = [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors]
    return found + [f"{field}: not in the {obj['kind']} schema" for field in unknown_fields(obj, schema)]
