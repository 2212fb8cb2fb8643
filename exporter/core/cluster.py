"""The cluster view (pure): per-node exporter samples in, cluster rows out.

Sources (the Prometheus HTTP API, or each exporter's /metrics through the API
server's pod proxy) only translate into `NodeSamples`; the renderers live in
exporter.outputs.report.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Sample:
    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class NodeSamples:
    node: str
    samples: tuple[Sample, ...]


@dataclass(frozen=True, slots=True)
class NodeRow:
    node: str
    up: bool
    images: int
    pods: int
    physical: int
    logical: int
    shared: int
    unique: int
    reclaimable: int
    content: int

    @property
    def saved(self) -> int:
        return self.logical - self.physical


@dataclass(frozen=True, slots=True)
class BaseRow:
    base: str
    source: str
    nodes: int
    images: int
    pods: int
    bytes: int


@dataclass(frozen=True, slots=True)
class WorkloadRow:
    namespace: str
    kind: str
    name: str
    nodes: int
    pods: int
    attributed: int
    bases: tuple[str, ...]
    on_catalog: bool


@dataclass(frozen=True, slots=True)
class ImageRow:
    image: str
    base: str
    nodes: int
    size: int
    unique: int
    # Files its layers store but it hides (the same on every node); None: no node could tell.
    wasted: int | None = None


@dataclass
class ClusterReport:
    nodes: list[NodeRow] = field(default_factory=list)
    bases: list[BaseRow] = field(default_factory=list)
    workloads: list[WorkloadRow] = field(default_factory=list)
    images: list[ImageRow] = field(default_factory=list)
    unreachable: list[tuple[str, str]] = field(default_factory=list)

    @property
    def physical(self) -> int:
        return sum(n.physical for n in self.nodes)

    @property
    def logical(self) -> int:
        return sum(n.logical for n in self.nodes)

    @property
    def reclaimable(self) -> int:
        return sum(n.reclaimable for n in self.nodes)

    @property
    def content(self) -> int:
        return sum(n.content for n in self.nodes)


def _scalar(samples: Iterable[Sample], name: str) -> int:
    """A label-less sample's value (0 when absent)."""
    return int(sum(s.value for s in samples if s.name == name and not s.labels))


@dataclass
class _BaseAcc:
    nodes: int = 0
    images: int = 0
    pods: int = 0
    bytes: int = 0


@dataclass
class _WorkloadAcc:
    nodes: set[str] = field(default_factory=set)
    pods: int = 0
    attributed: int = 0
    bases: dict[str, str] = field(default_factory=dict)  # base -> source


@dataclass
class _ImageAcc:
    base: str = ""
    nodes: int = 0
    size: int = 0
    unique: int = 0
    wasted: int | None = None


def _node_row(node: NodeSamples) -> NodeRow:
    s = node.samples
    return NodeRow(
        node=node.node,
        up=_scalar(s, "layer_sharing_up") == 1,
        images=_scalar(s, "layer_sharing_images"),
        pods=_scalar(s, "layer_sharing_pods"),
        physical=_scalar(s, "layer_sharing_physical_bytes"),
        logical=_scalar(s, "layer_sharing_logical_bytes"),
        shared=_scalar(s, "layer_sharing_shared_bytes"),
        unique=_scalar(s, "layer_sharing_unique_bytes"),
        reclaimable=_scalar(s, "layer_sharing_reclaimable_bytes"),
        content=_scalar(s, "layer_sharing_content_bytes"),
    )


def build_report(nodes: Sequence[NodeSamples], unreachable: Sequence[tuple[str, str]] = ()) -> ClusterReport:
    """Sum the exporters' per-node figures into the cluster view."""
    bases: dict[tuple[str, str], _BaseAcc] = defaultdict(_BaseAcc)
    workloads: dict[tuple[str, str, str], _WorkloadAcc] = defaultdict(_WorkloadAcc)
    images: dict[str, _ImageAcc] = defaultdict(_ImageAcc)
    for node in nodes:
        for sample in node.samples:
            labels, value = sample.labels, int(sample.value)
            if sample.name.startswith("layer_sharing_base_"):
                base = bases[(labels["base"], labels["source"])]
                if sample.name == "layer_sharing_base_images":
                    base.nodes += 1
                    base.images += value
                elif sample.name == "layer_sharing_base_pods":
                    base.pods += value
                elif sample.name == "layer_sharing_base_bytes":
                    base.bytes += value
            elif sample.name.startswith("layer_sharing_workload_"):
                workload = workloads[(labels["namespace"], labels["workload_kind"], labels["workload"])]
                workload.nodes.add(node.node)
                if sample.name == "layer_sharing_workload_pods":
                    workload.pods += value
                elif sample.name == "layer_sharing_workload_attributed_bytes":
                    workload.attributed += value
                elif sample.name == "layer_sharing_workload_base_pods" and value > 0:
                    workload.bases[labels["base"]] = labels["source"]
            elif sample.name == "layer_sharing_image_info":
                image = images[labels["image"]]
                image.base = labels.get("base", "")
                image.nodes += 1
            elif sample.name == "layer_sharing_image_size_bytes":
                images[labels["image"]].size += value
            elif sample.name == "layer_sharing_image_unique_bytes":
                images[labels["image"]].unique += value
            elif sample.name == "layer_sharing_image_wasted_bytes":
                image = images[labels["image"]]
                image.wasted = max(image.wasted or 0, value)
    return ClusterReport(
        nodes=sorted((_node_row(n) for n in nodes), key=lambda n: (-n.physical, n.node)),
        bases=sorted(
            (BaseRow(base, source, a.nodes, a.images, a.pods, a.bytes) for (base, source), a in bases.items()),
            key=lambda b: (-b.bytes * max(b.images, 1), b.base),
        ),
        workloads=sorted(
            (
                WorkloadRow(
                    namespace,
                    kind,
                    name,
                    len(a.nodes),
                    a.pods,
                    a.attributed,
                    tuple(sorted(a.bases)),
                    bool(a.bases) and all(src == "catalog" for src in a.bases.values()),
                )
                for (namespace, kind, name), a in workloads.items()
            ),
            key=lambda w: (-w.attributed, w.namespace, w.name),
        ),
        images=sorted(
            (ImageRow(name, a.base, a.nodes, a.size, a.unique, a.wasted) for name, a in images.items()),
            key=lambda i: (-i.size, i.image),
        ),
        unreachable=sorted(unreachable),
    )
