"""`pull-cost REF...`: flags, refusals (one line naming the reference) and the output shapes.

The figures against real pulls are in tests/integration/test_pull_cost.py; here the
registry is the loopback one and the runtime is never reached (a reference that
cannot be resolved stops the command before it asks the runtime).
"""

from __future__ import annotations

import json

import pytest

from exporter.cli.args import build_parser
from exporter.cli.main import main
from exporter.core.pull_cost import NodeHoldings, PullCost
from exporter.outputs import pull_cost as out
from exporter.pull_cost_wire import holdings_dict
from tests.harness.images import ImageSpec, data_layer
from tests.harness.registry import Registry

# A socket nobody listens on: reaching the runtime would fail the test with exit 1 and another message.
NO_RUNTIME = ("--runtime-endpoint", "unix:///nonexistent/pull-cost-test.sock")


@pytest.fixture
def registry():
    served = Registry().start()
    yield served
    served.stop()


def _one_line(err: str) -> str:
    assert err.count("\n") == 1, err
    return err


def test_the_subcommand_and_its_flags():
    args = build_parser().parse_args(["pull-cost", "a:1", "b@sha256:" + "0" * 64, "-o", "json", "--timeout", "3"])
    assert (args.command, args.refs, args.output, args.timeout, args.platform) == (
        "pull-cost",
        ["a:1", "b@sha256:" + "0" * 64],
        "json",
        3.0,
        "",
    )


@pytest.mark.parametrize("ref", ["Upper/case:1", "x/y:bad!", "x/y@md5:abc", "x:", "a b", "x//y"])
def test_a_malformed_reference_exits_2(capsys, ref: str):
    assert main(["pull-cost", *NO_RUNTIME, "localhost:5000/fine:1", ref]) == 2
    assert repr(ref) in _one_line(capsys.readouterr().err)


def test_bad_flags_exit_2(capsys):
    assert main(["pull-cost", *NO_RUNTIME, "--platform", "linux", "x/y:1"]) == 2
    assert "os/architecture" in _one_line(capsys.readouterr().err)
    assert main(["pull-cost", *NO_RUNTIME, "--registry-endpoint", "docker.io", "x/y:1"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["pull-cost"])
    assert exc.value.code == 2


def test_an_unknown_reference_exits_1_naming_it(capsys, registry: Registry):
    present = registry.push("team/app", "1", ImageSpec(["x"], [data_layer("cli-pc", 100)]).build())
    absent = f"{registry.host}/team/app:2"
    assert main(["pull-cost", *NO_RUNTIME, present, absent]) == 1
    err = _one_line(capsys.readouterr().err)
    assert err.startswith(f"layer-sharing-exporter pull-cost: {absent}: ") and "404" in err


def test_a_registry_error_exits_1_naming_the_reference(capsys, registry: Registry):
    registry.fail_with["team/down"] = 503
    ref = f"{registry.host}/team/down:1"
    assert main(["pull-cost", *NO_RUNTIME, ref]) == 1
    err = _one_line(capsys.readouterr().err)
    assert ref in err and "503" in err
    unreachable = "127.0.0.1:9/x:1"
    assert main(["pull-cost", *NO_RUNTIME, "--timeout", "2", unreachable]) == 1
    assert unreachable in _one_line(capsys.readouterr().err)


def test_a_runtime_that_does_not_answer_exits_1(capsys, registry: Registry):
    ref = registry.push("team/app", "1", ImageSpec(["x"], [data_layer("cli-pc-rt", 100)]).build())
    assert main(["pull-cost", *NO_RUNTIME, "--rpc-timeout", "1", ref]) == 1
    assert "runtime did not answer" in _one_line(capsys.readouterr().err)


def test_json_has_exactly_the_documented_fields():
    costs = (PullCost("a:1", 10, 1, 2, None), PullCost("b:1", 0, 0, 0, 0))
    doc = json.loads(out.to_json(costs, PullCost("", 10, 1, 2, None)))
    assert doc == {
        "images": [
            {"ref": "a:1", "fetch_bytes": 10, "fetch_layers": 1, "unpack_layers": 2, "unpack_bytes": None},
            {"ref": "b:1", "fetch_bytes": 0, "fetch_layers": 0, "unpack_layers": 0, "unpack_bytes": 0},
        ],
        "total": {"fetch_bytes": 10, "fetch_layers": 1, "unpack_layers": 2, "unpack_bytes": None},
    }


def test_the_table_shows_exact_bytes_and_unknowns():
    text = out.to_table(
        (PullCost("a:1", 1_500_000, 1, 2, None),), PullCost("total", 1_500_000, 1, 2, None), "linux/amd64", "x"
    )
    lines = text.splitlines()
    assert lines[1].split() == ["REFERENCE", "FETCH", "FETCH", "LAYERS", "UNPACK", "LAYERS", "UNPACK"]
    assert lines[2].split() == ["a:1", "1.5MB", "(1500000)", "1", "2", "unknown"]
    assert lines[3].split()[0] == "total"


def test_a_nodes_answer_round_trips_through_json():
    holdings = NodeHoldings(
        "containerd",
        chains={"sha256:c1": 10, "sha256:c2": None},
        blobs=frozenset({"sha256:b"}),
        diff_bytes={"sha256:d": 10},
        diff_sized=True,
        keeps_layer_blobs=False,
    )
    doc = json.loads(json.dumps(holdings_dict(holdings)))
    rebuilt = NodeHoldings(
        doc["model"],
        doc["chains"],
        frozenset(doc["blobs"]),
        doc["diff_bytes"],
        doc["diff_sized"],
        doc["keeps_layer_blobs"],
    )
    assert rebuilt == holdings
