"""In-memory stand-ins for fast unit tests (integration tests use a real containerd)."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from typing import Any

from exporter.core.accounting import NodeReport
from exporter.core.chain import chain_ids
from exporter.core.facts import ContainerFacts, ImageFacts, NodeFacts, PodFacts, SnapshotUsage
from exporter.core.state import RefreshStatus
from exporter.errors import RuntimeUnavailableError


def digest(n: int | str) -> str:
    """A well-formed sha256 digest made from a small number or name."""
    if isinstance(n, str):
        return "sha256:" + hashlib.sha256(n.encode()).hexdigest()
    return f"sha256:{n:064x}"


def image(name: str, diffs: Sequence[str], tags: Sequence[str] = (), **kw: Any) -> ImageFacts:
    return ImageFacts(
        image_id=digest("img-" + name),
        repo_tags=tuple(tags or [f"localhost/{name}:1"]),
        diff_ids=tuple(digest(d) for d in diffs),
        **kw,
    )


def usage_for(sizes: dict[tuple[str, ...], int]) -> dict[str, SnapshotUsage]:
    """Layer usage keyed by chain ID, from sizes keyed by the path of diff names."""
    return {
        chain_ids([digest(n) for n in names])[-1]: SnapshotUsage(size=size, inodes=1) for names, size in sizes.items()
    }


def container(
    name: str, img: ImageFacts, namespace: str, pod: str, state: str = "running", writable: int | None = None
) -> ContainerFacts:
    return ContainerFacts(
        container_id=f"c-{namespace}-{pod}-{name}",
        name=name,
        image_id=img.image_id,
        namespace=namespace,
        pod=pod,
        sandbox_id=f"s-{namespace}-{pod}",
        state=state,
        writable_bytes=writable,
    )


def pod(namespace: str, name: str) -> PodFacts:
    return PodFacts(sandbox_id=f"s-{namespace}-{name}", namespace=namespace, name=name)


class FakeSource:
    """A FactSource that returns given facts, or fails as a down runtime does."""

    def __init__(self, facts: NodeFacts | None = None) -> None:
        self.facts = facts or NodeFacts()
        self.down = False
        self.crash: Exception | None = None
        self.errors: Counter[str] = Counter()
        self._calls: Counter[str] = Counter()
        self.forgotten = 0
        self.progress = 0

    @property
    def calls(self) -> Counter[str]:
        return self._calls

    def snapshot(self) -> NodeFacts:
        self._calls["/runtime.v1.ImageService/ListImages"] += 1
        if self.crash is not None:
            raise self.crash
        if self.down:
            raise RuntimeUnavailableError("UNAVAILABLE: connection refused")
        return self.facts

    def forget_runtime_state(self) -> None:
        self.forgotten += 1


class RecordingSink:
    """A refresh sink that keeps the last status and report published (MetricsStore's role)."""

    def __init__(self) -> None:
        self.status: RefreshStatus | None = None
        self.report: NodeReport | None = None
        self.published = 0

    def publish_refresh(self, status: RefreshStatus, report: NodeReport | None) -> None:
        self.status, self.report = status, report
        self.published += 1
