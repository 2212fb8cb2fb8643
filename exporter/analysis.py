"""The layer analysis: wasted bytes from every layer's tar headers, each layer read once.

It runs in its own thread beside the refresh loop, which only hands it the
latest facts (a reference, no work), so refreshes keep their schedule and
scrapes keep reading memory. A layer's content never changes, so each layer is
read once, by diff ID, streamed from its compressed blob in containerd's
content store (exporter.sources.layer_tar) into a compact summary
(exporter.core.wasted); images' and the node's figures come from summaries
alone. With a state directory the summaries survive restarts, so a restart
reads no blob again.

The analysis keeps the process under a CPU budget (a fraction of one core) by
sleeping against the process's CPU time after every chunk it reads: a node
with 50 GB of layers gets its figures slowly rather than losing a core for an
hour.

A layer whose blob is gone (containerd's `discard_unpacked_layers` removes
blobs once unpacked) or cannot be read is unavailable, logged once; an image
with such a layer gets no figure, and the node none, rather than a wrong one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from exporter.core.facts import ImageFacts, NodeFacts
from exporter.core.state import HiddenFileDetail, ImageWasteDetail, WasteReport
from exporter.core.wasted import (
    ImageWaste,
    LayerContentError,
    LayerSummary,
    file_paths,
    hidden_everywhere,
    image_wasted,
    largest_hidden,
)
from exporter.errors import BlobUnavailableError, RuntimeUnavailableError
from exporter.sources import layer_state
from exporter.sources.containerd import ContainerdLayerStore
from exporter.sources.layer_tar import layer_entries, summarize_layer
from exporter.sources.node import BlobReader

logger = logging.getLogger(__name__)

DEFAULT_CPU_FRACTION = 0.25
PROGRESS_SECONDS = 1.0
# Hand memory back (after_layer) after a layer this big, and at the end of a pass:
# small layers leave little behind, and trimming the heap costs a few ms each time.
TRIM_AFTER_BYTES = 1 << 20
# From this size on, a blob containerd has decompressed itself is checked by its
# own digest (one Content.Info call to learn that): hashing the compressed bytes
# rather than the tar is a third of the work. Below, the call costs more than it saves.
CHECK_BLOB_DIGEST_FROM = 1 << 20


@dataclass(frozen=True, slots=True)
class AnalysisOptions:
    # Fraction of one core the analysis may use on average (0 < f; 1 = a whole core).
    cpu_fraction: float = DEFAULT_CPU_FRACTION
    # Where summaries are kept across restarts (None: memory only).
    state_dir: Path | None = None
    # Seconds before a blob whose read failed is tried again.
    retry_seconds: float = 300.0


class CpuBudget:
    """Keeps CPU time under `fraction` of the wall time since `restart`, by sleeping.

    The clock is the whole process's CPU time: the gRPC threads that receive the
    blobs work for the analysis too, and while it runs the exporter as a whole
    stays within the budget (refreshes and scrapes are never slowed, the
    analysis waits for them).
    """

    def __init__(
        self,
        fraction: float,
        wait: Callable[[float], object] = time.sleep,
        cpu: Callable[[], float] = time.process_time,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:
        if fraction <= 0:
            raise ValueError("the CPU fraction must be > 0")
        self.fraction = fraction
        self._wait = wait
        self._cpu = cpu
        self._wall = wall
        self._cpu_start = cpu()
        self._wall_start = wall()

    def restart(self) -> None:
        """Start a new stretch of work: time spent idle before it earns no credit."""
        self._cpu_start = self._cpu()
        self._wall_start = self._wall()

    def pace(self, _chunk_bytes: int = 0) -> None:
        """Sleep as long as it takes for the CPU used so far to be within the budget."""
        used = self._cpu() - self._cpu_start
        ahead = used / self.fraction - (self._wall() - self._wall_start)
        if ahead > 0.002:
            self._wait(ahead)


@dataclass(frozen=True, slots=True)
class LayerSource:
    """Where a layer's content can be read: a compressed blob that holds it."""

    diff_id: str
    digest: str
    size: int


