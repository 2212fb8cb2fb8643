"""Where a workload's pod may be scheduled, as far as the locality view needs it (pure).

A node counts for a workload's cold start only if the scheduler could put one of
its pods there. The hard filters that depend on the node and the pod spec alone
are modelled, as kube-scheduler's plugins decide them:

- NodeUnschedulable: a cordoned node (`spec.unschedulable`) takes only pods that
  tolerate the `node.kubernetes.io/unschedulable:NoSchedule` taint;
- TaintToleration: every NoSchedule and NoExecute taint must be tolerated
  (PreferNoSchedule is a preference, not a filter);
- NodeAffinity: `nodeSelector` (every label equal) and the required node affinity
  terms (any term whose every expression holds).

Not modelled: resources (a full node still counts), pod (anti-)affinity,
topology spread, ports and volumes; they change by the minute.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
_FILTERING_EFFECTS = frozenset({"NoSchedule", "NoExecute"})


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    value: str = ""
    effect: str = ""


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str = ""  # with operator Exists: every key
    operator: str = "Equal"
    value: str = ""
    effect: str = ""  # "": every effect


@dataclass(frozen=True, slots=True)
class NodeRequirement:
    """One matchExpressions entry of a node selector term (a matchFields one: `on_field`,
    whose only key is metadata.name)."""

    key: str
    operator: str  # In, NotIn, Exists, DoesNotExist, Gt, Lt
    values: tuple[str, ...] = ()
    on_field: bool = False


@dataclass(frozen=True, slots=True)
class ClusterNode:
    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    unschedulable: bool = False
    taints: tuple[Taint, ...] = ()


@dataclass(frozen=True, slots=True)
class PodPlacement:
    """What a pod spec says about nodes: tolerations, nodeSelector, required node affinity
    (terms ORed, each term's requirements ANDed; no terms: any node)."""

    tolerations: tuple[Toleration, ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()  # (label, value) pairs, sorted: hashable
    required_terms: tuple[tuple[NodeRequirement, ...], ...] = ()


@dataclass(frozen=True, slots=True)
class RunningWorkload:
    """A workload with running pods: its images (init containers first) and where its pods may
    go (its pods' distinct placements: a rollout under way may have two templates)."""

    images: tuple[str, ...]
    placements: tuple[PodPlacement, ...] = (PodPlacement(),)

    def may_run_on(self, node: ClusterNode) -> bool:
        return any(may_schedule(node, placement) for placement in self.placements)


def tolerates(tolerations: tuple[Toleration, ...], taint: Taint) -> bool:
    """Whether one of `tolerations` tolerates `taint` (the API's ToleratesTaint)."""
    for t in tolerations:
        if t.effect and t.effect != taint.effect:
            continue
        if t.operator == "Exists":
            if not t.key or t.key == taint.key:
                return True
        elif t.key == taint.key and t.value == taint.value:
            return True
    return False


def _holds(requirement: NodeRequirement, labels: Mapping[str, str]) -> bool:
    value = labels.get(requirement.key)
    op = requirement.operator
    if op == "In":
        return value is not None and value in requirement.values
    if op == "NotIn":
        return value is None or value not in requirement.values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and len(requirement.values) == 1:
        try:
            have, bound = int(value), int(requirement.values[0])
        except ValueError:
            return False
        return have > bound if op == "Gt" else have < bound
    return False  # an operator the API would have refused


def may_schedule(node: ClusterNode, placement: PodPlacement) -> bool:
    """Whether the scheduler's node-level hard filters let a pod with `placement` onto `node`."""
    if node.unschedulable and not tolerates(placement.tolerations, Taint(UNSCHEDULABLE_TAINT, effect="NoSchedule")):
        return False
    if any(t.effect in _FILTERING_EFFECTS and not tolerates(placement.tolerations, t) for t in node.taints):
        return False
    if any(node.labels.get(k) != v for k, v in placement.node_selector):
        return False
    # An empty term matches no node, as the API defines it.
    return not placement.required_terms or any(
        term and all(_holds(r, {"metadata.name": node.name} if r.on_field else node.labels) for r in term)
        for term in placement.required_terms
    )
