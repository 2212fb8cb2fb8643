"""The cluster view (pure): exporter figures in, cluster rows out.

Two ways in: each exporter's /metrics through the API server's pod proxy
arrives as per-node `NodeSamples` (`build_report`); Prometheus answers
queries it already aggregated, arriving as `ClusterAggregates`
(`build_report_from_aggregates`). Sources only translate; the renderers live
in exporter.outputs.report.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace


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
    duplicate_bytes: int = 0
    duplicate_layers: int = 0
    unused_logical: int = 0

    @property
    def saved(self) -> int:
        return self.logical - self.physical


@dataclass(frozen=True, slots=True)
class BaseRow:
    """One (base, version, source) summed over nodes; `versions` and `drift` are its family's."""

    base: str
    source: str
    nodes: int
    images: int
    pods: int
    bytes: int
    version: str = ""
    versions: int = 0
    drift: int = 0


@dataclass(frozen=True, slots=True)
class FamilyRow:
    """A base family across the cluster: its distinct versions, and drift bytes summed over nodes."""

    base: str
    versions: tuple[str, ...]
    drift: int


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
    # Where `wasted` comes from: "" the nodes, "registry" the image's registry (`report --view wasted`).
    wasted_from: str = ""


@dataclass
class ClusterReport:
    nodes: list[NodeRow] = field(default_factory=list)
    bases: list[BaseRow] = field(default_factory=list)
    families: list[FamilyRow] = field(default_factory=list)
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

    @property
    def duplicate_bytes(self) -> int:
        return sum(n.duplicate_bytes for n in self.nodes)

    @property
    def duplicate_layers(self) -> int:
        return sum(n.duplicate_layers for n in self.nodes)

    @property
    def unused_logical(self) -> int:
        return sum(n.unused_logical for n in self.nodes)


# The node view's figures: NodeRow field -> the exporter's node-level family
# (a family with no labels of its own).
NODE_FIGURES: Mapping[str, str] = {
    "up": "layer_sharing_up",
    "images": "layer_sharing_images",
    "pods": "layer_sharing_pods",
    "physical": "layer_sharing_physical_bytes",
    "logical": "layer_sharing_logical_bytes",
    "shared": "layer_sharing_shared_bytes",
    "unique": "layer_sharing_unique_bytes",
    "reclaimable": "layer_sharing_reclaimable_bytes",
    "content": "layer_sharing_content_bytes",
    "duplicate_bytes": "layer_sharing_duplicate_bytes",
    "duplicate_layers": "layer_sharing_duplicate_layers",
    "unused_logical": "layer_sharing_unused_logical_bytes",
}
# Base sources whose versions are versions of a named family (detected chains have none).
VERSIONED_SOURCES = frozenset({"catalog", "annotation"})


@dataclass(frozen=True, slots=True)
class MeasuredPodLabels:
    """The label names a measured pod's namespace and name arrive under at the source.

    The exporter exports `namespace` and `pod`; a scrape that does not honour its
    labels renames them `exported_namespace` and `exported_pod` (the target's own
    take the names), as OpenShift's user-workload monitoring always does. The
    chart's measuredPodLabels is the same setting for its rules and dashboards.
    Empty names: either, as each series has it (`exported_*` first), which reads a
    mix of scrapes with and without honour_labels right.
    """

    namespace: str = ""
    pod: str = ""

    def namespace_labels(self) -> tuple[str, ...]:
        """The labels to group by for the namespace."""
        return (self.namespace,) if self.namespace else ("namespace", "exported_namespace")

    def normalise(self, labels: Mapping[str, str]) -> dict[str, str]:
        """`labels` with the measured pod's namespace (and name) under `namespace` (and `pod`)."""
        out = dict(labels)
        for name, configured in (("namespace", self.namespace), ("pod", self.pod)):
            if configured:
                if configured in out:
                    out[name] = out.pop(configured)
            elif exported := out.pop(f"exported_{name}", ""):
                out[name] = exported
        return out


