"""Scheduling the layer analysis: which layer to read when, under a CPU budget, with retries.

It runs in its own thread beside the refresh loop, which only hands it the
latest facts (a reference, no work), so refreshes keep their schedule and
scrapes keep reading memory. A layer's content never changes, so each layer is
read once, by diff ID, streamed from its compressed blob
(exporter.sources.layer_tar) into a summary kept by the summary store
(exporter.sources.layer_state: memory, and the state directory across
restarts); the figures are exporter.core.wasted.waste_figures of the summaries.

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
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from exporter.core.facts import ImageFacts, NodeFacts
from exporter.core.state import HiddenFileDetail, ImageWasteDetail, WasteReport
from exporter.core.wasted import (
    ImageWaste,
    LayerContentError,
    LayerSource,
    LayerSummary,
    file_paths,
    image_wasted,
    largest_hidden,
    layer_sources,
    waste_figures,
)
from exporter.errors import BlobUnavailableError, RuntimeUnavailableError
from exporter.options import option
from exporter.sources import layer_state
from exporter.sources.layer_tar import layer_entries, summarize_layer
from exporter.sources.node import BlobReader

logger = logging.getLogger(__name__)

DEFAULT_CPU_FRACTION = 0.25
# Where the figures come from when a node keeps no blobs (said in the one log line).
ELSEWHERE = (
    "`layer-sharing-exporter wasted IMAGE...` computes the same figures from the images' registries, "
    "and `report --view wasted` fills them in for the cluster"
)
PROGRESS_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class AnalysisOptions:
    """The background wasted-bytes analysis of `serve`."""

    cpu_fraction: float = option(
        DEFAULT_CPU_FRACTION,
        "fraction of one core the wasted-bytes analysis may use (0 turns it off)",
        key="analysis_cpu",
        flag="--analysis-cpu",
        minimum=0,
        maximum=64,
        metavar="FRACTION",
    )
    state_dir: str = option(
        "",
        'directory keeping per-layer analysis summaries across restarts ("" = memory only)',
        flag="--state-dir",
        metavar="DIR",
    )
    retry_seconds: float = option(
        300.0,
        "seconds before a layer whose blob could not be read is tried again",
        key="analysis_retry_seconds",
        positive=True,
    )


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


def _same_layers(before: NodeFacts, after: NodeFacts) -> bool:
    """Whether the analysis would see nothing new in `after` (what a pass reads of the facts)."""
    return (
        before.layer_store == after.layer_store
        and before.images == after.images
        and before.layer_blobs == after.layer_blobs
        and before.present_blobs == after.present_blobs
    )


@dataclass(frozen=True, slots=True)
class _Failure:
    digest: str
    reason: str
    retry_at: float  # monotonic; inf: the blob's content is wrong, never read again


class LayerAnalyzer:
    """Summarizes every layer of the node once, under the CPU budget, and publishes the wasted bytes.

    `observe` is called by the refresh loop with each refresh's facts (it only
    remembers them); `run` is the analysis thread; `publish` receives each new
    WasteReport. Summaries live in the SummaryStore, the figures come from
    exporter.core.wasted.waste_figures.
    """

    def __init__(
        self,
        reader: BlobReader,
        options: AnalysisOptions,
        publish: Callable[[WasteReport], None],
        clock: Callable[[], float] = time.monotonic,
        store: layer_state.SummaryStore | None = None,
    ) -> None:
        self._reader = reader
        self.options = options
        self._publish = publish
        self._clock = clock
        self._store = store or layer_state.SummaryStore(Path(options.state_dir) if options.state_dir else None)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._facts: NodeFacts | None = None
        # Whether the last pass went through for the facts in `_facts`.
        self._up_to_date = False
        # Sleeps end at once when the exporter stops.
        self._budget = CpuBudget(options.cpu_fraction, wait=lambda seconds: self._stop.wait(seconds))
        self._failures: dict[str, _Failure] = {}
        self._logged: set[str] = set()
        self._said_no_blobs = False
        # Layers whose blob is not in the content store, in the latest pass; said once per process.
        self._discarded: set[str] = set()
        self._said_discarded = False
        # image_wasted() of each image, kept: the costly part of the figures.
        self._image_waste: Mapping[str, ImageWaste] = {}
        self._report = WasteReport()

    @property
    def report(self) -> WasteReport:
        return self._report

    @property
    def due(self) -> bool:
        """Whether facts wait for a pass (new layers or images since the last pass went through)."""
        return self._wake.is_set()

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
        while not stop.is_set():
            # Woken by new facts; otherwise now and then, to retry failed reads.
            self._wake.wait(timeout=self.options.retry_seconds)
            if not stop.is_set():
                self.analyse_latest()

    def analyse_latest(self) -> None:
        """One pass over the latest facts, as `run` makes it: never raises."""
        self._wake.clear()
        stop = self._stop
        facts = self._facts
        if facts is None:
            return
        if not self._reader.keeps_blobs:
            if not self._said_no_blobs:
                self._said_no_blobs = True
                runtime = "CRI-O's containers-storage" if facts.layer_store == "containers-storage" else None
                logger.warning(
                    "wasted-bytes analysis unavailable on this node: %s keeps no layer blobs to read; %s",
                    runtime or f"the {facts.layer_store} layer store",
                    ELSEWHERE,
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

    def analyse(self, facts: NodeFacts) -> WasteReport:
        """Bring the summaries up to date with `facts` and publish the figures.

        Raises RuntimeUnavailableError (what was read so far is kept).
        """
        sources = layer_sources(facts)
        self._store.keep_only(sources)
        self._store.load(sources)
        for stale in self._failures.keys() - sources.keys():
            del self._failures[stale]
        self._logged &= sources.keys()
        self._discarded.clear()
        todo = [source for diff_id, source in sources.items() if self._due(diff_id, source, facts)]
        if self._discarded and not self._said_discarded:
            self._said_discarded = True
            logger.warning(
                "wasted-bytes analysis: the blobs of %d of the node's %d layers are not in containerd's content "
                "store, which discards them after unpacking (discard_unpacked_layers = true, as on EKS); "
                "images using them get no wasted-bytes figures here; %s",
                len(self._discarded),
                len(sources),
                ELSEWHERE,
            )
        self._update(facts, sources, pending={source.diff_id for source in todo if source})
        if not todo:
            return self._report
        self._budget.restart()
        progress_at = self._clock()
        # While layers are read, tar headers are parsed in Python: the GIL changes hands every
        # 1 ms, not 5, so a scrape waits less behind them (kept-alive p99 on the busy node:
        # 10.5 -> 2.0 ms, benchmarks/busy_node.py).
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(switch_interval, 0.001))
        try:
            for index, source in enumerate(todo):
                if self._stop.is_set():
                    break
                assert source is not None  # _due() passes only layers with a blob
                self._read(source)
                # Progress (pending layers, images complete) at most once a second, and at the end.
                if index == len(todo) - 1 or self._clock() - progress_at >= PROGRESS_SECONDS:
                    progress_at = self._clock()
                    self._update(facts, sources, {later.diff_id for later in todo[index + 1 :] if later})
        finally:
            sys.setswitchinterval(switch_interval)
        return self._report

    def _due(self, diff_id: str, source: LayerSource | None, facts: NodeFacts) -> bool:
        """Whether the layer should be read now; if it cannot be, say why (once)."""
        if diff_id in self._store:
            return False
        if source is None:
            self._unavailable(diff_id, "", "no manifest on the node names its blob", math.inf)
            return False
        if source.digest not in facts.present_blobs:
            # Blobs gone from the content store are one cause for the whole node: said once, by analyse().
            self._failures[diff_id] = _Failure(source.digest, "blob not in the content store", -math.inf)
            self._discarded.add(diff_id)
            logger.debug("layer %s: its blob %s is not in the content store", diff_id, source.digest)
            return False
        failure = self._failures.get(diff_id)
        waiting = failure is not None and failure.digest == source.digest and failure.retry_at > self._clock()
        return not waiting

    def _read(self, source: LayerSource) -> None:
        """Read and summarize one layer, or note it as unavailable."""
        try:
            summary = summarize_layer(
                self._reader.read_blob(source.digest, source.size), source.diff_id, on_chunk=self._budget.pace
            )
        except LayerContentError as exc:
            self._unavailable(source.diff_id, source.digest, f"its blob is unusable: {exc}", math.inf)
            return
        except BlobUnavailableError as exc:
            retry_at = self._clock() + self.options.retry_seconds
            self._unavailable(source.diff_id, source.digest, str(exc), retry_at)
            return
        self._budget.pace()
        self._store.put(source.diff_id, summary)
        self._failures.pop(source.diff_id, None)
        self._logged.discard(source.diff_id)

    def _unavailable(self, diff_id: str, digest: str, reason: str, retry_at: float) -> None:
        self._failures[diff_id] = _Failure(digest, reason, retry_at)
        if diff_id not in self._logged:
            self._logged.add(diff_id)
            logger.warning("layer %s unavailable for the wasted-bytes analysis: %s", diff_id, reason)

    def _update(self, facts: NodeFacts, sources: Mapping[str, LayerSource | None], pending: set[str]) -> None:
        """Compute what the summaries allow and publish it if anything changed."""
        figures = waste_figures(facts.images, self._store.summaries, self._image_waste)
        self._image_waste = figures.images
        self._budget.pace()
        unavailable = sum(1 for diff_id in sources if diff_id not in self._store and diff_id not in pending)
        report = WasteReport(
            image_ids=frozenset(image.image_id for image in facts.images),
            images={image_id: waste.wasted_bytes for image_id, waste in figures.images.items()},
            node_wasted_bytes=figures.node_wasted_bytes,
            pending_layers=len(pending),
            unavailable_layers=unavailable,
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
    unavailable: list[tuple[str, str]] = []
    for diff_id in image.diff_ids:
        source = sources.get(diff_id)
        if source is None:
            unavailable.append((diff_id, "no manifest on the node names its blob"))
            continue
        try:
            summaries.append(summarize_layer(reader.read_blob(source.digest, source.size), diff_id))
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
        with contextlib.closing(layer_entries(reader.read_blob(source.digest, source.size), source.diff_id)) as entries:
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
