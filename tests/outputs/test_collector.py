import dataclasses
from collections import Counter

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from exporter.core.accounting import NodeReport, account
from exporter.core.facts import (
    ContainerFacts,
    FilesystemFacts,
    ImageFacts,
    NodeFacts,
    PodFacts,
    SnapshotUsage,
    Workload,
)
from exporter.core.state import RefreshStatus, WasteReport
from exporter.outputs.collector import HealthCollector, LayerSharingCollector, MetricsOptions
from exporter.outputs.metrics_store import MetricsStore
from tests.fakes import digest
from tests.sample_facts import APP_A, sample_facts

# The metric contract: dashboards, rules and users depend on these names and labels.
CONTRACT = {
    "layer_sharing_up": [],
    "layer_sharing_collection_duration_seconds": [],
    "layer_sharing_last_success_timestamp_seconds": [],
    "layer_sharing_refreshes_total": [],
    "layer_sharing_errors_total": ["stage"],
    "layer_sharing_runtime_requests_total": ["method"],
    "layer_sharing_build_info": ["python_version", "version"],
    "layer_sharing_runtime_info": ["layer_store", "runtime", "runtime_version", "snapshotter"],
    "layer_sharing_images": [],
    "layer_sharing_layers": [],
    "layer_sharing_unused_images": [],
    "layer_sharing_containers": [],
    "layer_sharing_pods": [],
    "layer_sharing_logical_bytes": [],
    "layer_sharing_physical_bytes": [],
    "layer_sharing_shared_bytes": [],
    "layer_sharing_unique_bytes": [],
    "layer_sharing_reclaimable_bytes": [],
    "layer_sharing_content_bytes": [],
    "layer_sharing_writable_bytes": [],
    "layer_sharing_missing_layers": [],
    "layer_sharing_remote_layers": [],
    "layer_sharing_snapshotter_mismatch": ["runtime_snapshotter", "snapshotter"],
    "layer_sharing_duplicate_layers": [],
    "layer_sharing_duplicate_bytes": [],
    "layer_sharing_unused_logical_bytes": [],
    "layer_sharing_image_fs_used_bytes": ["mountpoint"],
    "layer_sharing_image_fs_inodes_used": ["mountpoint"],
    "layer_sharing_image_fs_capacity_bytes": ["mountpoint"],
    "layer_sharing_image_fs_available_bytes": ["mountpoint"],
    "layer_sharing_capacity_dir_elsewhere": ["mountpoint"],
    "layer_sharing_image_gc_threshold_ratio": ["threshold"],
    "layer_sharing_image_gc_bytes_to_free": ["mountpoint"],
    "layer_sharing_image_gc_freed_bytes": ["mountpoint"],
    "layer_sharing_image_gc_freeable_bytes": ["mountpoint"],
    "layer_sharing_image_gc_can_reach_low_threshold": ["mountpoint"],
    "layer_sharing_namespace_attributed_bytes": ["namespace"],
    "layer_sharing_image_size_bytes": ["image", "image_id"],
    "layer_sharing_image_shared_bytes": ["image", "image_id"],
    "layer_sharing_image_unique_bytes": ["image", "image_id"],
    "layer_sharing_image_compressed_bytes": ["image", "image_id"],
    "layer_sharing_image_containers": ["image", "image_id"],
    "layer_sharing_image_info": ["base", "base_source", "base_version", "image", "image_id", "image_ref"],
    "layer_sharing_pod_bytes": ["namespace", "pod"],
    "layer_sharing_pod_shared_bytes": ["namespace", "pod"],
    "layer_sharing_pod_unique_bytes": ["namespace", "pod"],
    "layer_sharing_pod_attributed_bytes": ["namespace", "pod"],
    "layer_sharing_pod_writable_bytes": ["namespace", "pod"],
    "layer_sharing_base_images": ["base", "source", "version"],
    "layer_sharing_base_pods": ["base", "source", "version"],
    "layer_sharing_base_bytes": ["base", "source", "version"],
    "layer_sharing_base_stack_bytes": ["base", "source", "version"],
}
# Families only present with a catalog or declared base, and with configs that say when they were built.
CONTRACT_WITH_FAMILIES = {
    "layer_sharing_base_versions": ["base"],
    "layer_sharing_base_drift_bytes": ["base"],
    "layer_sharing_image_created_timestamp_seconds": ["image", "image_id"],
}


