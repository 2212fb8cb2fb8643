"""The config and web config documents: JSON (what the chart writes) and YAML as users
write it read the same, a clear error for neither."""

import pytest

from exporter.documents import parse_document
from exporter.errors import ConfigError


def test_json_and_yaml_give_the_same_data():
    as_json = '{"refresh_interval_seconds": 30, "metrics": {"pods": true}, "bases": []}'
    as_yaml = "refresh_interval_seconds: 30\nmetrics:\n  pods: true\nbases: []\n"
    assert (
        parse_document(as_json, "x")
        == parse_document(as_yaml, "x")
        == {
            "refresh_interval_seconds": 30,
            "metrics": {"pods": True},
            "bases": [],
        }
    )
    assert parse_document("{pods: true}", "x") == {"pods": True}  # YAML flow style, not JSON
    assert parse_document("", "x") is None


def test_neither_json_nor_yaml_names_the_document():
    with pytest.raises(ConfigError, match=r"^config file c\.yaml: not valid YAML"):
        parse_document("a: [1, 2\n", "config file c.yaml")
