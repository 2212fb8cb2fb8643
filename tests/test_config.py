import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter import config as cfg
from exporter.config import Config
from exporter.errors import ConfigError


def test_defaults_and_environment():
    config = cfg.from_environment(
        {"CONTAINER_RUNTIME_ENDPOINT": "/run/k3s/containerd/containerd.sock", "NODE_NAME": "n1"}
    )
    assert config.runtime_endpoint == "/run/k3s/containerd/containerd.sock"
    assert config.node_name == "n1"
    assert cfg.from_environment({}).runtime_endpoint == "unix:///run/containerd/containerd.sock"
    assert cfg.from_environment({}).node_name == __import__("socket").gethostname()


def test_every_option_from_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        """
runtime_endpoint: /run/k3s/containerd/containerd.sock
namespace: k8s.io
snapshotter: native
layer_store: containers-storage
storage_root: /host/var/lib/containers/storage
listen_address: "127.0.0.1:9999"
refresh_interval_seconds: 10
rpc_timeout_seconds: 2.5
content_recheck_seconds: 60
collect_writable_layers: false
node_name: n1
host_root: /host
log_level: debug
analysis_cpu: 0.5
state_dir: /var/lib/lse
metrics: {images_top_n: 0, pods: false, bases_top_n: 5, layers_top_n: 10}
bases:
  - {name: debian, diff_ids: ["sha256:%s"]}
  - {name: alpine, image: "docker.io/library/alpine:3.20"}
"""
        % ("a" * 64)
    )
    config = cfg.load_file(path)
    assert config.runtime_endpoint == "unix:///run/k3s/containerd/containerd.sock"
    assert config.snapshotter == "native" and config.refresh_interval_seconds == 10.0
    assert config.metrics.images_top_n == 0 and not config.metrics.pods and config.metrics.layers_top_n == 10
    assert [b.name for b in config.bases] == ["debian", "alpine"]
    assert config.collect_writable_layers is False and config.host_root == "/host"
    assert config.layer_store == "containers-storage"
    assert config.storage_root == "/host/var/lib/containers/storage"
    assert config.analysis_cpu == 0.5 and config.state_dir == "/var/lib/lse"


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
        ({"analysis_cpu": -0.1}, "analysis_cpu: expected a fraction of one core"),
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
    assert cfg.validate(Config(runtime_endpoint="/run/x.sock")).runtime_endpoint == "unix:///run/x.sock"


# Property-based: any YAML document gives a Config or a ConfigError, nothing else.

_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
_keys = st.sampled_from([*cfg._SCALAR_TYPES, "metrics", "bases", "other"])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=6))
def test_fuzz_config_documents(doc):
    try:
        config = cfg.from_mapping(doc)
    except ConfigError:
        return
    assert config.refresh_interval_seconds > 0


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_config_files(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "c.yaml"
    path.write_text(text)
    with contextlib.suppress(ConfigError):
        cfg.load_file(path)
