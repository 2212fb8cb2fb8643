"""The Grafana dashboards, as code (grafana-foundation-sdk, pinned in pyproject).

    python -m dashboards.generate           # write dashboards/*.json and the chart's copies
    python -m dashboards.generate --check   # exit 1 if any JSON is stale

Every query filters on the `cluster` (hidden unless the label exists), `job`
and `node` variables; bytes are unpacked on-disk bytes unless a title says
compressed. As kubernetes-mixin does with its _config, the label names that
differ between stacks are hidden constants the chart sets from its values (one
setting with the recording rules): `cluster_label` (clusterLabel) and
`namespace_label`/`pod_label`, the labels the measured pod's namespace and name
arrive under (`exported_namespace`/`exported_pod` on OpenShift's user-workload
monitoring; measuredPodLabels). Queries group by those and rename them back to
`namespace` and `pod` for legends. Links drill down cluster -> node -> bases.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    GridPos,
    VariableHide,
    VariableModel,
    VariableRefresh,
    VariableSort,
)

from scripts.generated import sync

ROOT = Path(__file__).resolve().parent.parent
OUT_DIRS = (ROOT / "dashboards", ROOT / "charts" / "layer-sharing-exporter" / "dashboards")
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
# Hidden constants (the chart sets them): Grafana substitutes them anywhere in a query.
CLUSTER_LABEL, NAMESPACE_LABEL, POD_LABEL = "${cluster_label}", "${namespace_label}", "${pod_label}"
LABEL_DEFAULTS = {"cluster_label": "cluster", "namespace_label": "namespace", "pod_label": "pod"}
CLUSTER = f'{CLUSTER_LABEL}=~"$cluster", job=~"$job"'
SEL = f'{CLUSTER}, node=~"$node"'
IN_NAMESPACE = f'{NAMESPACE_LABEL}=~"$namespace"'
# Runtime-neutral: the same dashboards serve containerd and CRI-O nodes.
TAGS = ["layer-sharing-exporter", "kubernetes", "container-images"]
# Keeps the time range and the selections when following a link.
KEEP = "${datasource:queryparam}&${cluster:queryparam}&${job:queryparam}&${__url_time_range}"
WIDTH = 24


class Layout:
    """Places panels left to right, wrapping at the grid width, and numbers them."""

    def __init__(self) -> None:
        self.x = self.y = self.row_height = 0
        self.ids = 0

    def next_id(self) -> int:
        self.ids += 1
        return self.ids

    def next(self, w: int, h: int) -> GridPos:
        if self.x + w > WIDTH:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        pos = GridPos(h=h, w=w, x=self.x, y=self.y)
        self.x += w
        self.row_height = max(self.row_height, h)
        return pos

    def row(self) -> GridPos:
        self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        pos = GridPos(h=1, w=WIDTH, x=0, y=self.y)
        self.y += 1
        return pos


def as_namespace_and_pod(expr: str, pod: bool = True) -> str:
    """`expr` (grouped by the measured pod's label names) with them copied to
    `namespace` and `pod`, which the legends and tables read whatever the stack."""
    out = f'label_replace({expr}, "namespace", "$1", "{NAMESPACE_LABEL}", "(.*)")'
    if pod:
        out = f'label_replace({out}, "pod", "$1", "{POD_LABEL}", "(.*)")'
    return out


def to_node(title: str = "Node ${__field.labels.node}") -> dashboard.DashboardLink:
    """A data link from a per-node figure to that node's dashboard."""
    return dashboard.DashboardLink(title).url(f"/d/layer-sharing-node/?{KEEP}&var-node=${{__field.labels.node}}")


def to_bases(title: str = "Bases on the selected nodes") -> dashboard.DashboardLink:
    """A data link from a node's view to its base images."""
    return dashboard.DashboardLink(title).url(f"/d/layer-sharing-bases/?{KEEP}&${{node:queryparam}}")


def query(expr: str, legend: str = "", instant: bool = False, ref: str = "A") -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DS)
    if legend:
        q = q.legend_format(legend)
    if instant:
        q = q.instant()
    return q


