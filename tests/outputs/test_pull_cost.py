"""The pull-cost wire format: the question a report asks a node, the node's answer, and back."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from exporter.core.pull_cost import CONTAINERD, NodeHoldings, RemoteImage, RemoteLayer, holdings_for, pull_costs
from exporter.outputs.pull_cost import answer
from exporter.pull_cost_wire import holdings_dict, holdings_from_dict, holdings_queries, images_from_query


def d(name: str) -> str:
    return "sha256:" + name.encode().hex().ljust(64, "0")


def img(ref: str, *names: str) -> RemoteImage:
    layers = tuple(RemoteLayer(d("blob-" + n), 100 + i, d("diff-" + n)) for i, n in enumerate(names))
    return RemoteImage(ref, d("m-" + ref), d("c-" + ref), 7, layers)


APP, WORKER = img("localhost:5000/app:2", "base", "app"), img("reg.example/w@" + d("w"), "base", "w", "x")
NODE = NodeHoldings(
    CONTAINERD,
    chains={APP.chain_ids[0]: 1000, APP.chain_ids[1]: None, d("elsewhere"): 5},
    blobs=frozenset({APP.layers[0].digest, APP.config_digest, d("unrelated")}),
    diff_bytes={APP.layers[0].diff_id: 1000, d("diff-other"): 3},
    diff_sized=True,
    listed={"localhost:5000/app:2": 1207, "other:1": 9},
)


def test_a_question_names_the_ordered_layers_and_the_node_rebuilds_them():
    (query,) = holdings_queries([APP, WORKER])
    assert query[0] == ("image", f"localhost:5000/app:2,{APP.config_digest}")
    asked = images_from_query(query)
    assert [i.ref for i in asked] == [APP.ref, WORKER.ref]
    assert [i.chain_ids for i in asked] == [APP.chain_ids, WORKER.chain_ids]
    assert [[lay.digest for lay in i.layers] for i in asked] == [
        [lay.digest for lay in i.layers] for i in (APP, WORKER)
    ]


def test_long_lists_are_split_by_image_under_the_limit():
    images = [img(f"r/app:{i}", *(f"l{i}-{j}" for j in range(10))) for i in range(20)]
    queries = holdings_queries(images, limit=4000)
    assert len(queries) > 1
    assert all(len(urllib.parse.urlencode(q)) <= 4000 for q in queries)
    assert [i.ref for q in queries for i in images_from_query(q)] == [i.ref for i in images]
    # One image longer than the limit is still asked whole.
    (one,) = holdings_queries(images[:1], limit=10)
    assert len(images_from_query(one)[0].layers) == 10


def test_the_node_answers_its_holdings_for_the_images_asked():
    status, body = answer(NODE, urllib.parse.urlencode(holdings_queries([APP])[0]))
    assert status == 200
    data = json.loads(body)
    assert data == holdings_dict(holdings_for(NODE, [APP]))
    assert data["chains"] == {APP.chain_ids[0]: 1000, APP.chain_ids[1]: None}
    assert data["listed"] == {"localhost:5000/app:2": 1207}
    back = holdings_from_dict(data)
    assert back == holdings_for(NODE, [APP])
    assert pull_costs([APP], back) == pull_costs([APP], NODE)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "no image asked"),
        ("layer=" + d("a") + "," + d("b"), "a layer before any image"),
        ("image=app:1", "is not REF,CONFIG_DIGEST"),
        ("image=app:1," + d("c") + "&layer=nodigest," + d("b"), "is not DIFF_ID,BLOB_DIGEST"),
        ("image=app:1," + d("c") + "&size=3", "unknown parameter 'size'"),
        ("image=app%201," + d("c"), "is not REF,CONFIG_DIGEST"),
        ("image", "bad query"),
    ],
)
def test_a_bad_question_is_a_400_naming_the_fault(query: str, message: str):
    status, body = answer(NODE, query)
    assert status == 400 and message in json.loads(body)["error"]


def test_too_many_layers_in_one_question_is_refused():
    big = img("r/big:1", *(str(i) for i in range(4097)))
    status, body = answer(NODE, urllib.parse.urlencode(holdings_queries([big])[0]))
    assert status == 400 and "more than 4096 layers" in json.loads(body)["error"]


def test_before_the_runtime_answered_the_node_says_so():
    status, body = answer(None, urllib.parse.urlencode(holdings_queries([APP])[0]))
    assert status == 503 and "not answered" in json.loads(body)["error"]


@pytest.mark.parametrize(
    "data",
    [
        [],
        {"model": "docker"},
        {**holdings_dict(NODE), "model": "docker"},
        {**holdings_dict(NODE), "chains": {"a": -1}},
        {**holdings_dict(NODE), "blobs": "x"},
        {**holdings_dict(NODE), "diff_sized": 1},
        {**holdings_dict(NODE), "listed": {"a": True}},
    ],
)
def test_an_answer_that_is_not_holdings_is_refused(data: object):
    with pytest.raises(ValueError):
        holdings_from_dict(data)