@dataclasses.dataclass(frozen=True)
class Published:
    """What the refresh loop and the analysis publish to the metrics store."""

    status: RefreshStatus
    report: NodeReport | None = None
    waste: WasteReport | None = None


def up_state(facts: NodeFacts, waste: WasteReport | None = None) -> Published:
    status = RefreshStatus(generation=1, up=True, refreshes=1, calls={"/runtime.v1.ImageService/ListImages": 3})
    return Published(status, account(facts), waste)


def registry_for(state: Published, options: MetricsOptions | None = None) -> CollectorRegistry:
    """Both collectors, as /metrics joins them (exporter.outputs.metrics_store)."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(HealthCollector(state.status))
    if state.report is not None:
        registry.register(LayerSharingCollector(state.report, state.waste, options or MetricsOptions()))
    return registry


def samples(registry: CollectorRegistry) -> dict[str, set[tuple[str, ...]]]:
    text = generate_latest(registry).decode()
    out: dict[str, set[tuple[str, ...]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).add(tuple(sorted(sample.labels)))
    return out


def with_fs(facts: NodeFacts) -> NodeFacts:
    return dataclasses.replace(facts, filesystems=(FilesystemFacts("/var/lib/containerd/x", 5000, 40, 10**9, 10**8),))


def test_names_and_labels_are_the_contract():
    found = samples(registry_for(up_state(with_fs(sample_facts()))))
    assert {name: sorted(next(iter(labels))) for name, labels in found.items()} == CONTRACT


def test_values():
    registry = registry_for(up_state(sample_facts()))
    assert registry.get_sample_value("layer_sharing_up") == 1
    assert registry.get_sample_value("layer_sharing_physical_bytes") == 2450
    assert registry.get_sample_value("layer_sharing_logical_bytes") == 8350
    assert registry.get_sample_value("layer_sharing_reclaimable_bytes") == 100
    labels = {"image_id": APP_A.image_id, "image": "localhost/app-a:1"}
    assert registry.get_sample_value("layer_sharing_image_unique_bytes", labels) == 200
    assert registry.get_sample_value("layer_sharing_image_containers", labels) == 2
    assert registry.get_sample_value("layer_sharing_pod_bytes", {"namespace": "default", "pod": "web-2"}) == 1500
    assert registry.get_sample_value("layer_sharing_errors_total", {"stage": "image_parse"}) == 0
    assert (
        registry.get_sample_value(
            "layer_sharing_runtime_requests_total", {"method": "runtime.v1.ImageService/ListImages"}
        )
        == 3
    )


def test_down_runtime_exports_health_only():
    state = Published(RefreshStatus(generation=3, up=False, last_error="runtime unreachable", errors={"runtime": 2}))
    found = samples(registry_for(state))
    assert "layer_sharing_physical_bytes" not in found
    registry = registry_for(state)
    assert registry.get_sample_value("layer_sharing_up") == 0
    assert registry.get_sample_value("layer_sharing_errors_total", {"stage": "runtime"}) == 2


def test_help_says_unpacked_or_compressed():
    text = generate_latest(registry_for(up_state(sample_facts()))).decode()
    helps = {line.split()[2]: line for line in text.splitlines() if line.startswith("# HELP")}
    assert "Unpacked" in helps["layer_sharing_physical_bytes"]
    assert "Compressed" in helps["layer_sharing_content_bytes"]
    assert "compressed" in helps["layer_sharing_image_compressed_bytes"].lower()
    assert "not per scrape" in helps["layer_sharing_physical_bytes"]


def test_optional_layer_family_and_knobs():
    options = MetricsOptions(images_top_n=2, pods=False, bases_top_n=1, layers_top_n=3)
    registry = registry_for(up_state(sample_facts()), options)
    text = generate_latest(registry).decode()
    assert text.count("layer_sharing_image_size_bytes{") == 2
    assert "layer_sharing_pod_bytes" not in text
    # The top base, and the unshared group that is never cut.
    assert text.count("layer_sharing_base_bytes{") == 1
    lone = ImageFacts(image_id=digest("lone"), repo_tags=("localhost/lone:1",), diff_ids=(digest("lone-layer"),))
    facts = dataclasses.replace(sample_facts(), images=(*sample_facts().images, lone))
    text = generate_latest(registry_for(up_state(facts), options)).decode()
    assert text.count("layer_sharing_base_bytes{") == 2
    assert 'layer_sharing_base_images{base="unshared",source="none",version=""} 1.0' in text
    assert text.count("layer_sharing_layer_bytes{") == 3


def busy_node_facts(images: int = 300, pods: int = 110, workloads: bool = False) -> NodeFacts:
    """A synthetic busy node at the issue's scale: 300 images, 110 pods.

    With `workloads` (enrichment on, as `--kubernetes` gives it) each pod is one
    of 30 Deployments, as benchmarks/busy_node.py's stand-in API server says.
    """
    image_facts = []
    usage = {}
    for i in range(images):
        diffs = [digest(f"base-{i % 5}"), digest(f"runtime-{i % 15}")] + [digest(f"img-{i}-{k}") for k in range(7)]
        img = ImageFacts(
            image_id=digest(f"image-{i}"), repo_tags=(f"registry.example/app-{i}:1",), diff_ids=tuple(diffs)
        )
        image_facts.append(img)
    from exporter.core.chain import chain_ids

    for img in image_facts:
        for c in chain_ids(img.diff_ids):
            usage[c] = SnapshotUsage(1000)
    containers = []
    pod_facts = []
    for p in range(pods):
        pod_facts.append(PodFacts(sandbox_id=f"s{p}", namespace=f"ns-{p % 10}", name=f"pod-{p}"))
        for k in range(1 + p % 2):
            containers.append(
                ContainerFacts(
                    container_id=f"c{p}-{k}",
                    name=f"c{k}",
                    image_id=image_facts[(p * 2 + k) % images].image_id,
                    namespace=f"ns-{p % 10}",
                    pod=f"pod-{p}",
                    sandbox_id=f"s{p}",
                )
            )
    owners = {(p.namespace, p.name): Workload("Deployment", f"app-{n % 30}") for n, p in enumerate(pod_facts)}
    return NodeFacts(
        images=tuple(image_facts),
        containers=tuple(containers),
        pods=tuple(pod_facts),
        layer_usage=usage,
        filesystems=(FilesystemFacts("/var/lib/containerd", 1, 1, 2, 1),),
        workloads=owners if workloads else None,
    )


def series_count(registry: CollectorRegistry) -> int:
    text = generate_latest(registry).decode()
    return sum(1 for line in text.splitlines() if line and not line.startswith("#"))


def test_series_budget_at_defaults_on_a_busy_node():
    facts = busy_node_facts()
    # With the wasted-bytes analysis done: a figure for every image.
    waste = WasteReport(
        image_ids=frozenset(i.image_id for i in facts.images),
        images={i.image_id: 1 for i in facts.images},
        node_wasted_bytes=1,
    )
    count = series_count(registry_for(up_state(facts, waste=waste)))
    assert count <= 1000, count
    everything = series_count(registry_for(up_state(busy_node_facts()), MetricsOptions(images_top_n=0, bases_top_n=0)))
    assert everything > count  # the knobs matter


def test_hostile_label_values_are_escaped():
    hostile = 'a"b\\c\nd' + "é" * 300
    facts = NodeFacts(
        images=(ImageFacts(image_id=digest(1), repo_tags=(hostile,)),),
        pods=(PodFacts(sandbox_id="s", namespace=hostile, name=hostile),),
    )
    text = generate_latest(registry_for(up_state(facts))).decode()
    families = list(text_string_to_metric_families(text))
    names = {s.labels.get("image") for f in families for s in f.samples if "image" in s.labels}
    assert hostile in names


def test_hostile_exposition_passes_promtool_check_metrics():
    import shutil
    import subprocess

    hostile = 'q"uote\\back\nnew' + "ü" * 5000
    facts = NodeFacts(
        images=(ImageFacts(image_id=digest(1), repo_tags=(hostile,)),),
        pods=(PodFacts(sandbox_id="s", namespace=hostile, name="x" * 10000),),
    )
    text = generate_latest(registry_for(up_state(facts))).decode()
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: run scripts/setup.sh"
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_thousand_images_of_125_layers_are_accounted():
    images = tuple(
        ImageFacts(
            image_id=digest(f"big-{i}"),
            diff_ids=tuple(digest(f"L{k}") for k in range(5)) + tuple(digest(f"big-{i}-{k}") for k in range(120)),
        )
        for i in range(1000)
    )
    report = account(NodeFacts(images=images))
    assert report.totals.images == 1000
    assert report.totals.layers == 5 + 1000 * 120
    registry = registry_for(up_state(NodeFacts(images=images)))
    assert registry.get_sample_value("layer_sharing_layers") == 120005


def test_base_families_versions_drift_and_created():
    from exporter.core.bases import BaseSpec
    from exporter.core.facts import DeclaredBase

    facts = sample_facts()
    stamped = tuple(
        dataclasses.replace(i, created=1_700_000_000.5 + n, declared_base=DeclaredBase("docker.io/library/busybox:1"))
        if i.name == "localhost/app-c:1"
        else dataclasses.replace(i, created=1_700_000_000.5 + n)
        for n, i in enumerate(facts.images)
    )
    facts = dataclasses.replace(facts, images=stamped)
    catalog = [BaseSpec("debian", diff_ids=(digest("B"), digest("OS")), version="12")]
    state = dataclasses.replace(up_state(facts), report=account(facts, catalog))
    found = samples(registry_for(state))
    assert {name: sorted(next(iter(found[name]))) for name in CONTRACT_WITH_FAMILIES} == CONTRACT_WITH_FAMILIES
    registry = registry_for(state)
    assert registry.get_sample_value("layer_sharing_base_versions", {"base": "debian"}) == 1
    assert registry.get_sample_value("layer_sharing_base_drift_bytes", {"base": "debian"}) == 0
    labels = {"base": "debian", "version": "12", "source": "catalog"}
    assert registry.get_sample_value("layer_sharing_base_images", labels) == 4
    assert registry.get_sample_value("layer_sharing_base_stack_bytes", labels) == 1300
    app_c = {"base": "docker.io/library/busybox", "version": "1", "source": "annotation"}
    assert registry.get_sample_value("layer_sharing_base_images", app_c) == 1
    created = registry.get_sample_value(
        "layer_sharing_image_created_timestamp_seconds", {"image_id": APP_A.image_id, "image": "localhost/app-a:1"}
    )
    assert created == 1_700_000_002.5


def waste_state(facts: NodeFacts, images: dict[str, int], node: int | None, **kw: int) -> Published:
    waste = WasteReport(
        image_ids=frozenset(i.image_id for i in facts.images), images=images, node_wasted_bytes=node, **kw
    )
    return up_state(facts, waste=waste)


def test_wasted_bytes_families_are_the_contract():
    facts = sample_facts()
    state = waste_state(facts, {i.image_id: 7 for i in facts.images}, 5)
    found = samples(registry_for(state))
    assert {name: sorted(next(iter(labels))) for name, labels in found.items() if name not in CONTRACT} == {
        "layer_sharing_image_wasted_bytes": ["image", "image_id"],
        "layer_sharing_wasted_bytes": [],
        "layer_sharing_analysis_pending_layers": [],
        "layer_sharing_analysis_unavailable_layers": [],
    }


def test_wasted_bytes_only_where_every_layer_was_analysed():
    facts = sample_facts()
    state = waste_state(facts, {APP_A.image_id: 1234}, None, pending_layers=2, unavailable_layers=1)
    registry = registry_for(state)
    labels = {"image_id": APP_A.image_id, "image": "localhost/app-a:1"}
    assert registry.get_sample_value("layer_sharing_image_wasted_bytes", labels) == 1234
    text = generate_latest(registry).decode()
    assert text.count("layer_sharing_image_wasted_bytes{") == 1
    assert "layer_sharing_wasted_bytes " not in text  # no partial node figure
    assert registry.get_sample_value("layer_sharing_analysis_pending_layers") == 2
    assert registry.get_sample_value("layer_sharing_analysis_unavailable_layers") == 1


def test_the_node_wasted_figure_is_for_the_images_on_the_node_now():
    facts = sample_facts()
    complete = {i.image_id: 1 for i in facts.images}
    assert registry_for(waste_state(facts, complete, 99)).get_sample_value("layer_sharing_wasted_bytes") == 99
    older = up_state(facts, waste=WasteReport(image_ids=frozenset(complete) - {APP_A.image_id}, node_wasted_bytes=99))
    assert registry_for(older).get_sample_value("layer_sharing_wasted_bytes") is None


def test_image_wasted_series_follow_images_top_n():
    facts = sample_facts()
    state = waste_state(facts, {i.image_id: 1 for i in facts.images}, 0)
    text = generate_latest(registry_for(state, MetricsOptions(images_top_n=2))).decode()
    assert text.count("layer_sharing_image_wasted_bytes{") == 2
    sizes = {
        line.split("{")[1].split("}")[0]
        for line in text.splitlines()
        if line.startswith("layer_sharing_image_size_bytes{")
    }
    wasted = {
        line.split("{")[1].split("}")[0]
        for line in text.splitlines()
        if line.startswith("layer_sharing_image_wasted_bytes{")
    }
    assert sizes == wasted


# The fleet profile of docs/performance.md: node, namespace showback, bases and the top images.
FLEET_PROFILE = MetricsOptions(images_top_n=5, bases_top_n=5, pods=False, workloads=False, workload_bases=False)


def scraped_series(facts: NodeFacts, options: MetricsOptions) -> Counter[str]:
    """Series per metric name in a whole /metrics body (health and process metrics included),
    with the wasted-bytes analysis complete and the image filesystem's capacity known."""
    facts = dataclasses.replace(
        facts, filesystems=(FilesystemFacts("/var/lib/containerd/x", 10**11, 10**6, 2 * 10**11, 10**11),)
    )
    store = MetricsStore(options)
    report = account(facts)
    store.publish_refresh(up_state(facts).status, report)
    store.publish_waste(
        WasteReport(
            image_ids=frozenset(i.image_id for i in report.images),
            images={i.image_id: 1 for i in report.images},
            node_wasted_bytes=1,
        )
    )
    body, _ = store.render("text/plain")
    lines = [line for line in body.decode().splitlines() if line and not line.startswith("#")]
    return Counter(line.split("{")[0].split(" ")[0] for line in lines)