def stat_panel(title: str, description: str, expr: str, unit: str = "bytes") -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .with_target(query(expr, instant=True))
        .unit(unit)
        # Never 0 for no data: a missing recording rule or a down exporter must show.
        .no_value("No data")
    )


def series_panel(
    title: str,
    description: str,
    targets: Sequence[tuple[str, str]],
    unit: str = "bytes",
    links: Sequence[dashboard.DashboardLink] = (),
) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).description(description).datasource(DS).unit(unit)
    if links:
        panel = panel.data_links(list(links))
    for i, (expr, legend) in enumerate(targets):
        panel = panel.with_target(query(expr, legend, ref=chr(ord("A") + i)))
    return panel


def bars_panel(
    title: str,
    description: str,
    expr: str,
    legend: str,
    unit: str = "bytes",
    links: Sequence[dashboard.DashboardLink] = (),
) -> bargauge.Panel:
    panel = (
        bargauge.Panel()
        .title(title)
        .description(description)
        .datasource(DS)
        .with_target(query(expr, legend, instant=True))
        .unit(unit)
        .min(0)
    )
    return panel.data_links(list(links)) if links else panel


def table_panel(title: str, description: str, targets: Sequence[tuple[str, str]], unit: str = "bytes") -> table.Panel:
    panel = table.Panel().title(title).description(description).datasource(DS).unit(unit)
    for i, (expr, legend) in enumerate(targets):
        panel = panel.with_target(query(expr, legend, instant=True, ref=chr(ord("A") + i)))
    return panel


