"""glibc memory tuning for the long-running `serve` (no-ops off glibc)."""

from __future__ import annotations

import contextlib
import ctypes
import gc

_M_TRIM_THRESHOLD = -1
_M_ARENA_MAX = -8
_DEFAULT_TRIM_THRESHOLD = 128 << 10


def _glibc(function: str, *args: int) -> None:
    """Call a glibc malloc function; no-op off glibc (no libc.so.6, or no such function)."""
    with contextlib.suppress(OSError, AttributeError):
        getattr(ctypes.CDLL("libc.so.6"), function)(*args)


def limit_malloc_arenas(arenas: int = 2) -> None:
    """Cap glibc's per-thread malloc arenas (gRPC and HTTP threads each get one).

    The same as MALLOC_ARENA_MAX=2, set before any thread starts: it measured
    less RSS on a busy node (benchmarks/). No-op off glibc.
    """
    _glibc("mallopt", _M_ARENA_MAX, arenas)


def release_free_memory() -> None:
    """Hand memory freed by a refresh back to the OS (glibc malloc_trim); no-op elsewhere."""
    _glibc("malloc_trim", 0)


def restore_trim_threshold() -> None:
    """Set glibc's trim threshold back to its default (128 KiB) after layer blobs were read.

    glibc raises it to twice the largest block it has unmapped (a blob's 1 MiB
    chunks) and then keeps that much freed memory at the top of each heap
    between trims: about 1.2 MiB of steady RSS on the busy node, measured. Set
    once, glibc adjusts neither threshold again (the mmap threshold stays where
    the reads raised it). No-op off glibc.
    """
    _glibc("mallopt", _M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)


def collect_and_release() -> None:
    """Free what only the cycle collector can, then hand freed memory back (after a layer analysis pass).

    Not after every refresh: a full collection holds the GIL for some milliseconds.
    """
    gc.collect()
    restore_trim_threshold()
    release_free_memory()