def layer_sources(facts: NodeFacts) -> dict[str, LayerSource | None]:
    """Every diff ID of the node's images (bottom-up, image by image) and a blob that holds it.

    A layer pulled in two compressions has two blobs: one the store still holds
    is preferred. None: no manifest on the node names a blob for it.
    """
    found: dict[str, LayerSource | None] = {}
    for image in facts.images:
        blobs = facts.layer_blobs.get(image.image_id, ())
        if len(blobs) == len(image.diff_ids):
            for diff_id, blob in zip(image.diff_ids, blobs, strict=True):
                current = found.get(diff_id)
                if current is None or (
                    current.digest not in facts.present_blobs and blob.digest in facts.present_blobs
                ):
                    found[diff_id] = LayerSource(diff_id, blob.digest, blob.size)
        for diff_id in image.diff_ids:
            found.setdefault(diff_id, None)
    return found


def _same_layers(before: NodeFacts, after: NodeFacts) -> bool:
    """Whether the analysis would see nothing new in `after` (what a pass reads of the facts)."""
    return (
        before.layer_store == after.layer_store
        and before.images == after.images
        and before.layer_blobs == after.layer_blobs
        and before.present_blobs == after.present_blobs
    )


def blob_digest_to_check(reader: BlobReader, source: LayerSource) -> str | None:
    """The blob digest to check a layer's bytes against, or None: check its diff ID.

    The blob's own digest vouches for the layer only where the runtime itself
    decompressed that blob and recorded this diff ID for it (when it unpacked it).
    """
    if source.size >= CHECK_BLOB_DIGEST_FROM and reader.uncompressed_digest(source.digest) == source.diff_id:
        return source.digest
    return None


@dataclass(frozen=True, slots=True)
class _Failure:
    digest: str
    reason: str
    retry_at: float  # monotonic; inf: the blob's content is wrong, never read again


