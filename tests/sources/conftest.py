"""The in-process fake runtime the source tests talk to (tests/integration/ use a real containerd)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_grpc import FakeRuntime
from tests.fakes import digest


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[FakeRuntime]:
    server = FakeRuntime(tmp_path / "fake.sock").start()
    server.images = {digest("i1"): [digest("a"), digest("b")], digest("i2"): [digest("a"), digest("c")]}
    yield server
    server.stop()
