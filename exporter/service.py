"""The refresh loop: runtime -> facts -> accounting -> one published state.

Scrapes never reach the runtime: they read the last published `ExporterState`,
which a single background thread replaces atomically, at most once per
interval, however many scrapers there are. One state is one refresh, so a
scrape never mixes two moments of the node.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from exporter.core.accounting import NodeReport, account, only_moving_figures_differ, with_moving_figures
from exporter.core.bases import BaseSpec
from exporter.core.facts import NodeFacts, Workload
from exporter.core.state import ExporterState, WasteReport
from exporter.errors import RuntimeUnavailableError

logger = logging.getLogger(__name__)


class FactSource(Protocol):
    """Where facts come from: the runtime source (exporter.sources.node), or a fake in tests."""

    @property
    def errors(self) -> Counter[str]: ...

    @property
    def calls(self) -> Counter[str]: ...

    @property
    def progress(self) -> int:
        """Runtime calls started so far: it grows while a refresh is working."""
        ...

    def snapshot(self) -> NodeFacts: ...

    def forget_runtime_state(self) -> None: ...


# The state's parts the layer figures of /metrics come from (see ExporterState.figures_generation).
_FIGURES = ("report", "waste")


class FactObserver(Protocol):
    """Told of each refresh's facts (the layer analysis, exporter.analysis); must return at once."""

    def observe(self, facts: NodeFacts) -> None: ...


class Refresher:
    """Keeps `state` current by asking the runtime once per interval."""

    def __init__(
        self,
        source: FactSource,
        catalog: Sequence[BaseSpec] = (),
        interval: float = 30.0,
        clock: Callable[[], float] = time.time,
        after_refresh: Callable[[], None] = lambda: None,
        workloads: Callable[[], Mapping[tuple[str, str], Workload]] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        observer: FactObserver | None = None,
    ) -> None:
        self.source = source
        self.catalog = tuple(catalog)
        self.interval = interval
        self._clock = clock
        self._after_refresh = after_refresh
        self._workloads = workloads
        self._state = ExporterState()
        self._observer = observer
        self._lock = threading.Lock()
        self._monotonic = monotonic
        self._loop_heartbeat = monotonic()
        self._seen_progress = -1
        # Publishing is also done by the analysis thread (publish_waste): one state at a time.
        self._publish_lock = threading.Lock()
        self.refresh_failures: Counter[str] = Counter()

    @property
    def state(self) -> ExporterState:
        return self._state

    def refresh_once(self) -> ExporterState:
        """Take one snapshot and publish it. Never raises."""
        with self._lock:
            started = time.perf_counter()
            previous = self._state
            report: NodeReport | None = None
            facts: NodeFacts | None = None
            error = ""
            try:
                facts = self.source.snapshot()
                if self._workloads is not None:  # from the Kubernetes API, when attribution is on
                    facts = dataclasses.replace(facts, workloads=self._workloads())
                report, facts = self._report_of(previous, facts)
            except RuntimeUnavailableError as exc:
                error = f"runtime unreachable: {exc}"
                self.refresh_failures["runtime"] += 1
            except Exception as exc:  # one bad refresh must not end the exporter
                logger.exception("refresh failed")
                error = f"refresh failed: {type(exc).__name__}: {exc}"
                self.refresh_failures["refresh"] += 1
            duration = time.perf_counter() - started
            up = report is not None
            if up != previous.up or previous.generation == 0:
                self._log_transition(up, error)
            if not up and previous.up:
                # containerd may come back with another config (sandbox image...).
                self.source.forget_runtime_state()
            errors = dict(self.source.errors)
            for stage, count in self.refresh_failures.items():
                errors[stage] = errors.get(stage, 0) + count
            with self._publish_lock:
                self._state = self._next_state(
                    up=up,
                    report=report,
                    facts=facts,
                    last_error=error,
                    last_duration_seconds=duration,
                    last_success_timestamp=self._clock() if up else previous.last_success_timestamp,
                    refreshes=previous.refreshes + 1,
                    errors=errors,
                    calls=dict(self.source.calls),
                )
            if facts is not None and self._observer is not None:
                self._observer.observe(facts)
            return self._state

    def _report_of(self, previous: ExporterState, facts: NodeFacts) -> tuple[NodeReport, NodeFacts]:
        """The report of `facts`, and the facts to keep.

        Most refreshes find the node as it was: the same report is kept, or
        updated where only filesystem usage and writable layers moved. The
        previous facts are kept too, with those figures updated, so that facts
        and report go on sharing their strings (new copies would double them in
        memory) and the analysis sees no new layers.
        """
        before = previous.facts
        if previous.report is None or before is None:
            return account(facts, self.catalog), facts
        if before == facts:
            return previous.report, before
        if only_moving_figures_differ(before, facts):
            kept = dataclasses.replace(before, filesystems=facts.filesystems, containers=facts.containers)
            return with_moving_figures(previous.report, facts), kept
        return account(facts, self.catalog), facts

    def _next_state(self, **values: object) -> ExporterState:
        """The current state with `values` replaced, as a new generation (under _publish_lock)."""
        current = self._state
        figures_moved = any(name in values and values[name] is not getattr(current, name) for name in _FIGURES)
        return dataclasses.replace(
            current,
            generation=current.generation + 1,
            figures_generation=current.figures_generation + figures_moved,
            **values,  # type: ignore[arg-type]
        )

    def publish_waste(self, waste: WasteReport) -> None:
        """Publish new wasted-bytes figures (from the analysis thread) without waiting for a refresh."""
        with self._publish_lock:
            self._state = self._next_state(waste=waste, calls=dict(self.source.calls))

    def _log_transition(self, up: bool, error: str) -> None:
        if up:
            logger.info("runtime answered: exporting layer sharing figures")
        else:
            logger.error("%s; exporting layer_sharing_up 0 and retrying every %gs", error, self.interval)

    def run(self, stop: threading.Event) -> None:
        """Refresh now, then every interval, until `stop` is set."""
        while not stop.is_set():
            self._loop_heartbeat = self._monotonic()
            self.refresh_once()
            self._after_refresh()
            stop.wait(self.interval)

    def loop_alive(self) -> bool:
        """False when the loop has neither started a refresh nor made a runtime
        call for three intervals (stuck). A long refresh (the first one on a
        huge node asks thousands of questions) keeps it alive by progressing."""
        now = self._monotonic()
        progress = self.source.progress
        if progress != self._seen_progress:
            self._seen_progress = progress
            self._loop_heartbeat = max(self._loop_heartbeat, now)
        return now - self._loop_heartbeat < 3 * self.interval + 30
