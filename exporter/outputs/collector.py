"""Prometheus families from plain data: one collector per source of figures.

`HealthCollector` says how the exporter is doing (one refresh status);
`LayerSharingCollector` gives the layer figures of one node report and the
wasted-bytes analysis. Both are built for one moment and yield fresh families,
so images and pods that are gone simply stop appearing. Metric names and labels
are a contract (docs/metrics.md); HELP says whether bytes are unpacked on disk
or compressed.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import TypeVar

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import __version__
from exporter.core.accounting import ImageReport, NodeReport, WorkloadReport
from exporter.core.bases import SOURCE_NONE, UNSHARED
from exporter.core.image_gc import DEFAULT_HIGH_PERCENT, DEFAULT_LOW_PERCENT, plan_image_gc
from exporter.core.state import RefreshStatus, WasteReport
from exporter.options import option

# Error stages are exported at 0 from the start, so rate() works at once.
ERROR_STAGES = (
    "runtime",
    "refresh",
    "image_status",
    "image_parse",
    "snapshot_usage",
    "content",
    "container_stats",
    "imagefs",
    "status",
    "layer_store",
)

_DISK = "Unpacked snapshot bytes on disk"
_CACHED = "Refreshed in the background every refresh interval, not per scrape."

_NODE_FAMILIES: tuple[tuple[str, str, Callable[[NodeReport], int]], ...] = (
    ("images", "Images on the node, one per image ID however many tags or digests.", lambda r: r.totals.images),
    ("layers", "Distinct image layers on the node (snapshots by chain ID).", lambda r: r.totals.layers),
    (
        "unused_images",
        "Images no container, pod sandbox or pin uses.",
        lambda r: sum(1 for i in r.images if not i.in_use),
    ),
    ("containers", "Containers in any state (exited ones still pin their image).", lambda r: r.totals.containers),
    ("pods", "Pods with a sandbox or container on the node.", lambda r: r.totals.pods),
    ("logical_bytes", f"{_DISK} if nothing were shared: the sum of every image's size.", lambda r: r.totals.logical),
    ("physical_bytes", f"{_DISK} taken by image layers, each distinct layer once.", lambda r: r.totals.physical),
    ("shared_bytes", f"{_DISK} of layers referenced by two or more images.", lambda r: r.totals.shared),
    ("unique_bytes", f"{_DISK} of layers referenced by exactly one image.", lambda r: r.totals.unique),
    (
        "reclaimable_bytes",
        f"{_DISK} of layers no in-use image references (no container, sandbox or pin).",
        lambda r: r.totals.reclaimable,
    ),
    (
        "content_bytes",
        "Compressed layer blob bytes present in containerd's content store "
        "(kept beside the unpacked snapshots unless discard_unpacked_layers is set); "
        "on containers-storage, the compressed sizes recorded for the layers present.",
        lambda r: r.totals.content,
    ),
    (
        "writable_bytes",
        "Bytes in containers' writable layers, as the runtime last measured them.",
        lambda r: r.totals.writable,
    ),
    (
        "missing_layers",
        "Image layers with no snapshot in the snapshotter read (not unpacked there): their bytes are unknown.",
        lambda r: r.totals.missing_layers,
    ),
    (
        "remote_layers",
        "Lazily pulled image layers (stargz, SOCI, nydus: labelled containerd.io/snapshot/remote); "
        "they take 0 bytes on this node by design and are not counted as missing.",
        lambda r: r.totals.remote_layers,
    ),
    # Base-image standardisation: content stored twice, and what image GC expects to free.
    (
        "duplicate_layers",
        "Redundant copies of layer content: for each diff ID unpacked under several chain IDs "
        "(the same layer on different parents), its copies minus one.",
        lambda r: r.totals.duplicate_layers,
    ),
    (
        "duplicate_bytes",
        f"{_DISK} of redundant layer copies: for each diff ID unpacked under several chain IDs, "
        "all copies' bytes minus the largest copy.",
        lambda r: r.totals.duplicate_bytes,
    ),
    (
        "unused_logical_bytes",
        f"{_DISK} summed over the whole size of every unused image: what the kubelet's image GC "
        "assumes deleting them frees (reclaimable_bytes is what it really frees).",
        lambda r: r.totals.unused_logical,
    ),
)


@dataclass(frozen=True, slots=True)
class MetricsOptions:
    """Which optional series to export: the knobs of the cardinality budget (config file `metrics:`).

    Top-N knobs keep the N largest (0 = all); the namespace lists filter every
    series with a `namespace` label (pod, workload, workload-base, namespace).
    """

    images: bool = option(True, "per-image series (image_*: 7-8 per image)")
    images_top_n: int = option(40, "per-image series for the N images with the most unique bytes (0 = all)", minimum=0)
    pods: bool = option(True, "per-pod series (pod_*: 5 per pod)")
    pods_top_n: int = option(30, "per-pod series for the N pods with the most attributed bytes (0 = all)", minimum=0)
    workloads: bool = option(True, "per-workload series with --kubernetes (workload_pods, _bytes, _attributed_bytes)")
    workloads_top_n: int = option(
        0, "per-workload series for the N workloads with the most attributed bytes (0 = all)", minimum=0
    )
    workload_bases: bool = option(True, "workload_base_pods series with --kubernetes (one per workload and base)")
    workload_bases_top_n: int = option(
        0, "workload_base_pods series for the N workloads with the most attributed bytes (0 = all)", minimum=0
    )
    namespaces: bool = option(True, "namespace_attributed_bytes: namespace showback, one series per namespace")
    namespace_include: tuple[str, ...] = option(
        (), "namespaces (shell patterns) whose namespace-labelled series are exported (empty = all)"
    )
    namespace_exclude: tuple[str, ...] = option(
        (), "namespaces (shell patterns) whose namespace-labelled series are never exported (wins over include)"
    )
    bases_top_n: int = option(20, "per-base series for the N bases with the most bytes (0 = all)", minimum=0)
    layers_top_n: int = option(0, "per-layer series for the N largest layers (0 = none)", minimum=0)
    # The kubelet's settings (KubeletConfiguration), to model its image GC with.
    image_gc_high_threshold_percent: int = option(
        DEFAULT_HIGH_PERCENT, "the kubelet's imageGCHighThresholdPercent", minimum=1, maximum=100
    )
    image_gc_low_threshold_percent: int = option(
        DEFAULT_LOW_PERCENT, "the kubelet's imageGCLowThresholdPercent (below the high one)", minimum=0, maximum=99
    )

    def shows_namespace(self, namespace: str) -> bool:
        """Whether series of `namespace` are exported (exclude wins; an empty include takes all)."""
        if any(fnmatchcase(namespace, pattern) for pattern in self.namespace_exclude):
            return False
        return not self.namespace_include or any(fnmatchcase(namespace, p) for p in self.namespace_include)


_T = TypeVar("_T")


def _top(items: Sequence[_T], top_n: int) -> Sequence[_T]:
    """The first `top_n` of items already sorted largest first (0 = all)."""
    return items[:top_n] if top_n else items


def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"layer_sharing_{name}", doc, labels=labels)


class HealthCollector(Collector):
    """The exporter's own families (up, refreshes, errors, runtime calls, build info) for one refresh status."""

    def __init__(self, status: RefreshStatus) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status
        up = _gauge("up", "1 if the container runtime answered the last refresh, else 0.")
        up.add_metric([], 1 if status.up else 0)
        yield up
        duration = _gauge(
            "collection_duration_seconds", "Seconds the last refresh took (runtime calls and accounting)."
        )
        duration.add_metric([], status.last_duration_seconds)
        yield duration
        success = _gauge("last_success_timestamp_seconds", "Unix time of the last refresh the runtime answered.")
        success.add_metric([], status.last_success_timestamp)
        yield success
        refreshes = CounterMetricFamily("layer_sharing_refreshes", "Refreshes attempted since start.")
        refreshes.add_metric([], status.refreshes)
        yield refreshes
        errors = CounterMetricFamily(
            "layer_sharing_errors",
            "Items skipped or calls failed, by stage; the rest is still exported.",
            labels=["stage"],
        )
        for stage in sorted(set(ERROR_STAGES) | set(status.errors)):
            errors.add_metric([stage], status.errors.get(stage, 0))
        yield errors
        calls = CounterMetricFamily(
            "layer_sharing_runtime_requests", "Calls made to the runtime, by gRPC method.", labels=["method"]
        )
        for method, count in sorted(status.calls.items()):
            calls.add_metric([method.lstrip("/")], count)
        yield calls
        build = _gauge("build_info", "The exporter's version; always 1.", ["version", "python_version"])
        build.add_metric([__version__, platform.python_version()], 1)
        yield build


