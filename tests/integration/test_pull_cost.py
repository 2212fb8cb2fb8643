"""`pull-cost` against real pulls: predict, pull exactly as the kubelet would (CRI
PullImage), and compare with what the loopback registry counted serving and what
the layer store gained.

containerd 1.6 (the session's), 1.7 and 2.x (Debian packages), each with
`discard_unpacked_layers` off (the default) and on; containers/storage with
`podman pull`. Scenarios, in order on one node: nothing present yet; the same
image again; a new version sharing a base; a layer whose content is present but
on another parent; an image sharing nothing; several references at once (a
blob fetched for one is not fetched again for the next).

Checks per reference: fetch_bytes == blob bytes the registry sent (configs and
layers), fetch_layers == layer GETs, unpack_layers == the new snapshots (the
very chain IDs), unpack_bytes (when known) == what those snapshots take.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from exporter.cli.args import build_parser
from exporter.cli.runtime import runtime_source
from exporter.config import resolve as resolve_config
from exporter.core.facts import NodeFacts
from exporter.core.pull_cost import RemoteImage, RemoteLayer, holdings_for, holdings_from_facts, repull_report
from tests.harness.containerd import Containerd
from tests.harness.containers_storage import Podman, write_single_ref_tar
from tests.harness.images import BuiltImage, ImageSpec, busybox_layer, data_layer, empty_layer
from tests.harness.pods import PodMaker
from tests.harness.registry import Registry, Served
from tests.harness.releases import ReleaseUnavailableError, containerd_release
from tests.integration.conftest import run_cli

SIZE = 200_000  # incompressible bytes per data layer: sizes are easy to tell apart


def _images() -> dict[str, BuiltImage]:
    bb = busybox_layer()
    a, b, c, e, f, g, h, i, j, k = (data_layer(f"pc-{n}", SIZE + m * 1000) for m, n in enumerate("abcefghijk"))
    specs = {
        "app:1": [bb, a, b],
        "app:2": [bb, a, c],  # a new version: the base (bb, a) is present
        "moved:1": [bb, b],  # b's diff again, on another parent: its blob is present, its chain is not
        "lone:1": [f, g, empty_layer()],  # shares nothing
        "svc:1": [bb, a, h],
        "svc:2": [bb, a, h, i],  # svc:1's chains and one more
        "other:1": [bb, e, h],  # h's blob (fetched for svc:1) on another parent
        "multi:1": [bb, a, j],  # served in an index beside multi-arm:1
    }
    images = {name: ImageSpec([f"x/{name}"], layers).build() for name, layers in specs.items()}
    images["multi-arm:1"] = ImageSpec(["x/multi-arm"], [k], architecture="arm64").build()
    return images


# Each step pulls these references in order (one pull-cost run per step).
STEPS = (
    ("nothing present", ("app:1",)),
    ("already present", ("app:1",)),
    ("new version sharing a base", ("app:2",)),
    ("same content on another parent", ("moved:1",)),
    ("nothing shared", ("lone:1",)),
    ("a multi-platform index", ("multi:1",)),
    ("several references together", ("svc:1", "svc:2", "other:1")),
)


def _push(registry: Registry, name: str, image: BuiltImage) -> str:
    repository, _, tag = name.partition(":")
    return registry.push(repository, tag, image)


def _push_all(registry: Registry, images: dict[str, BuiltImage]) -> dict[str, str]:
    """Every image by its name; multi:1 as an index of linux/amd64 (multi:1) and linux/arm64 (multi-arm:1)."""
    refs = {name: _push(registry, name, image) for name, image in images.items() if not name.startswith("multi")}
    platforms = {"amd64": images["multi:1"], "arm64": images["multi-arm:1"]}
    refs["multi:1"] = registry.push_index("multi", "1", platforms)[0]
    return refs


def _chain_ids(diff_ids: tuple[str, ...]) -> list[str]:
    chains: list[str] = []
    for diff_id in diff_ids:
        chains.append("sha256:" + hashlib.sha256(f"{chains[-1]} {diff_id}".encode()).hexdigest() if chains else diff_id)
    return chains


def _pull_cost(*args: str) -> dict[str, object]:
    result = run_cli("pull-cost", "--output", "json", *args)
    assert result.returncode == 0, result.stderr
    data: dict[str, object] = json.loads(result.stdout)
    return data


@dataclass
class Node:
    containerd: Containerd
    registry: Registry
    images: dict[str, BuiltImage]
    refs: dict[str, str]


def _configure_registry(containerd: Containerd, registry: Registry) -> None:
    """containerd 2.x pulls a plain-HTTP loopback registry only when its hosts.toml says so
    (1.x treats localhost as plain HTTP by itself)."""
    containerd.write_config()
    if containerd.binaries.major() < 2:
        return
    hosts = containerd.workdir / "certs.d"
    host_dir = hosts / registry.host
    host_dir.mkdir(parents=True)
    url = f"http://{registry.host}"
    (host_dir / "hosts.toml").write_text(f'server = "{url}"\n[host."{url}"]\n  capabilities = ["pull", "resolve"]\n')
    with containerd.config_path.open("a") as config:
        config.write(f"[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = \"{hosts}\"\n")


@pytest.fixture(
    params=[("1.6", False), ("1.6", True), ("1.7", False), ("1.7", True), ("2", False), ("2", True)],
    ids=lambda p: f"containerd-{p[0]}{'-discard' if p[1] else ''}",
)
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Node]:
    series, discard = request.param
    try:
        binaries = containerd_release(series)
    except ReleaseUnavailableError as exc:
        pytest.fail(f"could not get containerd {series} from Debian: {exc}")
    assert binaries.version().startswith(series)
    registry = Registry().start()
    containerd = Containerd(tmp_path / "containerd", binaries=binaries, discard_unpacked_layers=discard)
    try:
        _configure_registry(containerd, registry)
        containerd.start()
        images = _images()
        refs = _push_all(registry, images)
        yield Node(containerd, registry, images, refs)
    finally:
        containerd.cleanup()
        registry.stop()


def _discarded(node: Node, name: str) -> None:
    """With discard_unpacked_layers, wait for the garbage collection that drops the pulled layer
    blobs. It is scheduled after the pull's lease ends (within milliseconds here), not awaited by
    the pull: the model is the node between pulls, so the test waits for it rather than race it."""
    if not node.containerd.discard_unpacked_layers:
        return
    layers = {blob.digest for blob in node.images[name].layers}
    deadline = time.monotonic() + 30
    while layers & node.containerd.content_digests():
        assert time.monotonic() < deadline, f"{name}: layer blobs still present 30 s after the pull"
        time.sleep(0.05)


def _committed(containerd: Containerd) -> dict[str, int]:
    """Committed snapshots (named by chain ID) and their bytes, as containerd counts them."""
    usage = containerd.snapshot_usage()
    return {key: size for key, (size, _) in usage.items() if key.startswith("sha256:")}


def _check(prediction: dict[str, object], served: Served, new: dict[str, int], what: str) -> None:
    assert prediction["fetch_bytes"] == served.blob_bytes, what
    assert prediction["fetch_layers"] == served.layer_gets, what
    assert prediction["unpack_layers"] == len(new), what
    if prediction["unpack_bytes"] is not None:
        assert prediction["unpack_bytes"] == sum(new.values()), what
    # Nothing is downloaded twice within one pull.
    assert all(count == 1 for count in served.gets.values()), (what, served.gets)


def test_containerd_pulls_what_pull_cost_predicts(node: Node):
    endpoint = ("--runtime-endpoint", node.containerd.endpoint)
    maker = PodMaker(node.containerd.endpoint, str(node.containerd.pod_logs))
    discard = node.containerd.discard_unpacked_layers
    try:
        for scenario, names in STEPS:
            refs = [node.refs[name] for name in names]
            prediction = _pull_cost(*endpoint, *refs)
            images = prediction["images"]
            assert isinstance(images, list) and [i["ref"] for i in images] == refs
            step_served = Served()
            for name, predicted in zip(names, images, strict=True):
                before, chains_before = node.registry.served(), _committed(node.containerd)
                assert maker.pull_image(node.refs[name]) == node.images[name].image_id
                _discarded(node, name)
                served, chains_after = node.registry.served() - before, _committed(node.containerd)
                new = {k: v for k, v in chains_after.items() if k not in chains_before}
                _check(predicted, served, new, f"{scenario}: {name}")
                assert set(new) <= set(_chain_ids(node.images[name].diff_ids)), scenario
                step_served = Served(
                    step_served.blob_bytes + served.blob_bytes, step_served.layer_gets + served.layer_gets
                )
            total = prediction["total"]
            assert isinstance(total, dict) and set(total) == {
                "fetch_bytes",
                "fetch_layers",
                "unpack_layers",
                "unpack_bytes",
            }
            assert (total["fetch_bytes"], total["fetch_layers"]) == (step_served.blob_bytes, step_served.layer_gets)
            _expectations(scenario, node, images, discard)
    finally:
        maker.close()


def _expectations(scenario: str, node: Node, images: list[dict[str, object]], discard: bool) -> None:
    """What each scenario is about, so a check above cannot pass by pulling nothing."""
    first = images[0]
    config = len(node.images[str(first["ref"]).rsplit("/", 1)[1]].config.data)
    if scenario == "nothing present":
        assert first["fetch_layers"] == first["unpack_layers"] == 3
    elif scenario == "already present":
        assert first == {**first, "fetch_bytes": 0, "fetch_layers": 0, "unpack_layers": 0, "unpack_bytes": 0}
    elif scenario == "new version sharing a base":
        assert (first["fetch_layers"], first["unpack_layers"]) == (1, 1)
    elif scenario == "same content on another parent":
        # The chain is new; the blob is still in the content store unless it was discarded after unpacking.
        assert first["unpack_layers"] == 1
        assert first["fetch_layers"] == (1 if discard else 0)
        assert first["fetch_bytes"] > config if discard else first["fetch_bytes"] == config
        assert first["unpack_bytes"] is not None  # the same diff's snapshot, on overlayfs
    elif scenario == "nothing shared":
        assert (first["fetch_layers"], first["unpack_layers"], first["unpack_bytes"]) == (3, 3, None)
    elif scenario == "a multi-platform index":
        # This platform's config and its one new layer; nothing of the other platform.
        assert first["fetch_bytes"] == config + len(node.images["multi:1"].layers[2].data)
        assert (first["fetch_layers"], first["unpack_layers"]) == (1, 1)
    else:
        # h once; i; then e, and h's blob again only where svc:1's pull discarded it.
        assert [i["fetch_layers"] for i in images] == [1, 1, 2 if discard else 1]
        assert [i["unpack_layers"] for i in images] == [1, 1, 2]


def _remote(ref: str, image: BuiltImage) -> RemoteImage:
    layers = tuple(RemoteLayer(b.digest, len(b.data), d) for b, d in zip(image.layers, image.diff_ids, strict=True))
    return RemoteImage(ref, image.manifest.digest, image.config.digest, len(image.config.data), layers)


def test_the_targeted_read_holds_what_a_whole_refresh_holds(node: Node):
    """`pull-cost` asks containerd only about the requested images' chains, blobs and diffs;
    what it finds equals a whole refresh restricted to those images: present chains and
    their bytes, a shared base, a diff stored on other parents (its bytes), layer blobs
    kept or discarded, configs of listed images, and the names ImageLocality sees."""
    maker = PodMaker(node.containerd.endpoint, str(node.containerd.pod_logs))
    try:
        for name in ("app:1", "moved:1", "lone:1", "svc:1"):
            maker.pull_image(node.refs[name])
            _discarded(node, name)
    finally:
        maker.close()
    f, b = node.images["lone:1"].layers[0], node.images["app:1"].layers[2]
    # b's diff on a third parent: stored twice already (on app:1's and moved:1's parents).
    third = ImageSpec(["x/third"], [data_layer("pc-f", SIZE + 4000), data_layer("pc-b", SIZE + 1000)]).build()
    assert (third.layers[0].digest, third.layers[1].digest) == (f.digest, b.digest)
    # Present: lone:1 whole, app:2's base; h's and b's diffs only on other parents than these images'.
    refs = [*(node.refs[n] for n in ("app:2", "other:1", "lone:1")), _push(node.registry, "third:1", third)]
    images = [_remote(ref, node.images.get(ref.rsplit("/", 1)[1], third)) for ref in refs]
    config = resolve_config(build_parser().parse_args(["df", "--runtime-endpoint", node.containerd.endpoint]))
    runtime = runtime_source(config)
    try:
        targeted = runtime.pull_holdings(images)
        calls = runtime.calls
        whole = holdings_for(holdings_from_facts(runtime.snapshot()), images)
    finally:
        runtime.close()
    assert targeted.holdings == whole
    assert (targeted.layer_store, targeted.snapshotter) == ("containerd", "overlayfs")
    # Not vacuous: each kind of fact is there to compare.
    discard = node.containerd.discard_unpacked_layers
    h = node.images["svc:1"].layers[2]
    assert whole.keeps_layer_blobs is not discard
    assert (h.digest in whole.blobs, b.digest in whole.blobs) == (not discard, not discard)
    assert {node.images["app:1"].diff_ids[2], node.images["svc:1"].diff_ids[2]} <= whole.diff_bytes.keys()
    assert set(_chain_ids(node.images["app:2"].diff_ids)[:2]) <= whole.chains.keys()
    assert node.images["lone:1"].image_id in whole.blobs and node.images["app:2"].image_id not in whole.blobs
    assert whole.listed.keys() == {node.refs["lone:1"]}
    # Asked about those images only: no image's details, no pod, no container.
    assert not {m.rsplit("/", 1)[1] for m in calls} & {"ImageStatus", "ListPodSandbox", "ListContainers"}
    assert calls["/containerd.services.snapshots.v1.Snapshots/List"] == 1  # the diffs on other parents


# -- containers/storage --------------------------------------------------------


@pytest.fixture
def podman_node(tmp_path: Path) -> Iterator[tuple[Podman, Containerd, Registry]]:
    registry = Registry().start()
    store = Podman(tmp_path / "podman")
    containerd = Containerd(tmp_path / "containerd")
    try:
        containerd.start()
        yield store, containerd, registry
    finally:
        containerd.cleanup()
        store.cleanup()
        registry.stop()


def _layers(store: Podman) -> dict[str, dict[str, object]]:
    try:
        return {str(layer["id"]): layer for layer in store.layers()}
    except FileNotFoundError:
        return {}


def test_podman_pulls_what_pull_cost_predicts(podman_node: tuple[Podman, Containerd, Registry]):
    """CRI-O's store, written by `podman pull` from the same registry. CRI (images and their
    diff IDs) comes from a containerd that holds the same images as the store, imported
    without a registry; the layers, blobs and bytes come from the store's own files."""
    store, containerd, registry = podman_node
    images = _images()
    refs = _push_all(registry, images)
    flags = (
        "--runtime-endpoint",
        containerd.endpoint,
        "--layer-store",
        "containers-storage",
        "--storage-root",
        str(store.root),
    )
    (store.root / "overlay-layers").mkdir(parents=True)
    (store.root / "overlay-layers" / "layers.json").write_text("[]")
    (store.root / "overlay-images").mkdir(parents=True)
    (store.root / "overlay-images" / "images.json").write_text("[]")
    for scenario, names in STEPS:
        prediction = _pull_cost(*flags, *(refs[name] for name in names))
        predicted_images = prediction["images"]
        assert isinstance(predicted_images, list)
        for name, predicted in zip(names, predicted_images, strict=True):
            before, layers_before = registry.served(), _layers(store)
            store.run("pull", "--tls-verify=false", refs[name])
            served, layers_after = registry.served() - before, _layers(store)
            new = {k: int(str(v.get("diff-size", 0))) for k, v in layers_after.items() if k not in layers_before}
            _check(predicted, served, new, f"podman, {scenario}: {name}")
            # The CRI side learns of the image as CRI-O would list it.
            tar = write_single_ref_tar(images[name], refs[name], store.archives / f"{name.replace(':', '-')}.tar")
            containerd.import_image(tar)
        first = predicted_images[0]
        config = len(images[names[0]].config.data)
        if scenario == "already present":
            # c/image reads the config again; nothing else.
            assert (first["fetch_bytes"], first["fetch_layers"], first["unpack_layers"]) == (config, 0, 0)
        if scenario == "same content on another parent":
            # The blob is reused, the layer made again from it, its bytes those of the same diff.
            assert (first["fetch_bytes"], first["fetch_layers"], first["unpack_layers"]) == (config, 0, 1)
            assert first["unpack_bytes"] is not None


