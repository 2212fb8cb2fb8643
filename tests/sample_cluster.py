"""A two-node cluster, as two exporters' expositions of the sample node (plus one unreachable node)."""

from __future__ import annotations

import dataclasses

from prometheus_client import CollectorRegistry, generate_latest

from exporter.core.accounting import account
from exporter.core.bases import BaseSpec
from exporter.core.cluster import ClusterReport, build_report
from exporter.core.facts import Workload
from exporter.core.state import RefreshStatus
from exporter.outputs.collector import HealthCollector, LayerSharingCollector, MetricsOptions
from exporter.sources.exposition import samples_from_exposition
from tests.fakes import digest
from tests.sample_facts import sample_facts


def exposition(node: str, with_workloads: bool = True) -> str:
    facts = sample_facts()
    if with_workloads:
        facts = dataclasses.replace(
            facts,
            workloads={
                ("default", "web-1"): Workload("Deployment", "web"),
                ("default", "web-2"): Workload("Deployment", "web"),
                ("other", "solo"): Workload("Pod", "solo"),
            },
        )
    catalog = [BaseSpec("debian", diff_ids=(digest("B"), digest("OS")))]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HealthCollector(RefreshStatus(generation=1, up=True)))
    registry.register(LayerSharingCollector(account(facts, catalog), None, MetricsOptions()))
    return generate_latest(registry).decode()


def sample_cluster() -> ClusterReport:
    nodes = [
        samples_from_exposition("node-a", exposition("node-a")),
        samples_from_exposition("node-b", exposition("node-b")),
    ]
    return build_report(nodes, [("node-c", "503 Service Unavailable")])
