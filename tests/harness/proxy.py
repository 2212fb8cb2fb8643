"""A unix-socket proxy in front of containerd that can be told to stall: the
runtime then accepts connections but answers nothing, as a hung containerd
does. For testing deadlines; loopback only (a socket file)."""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
from pathlib import Path


class StallingProxy:
    def __init__(self, upstream: Path, path: Path) -> None:
        self.upstream = str(upstream)
        self.path = path
        self._stalled = threading.Event()
        self._stop = threading.Event()
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._listener.bind(str(path))
        self._listener.listen(16)
        self._listener.settimeout(0.2)
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._pairs: list[tuple[socket.socket, socket.socket]] = []

    @property
    def endpoint(self) -> str:
        return f"unix://{self.path}"

    def start(self) -> StallingProxy:
        self._thread.start()
        return self

    def stall(self) -> None:
        self._stalled.set()

    def resume(self) -> None:
        self._stalled.clear()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for a, b in self._pairs:
            a.close()
            b.close()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.upstream)
            except OSError:
                client.close()
                upstream.close()
                continue
            self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(a, selectors.EVENT_READ, b)
        selector.register(b, selectors.EVENT_READ, a)
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.1):
                    if self._stalled.is_set():
                        continue  # hold everything: the peer sees a runtime that never answers
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)
                if self._stalled.is_set():
                    self._stop.wait(0.05)
        except OSError:
            return
        finally:
            selector.close()
            a.close()
            b.close()
