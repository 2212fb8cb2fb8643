import contextlib
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import config as cfg
from exporter.cli.args import build_parser
from exporter.config import Config
from exporter.config import resolve as resolve_config
from exporter.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_and_environment():
    config = cfg.from_environment(
        {"CONTAINER_RUNTIME_ENDPOINT": "/run/k3s/containerd/containerd.sock", "NODE_NAME": "n1"}
    )
    assert config.runtime.endpoint == "/run/k3s/containerd/containerd.sock"
    assert config.runtime.node_name == "n1"
    assert cfg.from_environment({}).runtime.endpoint == "unix:///run/containerd/containerd.sock"
    assert cfg.from_environment({}).runtime.node_name == socket.gethostname()


def _other_value(setting: cfg.Setting) -> Any:
    """A valid value of the setting that is not its default."""
    declared = setting.option
    if declared.choices:
        return next(choice for choice in declared.choices if choice != setting.default)
    if setting.type is bool:
        return not setting.default
    if setting.type == tuple[str, ...]:
        return ("kube-*", "monitoring")
    if setting.type is int:
        return setting.default + 3
    if setting.type is float:
        return min(setting.default + 0.5, declared.maximum) if declared.maximum else setting.default + 0.5
    return {
        "runtime_endpoint": "unix:///run/k3s/containerd/containerd.sock",
        "listen_address": "127.0.0.1:9999",
        "storage_root": "/host/var/lib/containers/storage",
    }.get(setting.key, "/some/where")


def test_there_are_settings_of_every_kind_and_each_has_help():
    assert {setting.type for setting in cfg.SETTINGS} == {str, bool, int, float, tuple[str, ...]}
    assert all(setting.option.help for setting in cfg.SETTINGS)


def test_every_setting_from_yaml(tmp_path):
    document: dict[str, Any] = {}
    for setting in cfg.SETTINGS:
        section, _, key = setting.key.rpartition(".")
        (document.setdefault(section, {}) if section else document)[key] = _other_value(setting)
    document["bases"] = [{"name": "debian", "diff_ids": ["sha256:" + "a" * 64]}]
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(document))
    config = cfg.load_file(path)
    for setting in cfg.SETTINGS:
        assert cfg.setting_value(config, setting.key) == _other_value(setting), setting.key
    assert [b.name for b in config.bases] == ["debian"]


def test_every_flag_sets_its_setting():
    flagged = [setting for setting in cfg.SETTINGS if setting.option.flag]
    assert {"runtime_endpoint", "containerd_namespace", "analysis_cpu", "listen_address"} <= {
        setting.key for setting in flagged
    }
    for setting in flagged:
        command = setting.option.commands[0]
        value = _other_value(setting)
        if setting.type is bool:
            argv = [command, setting.option.flag if value else "--no-" + setting.option.flag[2:]]
        else:
            argv = [command, setting.option.flag, str(value)]
        config = resolve_config(build_parser().parse_args(argv))
        assert cfg.setting_value(config, setting.key) == value, argv


def test_flag_help_shows_the_declared_default(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default 0.25; config key analysis_cpu)" in text
    assert "(default 30.0; config key refresh_interval_seconds)" in text