def test_bad_references_exit_with_one_line(node_for_errors: tuple[Containerd, Registry]):
    containerd, registry = node_for_errors
    endpoint = ("--runtime-endpoint", containerd.endpoint)
    image = _images()["app:1"]
    good = registry.push("app", "1", image)
    missing = f"{registry.host}/absent:1"
    result = run_cli("pull-cost", *endpoint, good, missing)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and missing in result.stderr and "404" in result.stderr
    registry.fail_with["broken"] = 500
    broken = f"{registry.host}/broken:1"
    result = run_cli("pull-cost", *endpoint, broken)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and broken in result.stderr
    assert "500" in result.stderr
    result = run_cli("pull-cost", *endpoint, good, "Not/A:ref!")
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "'Not/A:ref!'" in result.stderr
    # A registry that does not answer at all.
    unreachable = "127.0.0.1:9/x:1"
    result = run_cli("pull-cost", *endpoint, "--timeout", "2", unreachable)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and unreachable in result.stderr


def test_each_manifest_and_config_is_read_once(node_for_errors: tuple[Containerd, Registry]):
    containerd, registry = node_for_errors
    images = _images()
    refs = [_push(registry, name, images[name]) for name in ("app:1", "app:2", "svc:1")]
    # The same image by tag and by digest, twice over, and an index over it.
    by_digest = f"{registry.host}/app@{images['app:1'].manifest.digest}"
    index_ref, index = registry.push_index("multi", "1", {"amd64": images["app:1"]})
    registry.requests.clear()
    data = _pull_cost("--runtime-endpoint", containerd.endpoint, *refs, by_digest, *refs, index_ref)
    gets = [r for r in registry.requests if r.startswith("GET ") and r != "GET /v2/"]
    blobs = [r.rsplit("/", 1)[1] for r in gets if "/blobs/" in r]
    assert len(blobs) == len(set(blobs)) == 3  # the three configs, once each; never a layer
    manifests = [r for r in gets if "/manifests/" in r]
    # Each tag once (the index's tag too), and nothing by digest: every digest was known by then.
    assert sorted(manifests) == sorted(
        [f"GET /v2/{name}/manifests/{tag}" for name, tag in (("app", "1"), ("app", "2"), ("svc", "1"), ("multi", "1"))]
    )
    assert index.digest  # the index was resolved to the app:1 manifest already read
    images_out = data["images"]
    assert isinstance(images_out, list) and len(images_out) == 8