# The exporter's own names, as the chart's ServiceMonitor (honorLabels) keeps them; and
# what OpenShift's user-workload monitoring turns them into.
HONOURED = MeasuredPodLabels("namespace", "pod")
OPENSHIFT_USER_WORKLOAD = MeasuredPodLabels("exported_namespace", "exported_pod")


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One row of a figure already aggregated at the source: its grouping labels and value."""

    labels: Mapping[str, str]
    value: int


@dataclass(frozen=True, slots=True)
class ClusterAggregates:
    """Every figure the report's views need, aggregated by the source (Prometheus).

    Each exporter node counts once (the source deduplicates by node); the
    grouping labels of each field are in its comment.
    """

    node_figures: Mapping[str, Sequence[Aggregate]] = field(default_factory=dict)  # NODE_FIGURES key -> by node
    base_nodes: Sequence[Aggregate] = ()  # by base, version, source: nodes holding the base
    base_images: Sequence[Aggregate] = ()  # by base, version, source
    base_pods: Sequence[Aggregate] = ()  # by base, version, source
    base_bytes: Sequence[Aggregate] = ()  # by base, version, source
    family_drift: Sequence[Aggregate] = ()  # by base: drift bytes summed over nodes
    workload_nodes: Sequence[Aggregate] = ()  # by namespace, workload_kind, workload
    workload_pods: Sequence[Aggregate] = ()  # by namespace, workload_kind, workload
    workload_attributed: Sequence[Aggregate] = ()  # by namespace, workload_kind, workload
    workload_bases: Sequence[Aggregate] = ()  # by namespace, workload_kind, workload, base, source: > 0 if pods
    image_nodes: Sequence[Aggregate] = ()  # by image, base: nodes holding the image
    image_size: Sequence[Aggregate] = ()  # by image
    image_unique: Sequence[Aggregate] = ()  # by image
    image_wasted: Sequence[Aggregate] = ()  # by image: max over the nodes that analysed it


def _scalar(samples: Iterable[Sample], name: str) -> int:
    """A node-level family's value (0 when absent).

    Whatever labels the sample carries (a scrape adds target labels such as
    job or instance) it is the node's figure; the same node scraped twice
    counts once.
    """
    return int(max((s.value for s in samples if s.name == name), default=0))


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


def _node_row(node: str, figures: Mapping[str, int]) -> NodeRow:
    return NodeRow(
        node=node,
        up=figures.get("up", 0) == 1,
        images=figures.get("images", 0),
        pods=figures.get("pods", 0),
        physical=figures.get("physical", 0),
        logical=figures.get("logical", 0),
        shared=figures.get("shared", 0),
        unique=figures.get("unique", 0),
        reclaimable=figures.get("reclaimable", 0),
        content=figures.get("content", 0),
        duplicate_bytes=figures.get("duplicate_bytes", 0),
        duplicate_layers=figures.get("duplicate_layers", 0),
        unused_logical=figures.get("unused_logical", 0),
    )


def build_report(nodes: Sequence[NodeSamples], unreachable: Sequence[tuple[str, str]] = ()) -> ClusterReport:
    """Sum the exporters' per-node figures into the cluster view."""
    bases: dict[tuple[str, str, str], _BaseAcc] = defaultdict(_BaseAcc)
    family_drift: dict[str, int] = defaultdict(int)
    workloads: dict[tuple[str, str, str], _WorkloadAcc] = defaultdict(_WorkloadAcc)
    images: dict[str, _ImageAcc] = defaultdict(_ImageAcc)
    for node in nodes:
        for sample in node.samples:
            labels, value = sample.labels, int(sample.value)
            if sample.name == "layer_sharing_base_drift_bytes":
                family_drift[labels["base"]] += value
            elif sample.name == "layer_sharing_base_versions":
                family_drift.setdefault(labels["base"], 0)
            elif sample.name.startswith("layer_sharing_base_"):
                base = bases[(labels["base"], labels.get("version", ""), labels["source"])]
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
    node_rows = [_node_row(n.node, {f: _scalar(n.samples, name) for f, name in NODE_FIGURES.items()}) for n in nodes]
    return _assemble(
        node_rows,
        [
            BaseRow(base, source, a.nodes, a.images, a.pods, a.bytes, version)
            for (base, version, source), a in bases.items()
        ],
        family_drift,
        [
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
        ],
        [ImageRow(name, a.base, a.nodes, a.size, a.unique, a.wasted) for name, a in images.items()],
        unreachable,
    )