def test_list_settings_read_yaml_lists_and_check_each_item(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("metrics:\n  namespace_exclude: [kube-*, monitoring]\n  namespace_include:\n")
    config = cfg.load_file(path)
    assert config.metrics.namespace_exclude == ("kube-*", "monitoring")
    assert config.metrics.namespace_include == ()  # an empty key is the empty list
    with pytest.raises(ConfigError, match=r"metrics.namespace_exclude: expected a list of str, got str"):
        cfg.from_mapping({"metrics": {"namespace_exclude": "kube-system"}})
    with pytest.raises(ConfigError, match=r"metrics.namespace_include\[1\]: expected str, got int 3"):
        cfg.from_mapping({"metrics": {"namespace_include": ["a", 3]}})


def test_a_list_setting_with_a_flag_takes_it_several_times(monkeypatch):
    import argparse

    from exporter.options import Option

    setting = cfg.Setting(("x",), "x", tuple[str, ...], (), Option("patterns", flag="--pattern"))
    monkeypatch.setattr(cfg, "SETTINGS", (setting,))
    parser = argparse.ArgumentParser()
    cfg.add_flags(parser, "serve")
    assert getattr(parser.parse_args(["--pattern", "a", "--pattern", "b*"]), setting.dest) == ["a", "b*"]
    assert getattr(parser.parse_args([]), setting.dest) is None  # not given: the file's value stands


def test_image_gc_thresholds_are_checked_as_the_kubelet_does():
    with pytest.raises(ConfigError, match="image_gc_low_threshold_percent: must be below"):
        cfg.from_mapping({"metrics": {"image_gc_high_threshold_percent": 70}})
    config = cfg.from_mapping(
        {"metrics": {"image_gc_high_threshold_percent": 90, "image_gc_low_threshold_percent": 70}}
    )
    assert (config.metrics.image_gc_high_threshold_percent, config.metrics.image_gc_low_threshold_percent) == (90, 70)


def test_the_old_namespace_key_still_reads():
    assert cfg.from_mapping({"namespace": "other"}).runtime.containerd_namespace == "other"


def test_catalog_versions_of_one_family():
    config = cfg.from_mapping(
        {
            "bases": [
                {"name": "debian", "version": "11", "image": "debian:11"},
                {"name": "debian", "version": 12, "image": "debian:12"},
                {"name": "alpine", "image": "alpine:3"},
            ]
        }
    )
    assert [(b.name, b.version) for b in config.bases] == [("debian", "11"), ("debian", "12"), ("alpine", "")]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"refresh_interval": 5}, "unknown key 'refresh_interval'"),
        ({"layer_store": "crio"}, "layer_store: expected one of auto, containerd, containers-storage"),
        ({"storage_root": "var/lib/containers"}, "storage_root: expected an absolute path"),
        ({"refresh_interval_seconds": "fast"}, "refresh_interval_seconds: expected float"),
        ({"refresh_interval_seconds": 0}, "must be > 0"),
        ({"collect_writable_layers": "yes"}, "expected bool"),
        ({"runtime_endpoint": "tcp://x:1"}, "runtime_endpoint"),
        ({"listen_address": "9877"}, "listen_address"),
        ({"log_level": "loud"}, "log_level"),
        ({"analysis_cpu": -0.1}, "analysis_cpu: must be >= 0"),
        ({"analysis_cpu": 65}, "analysis_cpu: must be <= 64"),
        ({"containerd_namespace": ""}, "containerd_namespace: must not be empty"),
        ({"analysis_cpu": "lots"}, "analysis_cpu: expected float"),
        ({"metrics": {"images_top_n": -1}}, "metrics.images_top_n"),
        ({"metrics": {"imagez": 1}}, "unknown key 'imagez'"),
        ({"bases": [{"name": "x"}]}, "exactly one of diff_ids or image"),
        ({"bases": [{"name": "x", "diff_ids": ["sha256:zz"]}]}, "not a sha256"),
        ({"bases": "debian"}, "expected a list"),
        ({"bases": [{"name": "d", "image": "a"}, {"name": "d", "image": "b"}]}, r"bases\[0\] and bases\[1\]"),
        (
            {"bases": [{"name": "d", "image": "a", "version": "12"}, {"name": "d", "image": "b", "version": "12"}]},
            r"bases\[0\] and bases\[1\] are both named 'd' with version '12'",
        ),
        ({"bases": [{"name": "d", "image": "a", "version": "12"}, {"name": "d", "image": "b"}]}, "bases\\[1\\]"),
        ({"bases": [{"name": "py", "image": "a", "version": 3.1}]}, "version: expected str or int"),
    ],
)
def test_bad_values_name_the_key(doc, message):
    with pytest.raises(ConfigError, match=message):
        cfg.from_mapping(doc)


def test_unreadable_and_invalid_yaml_files(tmp_path):
    with pytest.raises(ConfigError, match="No such file"):
        cfg.load_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        cfg.load_file(bad)
    top = tmp_path / "list.yaml"
    top.write_text("- 1\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        cfg.load_file(top)


def test_validate_normalizes_bare_socket_paths():
    config = cfg.with_settings(Config(), {"runtime_endpoint": "/run/x.sock"})
    assert cfg.validate(config).runtime.endpoint == "unix:///run/x.sock"


# Property-based: any YAML document gives a Config or a ConfigError, nothing else.

_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
_keys = st.sampled_from([*(s.key for s in cfg.SETTINGS if "." not in s.key), "metrics", "bases", "other"])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=6))
def test_fuzz_config_documents(doc):
    try:
        config = cfg.from_mapping(doc)
    except ConfigError:
        return
    assert config.serve.refresh_interval_seconds > 0


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_config_files(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_text(text)
    with contextlib.suppress(ConfigError):
        cfg.load_file(path)


def test_the_configuration_reference_is_generated_from_the_declarations():
    result = subprocess.run(
        [sys.executable, "-m", "scripts.gen_config_docs", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