class LayerSharingCollector(Collector):
    """The layer-sharing families of one node report and the wasted-bytes figures (None: analysis off)."""

    def __init__(self, report: NodeReport, waste: WasteReport | None, options: MetricsOptions) -> None:
        self._report = report
        self._waste = waste
        self._options = options

    def collect(self) -> Iterator[Metric]:
        report = self._report
        options = self._options
        yield from self._runtime(report)
        yield from self._node(report)
        yield from self._image_gc(report)
        if options.images:
            yield from self._images(report)
        if self._waste is not None:
            yield from self._waste_families(report, self._waste)
        if options.pods:
            yield from self._pods(report)
        if report.workloads is not None and (options.workloads or options.workload_bases):
            yield from self._workloads(report.workloads)
        if options.namespaces:
            yield from self._namespaces(report)
        yield from self._bases(report)
        if self._options.layers_top_n:
            yield from self._layers(report)

    def _runtime(self, report: NodeReport) -> Iterator[Metric]:
        runtime = _gauge(
            "runtime_info",
            "The container runtime answering, and the layer store measuring its layers; always 1.",
            ["runtime", "runtime_version", "snapshotter", "layer_store"],
        )
        runtime.add_metric([report.runtime_name, report.runtime_version, report.snapshotter, report.layer_store], 1)
        yield runtime
        mismatch = _gauge(
            "snapshotter_mismatch",
            "1 if layers are read from another snapshotter than the runtime's CRI plugin unpacks images with "
            "(a --snapshotter setting that does not match): layer figures are then missing or 0.",
            ["snapshotter", "runtime_snapshotter"],
        )
        mismatch.add_metric([report.snapshotter, report.runtime_snapshotter], 1 if report.snapshotter_mismatch else 0)
        yield mismatch

    def _node(self, report: NodeReport) -> Iterator[Metric]:
        for name, doc, value in _NODE_FAMILIES:
            family = _gauge(name, f"{doc} {_CACHED}")
            family.add_metric([], value(report))
            yield family
        repull = _gauge(
            "unused_repull_bytes",
            "Compressed layer bytes pulling every unused image back would fetch had image GC removed them all "
            "(a blob they share counted once); pairs with reclaimable_bytes. Absent when a manifest is not known.",
        )
        if report.repull.unused is not None:
            repull.add_metric([], report.repull.unused)
        yield repull
        used = _gauge(
            "image_fs_used_bytes", "Bytes used on the image filesystem, as CRI ImageFsInfo reports.", ["mountpoint"]
        )
        inodes = _gauge(
            "image_fs_inodes_used", "Inodes used on the image filesystem (CRI ImageFsInfo).", ["mountpoint"]
        )
        capacity = _gauge(
            "image_fs_capacity_bytes", "Size of the filesystem holding the image filesystem (statvfs).", ["mountpoint"]
        )
        available = _gauge(
            "image_fs_available_bytes", "Bytes available to unprivileged users there (statvfs).", ["mountpoint"]
        )
        for fs in report.filesystems:
            used.add_metric([fs.mountpoint], fs.used_bytes)
            inodes.add_metric([fs.mountpoint], fs.inodes_used)
            if fs.capacity_bytes is not None:
                capacity.add_metric([fs.mountpoint], fs.capacity_bytes)
            if fs.available_bytes is not None:
                available.add_metric([fs.mountpoint], fs.available_bytes)
        yield from (used, inodes, capacity, available)
        elsewhere = _gauge(
            "capacity_dir_elsewhere",
            "1 if the capacity directory (capacity_dir) was found on another filesystem than the image "
            "filesystem: its capacity is then not exported as the image filesystem's.",
            ["mountpoint"],
        )
        for fs in report.filesystems:
            elsewhere.add_metric([fs.mountpoint], 1 if fs.capacity_dir_elsewhere else 0)
        yield elsewhere

    def _image_gc(self, report: NodeReport) -> Iterator[Metric]:
        """The kubelet's image GC replayed with real bytes (exporter.core.image_gc)."""
        options = self._options
        thresholds = _gauge(
            "image_gc_threshold_ratio",
            "The kubelet's image GC thresholds the figures are modelled at (image_gc_*_threshold_percent / 100).",
            ["threshold"],
        )
        thresholds.add_metric(["high"], options.image_gc_high_threshold_percent / 100)
        thresholds.add_metric(["low"], options.image_gc_low_threshold_percent / 100)
        yield thresholds
        labels = ["mountpoint"]
        to_free = _gauge(
            "image_gc_bytes_to_free",
            "Bytes the kubelet's image GC sets out to free now: capacity x (1 - low threshold) - available "
            "once usage reaches the high threshold, else 0.",
            labels,
        )
        freed = _gauge(
            "image_gc_freed_bytes",
            f"{_DISK} and layer blobs one image GC round would really free now (shared layers stay while an "
            "image holds them; unused images oldest build first, until the CRI sizes cover bytes_to_free).",
            labels,
        )
        freeable = _gauge(
            "image_gc_freeable_bytes",
            f"{_DISK} and layer blobs that deleting every unused image would really free.",
            labels,
        )
        can_reach_low = _gauge(
            "image_gc_can_reach_low_threshold",
            "1 if deleting every unused image brings usage under the low threshold, else 0 "
            "(0 with usage above the high one: heading to DiskPressure, the kubelet cannot fix it).",
            labels,
        )
        layer_sizes = {chain_id: layer.size for chain_id, layer in report.layers.items()}
        for fs in report.filesystems:
            if not fs.capacity_bytes or fs.available_bytes is None:
                continue  # no capacity known: no model rather than a wrong one
            plan = plan_image_gc(
                report.images,
                layer_sizes,
                report.blob_sizes,
                fs.capacity_bytes,
                fs.available_bytes,
                options.image_gc_high_threshold_percent,
                options.image_gc_low_threshold_percent,
            )
            to_free.add_metric([fs.mountpoint], plan.bytes_to_free)
            freed.add_metric([fs.mountpoint], plan.freed_bytes)
            freeable.add_metric([fs.mountpoint], plan.unused_bytes)
            can_reach_low.add_metric([fs.mountpoint], 1 if plan.can_reach_low else 0)
        yield from (to_free, freed, freeable, can_reach_low)

    def _images(self, report: NodeReport) -> Iterator[Metric]:
        labels = ["image_id", "image"]
        size = _gauge("image_size_bytes", f"{_DISK} of the image's layers (docker system df SIZE).", labels)
        shared = _gauge("image_shared_bytes", f"{_DISK} of the image's layers another image also uses.", labels)
        unique = _gauge("image_unique_bytes", f"{_DISK} of the image's layers no other image uses.", labels)
        compressed = _gauge(
            "image_compressed_bytes", "Compressed bytes the image's manifest declares: what a pull transfers.", labels
        )
        containers = _gauge("image_containers", "Containers (any state) using the image.", labels)
        info = _gauge(
            "image_info",
            "Join labels for the image; image_ref is the kubelet's imageID "
            "(kube_pod_container_info image_id); base, base_version and base_source its base. Always 1.",
            [*labels, "image_ref", "base", "base_version", "base_source"],
        )
        repull = _gauge(
            "image_repull_bytes",
            "Compressed layer bytes a pull would fetch again had image GC removed this image alone "
            "(its layers no other image on the node keeps); absent when its manifest is not known.",
            labels,
        )
        created = _gauge(
            "image_created_timestamp_seconds",
            "Unix time the image was built (its config's created); absent when the config has none.",
            labels,
        )
        for image in self._top_images(report):
            key = [image.image_id, image.name]
            size.add_metric(key, image.size)
            shared.add_metric(key, image.shared)
            unique.add_metric(key, image.unique)
            compressed.add_metric(key, image.compressed_size)
            containers.add_metric(key, image.containers)
            info.add_metric([*key, image.image_ref, image.base, image.base_version, image.base_source], 1)
            if image.created is not None:
                created.add_metric(key, image.created)
            repull_bytes = report.repull.images.get(image.image_id)
            if repull_bytes is not None:
                repull.add_metric(key, repull_bytes)
        yield from (size, shared, unique, compressed, containers, info, created, repull)

    def _top_images(self, report: NodeReport) -> Sequence[ImageReport]:
        return _top(report.images, self._options.images_top_n) if self._options.images else ()

    def _waste_families(self, report: NodeReport, waste: WasteReport) -> Iterator[Metric]:
        pending = _gauge(
            "analysis_pending_layers", "Layers the wasted-bytes analysis has not read yet (it runs in the background)."
        )
        pending.add_metric([], waste.pending_layers)
        unavailable = _gauge(
            "analysis_unavailable_layers",
            "Layers whose blob is gone from the content store (discard_unpacked_layers) or unreadable; "
            "images using them get no wasted-bytes series.",
        )
        unavailable.add_metric([], waste.unavailable_layers)
        yield from (pending, unavailable)
        # The node figure only for the images it was computed over, and only when complete.
        if waste.node_wasted_bytes is not None and waste.image_ids == {i.image_id for i in report.images}:
            node = _gauge(
                "wasted_bytes",
                "Bytes of files, over the distinct layers on the node, that every image using their "
                "layer hides (deleted or overwritten in a later layer): stored, never visible.",
            )
            node.add_metric([], waste.node_wasted_bytes)
            yield node
        labels = ["image_id", "image"]
        images = _gauge(
            "image_wasted_bytes",
            "Bytes of files in the image's layers that a later layer of the image hides "
            "(deleted, overwritten or under an opaque directory), as the layer tars record them.",
            labels,
        )
        for image in self._top_images(report):
            wasted = waste.images.get(image.image_id)
            if wasted is not None:
                images.add_metric([image.image_id, image.name], wasted)
        yield images

    def _pods(self, report: NodeReport) -> Iterator[Metric]:
        # With workload attribution on, every pod series carries its workload.
        attributed_on = report.workloads is not None
        labels = ["namespace", "pod", *(["workload", "workload_kind"] if attributed_on else [])]
        total = _gauge(
            "pod_bytes", f"{_DISK} of the distinct layers the pod's containers use (sandbox image excluded).", labels
        )
        shared = _gauge("pod_shared_bytes", f"{_DISK} of the pod's layers another pod on the node also uses.", labels)
        unique = _gauge("pod_unique_bytes", f"{_DISK} of the pod's layers no other pod on the node uses.", labels)
        attributed = _gauge(
            "pod_attributed_bytes",
            f"{_DISK} fairly attributed to the pod: each layer divided "
            "by the pods using it, so the sum over pods is the bytes pods use.",
            labels,
        )
        writable = _gauge("pod_writable_bytes", "Bytes in the pod's containers' writable layers.", labels)
        shown = [pod for pod in report.pods if self._options.shows_namespace(pod.namespace)]
        for pod in _top(shown, self._options.pods_top_n):
            key = [pod.namespace, pod.name]
            if attributed_on:
                key += [pod.workload.name, pod.workload.kind] if pod.workload else ["", ""]
            total.add_metric(key, pod.bytes)
            shared.add_metric(key, pod.shared)
            unique.add_metric(key, pod.unique)
            attributed.add_metric(key, pod.attributed)
            writable.add_metric(key, pod.writable)
        yield from (total, shared, unique, attributed, writable)

    def _namespaces(self, report: NodeReport) -> Iterator[Metric]:
        attributed = _gauge(
            "namespace_attributed_bytes",
            f"{_DISK} attributed to the namespace's pods on this node (sum of their fair shares): "
            "showback without per-pod series.",
            ["namespace"],
        )
        for namespace in report.namespaces:
            if self._options.shows_namespace(namespace.namespace):
                attributed.add_metric([namespace.namespace], namespace.attributed)
        yield attributed

    def _workloads(self, workloads: Sequence[WorkloadReport]) -> Iterator[Metric]:
        options = self._options
        shown = [w for w in workloads if options.shows_namespace(w.namespace)]
        labels = ["namespace", "workload", "workload_kind"]
        pods = _gauge("workload_pods", "Pods of the workload on this node.", labels)
        size = _gauge("workload_bytes", f"{_DISK} of the distinct layers the workload's pods on this node use.", labels)
        attributed = _gauge(
            "workload_attributed_bytes",
            f"{_DISK} attributed to the workload's pods on this node (sum of their fair shares).",
            labels,
        )
        on_base = _gauge(
            "workload_base_pods",
            "Pods of the workload on this node with a container on an image "
            "of the base (source: catalog, annotation, detected or none).",
            [*labels, "base", "version", "source"],
        )
        if options.workloads:
            for workload in _top(shown, options.workloads_top_n):
                key = [workload.namespace, workload.name, workload.kind]
                pods.add_metric(key, workload.pods)
                size.add_metric(key, workload.bytes)
                attributed.add_metric(key, workload.attributed)
            yield from (pods, size, attributed)
        if options.workload_bases:
            for workload in _top(shown, options.workload_bases_top_n):
                key = [workload.namespace, workload.name, workload.kind]
                for base, version, source, count in workload.bases:
                    on_base.add_metric([*key, base, version, source], count)
            yield on_base

    def _bases(self, report: NodeReport) -> Iterator[Metric]:
        # Base groups: every image has exactly one (base, version, source).
        labels = ["base", "version", "source"]
        images = _gauge(
            "base_images", "Images standing on the base (source: catalog, annotation, detected or none).", labels
        )
        pods = _gauge("base_pods", "Pods with a container on an image of the base.", labels)
        size = _gauge(
            "base_bytes",
            f"{_DISK} attributed to the base: a layer under several (nested) bases counts toward "
            "the innermost one, so the sum over bases never exceeds physical_bytes.",
            labels,
        )
        stack = _gauge(
            "base_stack_bytes",
            f"{_DISK} of every layer under the base, nested bases included (not additive over bases).",
            labels,
        )
        top_n = self._options.bases_top_n
        shown = list(_top(report.bases, top_n))
        # The unshared group is always exported: it is what no base covers.
        shown += [b for b in report.bases if b.name == UNSHARED and b.source == SOURCE_NONE and b not in shown]
        for base in shown:
            key = [base.name, base.version, base.source]
            images.add_metric(key, base.images)
            pods.add_metric(key, base.pods)
            size.add_metric(key, base.bytes)
            stack.add_metric(key, base.stack_bytes)
        yield from (images, pods, size, stack)
        # Families (catalog and declared bases) and their versions.
        versions = _gauge(
            "base_versions", "Distinct versions of the base family (catalog or annotation) on the node.", ["base"]
        )
        drift = _gauge(
            "base_drift_bytes",
            f"{_DISK} of the family's layers minus those of its largest version: "
            "what converging on one version would free on the node.",
            ["base"],
        )
        for family in _top(report.families, top_n):
            versions.add_metric([family.name], len(family.versions))
            drift.add_metric([family.name], family.drift)
        yield from (versions, drift)

    def _layers(self, report: NodeReport) -> Iterator[Metric]:
        labels = ["chain_id"]
        size = _gauge("layer_bytes", f"{_DISK} of one layer (top N by size).", labels)
        images = _gauge("layer_images", "Images referencing the layer.", labels)
        pods = _gauge("layer_pods", "Pods using the layer.", labels)
        largest = sorted(report.layers.values(), key=lambda layer: (-layer.size, layer.chain_id))
        for layer in largest[: self._options.layers_top_n]:
            size.add_metric([layer.chain_id], layer.size)
            images.add_metric([layer.chain_id], layer.images)
            pods.add_metric([layer.chain_id], layer.pods)
        yield from (size, images, pods)
