"""OCI chain IDs: how a layer on disk is named (pure).

A snapshot holds a diff applied on top of its parent, so it is identified by the
whole chain below it, never by its diff ID alone (OCI image-spec, config.md):

    chain_id[0] = diff_id[0]
    chain_id[i] = "sha256:" + sha256(chain_id[i-1] + " " + diff_id[i])
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def _child_chain_id(parent: str, diff_id: str) -> str:
    return "sha256:" + hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()


def chain_ids(diff_ids: Sequence[str]) -> tuple[str, ...]:
    """The chain ID of every layer, bottom-up.

    >>> chain_ids(["sha256:aa"])
    ('sha256:aa',)
    """
    out: list[str] = []
    for diff_id in diff_ids:
        out.append(_child_chain_id(out[-1], diff_id) if out else diff_id)
    return tuple(out)