def base_dashboard(
    uid: str, title: str, description: str, extra_vars: Sequence[Builder[VariableModel]] = ()
) -> dashboard.Dashboard:
    board = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .refresh("1m")
        .time("now-6h", "now")
        .timezone("utc")
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .editable()
        .link(
            # The other layer-sharing dashboards, keeping the time range and variables.
            dashboard.DashboardLink("Layer sharing")
            .type(DashboardLinkType.DASHBOARDS)
            .tags(["layer-sharing-exporter"])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
    )
    for name, value in LABEL_DEFAULTS.items():
        board = board.with_variable(
            dashboard.ConstantVariable(name)
            .value(value)
            .description("Set by the chart (clusterLabel, measuredPodLabels).")
        )
    board = (
        board.with_variable(
            dashboard.QueryVariable("cluster")
            .label("Cluster")
            .datasource(DS)
            .query(f"label_values(layer_sharing_up, {CLUSTER_LABEL})")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .include_all(True)
            .all_value(".*")
            # Hidden: most Prometheus servers see one cluster and have no such label.
            .hide(VariableHide.HIDE_VARIABLE)
        )
        .with_variable(
            dashboard.QueryVariable("job")
            .label("Job")
            .datasource(DS)
            .query(f'label_values(layer_sharing_up{{{CLUSTER_LABEL}=~"$cluster"}}, job)')
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        .with_variable(
            dashboard.QueryVariable("node")
            .label("Node")
            .datasource(DS)
            .query(f"label_values(layer_sharing_up{{{CLUSTER}}}, node)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )
    for variable in extra_vars:
        board = board.with_variable(variable)
    return board


def add(board: dashboard.Dashboard, layout: Layout, panel: object, w: int, h: int) -> dashboard.Dashboard:
    return board.with_panel(panel.grid_pos(layout.next(w, h)).id(layout.next_id()))  # type: ignore[attr-defined]


def add_row(board: dashboard.Dashboard, layout: Layout, title: str) -> dashboard.Dashboard:
    return board.with_row(dashboard.Row(title).grid_pos(layout.row()).id(layout.next_id()))


def namespace_variable() -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable("namespace")
        .label("Namespace")
        .datasource(DS)
        # The per-namespace family: every namespace, whatever pod series metrics.podsTopN keeps.
        .query(f"label_values(layer_sharing_namespace_attributed_bytes{{{SEL}}}, {NAMESPACE_LABEL})")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def node_dashboard() -> dashboard.Dashboard:
    namespace = namespace_variable()
    board = base_dashboard(
        "layer-sharing-node",
        "Layer sharing / Node image layers",
        "What container images take on the selected nodes' disks, and how much of it is shared.",
        [namespace],
    )
    lay = Layout()
    board = add_row(board, lay, "Disk taken by images")
    for title, desc, expr, unit in [
        (
            "Logical bytes",
            "Σ image sizes: what the images would take if no layer were shared.",
            f"sum(layer_sharing_logical_bytes{{{SEL}}})",
            "bytes",
        ),
        (
            "Physical bytes",
            "Distinct layers on disk: what the images really take.",
            f"sum(layer_sharing_physical_bytes{{{SEL}}})",
            "bytes",
        ),
        (
            "Saved by sharing",
            "Logical minus physical bytes.",
            f"sum(layer_sharing_logical_bytes{{{SEL}}}) - sum(layer_sharing_physical_bytes{{{SEL}}})",
            "bytes",
        ),
        (
            "Sharing ratio",
            "1 - physical / logical: the share of image bytes that sharing saves.",
            f"1 - sum(layer_sharing_physical_bytes{{{SEL}}}) / sum(layer_sharing_logical_bytes{{{SEL}}})",
            "percentunit",
        ),
        (
            "Reclaimable",
            "Layers no in-use image references: what image garbage collection could free.",
            f"sum(layer_sharing_reclaimable_bytes{{{SEL}}})",
            "bytes",
        ),
        (
            "Compressed content",
            "Compressed layer blobs kept in the content store beside the unpacked layers.",
            f"sum(layer_sharing_content_bytes{{{SEL}}})",
            "bytes",
        ),
        (
            "Writable layers",
            "Bytes containers wrote to their writable layers.",
            f"sum(layer_sharing_writable_bytes{{{SEL}}})",
            "bytes",
        ),
        ("Images", "Images on the selected nodes (one per image ID).", f"sum(layer_sharing_images{{{SEL}}})", "short"),
    ]:
        board = add(board, lay, stat_panel(title, desc, expr, unit), 3, 4)
    board = add(
        board,
        lay,
        series_panel(
            "Shared vs unique bytes",
            "Physical bytes split into layers used by two or more images and by one.",
            [
                (f"sum(layer_sharing_shared_bytes{{{SEL}}})", "shared"),
                (f"sum(layer_sharing_unique_bytes{{{SEL}}})", "unique"),
            ],
        ),
        12,
        8,
    )
    board = add(
        board,
        lay,
        series_panel(
            "Image filesystem",
            "Used bytes (CRI ImageFsInfo) against the filesystem's capacity, per node.",
            [
                (f"sum by (node, mountpoint) (layer_sharing_image_fs_used_bytes{{{SEL}}})", "{{node}} used"),
                (f"sum by (node, mountpoint) (layer_sharing_image_fs_capacity_bytes{{{SEL}}})", "{{node}} capacity"),
            ],
        ),
        12,
        8,
    )
    available = f"max by (node, mountpoint) (layer_sharing_image_fs_available_bytes{{{SEL}}})"
    capacity = f"max by (node, mountpoint) (layer_sharing_image_fs_capacity_bytes{{{SEL}}})"
    high = f'max by (node) (layer_sharing_image_gc_threshold_ratio{{{SEL}, threshold="high"}})'
    # Bytes a second the available bytes fall at, over the last 6 hours; a floor of 1 byte an
    # hour stands for "not falling", which the 30-day cap then shows as "not within 30 days".
    falling = (
        f"clamp_min(max by (node, mountpoint) (-deriv(layer_sharing_image_fs_available_bytes{{{SEL}}}[6h])), 1 / 3600)"
    )
    horizon = 30 * 24 * 3600
    board = add(
        board,
        lay,
        series_panel(
            "Image GC forecast",
            "At the trend of the last 6 hours: time until usage reaches the kubelet's image GC high threshold "
            "(imageGCHighThresholdPercent: GC starts deleting unused images) and until the image filesystem is "
            "full. 0 until GC: it is already due. Capped at 30 days: 30 days means not within 30 days (or not "
            "filling at all). Needs the capacity (imageFilesystem.capacityDir).",
            [
                (
                    f"clamp_max(clamp_min(({available} - {capacity} * on (node) group_left () (1 - {high})) "
                    f"/ {falling}, 0), {horizon})",
                    "{{node}} until image GC",
                ),
                (f"clamp_max({available} / {falling}, {horizon})", "{{node}} until full"),
            ],
            unit="s",
        ),
        24,
        8,
    )
    board = add_row(board, lay, "Images, pods and bases")
    board = add(
        board,
        lay,
        bars_panel(
            "Top images by unique bytes",
            "Bytes only this image uses: what removing it would free.",
            f"topk(15, sum by (image) (layer_sharing_image_unique_bytes{{{SEL}}}))",
            "{{image}}",
            links=[to_bases("Bases of these images")],
        ),
        8,
        10,
    )
    board = add(
        board,
        lay,
        bars_panel(
            "Top pods by attributed bytes",
            "Each layer's bytes divided among the pods using it; sums to the bytes pods use.",
            as_namespace_and_pod(
                f"topk(15, sum by ({NAMESPACE_LABEL}, {POD_LABEL}) "
                f"(layer_sharing_pod_attributed_bytes{{{SEL}, {IN_NAMESPACE}}}))"
            ),
            "{{namespace}}/{{pod}}",
        ),
        8,
        10,
    )
    board = add(
        board,
        lay,
        bars_panel(
            "Base images by bytes",
            "Bytes of each base's own layers, stored once per node.",
            f"sum by (base) (layer_sharing_base_bytes{{{SEL}}})",
            "{{base}}",
            links=[to_bases()],
        ),
        8,
        10,
    )
    board = add(
        board,
        lay,
        table_panel(
            "Pods",
            "Per pod: distinct layer bytes, the part shared with other pods, the part unique to it.",
            [
                (
                    as_namespace_and_pod(
                        f"sum by ({NAMESPACE_LABEL}, {POD_LABEL}) (layer_sharing_pod_bytes{{{SEL}, {IN_NAMESPACE}}})"
                    ),
                    "bytes",
                ),
                (
                    as_namespace_and_pod(
                        f"sum by ({NAMESPACE_LABEL}, {POD_LABEL}) "
                        f"(layer_sharing_pod_unique_bytes{{{SEL}, {IN_NAMESPACE}}})"
                    ),
                    "unique",
                ),
            ],
        ),
        24,
        8,
    )
    board = add_row(board, lay, "Wasted bytes (files a later layer hides)")
    board = add(
        board,
        lay,
        bars_panel(
            "Top images by wasted bytes",
            "Bytes of files an image's layers store but a later layer of the same image deletes, "
            "overwrites or hides under an opaque directory: `RUN rm` or `apt-get clean` in a step of its own. "
            "The same on every node holding the image.",
            f"topk(15, max by (image) (layer_sharing_image_wasted_bytes{{{SEL}}}))",
            "{{image}}",
        ),
        12,
        10,
    )
    board = add(
        board,
        lay,
        stat_panel(
            "Wasted on disk",
            "Per node, file bytes of distinct layers that every image using the layer hides: stored, never seen. "
            "Absent while the analysis runs or when a layer's blob is gone.",
            f"sum(layer_sharing_wasted_bytes{{{SEL}}})",
        ),
        4,
        10,
    )
    board = add(
        board,
        lay,
        series_panel(
            "Layer analysis",
            "Layers not read yet (the analysis runs in the background under a CPU budget) and layers "
            "whose blob is gone (discard_unpacked_layers) or unreadable: their images get no wasted figure.",
            [
                (f"sum(layer_sharing_analysis_pending_layers{{{SEL}}})", "pending"),
                (f"sum(layer_sharing_analysis_unavailable_layers{{{SEL}}})", "unavailable"),
            ],
            "short",
        ),
        8,
        10,
    )
    board = add_row(board, lay, "Exporter")
    board = add(
        board,
        lay,
        series_panel(
            "Runtime answering",
            "1 when the exporter's last refresh reached the container runtime.",
            [(f"min by (node) (layer_sharing_up{{{SEL}}})", "{{node}}")],
            "short",
        ),
        8,
        6,
    )
    board = add(
        board,
        lay,
        series_panel(
            "Refresh duration",
            "Seconds the exporter's last refresh took.",
            [(f"max by (node) (layer_sharing_collection_duration_seconds{{{SEL}}})", "{{node}}")],
            "s",
        ),
        8,
        6,
    )
    board = add(
        board,
        lay,
        series_panel(
            "Skipped items",
            "Items skipped per second, by stage (images, layers, content...).",
            [(f"sum by (stage) (rate(layer_sharing_errors_total{{{SEL}}}[$__rate_interval]))", "{{stage}}")],
            "ops",
        ),
        8,
        6,
    )
    return board


def cluster_dashboard() -> dashboard.Dashboard:
    board = base_dashboard(
        "layer-sharing-cluster",
        "Layer sharing / Cluster capacity",
        "Image bytes across nodes: what images cost on disk and on the wire, and what unused images hold back.",
        [namespace_variable()],
    )
    lay = Layout()
    board = add_row(board, lay, "Cluster")
    for title, desc, expr, unit in [
        (
            "Physical image bytes",
            "Distinct layers on every node, summed over nodes.",
            f"sum(job:layer_sharing_physical_bytes:sum{{{CLUSTER}}})",
            "bytes",
        ),
        (
            "Logical image bytes",
            "What images would take without sharing, summed over nodes.",
            f"sum(job:layer_sharing_logical_bytes:sum{{{CLUSTER}}})",
            "bytes",
        ),
        (
            "Sharing ratio",
            "1 - total physical / total logical bytes over the cluster's nodes (not an average of node ratios).",
            f"1 - sum(job:layer_sharing_physical_bytes:sum{{{CLUSTER}}})"
            f" / sum(job:layer_sharing_logical_bytes:sum{{{CLUSTER}}})",
            "percentunit",
        ),
        (
            "Held back by unused images",
            "Reclaimable bytes: layers no in-use image references, summed over nodes.",
            f"sum(job:layer_sharing_reclaimable_bytes:sum{{{CLUSTER}}})",
            "bytes",
        ),
        (
            "Compressed content",
            "Compressed layer blobs kept on nodes: a proxy for registry traffic to fill them.",
            f"sum(job:layer_sharing_content_bytes:sum{{{CLUSTER}}})",
            "bytes",
        ),
        ("Nodes reporting", "Exporters whose runtime answered.", f"sum(layer_sharing_up{{{CLUSTER}}})", "short"),
    ]:
        board = add(board, lay, stat_panel(title, desc, expr, unit), 4, 4)
    board = add(
        board,
        lay,
        series_panel(
            "Sharing ratio over time",
            "Cluster-wide share of image bytes saved by layer sharing.",
            [(f"job:layer_sharing_sharing:ratio{{{CLUSTER}}}", "cluster")],
            "percentunit",
        ),
        12,
        8,
    )
    board = add(
        board,
        lay,
        series_panel(
            "Image filesystem use per node",
            "Used fraction of the filesystem holding images; the kubelet starts image GC at 85%.",
            [(f"instance:layer_sharing_image_fs_usage:ratio{{{SEL}}}", "{{node}}")],
            "percentunit",
            links=[to_node()],
        ),
        12,
        8,
    )
    board = add_row(board, lay, "Nodes")
    board = add(
        board,
        lay,
        series_panel(
            "Physical image bytes per node",
            "Distinct layer bytes on each node.",
            [(f"sum by (node) (layer_sharing_physical_bytes{{{SEL}}})", "{{node}}")],
            links=[to_node()],
        ),
        12,
        8,
    )
    board = add(
        board,
        lay,
        bars_panel(
            "Nodes ranked by image bytes",
            "Nodes with the most physical image bytes.",
            f"topk(20, sum by (node) (layer_sharing_physical_bytes{{{SEL}}}))",
            "{{node}}",
            links=[to_node()],
        ),
        12,
        8,
    )
    board = add(
        board,
        lay,
        bars_panel(
            "Reclaimable bytes per node",
            "What unused images hold back on each node.",
            f"topk(20, sum by (node) (layer_sharing_reclaimable_bytes{{{SEL}}}))",
            "{{node}}",
            links=[to_node()],
        ),
        12,
        8,
    )
    board = add(
        board,
        lay,
        bars_panel(
            "Compressed bytes per node (pull-size proxy)",
            "Compressed layer blobs on each node: roughly what a fresh node with the same images pulls.",
            f"topk(20, sum by (node) (layer_sharing_content_bytes{{{SEL}}}))",
            "{{node}}",
            links=[to_node()],
        ),
        12,
        8,
    )
    board = add(
        board,
        lay,
        bars_panel(
            "Image bytes by namespace (showback)",
            "Disk each namespace's pods use, fairly shared: each layer's bytes divided by the pods using it on its "
            "node, summed over nodes (recording rule namespace:layer_sharing_pod_attributed_bytes:sum). "
            "The namespaces add up to the bytes pods use.",
            # The recording rule records `namespace` whatever label it read (measuredPodLabels).
            "topk(20, sum by (namespace) "
            f'(namespace:layer_sharing_pod_attributed_bytes:sum{{{CLUSTER}, namespace=~"$namespace"}}))',
            "{{namespace}}",
            links=[
                dashboard.DashboardLink("Pods of ${__field.labels.namespace} on every node").url(
                    f"/d/layer-sharing-node/?{KEEP}&var-namespace=${{__field.labels.namespace}}"
                )
            ],
        ),
        12,
        8,
    )
    board = add(
        board,
        lay,
        bars_panel(
            "Largest pulls (compressed image sizes)",
            "Compressed size each exported image's manifest declares: what pulling it transfers.",
            f"topk(15, max by (image) (layer_sharing_image_compressed_bytes{{{SEL}}}))",
            "{{image}}",
        ),
        12,
        8,
    )
    return _pull_cost_row(board, lay)


# The locality service's recording rules (the chart's locality.enabled) keep its own `job`,
# which the Job variable (the exporters' jobs) does not list: filtered by cluster and the
# recorded `namespace` only.
LOCALITY = f'{CLUSTER_LABEL}=~"$cluster", namespace=~"$namespace"'


def _pull_cost_row(board: dashboard.Dashboard, lay: Layout) -> dashboard.Dashboard:
    """Warm nodes and cold-start bytes per workload: one series per workload, from the rules."""
    board = add_row(board, lay, "Pull cost: cold starts per workload (locality service)")
    board = add(
        board,
        lay,
        bars_panel(
            "Warm nodes per workload (least warm first)",
            "Share of the nodes a pod of the workload may be scheduled on (answering) that would fetch and "
            "unpack no layer to start one (recording rule workload:layer_sharing_locality_workload_warm_nodes:ratio, "
            "from the chart's locality service; No data when locality.enabled is off). The scheduler's "
            "ImageLocality sees whole images by name only: see docs/pull-cost.md.",
            f"bottomk(20, workload:layer_sharing_locality_workload_warm_nodes:ratio{{{LOCALITY}}})",
            "{{namespace}}/{{workload}}",
            unit="percentunit",
        ),
        12,
        8,
    )
    return add(
        board,
        lay,
        bars_panel(
            "Cold-start bytes per workload (p90 over nodes)",
            "Bytes a node would fetch from the registry to start a pod of the workload (config and layer "
            "blobs it lacks), the nearest-rank p90 over the nodes it may be scheduled on (recording rule "
            "workload:layer_sharing_locality_workload_cold_start_bytes:max, quantile 0.9; 0.5 beside it).",
            f'topk(20, workload:layer_sharing_locality_workload_cold_start_bytes:max{{{LOCALITY}, quantile="0.9"}})',
            "{{namespace}}/{{workload}}",
        ),
        12,
        8,
    )


def bases_dashboard() -> dashboard.Dashboard:
    top = (
        dashboard.CustomVariable("top")
        .label("Bases converging")
        .values("2,3,5,10")
        .current({"text": "3", "value": "3"})  # type: ignore[arg-type]
    )
    board = base_dashboard(
        "layer-sharing-bases",
        "Layer sharing / Base-image standardisation",
        "Which workloads share a base image, which do not, and what converging bases would save.",
        [namespace_variable(), top],
    )
    lay = Layout()
    board = add_row(board, lay, "Bases")
    for title, desc, expr, unit in [
        (
            "Pods on catalog bases",
            "Share of pods whose images stand on a base named in the catalog.",
            f'sum(layer_sharing_base_pods{{{SEL}, source="catalog"}}) / sum(layer_sharing_base_pods{{{SEL}}})',
            "percentunit",
        ),
        (
            "Pods off the catalog",
            "Pods on a detected base or on no shared base.",
            f'sum(layer_sharing_base_pods{{{SEL}, source!="catalog"}})',
            "short",
        ),
        (
            "Distinct bases",
            "Bases seen on the selected nodes.",
            f"count(count by (base) (layer_sharing_base_images{{{SEL}}}))",
            "short",
        ),
        (
            "Saving if the top bases converged",
            "Per node: bytes of the $top largest bases minus the largest of them (what would no longer be stored "
            "if they became one), summed over nodes. Base bytes add up (each layer counts toward one base, the "
            "innermost), so nested bases are not counted twice; images on no base are left out.",
            f'sum(sum by (node) (topk by (node) ($top, layer_sharing_base_bytes{{{SEL}, source!="none"}})) '
            f'- max by (node) (layer_sharing_base_bytes{{{SEL}, source!="none"}}))',
            "bytes",
        ),
    ]:
        board = add(board, lay, stat_panel(title, desc, expr, unit), 6, 4)
    board = add(
        board,
        lay,
        table_panel(
            "Bases",
            "Per base version: pods, images, nodes and the bytes attributed to it, summed over nodes (a layer "
            "under nested bases counts toward the innermost one, so the bytes add up).",
            [
                (f"sum by (base, version, source) (job_base:layer_sharing_base_pods:sum{{{CLUSTER}}})", "pods"),
                (f"sum by (base, version, source) (job_base:layer_sharing_base_images:sum{{{CLUSTER}}})", "images"),
                (f"sum by (base, version, source) (job_base:layer_sharing_base_nodes:count{{{CLUSTER}}})", "nodes"),
                (f"sum by (base, version, source) (job_base:layer_sharing_base_bytes:sum{{{CLUSTER}}})", "bytes"),
            ],
            "short",
        ),
        24,
        9,
    )
    board = add(
        board,
        lay,
        bars_panel(
            "Pods per base",
            "Pods with a container on an image of each base.",
            f"sum by (base) (layer_sharing_base_pods{{{SEL}}})",
            "{{base}}",
            "short",
        ),
        12,
        9,
    )
    board = add(
        board,
        lay,
        bars_panel(
            "Pods per base off the catalog",
            "Pods per detected (or no) base: candidates for standardisation.",
            f'sum by (base) (layer_sharing_base_pods{{{SEL}, source!="catalog"}})',
            "{{base}}",
            "short",
        ),
        12,
        9,
    )
    board = add(
        board,
        lay,
        table_panel(
            "Workloads not on a catalog base",
            "Each workload with pods on a detected (or no) base, and how many (needs workload attribution, "
            "--kubernetes).",
            [
                (
                    as_namespace_and_pod(
                        f"sum by ({NAMESPACE_LABEL}, workload_kind, workload, base) "
                        f'(layer_sharing_workload_base_pods{{{SEL}, {IN_NAMESPACE}, source!="catalog"}})',
                        pod=False,
                    ),
                    "{{namespace}}/{{workload}}",
                )
            ],
            "short",
        ),
        24,
        9,
    )
    board = add(
        board,
        lay,
        series_panel(
            "Base bytes over time",
            "Bytes attributed to each base family, summed over the selected nodes.",
            [(f"sum by (base) (layer_sharing_base_bytes{{{SEL}}})", "{{base}}")],
        ),
        24,
        8,
    )
    return _versions_and_duplicates(board, lay)


def _versions_and_duplicates(board: dashboard.Dashboard, lay: Layout) -> dashboard.Dashboard:
    """How many versions of each base family, what the drift costs, content stored twice, and unused images."""
    board = add_row(board, lay, "Versions, drift and duplicated content")
    for title, desc, expr, unit in [
        (
            "Version drift",
            "Per node and family: bytes of all its versions minus its largest version's (what converging on one "
            "version would free), summed.",
            f"sum(layer_sharing_base_drift_bytes{{{SEL}}})",
            "bytes",
        ),
        (
            "Families on several versions",
            "Catalog or declared base families with more than one version on some selected node.",
            f"count(max by (base) (layer_sharing_base_versions{{{SEL}}}) > 1) or vector(0)",
            "short",
        ),
        (
            "Duplicate layer bytes",
            "Layer content unpacked more than once because it sits on different parents: all copies minus the "
            "largest, summed over the selected nodes.",
            f"sum(layer_sharing_duplicate_bytes{{{SEL}}})",
            "bytes",
        ),
        (
            "Image GC assumes it frees",
            "Σ of the whole sizes of unused images; what deleting them really frees is the reclaimable figure.",
            f"sum(layer_sharing_unused_logical_bytes{{{SEL}}})",
            "bytes",
        ),
    ]:
        board = add(board, lay, stat_panel(title, desc, expr, unit), 6, 4)
    board = add(
        board,
        lay,
        table_panel(
            "Versions and drift per family",
            "Distinct versions of each catalog or declared base family across the cluster, and its drift bytes "
            "summed over nodes.",
            [
                (f"sum by (base) (job_base:layer_sharing_base_versions:count{{{CLUSTER}}})", "versions"),
                (f"sum by (base) (job_base:layer_sharing_base_drift_bytes:sum{{{CLUSTER}}})", "drift"),
            ],
            "short",
        ),
        12,
        9,
    )
    board = add(
        board,
        lay,
        bars_panel(
            "Drift bytes per family",
            "What converging each family on its largest version would free, summed over the selected nodes.",
            f"sum by (base) (layer_sharing_base_drift_bytes{{{SEL}}})",
            "{{base}}",
        ),
        12,
        9,
    )
    board = add(
        board,
        lay,
        series_panel(
            "Unused images: what image GC assumes vs what it frees",
            "The kubelet's image GC counts each unused image's whole size; shared layers stay, so it frees only "
            "the reclaimable bytes.",
            [
                (f"sum(layer_sharing_unused_logical_bytes{{{SEL}}})", "assumed (unused logical)"),
                (f"sum(layer_sharing_reclaimable_bytes{{{SEL}}})", "really freed (reclaimable)"),
            ],
        ),
        12,
        8,
    )
    board = add(
        board,
        lay,
        bars_panel(
            "Duplicate layer bytes per node",
            "Per node: layer content stored under several chain IDs (all copies minus the largest).",
            f"sum by (node) (layer_sharing_duplicate_bytes{{{SEL}}})",
            "{{node}}",
        ),
        12,
        8,
    )
    board = add(
        board,
        lay,
        table_panel(
            "Oldest images",
            "The 15 images built longest ago (their config's created), among the exported images.",
            [
                (
                    f"bottomk(15, min by (image) (layer_sharing_image_created_timestamp_seconds{{{SEL}}}) * 1000)",
                    "{{image}}",
                )
            ],
            "dateTimeAsIso",
        ),
        24,
        8,
    )
    return board


DASHBOARDS = {
    "layer-sharing-node.json": node_dashboard,
    "layer-sharing-cluster.json": cluster_dashboard,
    "layer-sharing-bases.json": bases_dashboard,
}


def render(build: object) -> str:
    return json.dumps(build, cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def generated() -> dict[str, str]:
    return {name: render(make().build()) for name, make in DASHBOARDS.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed JSON is stale")
    args = parser.parse_args()
    files = {out_dir / name: text for name, text in generated().items() for out_dir in OUT_DIRS}
    return sync(files, args.check, "make dashboards")


if __name__ == "__main__":
    sys.exit(main())
