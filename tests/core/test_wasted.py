import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.core.wasted import (
    HiddenFile,
    LayerContentError,
    LayerSummary,
    TarEntry,
    file_paths,
    hidden_everywhere,
    image_wasted,
    largest_hidden,
    node_wasted,
    normalize_path,
    summarize,
)


def file(path, size):
    return TarEntry(path, "file", size)


def directory(path):
    return TarEntry(path, "dir")


def symlink(path):
    return TarEntry(path, "symlink")


def whiteout(path):
    parent, _, name = path.rpartition("/")
    return TarEntry(f"{parent}/.wh.{name}" if parent else f".wh.{name}", "file", 0)


def opaque(directory_path):
    return TarEntry(f"{directory_path}/.wh..wh..opq" if directory_path else ".wh..wh..opq", "file", 0)


def wasted(*layers):
    return image_wasted([summarize(layer) for layer in layers])


# --- the hiding rules, one by one ---


def test_nothing_hidden_in_a_single_layer():
    assert wasted([directory("etc"), file("etc/a", 10)]).wasted_bytes == 0


def test_file_over_file_hides_the_lower_copy_only():
    result = wasted([file("a", 10)], [file("a", 3)])
    assert result.wasted_bytes == 10
    assert result.layer_wasted_bytes == (10, 0)


def test_whiteout_of_a_file():
    assert wasted([file("etc/a", 10), file("etc/b", 1)], [whiteout("etc/a")]).wasted_bytes == 10


def test_whiteout_of_a_parent_directory_hides_everything_under_it():
    lower = [directory("var"), directory("var/cache"), file("var/cache/x", 5), file("var/cache/y/z", 7)]
    lower += [file("var/cachefile", 100), file("var/cache-other", 1000)]
    assert wasted(lower, [whiteout("var/cache")]).wasted_bytes == 12


def test_whiteout_applies_to_lower_layers_only():
    # OCI: a whiteout never hides an entry of its own layer.
    assert wasted([file("b", 1)], [whiteout("a"), file("a", 10)]).wasted_bytes == 0


def test_opaque_whiteout_hides_lower_entries_under_the_directory():
    lower = [file("d/x", 5), file("d/sub/y", 7), file("e/z", 11)]
    upper = [directory("d"), opaque("d"), file("d/new", 3)]
    result = wasted(lower, upper)
    assert result.wasted_bytes == 12
    assert result.layer_wasted_bytes == (12, 0)


def test_opaque_whiteout_does_not_hide_its_own_layer():
    assert wasted([file("x", 1)], [opaque("d"), file("d/new", 3), file("d/sub/more", 4)]).wasted_bytes == 0


def test_opaque_root():
    assert wasted([file("a", 1), file("b/c", 2)], [opaque(""), file("z", 1)]).wasted_bytes == 3


def test_non_directory_replacing_a_parent_directory():
    lower = [directory("opt"), directory("opt/app"), file("opt/app/bin", 40), file("opt/app/lib/so", 2)]
    assert wasted(lower, [symlink("opt/app")]).wasted_bytes == 42
    assert wasted(lower, [file("opt/app", 1)]).wasted_bytes == 42


def test_directory_replacing_a_file_hides_the_file():
    assert wasted([file("conf", 9)], [directory("conf"), file("conf/a", 1)]).wasted_bytes == 9


def test_implicit_parent_directory_replaces_a_file():
    # No "conf" entry in the upper layer: "conf/a" implies the directory all the same.
    assert wasted([file("conf", 9)], [file("conf/a", 1)]).wasted_bytes == 9
    # A whiteout's parent is implied too.
    assert wasted([file("conf", 9)], [whiteout("conf/a")]).wasted_bytes == 9


def test_directory_over_directory_merges():
    assert wasted([directory("d"), file("d/a", 1)], [directory("d"), file("d/b", 2)]).wasted_bytes == 0


def test_symlink_over_a_file():
    assert wasted([file("bin/sh", 100)], [symlink("bin/sh")]).wasted_bytes == 100


def test_file_re_added_above_a_whiteout():
    layers = ([file("a", 10)], [whiteout("a")], [file("a", 4)])
    result = wasted(*layers)
    assert result.wasted_bytes == 10
    assert result.layer_wasted_bytes == (10, 0, 0)


def test_hard_links_record_size_zero_and_hide_like_any_non_directory():
    result = wasted([file("a", 10), TarEntry("b", "hardlink", 0)], [TarEntry("a", "hardlink", 0)])
    assert result.wasted_bytes == 10


def test_whiteout_entries_are_not_files_of_the_image():
    summary = summarize([whiteout("a"), opaque("d"), TarEntry(".wh..wh.plnk/1.2", "file", 5)])
    assert summary.file_count == 0
    assert summary.total_file_bytes == 0