def test_series_budget_with_enrichment_defaults_and_fleet_profile():
    facts = busy_node_facts(workloads=True)
    defaults = scraped_series(facts, MetricsOptions())
    assert sum(defaults.values()) <= 1000, sum(defaults.values())
    # Workloads and which bases they stand on are whole at the defaults (the cluster report needs them).
    assert defaults["layer_sharing_workload_pods"] == 30
    assert defaults["layer_sharing_workload_base_pods"] == sum(len(w.bases) for w in account(facts).workloads or ())
    assert defaults["layer_sharing_pod_bytes"] == 30  # pods_top_n
    fleet = scraped_series(facts, FLEET_PROFILE)
    assert sum(fleet.values()) <= 150, sum(fleet.values())
    assert fleet["layer_sharing_physical_bytes"] == 1
    assert fleet["layer_sharing_namespace_attributed_bytes"] == 10
    assert fleet["layer_sharing_base_bytes"] == 5
    assert fleet["layer_sharing_image_size_bytes"] == 5
    assert not [name for name in fleet if name.startswith(("layer_sharing_pod_", "layer_sharing_workload_"))]


def test_namespace_showback_adds_up_to_the_pods_and_needs_no_pod_series():
    facts = busy_node_facts(workloads=True)
    registry = registry_for(up_state(facts), MetricsOptions(pods=False))
    text = generate_latest(registry).decode()
    assert "layer_sharing_pod_attributed_bytes{" not in text
    by_namespace = {
        s.labels["namespace"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "layer_sharing_namespace_attributed_bytes"
    }
    pods = account(facts).pods
    assert by_namespace == {
        ns: sum(p.attributed for p in pods if p.namespace == ns) for ns in {p.namespace for p in pods}
    }


def test_each_family_has_its_own_switch_and_top_n():
    facts = busy_node_facts(workloads=True)
    count = lambda **kw: scraped_series(facts, MetricsOptions(**kw))  # noqa: E731
    no_pods = count(pods=False)
    assert no_pods["layer_sharing_pod_bytes"] == 0 and no_pods["layer_sharing_workload_pods"] == 30
    no_workloads = count(workloads=False)
    assert no_workloads["layer_sharing_workload_pods"] == 0 and no_workloads["layer_sharing_workload_base_pods"] > 0
    assert count(workload_bases=False)["layer_sharing_workload_base_pods"] == 0
    top = count(pods_top_n=7, workloads_top_n=4, workload_bases_top_n=3, images_top_n=2)
    assert (top["layer_sharing_pod_bytes"], top["layer_sharing_workload_pods"]) == (7, 4)
    assert top["layer_sharing_image_size_bytes"] == top["layer_sharing_image_wasted_bytes"] == 2
    assert 3 <= top["layer_sharing_workload_base_pods"] <= 3 * 5
    no_images = count(images=False)
    assert no_images["layer_sharing_image_size_bytes"] == no_images["layer_sharing_image_wasted_bytes"] == 0
    assert count(namespaces=False)["layer_sharing_namespace_attributed_bytes"] == 0


def test_namespace_include_and_exclude_filter_every_namespace_labelled_series():
    facts = busy_node_facts(workloads=True)
    options = MetricsOptions(pods_top_n=0, namespace_include=("ns-1", "ns-2*"), namespace_exclude=("ns-2",))
    text = generate_latest(registry_for(up_state(facts), options)).decode()
    namespaces = {
        s.labels["namespace"]
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if "namespace" in s.labels
    }
    assert namespaces == {"ns-1"}
    assert text.count("layer_sharing_pod_bytes{") == sum(1 for p in facts.pods if p.namespace == "ns-1")


def test_image_gc_families_follow_the_model():
    from exporter.core.image_gc import plan_image_gc

    facts = with_fs(sample_facts())  # capacity 10**9, 10**8 available: 90% used
    report = account(facts)
    registry = registry_for(up_state(facts), MetricsOptions(image_gc_high_threshold_percent=90))
    labels = {"mountpoint": "/var/lib/containerd/x"}
    plan = plan_image_gc(report.images, {c: la.size for c, la in report.layers.items()}, {}, 10**9, 10**8, 90, 80)
    assert registry.get_sample_value("layer_sharing_image_gc_bytes_to_free", labels) == plan.bytes_to_free == 10**8
    assert registry.get_sample_value("layer_sharing_image_gc_freeable_bytes", labels) == plan.unused_bytes == 100
    assert registry.get_sample_value("layer_sharing_image_gc_freed_bytes", labels) == plan.freed_bytes
    assert registry.get_sample_value("layer_sharing_image_gc_can_reach_low_threshold", labels) == 0
    assert registry.get_sample_value("layer_sharing_image_gc_threshold_ratio", {"threshold": "high"}) == 0.9
    assert registry.get_sample_value("layer_sharing_capacity_dir_elsewhere", labels) == 0


def test_no_capacity_no_gc_model_and_elsewhere_is_said():
    facts = dataclasses.replace(
        sample_facts(), filesystems=(FilesystemFacts("/var/lib/containerd/x", 5000, 40, capacity_dir_elsewhere=True),)
    )
    registry = registry_for(up_state(facts))
    text = generate_latest(registry).decode()
    assert "layer_sharing_image_gc_bytes_to_free{" not in text
    assert "layer_sharing_image_fs_capacity_bytes{" not in text
    assert (
        registry.get_sample_value("layer_sharing_capacity_dir_elsewhere", {"mountpoint": "/var/lib/containerd/x"}) == 1
    )


def test_repull_families_say_what_bringing_images_back_would_fetch():
    from exporter.core.facts import LayerBlob
    from exporter.core.pull_cost import repull_report

    facts = sample_facts()
    blobs = {
        image.image_id: tuple(LayerBlob(digest(f"blob-{d}"), 100 + i) for i, d in enumerate(image.diff_ids))
        for image in facts.images
    }
    present = {blob.digest: blob.size for layers in blobs.values() for blob in layers}
    facts = dataclasses.replace(facts, layer_blobs=blobs, present_blobs=present)
    report = account(facts)
    expected = repull_report(
        facts, [i.image_id for i in report.images], [i.image_id for i in report.images if not i.in_use]
    )
    registry = registry_for(Published(RefreshStatus(generation=1, up=True), report))
    assert expected.unused is not None
    assert registry.get_sample_value("layer_sharing_unused_repull_bytes") == expected.unused
    for image in report.images:
        labels = {"image": image.name, "image_id": image.image_id}
        assert registry.get_sample_value("layer_sharing_image_repull_bytes", labels) == expected.images[image.image_id]
