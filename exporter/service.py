"""The refresh loop: runtime -> facts -> accounting -> published to the metrics store.

Scrapes never reach the runtime: a single background thread asks it at most
once per interval, however many scrapers there are, and publishes each
refresh's status and report to a sink (exporter.outputs.metrics_store).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from exporter.core.accounting import NodeReport, account, only_moving_figures_differ, with_moving_figures
from exporter.core.bases import BaseSpec
from exporter.core.facts import NodeFacts, Workload
from exporter.core.pull_cost import NodeHoldings, holdings_from_facts
from exporter.core.state import RefreshStatus
from exporter.errors import RuntimeUnavailableError

logger = logging.getLogger(__name__)


class FactSource(Protocol):
    """Where facts come from: the runtime source (exporter.sources.node), or a fake in tests."""

    @property
    def errors(self) -> Counter[str]: ...

    @property
    def calls(self) -> Mapping[str, int]: ...

    @property
    def progress(self) -> int:
        """Runtime calls started so far: it grows while a refresh is working."""
        ...

    def snapshot(self) -> NodeFacts: ...

    def forget_runtime_state(self) -> None: ...


class FactObserver(Protocol):
    """Told of each refresh's facts (the layer analysis, exporter.analysis); must return at once."""

    def observe(self, facts: NodeFacts) -> None: ...


class RefreshSink(Protocol):
    """Where each refresh's outcome goes (exporter.outputs.metrics_store.MetricsStore)."""

    def publish_refresh(self, status: RefreshStatus, report: NodeReport | None) -> None: ...


@runtime_checkable
class HoldingsSink(Protocol):
    """A sink that also answers what the node holds for a pull (GET /pull-cost)."""

    def publish_holdings(self, holdings: NodeHoldings | None) -> None: ...


class Refresher:
    """Asks the runtime once per interval and publishes the status and report to `sink`."""

    def __init__(
        self,
        source: FactSource,
        sink: RefreshSink,
        catalog: Sequence[BaseSpec] = (),
        interval: float = 30.0,
        clock: Callable[[], float] = time.time,
        workloads: Callable[[], Mapping[tuple[str, str], Workload]] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        observer: FactObserver | None = None,
    ) -> None:
        self.source = source
        self.catalog = tuple(catalog)
        self.interval = interval
        self._sink = sink
        self._clock = clock
        self._workloads = workloads
        self._observer = observer
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._status = RefreshStatus()
        # The last facts and their report, kept to reuse the report when the node is as it was.
        self._facts: NodeFacts | None = None
        self._report: NodeReport | None = None
        self._holdings_of: NodeFacts | None = None  # the facts the published holdings come from
        self._loop_heartbeat = monotonic()
        self._seen_progress = -1
        self.refresh_failures: Counter[str] = Counter()

    @property
    def status(self) -> RefreshStatus:
        return self._status

    @property
    def report(self) -> NodeReport | None:
        """The last refresh's report (None while the runtime does not answer)."""
        return self._report if self._status.up else None

    def refresh_once(self) -> RefreshStatus:
        """Take one snapshot and publish it. Never raises."""
        with self._lock:
            started = self._monotonic()
            previous = self._status
            report: NodeReport | None = None
            facts: NodeFacts | None = None
            error = ""
            try:
                facts = self.source.snapshot()
                if self._workloads is not None:  # from the Kubernetes API, when attribution is on
                    facts = dataclasses.replace(facts, workloads=self._workloads())
                report, facts = self._report_of(facts)
                self._facts, self._report = facts, report
            except RuntimeUnavailableError as exc:
                error = f"runtime unreachable: {exc}"
                self.refresh_failures["runtime"] += 1
            except Exception as exc:  # one bad refresh must not end the exporter
                logger.exception("refresh failed")
                error = f"refresh failed: {type(exc).__name__}: {exc}"
                self.refresh_failures["refresh"] += 1
            up = report is not None
            if up != previous.up or previous.generation == 0:
                self._log_transition(up, error)
            if not up and previous.up:
                # containerd may come back with another config (sandbox image...).
                self.source.forget_runtime_state()
            errors = dict(self.source.errors)
            for stage, count in self.refresh_failures.items():
                errors[stage] = errors.get(stage, 0) + count
            self._status = RefreshStatus(
                generation=previous.generation + 1,
                up=up,
                last_error=error,
                last_duration_seconds=self._monotonic() - started,
                last_success_timestamp=self._clock() if up else previous.last_success_timestamp,
                refreshes=previous.refreshes + 1,
                errors=errors,
                calls=dict(self.source.calls),
            )
            self._sink.publish_refresh(self._status, report)
            if isinstance(self._sink, HoldingsSink):
                self._publish_holdings(self._sink, facts if up else None)
            if facts is not None and self._observer is not None:
                self._observer.observe(facts)
            return self._status

    def _publish_holdings(self, sink: HoldingsSink, facts: NodeFacts | None) -> None:
        """The holdings of `facts`, computed again only when the kept facts changed."""
        if facts is None:
            self._holdings_of = None
            sink.publish_holdings(None)
        elif facts is not self._holdings_of:
            try:
                holdings = holdings_from_facts(facts)
            except Exception:  # a bad fact must not end the refresh loop; the endpoint answers 503
                logger.exception("pull-cost holdings failed")
                holdings = None
            self._holdings_of = facts
            sink.publish_holdings(holdings)

    def _report_of(self, facts: NodeFacts) -> tuple[NodeReport, NodeFacts]:
        """The report of `facts`, and the facts to keep.

        Most refreshes find the node as it was: the same report is kept, or
        updated where only filesystem usage and writable layers moved, which
        saves accounting the node again on every refresh. The previous facts are
        kept too (with those figures updated), so the analysis sees no new layers.
        """
        before, report = self._facts, self._report
        if report is None or before is None:
            return account(facts, self.catalog), facts
        if before == facts:
            return report, before
        if only_moving_figures_differ(before, facts):
            kept = dataclasses.replace(before, filesystems=facts.filesystems, containers=facts.containers)
            return with_moving_figures(report, facts), kept
        return account(facts, self.catalog), facts

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