def build_report_from_aggregates(
    aggregates: ClusterAggregates, unreachable: Sequence[tuple[str, str]] = ()
) -> ClusterReport:
    """The cluster view from figures the source summed already (one node counted once)."""
    by_node: dict[str, dict[str, int]] = defaultdict(dict)
    for figure, rows in aggregates.node_figures.items():
        for row in rows:
            by_node[row.labels.get("node", "")][figure] = row.value

    def keyed(rows: Sequence[Aggregate], *labels: str) -> dict[tuple[str, ...], int]:
        out: dict[tuple[str, ...], int] = defaultdict(int)
        for row in rows:
            out[tuple(row.labels.get(label, "") for label in labels)] += row.value
        return out

    base_key = ("base", "version", "source")
    base_nodes, base_images = keyed(aggregates.base_nodes, *base_key), keyed(aggregates.base_images, *base_key)
    base_pods, base_bytes = keyed(aggregates.base_pods, *base_key), keyed(aggregates.base_bytes, *base_key)
    bases = [
        BaseRow(base, source, base_nodes[key], base_images[key], base_pods[key], base_bytes[key], version)
        for key in sorted(set(base_nodes) | set(base_images) | set(base_pods) | set(base_bytes))
        for base, version, source in [key]
    ]
    family_drift = {key[0]: value for key, value in keyed(aggregates.family_drift, "base").items()}

    workload_key = ("namespace", "workload_kind", "workload")
    workload_nodes = keyed(aggregates.workload_nodes, *workload_key)
    workload_pods = keyed(aggregates.workload_pods, *workload_key)
    workload_attributed = keyed(aggregates.workload_attributed, *workload_key)
    workload_bases: dict[tuple[str, ...], dict[str, str]] = defaultdict(dict)
    for row in aggregates.workload_bases:
        if row.value > 0:
            key = tuple(row.labels.get(label, "") for label in workload_key)
            workload_bases[key][row.labels.get("base", "")] = row.labels.get("source", "")
    workloads = []
    for key in sorted(set(workload_nodes) | set(workload_pods) | set(workload_attributed)):
        namespace, kind, name = key
        on = workload_bases.get(key, {})
        workloads.append(
            WorkloadRow(
                namespace,
                kind,
                name,
                workload_nodes[key],
                workload_pods[key],
                workload_attributed[key],
                tuple(sorted(on)),
                bool(on) and all(source == "catalog" for source in on.values()),
            )
        )

    image_nodes: dict[str, int] = defaultdict(int)
    image_base: dict[str, tuple[int, str]] = {}
    for row in aggregates.image_nodes:
        name, base = row.labels.get("image", ""), row.labels.get("base", "")
        image_nodes[name] += row.value
        # The base most of the image's nodes name (they can disagree while catalogs roll out).
        image_base[name] = max(image_base.get(name, (-1, "")), (row.value, base))
    image_size, image_unique = keyed(aggregates.image_size, "image"), keyed(aggregates.image_unique, "image")
    # The same on every node that analysed the image: the source takes the max, absent means unknown.
    image_wasted = {row.labels.get("image", ""): row.value for row in aggregates.image_wasted}
    images = [
        ImageRow(
            name,
            image_base.get(name, (0, ""))[1],
            image_nodes[name],
            image_size[(name,)],
            image_unique[(name,)],
            image_wasted.get(name),
        )
        for name in sorted({key[0] for key in image_size} | set(image_nodes))
    ]
    return _assemble(
        [_node_row(node, figures) for node, figures in by_node.items()],
        bases,
        family_drift,
        workloads,
        images,
        unreachable,
    )


def _assemble(
    nodes: Iterable[NodeRow],
    bases: Iterable[BaseRow],
    family_drift: Mapping[str, int],
    workloads: Iterable[WorkloadRow],
    images: Iterable[ImageRow],
    unreachable: Sequence[tuple[str, str]],
) -> ClusterReport:
    """Both ways in end here: each base row learns its family's versions and drift, and every view is sorted."""
    bases = list(bases)
    family_versions: dict[str, set[str]] = defaultdict(set)
    for row in bases:
        if row.source in VERSIONED_SOURCES:
            family_versions[row.base].add(row.version)
    bases = [
        replace(row, versions=len(family_versions.get(row.base, ())), drift=family_drift.get(row.base, 0))
        for row in bases
    ]
    families = [
        FamilyRow(base, tuple(sorted(family_versions.get(base, ()))), drift) for base, drift in family_drift.items()
    ]
    return ClusterReport(
        nodes=sorted(nodes, key=lambda n: (-n.physical, n.node)),
        bases=sorted(bases, key=lambda b: (-b.bytes * max(b.images, 1), b.base, b.version)),
        families=sorted(families, key=lambda f: (-f.drift, f.base)),
        workloads=sorted(workloads, key=lambda w: (-w.attributed, w.namespace, w.name)),
        images=sorted(images, key=lambda i: (-i.size, i.image)),
        unreachable=sorted(unreachable),
    )
