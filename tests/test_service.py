import dataclasses
import logging
import threading

from exporter.core.accounting import account
from exporter.core.facts import NodeFacts
from exporter.core.state import WasteReport
from exporter.service import Refresher
from tests.fakes import FakeSource
from tests.sample_facts import sample_facts


def test_refresh_publishes_one_consistent_state():
    refresher = Refresher(FakeSource(sample_facts()), interval=30, clock=lambda: 1234.0)
    state = refresher.refresh_once()
    assert state.up and state.generation == 1 and state.report is not None
    assert state.report.totals.physical == 2450
    assert state.last_success_timestamp == 1234.0
    assert refresher.state is state


def test_runtime_down_then_back_logs_once_per_change(caplog):
    source = FakeSource(sample_facts())
    refresher = Refresher(source, interval=30)
    caplog.set_level(logging.INFO, logger="exporter.service")
    refresher.refresh_once()
    source.down = True
    for _ in range(3):
        state = refresher.refresh_once()
    assert not state.up and state.report is None
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
    state = Refresher(source).refresh_once()
    assert not state.up and "ZeroDivisionError" in state.last_error
    assert state.errors["refresh"] == 1


def test_run_stops_when_asked():
    refresher = Refresher(FakeSource(sample_facts()), interval=0.01)
    stop = threading.Event()
    thread = threading.Thread(target=refresher.run, args=(stop,))
    thread.start()
    while refresher.state.generation < 3:
        pass
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert refresher.loop_alive()


def test_unchanged_facts_reuse_the_report():
    source = FakeSource(sample_facts())
    refresher = Refresher(source)
    first = refresher.refresh_once().report
    assert refresher.refresh_once().report is first
    source.facts = dataclasses.replace(source.facts, node_name="other")
    assert refresher.refresh_once().report is not first


def test_equal_facts_keep_the_report_and_the_facts_it_shares_its_strings_with():
    # A real source builds new (equal) facts on every refresh.
    source = FakeSource(sample_facts())
    refresher = Refresher(source)
    first = refresher.refresh_once()
    source.facts = sample_facts()
    assert source.facts == first.facts and source.facts is not first.facts
    second = refresher.refresh_once()
    assert second.report is first.report and second.facts is first.facts


def test_moving_figures_update_the_report_without_accounting_again():
    source = FakeSource(sample_facts())
    refresher = Refresher(source)
    first = refresher.refresh_once()
    assert first.facts is not None and first.report is not None
    grown = tuple(dataclasses.replace(c, writable_bytes=(c.writable_bytes or 0) + 1000) for c in first.facts.containers)
    source.facts = dataclasses.replace(sample_facts(), containers=grown)
    second = refresher.refresh_once()
    assert second.report is not None and second.facts is not None
    assert second.report.totals.writable == first.report.totals.writable + 4000
    assert second.report == account(source.facts)
    # Nothing else was accounted again, and the facts kept are the first ones' but for the moving figures.
    assert second.report.images is first.report.images and second.report.layers is first.report.layers
    assert second.facts.images is first.facts.images and second.facts.layer_usage is first.facts.layer_usage
    assert second.facts.containers == grown


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
    refresher = Refresher(source, interval=30, monotonic=lambda: now[0])
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


def test_the_observer_gets_each_refresh_and_waste_is_published_between_refreshes():
    seen = []

    class Observer:
        def observe(self, facts):
            seen.append(facts)

    refresher = Refresher(FakeSource(sample_facts()), interval=30, observer=Observer())
    first = refresher.refresh_once()
    assert seen == [first.facts]
    refresher.publish_waste(WasteReport(pending_layers=4))
    published = refresher.state
    assert published.generation == first.generation + 1 and published.report is first.report
    assert published.waste == WasteReport(pending_layers=4)
    after = refresher.refresh_once()  # a refresh keeps the latest figures
    assert after.waste == WasteReport(pending_layers=4) and after.generation == published.generation + 1
