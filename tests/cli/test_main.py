import pytest

from exporter.cli.main import main


def test_bad_flag_value_exits_2_naming_it(capsys, tmp_path):
    assert main(["serve", "--runtime-endpoint", "tcp://1.2.3.4:1"]) == 2
    assert "runtime_endpoint" in capsys.readouterr().err


def test_unknown_flag_exits_2():
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--nope"])
    assert exc.value.code == 2


def test_bad_config_file_exits_2(capsys, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("refresh_interval_seconds: -1\n")
    assert main(["df", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "refresh_interval_seconds" in err and len(err.strip().splitlines()) == 1


def test_df_on_a_missing_socket_says_so(capsys, tmp_path):
    assert main(["df", "--runtime-endpoint", str(tmp_path / "absent.sock"), "--rpc-timeout", "1"]) == 1
    assert "unreachable" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "layer-sharing-exporter" in capsys.readouterr().out


def test_report_refuses_an_unknown_view_before_asking_anything(capsys):
    assert main(["report", "--prometheus-url", "http://127.0.0.1:9", "--view", "colours"]) == 2
    err = capsys.readouterr().err
    assert "--view is one of nodes, bases, workloads, images" in err


def test_layer_store_flags_override_the_config_file(tmp_path):
    from exporter.cli.args import build_parser
    from exporter.config import resolve as resolve_config

    path = tmp_path / "c.yaml"
    path.write_text("layer_store: containerd\nstorage_root: /a\n")
    args = build_parser().parse_args(
        ["df", "--config", str(path), "--layer-store", "containers-storage", "--storage-root", "/b"]
    )
    config = resolve_config(args)
    assert (config.runtime.layer_store, config.runtime.containers_storage.storage_root) == ("containers-storage", "/b")
    assert resolve_config(build_parser().parse_args(["df"])).runtime.layer_store == "auto"


def test_two_catalog_entries_of_one_name_and_version_exit_2_naming_both(capsys, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "bases:\n"
        "  - {name: debian, version: '12', image: debian:12}\n"
        "  - {name: alpine, image: alpine:3}\n"
        "  - {name: debian, version: '12', image: debian:12-slim}\n"
    )
    assert main(["df", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bases[0] and bases[2] are both named 'debian' with version '12'" in err


def test_the_kubectl_plugin_takes_kubectls_global_flags(tmp_path, capsys):
    """`kubectl layer-sharing` with --kubeconfig, --context and -n, against the local STAND-IN for the
    Kubernetes API server (tests/harness/kube_api.py), which proxies to a real exporter HTTP server."""
    import json

    from exporter.cli.main import kubectl_main
    from tests.harness.kube_api import KubeApiStandIn, exporter_pod
    from tests.serving import serving

    standin = KubeApiStandIn("unused").start()
    try:
        with serving(refreshed=True) as served:
            kubeconfig = str(standin.kubeconfig(tmp_path / "kubeconfig"))
            standin.exporter_pods = [
                exporter_pod("monitoring", "lse-a", "node-a"),
                exporter_pod("elsewhere", "lse-b", "node-b"),
            ]
            for namespace, name in (("monitoring", "lse-a"), ("elsewhere", "lse-b")):
                standin.proxied[(namespace, name, 9877)] = f"http://127.0.0.1:{served.port}/"
            flags = ["--kubeconfig", kubeconfig, "--context", "standin", "-n", "monitoring", "-o", "json"]
            assert kubectl_main(flags) == 0
            assert [n["node"] for n in json.loads(capsys.readouterr().out)["nodes"]] == ["node-a"]
            assert kubectl_main(["--kubeconfig", kubeconfig, "--context", "nope"]) != 0
            assert "nope" in capsys.readouterr().err
    finally:
        standin.stop()


def test_the_kubectl_plugin_names_itself_as_typed(capsys):
    from exporter.cli.main import kubectl_main

    with pytest.raises(SystemExit):
        kubectl_main(["--help"])
    assert capsys.readouterr().out.startswith("usage: kubectl layer-sharing ")
