"""Pull cost: what a node would fetch and unpack to run images it may not hold (pure).

The runtime decides what a pull skips, so each layer store's rule is modelled
as measured (tests/integration/test_pull_cost.py pulls for real and counts
what the registry served):

- containerd (1.6, 1.7 and 2.x alike): the config blob is fetched unless the
  content store holds it. The unpacker walks the layers bottom-up and skips
  every one whose chain-ID snapshot exists; from the first missing chain on,
  every layer is unpacked, and its blob fetched unless the content store holds
  it (a blob kept from another image, or the same diff on another parent).
  A layer below a present chain is never fetched, even when its blob was
  discarded after unpacking (`discard_unpacked_layers`). On such a node a layer
  blob fetched for one reference is taken to be gone by the next, so it is
  fetched again: the garbage collection that drops it is scheduled when the
  pull's lease ends (milliseconds later, not awaited by the pull), so pulls
  closer together than that may still find it.
- containers/storage (CRI-O, podman 4.3): the config is fetched on every
  pull, even of an image already stored; each layer blob is fetched unless a
  stored layer records the same compressed digest (c/image reuses it, whatever
  the layer's parent); a layer is created for each chain not stored.

Later references see what earlier ones brought: blobs and chains fetched or
unpacked for one are not counted again. Bytes are exact: compressed sizes as the
manifests declare them (what the registry sends), snapshot bytes as the store
records them. A new chain's bytes are known when the same diff is stored on
another parent and the store's bytes for a layer are its diff's own: c/storage
counts the diff's tar stream, and containerd's overlayfs snapshotter the upper
directory the diff was applied into (both measured equal on another parent).
Where no source knows a new chain's bytes, `unpack_bytes` is None.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Container, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field

from exporter.core.chain import chain_ids as compute_chain_ids
from exporter.core.facts import ImageFacts, NodeFacts

CONTAINERD = "containerd"
CONTAINERS_STORAGE = "containers-storage"
PULL_MODELS = (CONTAINERD, CONTAINERS_STORAGE)
# Snapshotters whose committed snapshot holds only its own diff (the upper directory).
DIFF_SIZED_SNAPSHOTTERS = frozenset({"overlayfs"})


@dataclass(frozen=True, slots=True)
class RemoteLayer:
    """One layer as the registry's manifest and config name it."""

    digest: str  # the compressed blob's digest (what is fetched)
    size: int  # its bytes, as the manifest declares them
    diff_id: str  # the uncompressed tar's digest, from the config


@dataclass(frozen=True, slots=True)
class RemoteImage:
    """An image a reference resolves to, for the node's platform."""

    ref: str
    manifest_digest: str
    config_digest: str
    config_size: int
    layers: tuple[RemoteLayer, ...]
    chain_ids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.chain_ids) != len(self.layers):
            object.__setattr__(self, "chain_ids", compute_chain_ids([layer.diff_id for layer in self.layers]))


@dataclass(frozen=True, slots=True)
class NodeHoldings:
    """What one node's layer store already holds, as far as a pull is concerned.

    `chains`: chain IDs with a snapshot (or c/storage layer), and their bytes.
    `blobs`: digests of blobs the store keeps (configs and compressed layers).
    `diff_bytes`: diff ID -> bytes of a stored layer of that diff, and
    `diff_sized` whether a layer's bytes are its diff's own whatever its parent
    (then a new chain of a stored diff takes those bytes). `keeps_layer_blobs`
    is False where the store drops layer blobs once unpacked.
    """

    model: str
    chains: Mapping[str, int | None] = field(default_factory=dict)
    blobs: frozenset[str] = frozenset()
    diff_bytes: Mapping[str, int] = field(default_factory=dict)
    diff_sized: bool = False
    keeps_layer_blobs: bool = True
    # Image name -> compressed size, as the kubelet lists them in node.status.images
    # (what the scheduler's ImageLocality sees): the largest images only.
    listed: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.model not in PULL_MODELS:
            raise ValueError(f"unknown pull model {self.model!r} (known: {', '.join(PULL_MODELS)})")


