#!/usr/bin/env python3
"""Generate the chart's values reference table from the `# --` comments in
values.yaml, into the chart's README.md between the values-table markers (the
helm-docs convention: the table travels with the chart).

    python -m scripts.gen_chart_docs           # rewrite charts/layer-sharing-exporter/README.md
    python -m scripts.gen_chart_docs --check   # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

from scripts.generated import sync

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "layer-sharing-exporter"
VALUES = CHART / "values.yaml"
README = CHART / "README.md"
START, END = "<!-- values-table:start -->", "<!-- values-table:end -->"
_KEY = re.compile(r"^(\s*)([A-Za-z0-9_]+):")


def documented_keys(text: str) -> list[tuple[str, str]]:
    """(dotted key, description) for every key preceded by a `# --` comment."""
    out: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = []
    pending: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and pending:
            pending.append(stripped[1:].strip())
            continue
        match = _KEY.match(line)
        if not match:
            if stripped:
                pending = []
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        if pending:
            out.append((".".join(k for _, k in stack), " ".join(pending)))
            pending = []
    return out


def lookup(values: dict, dotted: str) -> object:  # type: ignore[type-arg]
    node: object = values
    for part in dotted.split("."):
        node = node[part] if isinstance(node, dict) else None
    return node


def table() -> str:
    text = VALUES.read_text()
    values = yaml.safe_load(text)
    rows = ["| key | default | description |", "|---|---|---|"]
    for key, description in documented_keys(text):
        default = json.dumps(lookup(values, key), separators=(", ", ": "))
        cell = description.replace("|", "\\|")
        rows.append(f"| `{key}` | `{default}` | {cell} |")
    return "\n".join(rows)


def render(readme: str) -> str:
    before, rest = readme.split(START, 1)
    _, after = rest.split(END, 1)
    return f"{before}{START}\n{table()}\n{END}{after}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args()
    return sync({README: render(README.read_text())}, args.check, "make docs")


if __name__ == "__main__":
    sys.exit(main())
