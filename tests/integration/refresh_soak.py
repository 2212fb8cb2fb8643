"""Run in a process of its own by test_reliability: 1,000 refreshes against a
real runtime, then print what the process holds (JSON), so no other test's
threads or files are counted."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from exporter.service import Refresher
from exporter.sources.cri import CriOptions
from exporter.sources.node import RuntimeOptions, RuntimeSource
from tests.fakes import RecordingSink


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main(endpoint: str) -> None:
    runtime = RuntimeSource(RuntimeOptions(endpoint=endpoint, cri=CriOptions(writable_refresh_seconds=0.01)))
    refresher = Refresher(runtime, RecordingSink())
    for _ in range(50):  # warm up caches and allocator
        assert refresher.refresh_once().up
    fds, threads, rss = len(os.listdir("/proc/self/fd")), len(os.listdir("/proc/self/task")), []
    for i in range(1000):
        assert refresher.refresh_once().up
        if i % 100 == 99:
            rss.append(_rss_kib())
    result = {
        "fds": [fds, len(os.listdir("/proc/self/fd"))],
        "threads": [threads, len(os.listdir("/proc/self/task"))],
        "rss": rss,
    }
    runtime.close()
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