@dataclass(frozen=True, slots=True)
class PullCost:
    """What pulling one reference (or several, for a total) costs the node."""

    ref: str
    fetch_bytes: int = 0  # config and layer blobs downloaded, as the registry sends them
    fetch_layers: int = 0  # layer blobs downloaded
    unpack_layers: int = 0  # chains created
    unpack_bytes: int | None = 0  # bytes those chains take; None when some are not known


def holdings_from_facts(facts: NodeFacts) -> NodeHoldings:
    """A node's holdings from one consistent refresh of its runtime.

    Chains are those of the images CRI lists (a snapshot no image names is not
    seen); lazily pulled (remote) chains count as present, with no bytes. Blobs
    are the listed images' configs (containerd keeps them while the image
    exists) and the layer blobs the store holds.
    """
    model = CONTAINERS_STORAGE if facts.layer_store == CONTAINERS_STORAGE else CONTAINERD
    chains: dict[str, int | None] = {c: u.size for c, u in facts.layer_usage.items()}
    for chain_id in facts.remote_layers:
        chains.setdefault(chain_id, 0)
    blobs = set(facts.present_blobs)
    # Other snapshotters (native copies the parent) count more than the diff.
    own_diff = model == CONTAINERS_STORAGE or facts.snapshotter in DIFF_SIZED_SNAPSHOTTERS
    diff_bytes: dict[str, int] = {}
    for image in facts.images:
        if model == CONTAINERD:
            blobs.add(image.image_id)  # the config: kept while the image exists
        if own_diff:
            for diff_id, chain_id in zip(image.diff_ids, image.chain_ids, strict=True):
                size = facts.layer_usage.get(chain_id)
                if size is not None and chain_id not in facts.remote_layers:
                    diff_bytes.setdefault(diff_id, size.size)
    return NodeHoldings(
        model, chains, frozenset(blobs), diff_bytes, own_diff, _keeps_layer_blobs(facts), kubelet_listed(facts.images)
    )


# The kubelet's nodeStatusMaxImages default: node.status.images holds the largest 50.
NODE_STATUS_MAX_IMAGES = 50


def kubelet_listed(images: Iterable[ImageFacts], limit: int = NODE_STATUS_MAX_IMAGES) -> dict[str, int]:
    """Image names -> CRI size as node.status.images gives them: the kubelet sorts the
    runtime's images by size, largest first, keeps `limit`, and names each by its
    repo tags and repo digests."""
    listed: dict[str, int] = {}
    for image in sorted(images, key=lambda i: -i.compressed_size)[:limit]:
        for name in (*image.repo_tags, *image.repo_digests):
            listed.setdefault(name, image.compressed_size)
    return listed


def _keeps_layer_blobs(facts: NodeFacts) -> bool:
    """False when an unpacked image lacks a layer blob its manifest names (discard_unpacked_layers).

    A node without such evidence is taken to keep them, as runtimes do by default.
    """
    for image in facts.images:
        blobs = facts.layer_blobs.get(image.image_id, ())
        if (
            blobs
            and len(blobs) == len(image.chain_ids)
            and all(c in facts.layer_usage for c in image.chain_ids)
            and any(b.digest not in facts.present_blobs for b in blobs)
        ):
            return False
    return True


def pull_costs(
    images: Sequence[RemoteImage], node: NodeHoldings, known_chain_bytes: Mapping[str, int] | None = None
) -> tuple[tuple[PullCost, ...], PullCost]:
    """The cost of pulling `images` in order on `node`, each and in total.

    `known_chain_bytes` gives the bytes of chains the node does not hold but
    another source measured (another node of the same store and snapshotter).
    """
    return _pull_costs(images, _NodeState(node), known_chain_bytes or {})


def total(costs: Iterable[PullCost], ref: str = "") -> PullCost:
    """The sum of costs already accounted in order (no blob or chain is in two of them)."""
    costs = tuple(costs)
    unpack = [c.unpack_bytes for c in costs]
    return PullCost(
        ref=ref,
        fetch_bytes=sum(c.fetch_bytes for c in costs),
        fetch_layers=sum(c.fetch_layers for c in costs),
        unpack_layers=sum(c.unpack_layers for c in costs),
        unpack_bytes=None if any(u is None for u in unpack) else sum(u for u in unpack if u is not None),
    )