class LayerAnalyzer:
    """Summarizes every layer of the node once and publishes the wasted bytes.

    `observe` is called by the refresh loop with each refresh's facts; `run`
    is the analysis thread; `publish` receives each new WasteReport.
    """

    def __init__(
        self,
        reader: BlobReader,
        options: AnalysisOptions,
        publish: Callable[[WasteReport], None] = lambda report: None,
        clock: Callable[[], float] = time.monotonic,
        after_layer: Callable[[], None] = lambda: None,
        after_pass: Callable[[], None] | None = None,
    ) -> None:
        self._reader = reader
        self.options = options
        self._publish = publish
        self._clock = clock
        # Called after big layers and after a pass: serve hands freed buffers back to the OS there.
        self._after_layer = after_layer
        # Called once a pass has read its last layer (serve: a full collection too).
        self._after_pass = after_pass or after_layer
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._facts: NodeFacts | None = None
        # Sleeps end at once when the exporter stops.
        self._budget = CpuBudget(options.cpu_fraction, wait=lambda seconds: self._stop.wait(seconds))
        # Summaries are kept packed (exporter.sources.layer_state.pack): one bytes
        # object per layer instead of eleven arrays, several times smaller for the
        # small layers most images end with; unpacked only to compute new figures.
        self._summaries: dict[str, bytes] = {}
        self._failures: dict[str, _Failure] = {}
        self._logged: set[str] = set()
        self._image_waste: dict[str, ImageWaste] = {}
        self._node: tuple[frozenset[str], int] | None = None
        self._report = WasteReport()
        self._state_dir_broken = False
        self._pruned_for: frozenset[str] = frozenset()
        self.layers_read = 0
        self.layers_loaded = 0

    def publish_to(self, publish: Callable[[WasteReport], None]) -> None:
        """Where new figures go (the refresh loop's state)."""
        self._publish = publish

    @property
    def report(self) -> WasteReport:
        return self._report

    _said_unavailable = False

    # Whether the last pass went through for the facts in `_facts`.
    _up_to_date = False

    def observe(self, facts: NodeFacts) -> None:
        """The latest facts (from the refresh thread): only remembered, the work is `run`'s."""
        if self._up_to_date and self._facts is not None and _same_layers(self._facts, facts):
            # The node's images and blobs are as the last pass saw them: no new pass
            # (failed reads are retried on run's timer, when they are due).
            self._facts = facts
            return
        self._facts = facts
        self._up_to_date = False
        self._wake.set()

    def stop(self) -> None:
        """End `run` (and any sleep of the budget) promptly."""
        self._stop.set()
        self._wake.set()

    def run(self, stop: threading.Event) -> None:
        """Analyse whatever the latest facts need, until `stop` is set."""
        self._stop = stop
        while not self._stop.is_set():
            # Woken by new facts; otherwise now and then, to retry failed reads.
            self._wake.wait(timeout=self.options.retry_seconds)
            self._wake.clear()
            if not stop.is_set():
                # In a call of its own so that no facts stay referenced while waiting:
                # the next refresh's facts would be kept beside these.
                self._analyse_latest(stop)

    def _analyse_latest(self, stop: threading.Event) -> None:
        facts = self._facts
        if facts is None:
            return
        if facts.layer_store != ContainerdLayerStore.name:
            # CRI-O's containers/storage metadata holds no layer contents (docs/deployment.md).
            if not self._said_unavailable:
                self._said_unavailable = True
                logger.warning(
                    "wasted-bytes analysis unavailable: the %s layer store keeps no layer contents",
                    facts.layer_store,
                )
            return
        try:
            self.analyse(facts)
            self._up_to_date = self._facts is facts and not stop.is_set()
        except RuntimeUnavailableError as exc:
            logger.info("layer analysis paused, the runtime is not answering: %s", exc)
        except Exception:  # the analysis must never end the exporter
            if not stop.is_set():  # at shutdown the channel closes under it: nothing to say
                logger.exception("layer analysis failed; retrying with the next refresh")

    # -- one pass --------------------------------------------------------------

    def analyse(self, facts: NodeFacts) -> WasteReport:
        """Bring the summaries up to date with `facts` and publish the figures.

        Raises RuntimeUnavailableError (what was read so far is kept).
        """
        sources = layer_sources(facts)
        images = {image.image_id: image for image in facts.images}
        self._forget(sources.keys(), images.keys())
        self._load_saved(sources)
        todo = [source for diff_id, source in sources.items() if self._due(diff_id, source, facts)]
        self._update(facts, images, sources, pending={source.diff_id for source in todo if source})
        if todo:
            self._budget.restart()
        progress_at = self._clock()
        for index, source in enumerate(todo):
            if self._stop.is_set():
                break
            assert source is not None  # _due() passes only layers with a blob
            self._read(source)
            if index == len(todo) - 1:
                self._after_pass()
            elif source.size >= TRIM_AFTER_BYTES:
                self._after_layer()
            # Progress (pending layers, images complete) at most once a second, and at the end.
            if index == len(todo) - 1 or self._clock() - progress_at >= PROGRESS_SECONDS:
                progress_at = self._clock()
                self._update(facts, images, sources, {later.diff_id for later in todo[index + 1 :] if later})
        wanted = frozenset(sources)
        if self.options.state_dir is not None and not self._state_dir_broken and wanted != self._pruned_for:
            # Summaries of layers no image uses any more go (the directory holds only this node's layers).
            layer_state.prune(self.options.state_dir, wanted)
            self._pruned_for = wanted
        return self._report

    def _forget(self, diff_ids: Iterable[str], image_ids: Iterable[str]) -> None:
        """Drop what no image on the node uses any more."""
        wanted = set(diff_ids)
        for stale in self._summaries.keys() - wanted:
            del self._summaries[stale]
        for stale in self._failures.keys() - wanted:
            del self._failures[stale]
        self._logged &= wanted
        for stale in self._image_waste.keys() - set(image_ids):
            del self._image_waste[stale]

    def _load_saved(self, sources: Mapping[str, LayerSource | None]) -> None:
        directory = self.options.state_dir
        if directory is None or self._state_dir_broken:
            return
        for diff_id in sources.keys() - self._summaries.keys():
            summary = layer_state.load(directory, diff_id)
            if summary is not None:
                self._summaries[diff_id] = layer_state.pack(summary)
                self.layers_loaded += 1

    def _due(self, diff_id: str, source: LayerSource | None, facts: NodeFacts) -> bool:
        """Whether the layer should be read now; if it cannot be, say why (once)."""
        if diff_id in self._summaries:
            return False
        if source is None:
            self._unavailable(diff_id, "", "no manifest on the node names its blob", math.inf)
            return False
        if source.digest not in facts.present_blobs:
            self._unavailable(
                diff_id,
                source.digest,
                f"its blob {source.digest} is not in the content store (discard_unpacked_layers?)",
                -math.inf,  # asked again when the store lists it
            )
            return False
        failure = self._failures.get(diff_id)
        waiting = failure is not None and failure.digest == source.digest and failure.retry_at > self._clock()
        return not waiting

    def _read(self, source: LayerSource) -> bool:
        """Read and summarize one layer; False if it is unavailable."""
        try:
            summary = summarize_layer(
                self._reader.read_blob(source.digest, source.size),
                source.diff_id,
                blob_digest=blob_digest_to_check(self._reader, source),
                on_chunk=self._budget.pace,
            )
        except LayerContentError as exc:
            self._unavailable(source.diff_id, source.digest, f"its blob is unusable: {exc}", math.inf)
            return False
        except BlobUnavailableError as exc:
            retry_at = self._clock() + self.options.retry_seconds
            self._unavailable(source.diff_id, source.digest, str(exc), retry_at)
            return False
        self._budget.pace()
        self._summaries[source.diff_id] = layer_state.pack(summary)
        self._failures.pop(source.diff_id, None)
        self._logged.discard(source.diff_id)
        self.layers_read += 1
        self._save(source.diff_id, summary)
        return True

    def _save(self, diff_id: str, summary: LayerSummary) -> None:
        directory = self.options.state_dir
        if directory is None or self._state_dir_broken:
            return
        try:
            directory.mkdir(parents=True, exist_ok=True)
            layer_state.save(directory, diff_id, summary)
        except OSError as exc:
            self._state_dir_broken = True
            logger.warning("state directory %s not usable, summaries kept in memory only: %s", directory, exc)

    def _summary(self, diff_id: str) -> LayerSummary:
        return layer_state.unpack(self._summaries[diff_id])

    def _unavailable(self, diff_id: str, digest: str, reason: str, retry_at: float) -> None:
        self._failures[diff_id] = _Failure(digest, reason, retry_at)
        if diff_id not in self._logged:
            self._logged.add(diff_id)
            logger.warning("layer %s unavailable for the wasted-bytes analysis: %s", diff_id, reason)

    # -- figures -----------------------------------------------------------------

    def _update(
        self,
        facts: NodeFacts,
        images: Mapping[str, ImageFacts],
        sources: Mapping[str, LayerSource | None],
        pending: set[str],
    ) -> None:
        """Compute what the summaries allow and publish it if anything changed."""
        figures: dict[str, int] = {}
        for image_id, image in images.items():
            waste = self._image_waste.get(image_id)
            if waste is None and all(diff_id in self._summaries for diff_id in image.diff_ids):
                waste = image_wasted([self._summary(diff_id) for diff_id in image.diff_ids])
                self._image_waste[image_id] = waste
                self._budget.pace()
            if waste is not None:
                figures[image_id] = waste.wasted_bytes
        unavailable = sum(1 for diff_id in sources if diff_id not in self._summaries and diff_id not in pending)
        image_ids = frozenset(images)
        node_bytes: int | None = None
        if len(figures) == len(images):
            if self._node is None or self._node[0] != image_ids:
                # From the masks kept per image; a summary is decoded only where some file
                # is hidden everywhere, one at a time (decoding them all at once took MiBs
                # of small objects for a moment, which stayed as heap fragmentation).
                masks = hidden_everywhere(
                    {image_id: image.chain_ids for image_id, image in images.items()}, self._image_waste
                )
                diff_ids = {
                    chain_id: diff_id
                    for image in images.values()
                    for chain_id, diff_id in zip(image.chain_ids, image.diff_ids, strict=True)
                }
                node_total = sum(
                    self._summary(diff_ids[chain_id]).bytes_of(mask) for chain_id, mask in masks.items() if mask
                )
                self._node = (image_ids, node_total)
                self._budget.pace()
            node_bytes = self._node[1]
        report = WasteReport(
            image_ids=image_ids,
            images=figures,
            node_wasted_bytes=node_bytes,
            pending_layers=len(pending),
            unavailable_layers=unavailable,
            layers_read=self.layers_read,
            layers_loaded=self.layers_loaded,
        )
        if report != self._report:
            self._report = report
            self._publish(report)


