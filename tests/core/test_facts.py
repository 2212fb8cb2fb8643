"""Plain facts: which history step made each layer."""

from exporter.core.facts import HistoryEntry, history_per_layer
from tests.fakes import digest


def test_history_that_disagrees_with_layers_is_not_trusted():
    steps = history_per_layer((digest(1), digest(2)), (HistoryEntry("only one"),))
    assert steps == (None, None)