class _NodeState:
    """The holdings as the pulls so far leave them: less what was removed, plus what was pulled.

    The holdings are read, never copied: a question about one image costs its layers only.
    """

    def __init__(
        self, node: NodeHoldings, removed_chains: Set[str] = frozenset(), removed_blobs: Set[str] = frozenset()
    ) -> None:
        self.node = node
        self._removed_chains = removed_chains
        self._removed_blobs = removed_blobs
        self._chains: set[str] = set()
        self._blobs: set[str] = set()
        # Diffs unpacked so far, by their bytes (only where those are the diff's own).
        self._diffs: dict[str, int] = {}

    def has_chain(self, chain_id: str) -> bool:
        return chain_id in self._chains or (chain_id in self.node.chains and chain_id not in self._removed_chains)

    def has_blob(self, digest: str) -> bool:
        return digest in self._blobs or (digest in self.node.blobs and digest not in self._removed_blobs)

    def keep_blobs(self, digests: Iterable[str]) -> None:
        self._blobs.update(digests)

    def unpack(self, layer: RemoteLayer, chain_id: str, known: Mapping[str, int]) -> int | None:
        """Record a new chain; its bytes where a source knows them."""
        self._chains.add(chain_id)
        size = known.get(chain_id)
        if self.node.diff_sized:
            if size is None:
                size = self._diffs.get(layer.diff_id, self.node.diff_bytes.get(layer.diff_id))
            if size is not None:
                self._diffs.setdefault(layer.diff_id, size)
        return size


def _pull_costs(
    images: Sequence[RemoteImage], state: _NodeState, known: Mapping[str, int]
) -> tuple[tuple[PullCost, ...], PullCost]:
    pull = _containers_storage_pull if state.node.model == CONTAINERS_STORAGE else _containerd_pull
    costs = tuple(pull(image, state, known) for image in images)
    return costs, total(costs)


def _containerd_pull(image: RemoteImage, state: _NodeState, known: Mapping[str, int]) -> PullCost:
    fetch_bytes = fetch_layers = unpack_layers = 0
    unpack_bytes: int | None = 0
    if not state.has_blob(image.config_digest):
        state.keep_blobs([image.config_digest])
        fetch_bytes += image.config_size
    # The unpacker starts at the first chain without a snapshot; every chain
    # above it is new too (a snapshot needs its parent).
    start = next((i for i, chain_id in enumerate(image.chain_ids) if not state.has_chain(chain_id)), len(image.layers))
    fetched: set[str] = set()
    for layer, chain_id in zip(image.layers[start:], image.chain_ids[start:], strict=True):
        if not state.has_blob(layer.digest) and layer.digest not in fetched:
            fetched.add(layer.digest)
            fetch_bytes += layer.size
            fetch_layers += 1
        if not state.has_chain(chain_id):
            unpack_layers += 1
            size = state.unpack(layer, chain_id, known)
            unpack_bytes = None if unpack_bytes is None or size is None else unpack_bytes + size
    if state.node.keeps_layer_blobs:
        state.keep_blobs(fetched)
    return PullCost(image.ref, fetch_bytes, fetch_layers, unpack_layers, unpack_bytes)


def _containers_storage_pull(image: RemoteImage, state: _NodeState, known: Mapping[str, int]) -> PullCost:
    # c/image reads the config from the registry on every copy (it is not reused).
    fetch_bytes, fetch_layers, unpack_layers = image.config_size, 0, 0
    unpack_bytes: int | None = 0
    for layer, chain_id in zip(image.layers, image.chain_ids, strict=True):
        if not state.has_blob(layer.digest):
            state.keep_blobs([layer.digest])
            fetch_bytes += layer.size
            fetch_layers += 1
        if not state.has_chain(chain_id):
            unpack_layers += 1
            size = state.unpack(layer, chain_id, known)
            unpack_bytes = None if unpack_bytes is None or size is None else unpack_bytes + size
    return PullCost(image.ref, fetch_bytes, fetch_layers, unpack_layers, unpack_bytes)


# -- what image GC's removals would cost to bring back ---------------------------


