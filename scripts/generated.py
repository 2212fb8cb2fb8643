"""Write generated files, or with check=True only say which are stale.

One behaviour for every generator whose output is committed (README values
table, rules file, dashboards), so `make lint` and the tests can fail on drift.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sync(files: Mapping[Path, str], check: bool, command: str) -> int:
    """Exit status: 1 when checking and any file differs from what it should be."""
    stale = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
    if check:
        if stale:
            print(f"stale (run `{command}`):", *(str(p.relative_to(ROOT)) for p in stale), sep="\n  ", file=sys.stderr)
            return 1
        return 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(files[path])
    return 0


def between_markers(path: Path, begin: str, end: str, body: str) -> str:
    """The text of `path` with what stands between its two marker lines replaced by `body`."""
    text = path.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{path}: the markers {begin!r} and {end!r} are missing")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{body}{end}{tail}"