# -- one image, at once (`df --image`) -------------------------------------------


def analyse_image(
    reader: BlobReader, facts: NodeFacts, image: ImageFacts, limit: int | None = None
) -> ImageWasteDetail:
    """Read every layer of one image now (no budget: the user is waiting) and resolve hidden paths.

    Summaries keep no paths, so the layers holding the `limit` largest hidden
    files (all of them when None) are read a second time for their paths.
    Raises RuntimeUnavailableError.
    """
    sources = layer_sources(facts)
    summaries: list[LayerSummary] = []
    # What each layer was checked against, for its second read (one Content.Info each).
    checked_against: list[str | None] = []
    unavailable: list[tuple[str, str]] = []
    for diff_id in image.diff_ids:
        source = sources.get(diff_id)
        if source is None:
            unavailable.append((diff_id, "no manifest on the node names its blob"))
            continue
        try:
            blob_digest = blob_digest_to_check(reader, source)
            summaries.append(
                summarize_layer(reader.read_blob(source.digest, source.size), diff_id, blob_digest=blob_digest)
            )
            checked_against.append(blob_digest)
        except (LayerContentError, BlobUnavailableError) as exc:
            unavailable.append((diff_id, str(exc)))
    if unavailable:
        return ImageWasteDetail(None, tuple(None for _ in image.diff_ids), (), 0, tuple(unavailable))
    waste = image_wasted(summaries)
    hidden = largest_hidden(summaries, limit if limit is not None else sum(s.file_count for s in summaries))
    paths: dict[tuple[int, int], str] = {}
    for layer in sorted({h.layer for h in hidden}):
        source = sources[image.diff_ids[layer]]
        assert source is not None
        numbers = [h.file_number for h in hidden if h.layer == layer]
        # Closed at once: file_paths stops reading when it has the paths it needs.
        with contextlib.closing(
            layer_entries(
                reader.read_blob(source.digest, source.size), source.diff_id, blob_digest=checked_against[layer]
            )
        ) as entries:
            for number, path in file_paths(summaries[layer], entries, numbers).items():
                paths[(layer, number)] = path
    return ImageWasteDetail(
        wasted_bytes=waste.wasted_bytes,
        layer_wasted_bytes=waste.layer_wasted_bytes,
        hidden_files=tuple(
            HiddenFileDetail(paths[(h.layer, h.file_number)], h.size, h.layer, h.hidden_by) for h in hidden
        ),
        hidden_file_count=sum(mask.bit_count() for mask in waste.hidden),
        unavailable=(),
    )