@dataclass(frozen=True, slots=True)
class RepullReport:
    """Compressed layer bytes a pull would fetch again after image GC removed images.

    `images`: per image ID, had GC removed that image alone (None: its manifest's
    layer blobs are not known). `unused`: had GC removed every unused image, to
    pull them all back (a blob they share is fetched once); None when one of them
    is not known. The image's own config and manifest (a few kB) are not counted.
    """

    images: Mapping[str, int | None]
    unused: int | None


def repull_report(facts: NodeFacts, image_ids: Iterable[str], unused_ids: Iterable[str]) -> RepullReport:
    """What bringing back removed images would fetch, by the node's own pull rule.

    A removed image takes with it the chains and blobs no remaining image
    references (what containerd's garbage collector and c/storage delete);
    the pull then runs as `pull_costs` says on what remains. Each image costs
    its own layers, so every image of a large node can be asked.
    """
    images = {image.image_id: image for image in facts.images}
    holdings = holdings_from_facts(facts)
    references = _References(facts, images.values(), holdings.model)
    per_image: dict[str, int | None] = {}
    for image_id in dict.fromkeys(image_ids):
        remote = _stored_image(facts, images.get(image_id))
        if remote is None:
            per_image[image_id] = None
            continue
        state = _NodeState(holdings, *references.gone_with([image_id]))
        per_image[image_id] = _pull_costs([remote], state, {})[1].fetch_bytes
    unused = sorted(set(unused_ids) & images.keys())
    remotes = [_stored_image(facts, images[image_id]) for image_id in unused]
    known = [r for r in remotes if r is not None]
    unused_bytes = None
    if len(known) == len(remotes):
        unused_bytes = _pull_costs(known, _NodeState(holdings, *references.gone_with(unused)), {})[1].fetch_bytes
    return RepullReport(per_image, unused_bytes)


class _References:
    """How many images reference each chain and blob: what goes when some images go."""

    def __init__(self, facts: NodeFacts, images: Iterable[ImageFacts], model: str) -> None:
        self._facts = facts
        self._model = model
        self._images = {image.image_id: image for image in images}
        self._chains: Counter[str] = Counter()
        self._blobs: Counter[str] = Counter()
        for image in self._images.values():
            self._chains.update(set(image.chain_ids))
            self._blobs.update(self._blobs_of(image.image_id))

    def _blobs_of(self, image_id: str) -> set[str]:
        blobs = {b.digest for b in self._facts.layer_blobs.get(image_id, ())}
        if self._model == CONTAINERD:
            blobs.add(image_id)  # its config
        return blobs

    def gone_with(self, image_ids: Iterable[str]) -> tuple[set[str], set[str]]:
        """The chains and blobs only `image_ids` reference."""
        chains: Counter[str] = Counter()
        blobs: Counter[str] = Counter()
        for image_id in set(image_ids):
            image = self._images.get(image_id)
            if image is not None:
                chains.update(set(image.chain_ids))
                blobs.update(self._blobs_of(image_id))
        return (
            {c for c, n in chains.items() if n == self._chains[c]},
            {b for b, n in blobs.items() if n == self._blobs[b]},
        )


def _stored_image(facts: NodeFacts, image: ImageFacts | None) -> RemoteImage | None:
    """An image on the node as a pull would fetch it: its manifest's layer blobs (config not counted)."""
    if image is None:
        return None
    blobs = facts.layer_blobs.get(image.image_id, ())
    if not image.diff_ids or len(blobs) != len(image.diff_ids):
        return None
    layers = tuple(RemoteLayer(b.digest, b.size, d) for b, d in zip(blobs, image.diff_ids, strict=True))
    return RemoteImage(image.image_id, "", image.image_id, 0, layers, image.chain_ids)


# -- a rollout across nodes (issue 27 part 2: the pure half) ----------------------


def holdings_for(node: NodeHoldings, images: Sequence[RemoteImage]) -> NodeHoldings:
    """A node's holdings restricted to what pulling `images` can touch: what a node answers
    for an ordered layer list, a few entries whatever the node holds. Pulling `images`
    costs the same on the restriction as on the whole."""
    chains = {c for image in images for c in image.chain_ids}
    blobs = {layer.digest for image in images for layer in image.layers} | {i.config_digest for i in images}
    diffs = {layer.diff_id for image in images for layer in image.layers}
    names = {locality_name(image.ref) for image in images}
    return NodeHoldings(
        model=node.model,
        chains={c: node.chains[c] for c in chains if c in node.chains},
        blobs=frozenset(b for b in blobs if b in node.blobs),
        diff_bytes={d: node.diff_bytes[d] for d in diffs if d in node.diff_bytes},
        diff_sized=node.diff_sized,
        keeps_layer_blobs=node.keeps_layer_blobs,
        listed={n: node.listed[n] for n in names if n in node.listed},
    )


