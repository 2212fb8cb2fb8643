import gc

from exporter.cli import memory


class _Node:
    other: "_Node"


def test_collect_and_release_frees_cycles():
    gc.collect()
    gc.disable()  # no automatic collection between the asserts
    try:
        first, second = _Node(), _Node()
        first.other, second.other = second, first
        del first, second
        assert any(isinstance(o, _Node) for o in gc.get_objects())
        memory.collect_and_release()
        assert not any(isinstance(o, _Node) for o in gc.get_objects())
    finally:
        gc.enable()


def test_the_glibc_calls_are_no_ops_where_there_is_no_glibc(monkeypatch):
    import ctypes

    def no_libc(name):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    memory.limit_malloc_arenas()
    memory.restore_trim_threshold()
    memory.release_free_memory()