def test_duplicated_path_in_one_layer_counts_the_last_entry_only():
    summary = summarize([file("a", 10), file("a", 3)])
    assert (summary.file_count, summary.total_file_bytes) == (1, 3)
    assert summarize([file("a", 10), symlink("a")]).file_count == 0
    assert wasted([file("a", 10), file("a", 3)], [file("a", 1)]).wasted_bytes == 3


def test_hidden_by_the_nearest_upper_layer_and_largest_first():
    layers = [summarize(x) for x in ([file("a", 10), file("b", 20), file("c", 5)], [file("a", 1)], [whiteout("b")])]
    largest = largest_hidden(layers, 2)
    assert largest == [HiddenFile(size=20, layer=0, file_number=1, hidden_by=2), HiddenFile(10, 0, 0, 1)]
    assert len(largest_hidden(layers, 10)) == 2
    entries = [file("a", 10), file("b", 20), file("c", 5)]
    assert file_paths(layers[0], entries, [h.file_number for h in largest]) == {1: "b", 0: "a"}


def test_file_paths_rejects_other_entries():
    summary = summarize([file("a", 1), file("b", 2)])
    with pytest.raises(LayerContentError):
        file_paths(summary, [file("a", 1), file("c", 2)], [1])
    with pytest.raises(LayerContentError):
        file_paths(summary, [file("a", 1)], [0])


def test_huge_files_keep_their_size():
    big = 5 * 1024**3
    summary = summarize([file("x", 1), file("y", big), file("z", 2**32 - 1)])
    assert [summary.file_size(n) for n in range(3)] == [1, big, 2**32 - 1]
    assert wasted([file("y", big)], [whiteout("y")]).wasted_bytes == big


def test_paths_are_normalized_and_escapes_rejected():
    assert wasted([file("./usr/bin/x", 3)], [file("/usr//bin/./x", 1)]).wasted_bytes == 3
    assert normalize_path("a/b/../c") == "a/c"
    with pytest.raises(LayerContentError):
        summarize([file("../etc/passwd", 1)])
    with pytest.raises(LayerContentError):
        summarize([file("a/../../b", 1)])
    with pytest.raises(LayerContentError):
        summarize([file("a", -1)])


def test_empty_layers():
    assert wasted().wasted_bytes == 0
    assert wasted([], [directory("x")], []).layer_wasted_bytes == (0, 0, 0)


# --- the node figure ---


def test_node_counts_a_layer_only_if_hidden_in_every_image_using_it():
    base = summarize([file("a", 10), file("b", 20)])
    hides_a = summarize([whiteout("a")])
    other = summarize([file("c", 1)])
    result = node_wasted({"img1": [("sha256:base", base), ("sha256:c1", hides_a)], "img2": [("sha256:base", base)]})
    assert result.image_wasted_bytes == {"img1": 10, "img2": 0}
    assert result.wasted_bytes == 0
    result = node_wasted(
        {
            "img1": [("sha256:base", base), ("sha256:c1", hides_a)],
            "img2": [("sha256:base", base), ("sha256:c2", hides_a), ("sha256:c3", other)],
        }
    )
    assert result.wasted_bytes == 10  # hidden in both: counted once, not twice
    assert result.layer_wasted_bytes["sha256:base"] == 10


def test_node_same_diff_at_two_chain_positions_counts_per_chain_id():
    base = summarize([file("a", 10)])
    hider = summarize([whiteout("a")])
    images = {
        "img1": [("sha256:base", base), ("sha256:h1", hider)],
        "img2": [("sha256:other", summarize([file("z", 1)])), ("sha256:base-on-other", base), ("sha256:h2", hider)],
    }
    result = node_wasted(images)
    assert result.wasted_bytes == 20
    assert result.image_wasted_bytes == {"img1": 10, "img2": 10}


def test_node_takes_waste_the_caller_kept():
    base = summarize([file("a", 10)])
    images = {"img": [("sha256:base", base), ("sha256:h", summarize([whiteout("a")]))]}
    kept = {"img": image_wasted([s for _, s in images["img"]])}
    assert node_wasted(images, kept) == node_wasted(images)
    with pytest.raises(ValueError):
        node_wasted({"img": images["img"][:1]}, kept)