def merge_holdings(parts: Sequence[NodeHoldings]) -> NodeHoldings:
    """One node's answers to several questions (`holdings_for` of several image lists) as
    one: the restriction to all their images together."""
    if not parts:
        raise ValueError("no holdings to merge")
    first = parts[0]
    if any(
        (p.model, p.diff_sized, p.keeps_layer_blobs) != (first.model, first.diff_sized, first.keeps_layer_blobs)
        for p in parts
    ):
        raise ValueError("answers of one node disagree on its layer store (it changed between questions)")
    chains: dict[str, int | None] = {}
    diff_bytes: dict[str, int] = {}
    listed: dict[str, int] = {}
    for part in parts:
        chains.update(part.chains)
        diff_bytes.update(part.diff_bytes)
        listed.update(part.listed)
    blobs: frozenset[str] = frozenset().union(*(p.blobs for p in parts))
    return NodeHoldings(first.model, chains, blobs, diff_bytes, first.diff_sized, first.keeps_layer_blobs, listed)


@dataclass(frozen=True, slots=True)
class NodeRollout:
    """One node's share of a rollout: each reference in order, and its total."""

    node: str
    costs: tuple[PullCost, ...]
    total: PullCost
    # What ImageLocality's view implies the node pulls: whole images it does not list by name.
    assumed: int = 0

    @property
    def warm(self) -> bool:
        """Nothing to download or unpack but configs (c/storage reads a config on every pull)."""
        return self.total.fetch_layers == 0 and self.total.unpack_layers == 0


@dataclass(frozen=True, slots=True)
class RolloutReport:
    """What rolling `images` out to every node pulls: per node, and leaving the registry."""

    nodes: tuple[NodeRollout, ...]

    @property
    def registry_bytes(self) -> int:
        """Bytes leaving the registry when every node pulls for itself (no mirror, no peer)."""
        return sum(n.total.fetch_bytes for n in self.nodes)

    @property
    def warm_nodes(self) -> int:
        return sum(1 for n in self.nodes if n.warm)

    @property
    def assumed_registry_bytes(self) -> int:
        """What ImageLocality's view implies leaves the registry (whole images, by name)."""
        return sum(n.assumed for n in self.nodes)

    def fetch_percentile(self, fraction: float) -> int:
        """The nearest-rank percentile of the nodes' fetched bytes (an actual node's figure); 0 without nodes."""
        values = sorted(n.total.fetch_bytes for n in self.nodes)
        if not values:
            return 0
        return values[max(0, math.ceil(fraction * len(values)) - 1)]


def rollout(images: Sequence[RemoteImage], nodes: Mapping[str, NodeHoldings]) -> RolloutReport:
    """Each node pulling `images` in order; a chain's bytes unknown on one node are taken
    from a node that holds the chain in the same kind of store (same model, and bytes that
    are, or are not, the diff's own: a native snapshotter's differ from overlayfs's)."""
    known: dict[tuple[str, bool], dict[str, int]] = {}
    for holdings in nodes.values():
        kind = known.setdefault((holdings.model, holdings.diff_sized), {})
        for chain_id, size in holdings.chains.items():
            if size is not None:
                kind.setdefault(chain_id, size)
    reports = []
    for name in sorted(nodes):
        holdings = nodes[name]
        costs, node_total = pull_costs(images, holdings, known.get((holdings.model, holdings.diff_sized), {}))
        reports.append(NodeRollout(name, costs, node_total, locality_assumed_pull(images, holdings.listed)))
    return RolloutReport(tuple(reports))


@dataclass(frozen=True, slots=True)
class WorkloadLocality:
    """A running workload's image set, as every node would pull it to start a pod (cold start)."""

    workload: str
    refs: tuple[str, ...]
    rollout: RolloutReport