@pytest.fixture
def node_for_errors(tmp_path: Path) -> Iterator[tuple[Containerd, Registry]]:
    registry = Registry().start()
    containerd = Containerd(tmp_path / "containerd")
    try:
        containerd.start()
        yield containerd, registry
    finally:
        containerd.cleanup()
        registry.stop()


# -- image GC's hidden cost ------------------------------------------------------


@pytest.fixture(params=[False, True], ids=["keep-blobs", "discard"])
def gc_node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Node]:
    registry = Registry().start()
    containerd = Containerd(tmp_path / "containerd", discard_unpacked_layers=request.param)
    try:
        containerd.start()
        images = _images()
        refs = _push_all(registry, images)
        yield Node(containerd, registry, images, refs)
    finally:
        containerd.cleanup()
        registry.stop()


def _facts(containerd: Containerd) -> NodeFacts:
    config = resolve_config(build_parser().parse_args(["df", "--runtime-endpoint", containerd.endpoint]))
    runtime = runtime_source(config)
    try:
        return runtime.snapshot()
    finally:
        runtime.close()


def test_repull_bytes_are_what_a_pull_after_gc_fetches(gc_node: Node):
    """Remove an image as GC would (its records, then a synchronous collection), pull it back
    through CRI, and count the layer bytes served; then every image at once."""
    node = gc_node
    names = ("app:1", "app:2", "moved:1", "lone:1")
    maker = PodMaker(node.containerd.endpoint, str(node.containerd.pod_logs))
    try:
        for name in names:
            maker.pull_image(node.refs[name])
            _discarded(node, name)
        ids = {name: node.images[name].image_id for name in names}
        report = repull_report(_facts(node.containerd), ids.values(), unused_ids=ids.values())
        # app:1 alone: its top chain goes, but moved:1 keeps b's blob (unless blobs are discarded).
        discard = node.containerd.discard_unpacked_layers
        assert report.images[ids["app:1"]] == (len(node.images["app:1"].layers[2].data) if discard else 0)
        for name in names:
            repository, _, tag = node.refs[name].rpartition(":")
            node.containerd.remove_image(repository, tag)
            before = node.registry.served()
            maker.pull_image(node.refs[name])
            assert report.images[ids[name]] == (node.registry.served() - before).layer_bytes, name
            _discarded(node, name)
        for name in names:
            repository, _, tag = node.refs[name].rpartition(":")
            node.containerd.remove_image(repository, tag)
        before = node.registry.served()
        for name in sorted(names, key=lambda n: ids[n]):  # the order the report takes them in
            maker.pull_image(node.refs[name])
            _discarded(node, name)
        assert report.unused == (node.registry.served() - before).layer_bytes
        assert report.unused and report.unused > max(v or 0 for v in report.images.values())
    finally:
        maker.close()