def test_hidden_everywhere_gives_the_node_figure_layer_by_layer():
    base = summarize([file("a", 10), file("b", 20)])
    hides_a, hides_b = summarize([whiteout("a")]), summarize([whiteout("b")])
    images = {
        "img1": [("sha256:base", base), ("sha256:c1", hides_a)],
        "img2": [("sha256:base", base), ("sha256:c2", hides_a), ("sha256:c3", hides_b)],
    }
    computed = {image: image_wasted([s for _, s in layers]) for image, layers in images.items()}
    masks = hidden_everywhere({image: [c for c, _ in layers] for image, layers in images.items()}, computed)
    assert masks == {"sha256:base": 0b01, "sha256:c1": 0, "sha256:c2": 0, "sha256:c3": 0}
    assert base.bytes_of(masks["sha256:base"]) == node_wasted(images).wasted_bytes == 10
    with pytest.raises(ValueError):
        hidden_everywhere({"img1": ["sha256:base"]}, computed)


# --- memory ---


def test_summary_size_per_file():
    entries = [directory(f"usr/share/doc/pkg{d}") for d in range(500)]
    entries += [file(f"usr/share/doc/pkg{n % 500}/file{n}.txt", n) for n in range(10_000)]
    summary = summarize(entries)
    assert summary.file_count == 10_000
    assert summary.nbytes() / summary.file_count <= 32


def test_summary_arrays_are_checked():
    summary = summarize([file("a", 1)])
    with pytest.raises(ValueError):
        fields = {name: getattr(summary, name) for name in LayerSummary.__dataclass_fields__}
        LayerSummary(**{**fields, "file_sizes": summary.dir_hashes})


# --- property: the same figure as a literal merge ---

_NAMES = ("a", "b", "c")
_PATHS = ["/".join(parts) for depth in (1, 2, 3) for parts in itertools.product(_NAMES, repeat=depth)]


def _parents(path):
    parent = path.rpartition("/")[0]
    while parent:
        yield parent
        parent = parent.rpartition("/")[0]


_OPS = st.tuples(
    st.sampled_from(["file", "dir", "symlink", "hardlink", "whiteout", "opaque"]),
    st.sampled_from(_PATHS + [""]),
    st.integers(0, 1000),
)


def _consistent_layer(ops):
    """Entries of one layer with no conflict inside it (a layer's own conflicts are undefined)."""
    nondirs: set[str] = set()
    dirs: set[str] = set()
    tar_paths: set[str] = set()
    entries: list[TarEntry] = []
    for kind, path, size in ops:
        if kind == "file":
            entry = file(path, size)
        elif kind in ("symlink", "hardlink"):
            entry = TarEntry(path, kind, 0)
        elif kind == "dir":
            entry = directory(path)
        elif kind == "whiteout":
            entry = whiteout(path)
        else:
            entry = opaque(path)
        if (path == "" and kind != "opaque") or entry.path in tar_paths:
            continue
        implied = set(_parents(entry.path))
        if implied & nondirs or (kind in ("file", "symlink", "hardlink") and path in dirs):
            continue
        tar_paths.add(entry.path)
        dirs |= implied | ({path} if kind == "dir" else set())
        if kind in ("file", "symlink", "hardlink"):
            nondirs.add(path)
        entries.append(entry)
    return entries


def _reference_visible_bytes(layers):
    """Apply the layers bottom-up to a dict, rule by rule, and sum what is left."""
    merged: dict[str, TarEntry] = {}

    def remove(path, itself):
        for other in list(merged):
            if (itself and other == path) or other.startswith(path + "/") or (path == "" and other):
                del merged[other]

    for entries in layers:
        whiteouts = [e.path.replace(".wh.", "") for e in entries if ".wh." in e.path and "..opq" not in e.path]
        opaques = [e.path.rpartition("/")[0] for e in entries if e.path.endswith(".wh..wh..opq")]
        normal = [e for e in entries if ".wh." not in e.path]
        for path in whiteouts:
            remove(path, True)
        for path in opaques:
            remove(path, False)
        implied_dirs = {p for e in entries for p in _parents(e.path)}
        implied_dirs |= {e.path for e in normal if e.kind == "dir"} | {p for p in opaques if p}
        for path in sorted(implied_dirs, key=lambda p: p.count("/")):
            if path in merged and merged[path].kind != "dir":
                del merged[path]
            merged.setdefault(path, directory(path))
        for entry in normal:
            if entry.kind != "dir":
                remove(entry.path, True)
                merged[entry.path] = entry
    return sum(e.size for e in merged.values() if e.kind == "file")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(_OPS, max_size=12), max_size=5))
def test_wasted_equals_all_file_bytes_minus_the_merged_tree(layer_ops):
    layers = [_consistent_layer(ops) for ops in layer_ops]
    all_bytes = sum(e.size for layer in layers for e in layer if e.kind == "file" and ".wh." not in e.path)
    result = wasted(*layers)
    assert result.wasted_bytes == all_bytes - _reference_visible_bytes(layers)
    assert sum(result.layer_wasted_bytes) == result.wasted_bytes
    assert sum(h.size for h in largest_hidden([summarize(x) for x in layers], 10_000)) == result.wasted_bytes