def workload_locality(
    workloads: Mapping[str, Sequence[RemoteImage]], nodes: Mapping[str, NodeHoldings]
) -> tuple[WorkloadLocality, ...]:
    """Each workload's images pulled in order on each node, from what the node holds now."""
    return tuple(
        WorkloadLocality(name, tuple(i.ref for i in images), rollout(images, nodes))
        for name, images in sorted(workloads.items())
    )


# -- what the scheduler's ImageLocality assumes ------------------------------------

MIB = 1024 * 1024
# kubernetes pkg/scheduler/framework/plugins/imagelocality: per-container thresholds.
LOCALITY_MIN_BYTES = 23 * MIB
LOCALITY_MAX_CONTAINER_BYTES = 1000 * MIB
MAX_NODE_SCORE = 100


def locality_name(image: str) -> str:
    """The name ImageLocality matches on: a reference without tag or digest gets `:latest`
    (and nothing else: `nginx` does not match `docker.io/library/nginx:latest`).

    >>> locality_name("nginx"), locality_name("localhost:5000/app"), locality_name("app@sha256:ab")
    ('nginx:latest', 'localhost:5000/app:latest', 'app@sha256:ab')
    """
    return image if image.rfind(":") > image.rfind("/") else image + ":latest"


def image_locality_score(
    container_images: Sequence[str],
    node_images: Mapping[str, int],
    nodes_with_image: Mapping[str, int],
    total_nodes: int,
) -> int:
    """The ImageLocality score (0-100) of one node for a pod's containers (init ones included).

    `node_images`: name -> size as the node's status lists them (its 50 largest
    images, each under its names); `nodes_with_image`: name -> how many nodes
    list it. Each image found adds size x nodes-with-it / nodes; the sum is
    clamped to 23 MiB .. 1000 MiB per container and scaled to 0-100.
    """
    total = 0
    for image in container_images:
        name = locality_name(image)
        if name in node_images and total_nodes > 0:
            total += int(node_images[name] * (nodes_with_image.get(name, 1) / total_nodes))  # as Go rounds it
    upper = LOCALITY_MAX_CONTAINER_BYTES * max(1, len(container_images))
    total = min(max(total, LOCALITY_MIN_BYTES), upper)
    return MAX_NODE_SCORE * (total - LOCALITY_MIN_BYTES) // (upper - LOCALITY_MIN_BYTES)


def locality_assumed_pull(images: Sequence[RemoteImage], node_images: Mapping[str, int]) -> int:
    """The bytes ImageLocality's view implies a node pulls: the whole compressed size
    (config and layers) of every image it does not list by name, nothing for one it does."""
    return sum(
        image.config_size + sum(layer.size for layer in image.layers)
        for image in images
        if locality_name(image.ref) not in node_images
    )


# -- a targeted read: the holdings from the runtime's answers about some images only ----


@dataclass(frozen=True, slots=True)
class StoreAnswers:
    """What a containerd node answered about the layers pulling some images needs: the
    targeted read `pull-cost` makes, where `holdings_from_facts` takes a whole refresh.

    `layer_usage`: chain ID -> bytes, for the asked snapshots that answered Usage (the
    images' chains, and stored layers of their diffs on other parents); `remote_layers`:
    asked snapshots that are lazily pulled; `diff_chains`: diff ID -> chains stored on
    other parents than the images' (asked only on a diff-sized snapshotter, for diffs
    none of the images' own present chains holds); `present_blobs`: the asked layer blobs
    the content store holds; `listed_images`: CRI's image list (IDs, names and sizes);
    `keeps_layer_blobs` as `holdings_from_facts` finds it.
    """

    snapshotter: str
    listed_images: tuple[ImageFacts, ...]
    layer_usage: Mapping[str, int]
    remote_layers: frozenset[str] = frozenset()
    unsized_layers: frozenset[str] = frozenset()  # asked snapshots that exist, bytes not readable
    present_blobs: frozenset[str] = frozenset()
    diff_chains: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    keeps_layer_blobs: bool = True


