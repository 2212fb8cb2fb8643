"""Where a workload's pod may be scheduled: the scheduler's node-level hard filters."""

from __future__ import annotations

import pytest

from exporter.core.placement import (
    UNSCHEDULABLE_TAINT,
    ClusterNode,
    NodeRequirement,
    PodPlacement,
    Taint,
    Toleration,
    may_schedule,
    tolerates,
)

GPU = Taint("gpu", "yes", "NoSchedule")


@pytest.mark.parametrize(
    ("toleration", "expected"),
    [
        (Toleration("gpu", "Equal", "yes", "NoSchedule"), True),
        (Toleration("gpu", "Equal", "no", "NoSchedule"), False),
        (Toleration("gpu", "Exists"), True),  # every effect
        (Toleration("gpu", "Exists", effect="NoExecute"), False),
        (Toleration("", "Exists"), True),  # every taint
        (Toleration("other", "Exists"), False),
    ],
)
def test_tolerations_match_as_the_api_does(toleration: Toleration, expected: bool):
    assert tolerates((toleration,), GPU) is expected


def test_cordoned_nodes_take_only_pods_tolerating_unschedulable():
    cordoned = ClusterNode("n", unschedulable=True)
    assert not may_schedule(cordoned, PodPlacement())
    assert may_schedule(cordoned, PodPlacement((Toleration(UNSCHEDULABLE_TAINT, "Exists", effect="NoSchedule"),)))


def test_no_schedule_and_no_execute_taints_filter_prefer_no_schedule_does_not():
    assert not may_schedule(ClusterNode("n", taints=(GPU,)), PodPlacement())
    assert not may_schedule(ClusterNode("n", taints=(Taint("x", effect="NoExecute"),)), PodPlacement())
    assert may_schedule(ClusterNode("n", taints=(Taint("x", effect="PreferNoSchedule"),)), PodPlacement())
    assert may_schedule(ClusterNode("n", taints=(GPU,)), PodPlacement((Toleration("gpu", "Exists"),)))


def test_node_selector_and_required_node_affinity():
    node = ClusterNode("n1", labels={"zone": "a", "cores": "16"})
    assert may_schedule(node, PodPlacement(node_selector=(("zone", "a"),)))
    assert not may_schedule(node, PodPlacement(node_selector=(("zone", "b"),)))
    zone_b = (NodeRequirement("zone", "In", ("b",)),)
    big = (NodeRequirement("cores", "Gt", ("8",)), NodeRequirement("gpu", "DoesNotExist"))
    assert may_schedule(node, PodPlacement(required_terms=(zone_b, big)))  # terms are ORed
    assert not may_schedule(node, PodPlacement(required_terms=(zone_b,)))
    assert not may_schedule(node, PodPlacement(required_terms=((NodeRequirement("cores", "Lt", ("8",)),),)))
    assert not may_schedule(node, PodPlacement(required_terms=((),)))  # an empty term matches nothing
    by_name = (NodeRequirement("metadata.name", "NotIn", ("n1",), on_field=True),)
    assert not may_schedule(node, PodPlacement(required_terms=(by_name,)))
    assert may_schedule(node, PodPlacement(required_terms=((NodeRequirement("zone", "NotIn", ("b",)),),)))
    assert not may_schedule(node, PodPlacement(required_terms=((NodeRequirement("zone", "Bogus", ("a",)),),)))
