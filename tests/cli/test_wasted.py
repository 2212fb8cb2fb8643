"""`wasted REF...` against the loopback registry (a real HTTP registry on 127.0.0.1):
hand-computed figures, each distinct layer read once, a second run reading none,
and clear refusals. tests/integration/test_wasted.py checks the figures against a
real containerd node's."""

from __future__ import annotations

import base64
import gzip
import json
import re
import time
from pathlib import Path

import pytest

from exporter.cli.main import main
from tests.harness.images import Blob, ImageSpec, Layer
from tests.harness.registry import Registry, Served

# Both images stand on BOTTOM: a.bin (1,000 bytes) and b.bin (500).
BOTTOM = Layer({"data/a.bin": b"a" * 1000, "data/b.bin": b"b" * 500}, "COPY a b")
# `deleting` removes a.bin and overwrites b.bin: 1,500 bytes hidden.
DELETE_A = Layer({"data/.wh.a.bin": b""}, "RUN rm a.bin")
NEW_B = Layer({"data/b.bin": b"B" * 10}, "COPY b")
# `overwriting` overwrites b.bin only: 500 bytes hidden.
OTHER_B = Layer({"data/b.bin": b"x" * 20}, "COPY b")


def served_after_the_last_body(registry: Registry, layer_gets: int) -> Served:
    """The registry counts a body once it is written, a moment after the client has it all."""
    deadline = time.monotonic() + 5
    while registry.served().layer_gets < layer_gets and time.monotonic() < deadline:
        time.sleep(0.01)
    return registry.served()


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    served = Registry(auth=("robot", "pw"), bearer=True).start()
    auth = base64.b64encode(b"robot:pw").decode()
    (tmp_path / "config.json").write_text(json.dumps({"auths": {served.host: {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    yield served
    served.stop()


def test_figures_from_the_registry_each_layer_once_and_a_second_run_reads_none(registry, tmp_path, capsys):
    deleting = ImageSpec(["deleting:1"], [BOTTOM, DELETE_A, NEW_B]).build()
    overwriting = ImageSpec(["overwriting:1"], [BOTTOM, OTHER_B]).build()
    refs = [registry.push("team/deleting", "1", deleting), registry.push("team/overwriting", "1", overwriting)]
    cache = tmp_path / "cache"
    argv = ["wasted", *refs, "--cache-dir", str(cache), "--output", "json"]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert [(i["ref"], i["image_id"], i["wasted_bytes"], i["layer_wasted_bytes"]) for i in result["images"]] == [
        (refs[0], deleting.image_id, 1500, [1500, 0, 0]),
        (refs[1], overwriting.image_id, 500, [500, 0]),
    ]
    # Over the distinct layers: only b.bin of BOTTOM is hidden in every image using it.
    assert result["wasted_bytes"] == 500
    assert (result["layers"], result["layers_fetched"]) == (4, 4)
    served = served_after_the_last_body(registry, layer_gets=4)
    assert served.layer_gets == 4  # BOTTOM once, though both images have it
    assert served.gets[deleting.layers[0].digest] == 1

    registry.reset_counts()
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["images"] == result["images"] and again["layers_fetched"] == 0
    assert registry.served().layer_gets == 0

    assert main(["wasted", refs[0], "--cache-dir", str(cache)]) == 0
    table = capsys.readouterr().out
    assert "WASTED" in table and "1.5kB" in table


def test_an_unreadable_image_is_said_and_the_others_still_get_figures(registry, tmp_path, capsys):
    good = ImageSpec(["good:1"], [BOTTOM, DELETE_A]).build()
    bad = ImageSpec(["bad:1"], [BOTTOM, OTHER_B]).build()
    good_ref, bad_ref = registry.push("team/good", "1", good), registry.push("team/bad", "1", bad)
    del registry.blobs[bad.layers[1].digest]  # the registry lost a layer blob
    missing = f"{registry.host}/team/none:1"
    argv = ["wasted", good_ref, bad_ref, missing, "--no-cache", "--output", "json"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    rows = {i["ref"]: i for i in json.loads(captured.out)["images"]}
    assert rows[good_ref]["wasted_bytes"] == 1000
    assert rows[bad_ref]["wasted_bytes"] is None and bad.layers[1].digest in rows[bad_ref]["error"]
    assert rows[missing]["image_id"] is None and "404" in rows[missing]["error"]
    assert f"{bad_ref}: layer {bad.diff_ids[1]}" in captured.err


def test_a_blob_that_is_not_what_the_manifest_says_gives_no_figure(registry, capsys):
    image = ImageSpec(["tampered:1"], [BOTTOM, DELETE_A]).build()
    ref = registry.push("team/tampered", "1", image)
    blob = registry.blobs[image.layers[1].digest]
    # The same layer compressed otherwise: its diff ID holds, its blob digest does not.
    recompressed = gzip.compress(gzip.decompress(blob.data), compresslevel=1, mtime=1)
    registry.blobs[image.layers[1].digest] = Blob(blob.media_type, recompressed)
    assert main(["wasted", ref, "--no-cache", "--output", "json"]) == 1
    row = json.loads(capsys.readouterr().out)["images"][0]
    assert row["wasted_bytes"] is None
    assert re.search(r"do not match the digest|more than the \d+ bytes the manifest says", row["error"])


def test_bad_arguments_exit_2(capsys):
    assert main(["wasted", "--platform", "linux", "x/y:1"]) == 2
    assert "os/architecture" in capsys.readouterr().err
    assert main(["wasted", "--registry-endpoint", "docker.io", "x/y:1"]) == 2
    assert main(["wasted", "X/Y:1"]) == 2