def holdings_from_answers(answers: StoreAnswers, images: Sequence[RemoteImage]) -> NodeHoldings:
    """A containerd node's holdings as pulling `images` sees them, from a targeted read: what
    `holdings_for(holdings_from_facts(whole refresh), images)` gives, with two differences
    that follow the runtime more closely. A chain counts when its snapshot exists, whether
    or not an image CRI lists names it (containerd's unpacker Stats the chain ID), and a
    layer blob when the content store holds it (its fetcher skips a blob it has), whether or
    not a listed image's manifest names it. Where the two differ (a snapshot a container keeps
    after its image was removed, content under a lease), this one is what the runtime does; the
    exporter's GET /pull-cost answers from its refresh. A config counts while
    CRI lists the image, as in `holdings_from_facts`. A diff's bytes are those of one stored
    layer of it: the images' own chain where present, else one on another parent (on a
    diff-sized snapshotter they are the same bytes, whatever the parent).
    """
    usage, remote = answers.layer_usage, answers.remote_layers
    chains: dict[str, int | None] = {}
    for chain_id in dict.fromkeys(c for image in images for c in image.chain_ids):
        if chain_id in usage:
            chains[chain_id] = usage[chain_id]
        elif chain_id in remote:
            chains[chain_id] = 0  # lazily pulled: present, with no bytes on the node
        elif chain_id in answers.unsized_layers:
            chains[chain_id] = None  # present: not fetched again; its bytes unknown, never 0
    listed_ids = {image.image_id for image in answers.listed_images}
    blobs = {layer.digest for image in images for layer in image.layers if layer.digest in answers.present_blobs}
    blobs |= {image.config_digest for image in images if image.config_digest in listed_ids}
    diff_sized = answers.snapshotter in DIFF_SIZED_SNAPSHOTTERS
    diff_bytes: dict[str, int] = {}
    if diff_sized:
        stored = [
            (layer.diff_id, c) for image in images for layer, c in zip(image.layers, image.chain_ids, strict=True)
        ]
        stored += [(d, c) for d, cs in answers.diff_chains.items() for c in cs]
        for diff_id, chain_id in stored:
            if chain_id in usage and chain_id not in remote:
                diff_bytes.setdefault(diff_id, usage[chain_id])
    names = {locality_name(image.ref) for image in images}
    listed = kubelet_listed(answers.listed_images)
    return NodeHoldings(
        model=CONTAINERD,
        chains=chains,
        blobs=frozenset(blobs),
        diff_bytes=diff_bytes,
        diff_sized=diff_sized,
        keeps_layer_blobs=answers.keeps_layer_blobs,
        listed={n: listed[n] for n in names if n in listed},
    )


def stored_layers_of(diff_ids: Iterable[str], snapshots: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """Diff ID -> the stored layers (chain IDs) that are that diff, on whatever parent.

    `snapshots` maps each committed snapshot's name (its chain ID) to its parent's ("" for a
    bottom layer). A snapshot is diff D on parent P exactly when its name is P's chain ID
    extended by D, so each parent is hashed with each diff: no image record is needed.
    """
    wanted = [(d, d.encode()) for d in dict.fromkeys(diff_ids)]
    children: dict[str, set[str]] = {}
    for name, parent in snapshots.items():
        children.setdefault(parent, set()).add(name)
    found: dict[str, list[str]] = {}
    for parent, names in sorted(children.items()):
        if not parent:
            for diff_id, _ in wanted:
                if diff_id in names:
                    found.setdefault(diff_id, []).append(diff_id)
            continue
        prefix = hashlib.sha256(f"{parent} ".encode())
        for diff_id, encoded in wanted:
            extended = prefix.copy()
            extended.update(encoded)
            chain_id = "sha256:" + extended.hexdigest()
            if chain_id in names:
                found.setdefault(diff_id, []).append(chain_id)
    return {d: tuple(chains) for d, chains in found.items()}


def shows_discarded_blobs(
    layer_blobs: Sequence[str], chain_ids: Sequence[str], present_chains: Container[str], present_blobs: Container[str]
) -> bool:
    """The evidence `holdings_from_facts` takes that a store drops layer blobs once unpacked
    (discard_unpacked_layers): an image whose every chain is unpacked lacks a layer blob
    its manifest names."""
    return (
        bool(layer_blobs)
        and len(layer_blobs) == len(chain_ids)
        and all(c in present_chains for c in chain_ids)
        and any(b not in present_blobs for b in layer_blobs)
    )
