import dataclasses
import logging
import threading
import time

from exporter.core.accounting import account
from exporter.core.facts import NodeFacts
from exporter.core.pull_cost import NodeHoldings, holdings_from_facts
from exporter.service import Refresher
from tests.fakes import FakeSource, RecordingSink
from tests.sample_facts import sample_facts


def test_refresh_publishes_its_status_and_report():
    sink = RecordingSink()
    refresher = Refresher(FakeSource(sample_facts()), sink, interval=30, clock=lambda: 1234.0)
    status = refresher.refresh_once()
    assert status.up and status.generation == 1 and sink.report is not None
    assert sink.report.totals.physical == 2450
    assert status.last_success_timestamp == 1234.0
    assert refresher.status is status and sink.status is status and refresher.report is sink.report


def test_runtime_down_then_back_logs_once_per_change(caplog):
    source = FakeSource(sample_facts())
    sink = RecordingSink()
    refresher = Refresher(source, sink, interval=30)
    caplog.set_level(logging.INFO, logger="exporter.service")
    refresher.refresh_once()
    source.down = True
    for _ in range(3):
        state = refresher.refresh_once()
    assert not state.up and sink.report is None and refresher.report is None
    assert "runtime unreachable" in state.last_error
    assert state.errors["runtime"] == 3
    assert source.forgotten == 1
    source.down = False
    assert refresher.refresh_once().up
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in messages) == 1
    assert sum("runtime answered" in m for m in messages) == 2


def test_an_unexpected_error_never_escapes():
    source = FakeSource(sample_facts())
    source.crash = ZeroDivisionError("bug")
    state = Refresher(source, RecordingSink()).refresh_once()
    assert not state.up and "ZeroDivisionError" in state.last_error
    assert state.errors["refresh"] == 1


def test_run_stops_when_asked():
    refresher = Refresher(FakeSource(sample_facts()), RecordingSink(), interval=0.01)
    stop = threading.Event()
    thread = threading.Thread(target=refresher.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 10
    while refresher.status.generation < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert refresher.status.generation >= 3
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert refresher.loop_alive()


def test_unchanged_facts_reuse_the_report():
    source = FakeSource(sample_facts())
    refresher = Refresher(source, RecordingSink())
    refresher.refresh_once()
    first = refresher.report
    refresher.refresh_once()
    assert refresher.report is first
    source.facts = dataclasses.replace(source.facts, node_name="other")
    refresher.refresh_once()
    assert refresher.report is not first


class Observer:
    """The layer analysis's place: told of each refresh's facts."""

    def __init__(self) -> None:
        self.seen: list[NodeFacts] = []

    def observe(self, facts: NodeFacts) -> None:
        self.seen.append(facts)


def test_equal_facts_keep_the_report_and_hand_on_the_facts_it_was_made_from():
    # A real source builds new (equal) facts on every refresh.
    source = FakeSource(sample_facts())
    observer = Observer()
    refresher = Refresher(source, RecordingSink(), observer=observer)
    refresher.refresh_once()
    first = refresher.report
    source.facts = sample_facts()
    refresher.refresh_once()
    assert refresher.report is first
    assert observer.seen[1] is observer.seen[0]


def test_moving_figures_update_the_report_without_accounting_again():
    source = FakeSource(sample_facts())
    observer = Observer()
    refresher = Refresher(source, RecordingSink(), observer=observer)
    refresher.refresh_once()
    first, first_facts = refresher.report, observer.seen[0]
    assert first is not None
    grown = tuple(dataclasses.replace(c, writable_bytes=(c.writable_bytes or 0) + 1000) for c in first_facts.containers)
    source.facts = dataclasses.replace(sample_facts(), containers=grown)
    refresher.refresh_once()
    second, second_facts = refresher.report, observer.seen[1]
    assert second is not None
    assert second.totals.writable == first.totals.writable + 4000
    assert second == account(source.facts)
    # Nothing else was accounted again, and the facts handed on are the first ones' but for the moving figures.
    assert second.images is first.images and second.layers is first.layers
    assert second_facts.images is first_facts.images and second_facts.layer_usage is first_facts.layer_usage
    assert second_facts.containers == grown


class _SlowFirstRefresh(FakeSource):
    """A huge node's first refresh: many runtime calls, each one progress, until released."""

    def __init__(self) -> None:
        super().__init__(sample_facts())
        self.release = threading.Event()
        self.working = threading.Event()

    def snapshot(self) -> NodeFacts:
        self.working.set()
        self.release.wait(30)
        return super().snapshot()


def test_liveness_ticks_during_a_long_first_refresh_and_fails_when_stuck():
    now = [0.0]
    source = _SlowFirstRefresh()
    refresher = Refresher(source, RecordingSink(), interval=30, monotonic=lambda: now[0])
    stop = threading.Event()
    thread = threading.Thread(target=refresher.run, args=(stop,))
    thread.start()
    try:
        assert source.working.wait(10)
        for _ in range(10):  # 10 x 60 s of a first refresh that keeps making calls
            now[0] += 60
            source.progress += 1000
            assert refresher.loop_alive()
        now[0] += 3 * 30 + 30  # then no call at all for three intervals: stuck
        assert not refresher.loop_alive()
    finally:
        source.release.set()
        stop.set()
        thread.join(timeout=5)


def test_the_observer_gets_each_refresh_but_not_when_the_runtime_is_down():
    source = FakeSource(sample_facts())
    observer = Observer()
    refresher = Refresher(source, RecordingSink(), interval=30, observer=observer)
    refresher.refresh_once()
    source.down = True
    refresher.refresh_once()
    assert len(observer.seen) == 1 and observer.seen[0] == sample_facts()


class HoldingsRecordingSink(RecordingSink):
    """MetricsStore's role with the pull-cost holdings too."""

    def __init__(self) -> None:
        super().__init__()
        self.holdings: list[NodeHoldings | None] = []

    def publish_holdings(self, holdings: NodeHoldings | None) -> None:
        self.holdings.append(holdings)


def test_the_node_holdings_are_published_from_each_new_refresh_and_withdrawn_when_down():
    source = FakeSource(sample_facts())
    sink = HoldingsRecordingSink()
    refresher = Refresher(source, sink)
    refresher.refresh_once()
    assert sink.holdings == [holdings_from_facts(sample_facts())]
    source.facts = sample_facts()  # equal facts: the same holdings, not computed again
    refresher.refresh_once()
    assert len(sink.holdings) == 1
    source.down = True  # the runtime stops answering
    refresher.refresh_once()
    assert sink.holdings[-1] is None and not refresher.status.up
    source.down = False
    refresher.refresh_once()
    assert sink.holdings[-1] == holdings_from_facts(sample_facts())
