import json

from exporter.core.accounting import account
from exporter.core.state import HiddenFileDetail, ImageWasteDetail
from exporter.outputs import df
from tests.sample_facts import APP_A, sample_facts


def test_images_table_has_docker_columns():
    text = df.images_table(account(sample_facts()))
    header = text.splitlines()[0]
    for column in ("IMAGE", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "CONTAINERS", "BASE"):
        assert column in header
    assert "localhost/app-a:1" in text


def test_pods_table_and_summary():
    report = account(sample_facts())
    assert "ATTRIBUTED" in df.pods_table(report)
    assert "sharing saves" in df.summary(report)


def test_image_layers_bottom_up_with_history():
    facts = sample_facts()
    report = account(facts)
    image = report.image(APP_A.image_id)
    assert image is not None
    rows = df.image_layers(report, facts, image)
    assert [r["size"] for r in rows] == [1000, 300, 200]
    assert [r["images"] for r in rows] == [6, 4, 1]
    assert [r["pods"] for r in rows] == [3, 2, 2]
    assert "CHAIN ID" in df.image_layers_table(rows)


def test_json_is_exact_integers():
    data = json.loads(df.to_json(df.report_dict(account(sample_facts()))))
    assert data["totals"]["physical"] == 2450
    assert {p["name"]: p["attributed"] for p in data["pods"]}["web-2"] in (583, 584)


def test_image_layers_with_wasted_bytes_and_hidden_files():
    facts = sample_facts()
    report = account(facts)
    image = report.image(APP_A.image_id)
    assert image is not None
    hidden = tuple(HiddenFileDetail(f"var/f{i}", 1000 - i, 0, 2) for i in range(12))
    waste = ImageWasteDetail(11_934, (11_934, 0, 0), hidden, 12, ())
    rows = df.image_layers(report, facts, image, waste)
    assert [r["wasted_bytes"] for r in rows] == [11_934, 0, 0]
    assert "WASTED" in df.image_layers_table(rows)
    text = df.image_waste_text(waste)
    assert "var/f0" in text and "var/f9" in text and "var/f10" not in text and "2 more" in text
    data = json.loads(df.to_json(df.image_dict(image, rows, waste)))
    assert data["wasted_bytes"] == 11_934 and len(data["hidden_files"]) == 12
    assert data["hidden_files"][0] == {"path": "var/f0", "size": 1000, "layer": 0, "hidden_by": 2}


def test_unknown_wasted_bytes_say_which_layer_and_why():
    facts = sample_facts()
    report = account(facts)
    image = report.image(APP_A.image_id)
    assert image is not None
    waste = ImageWasteDetail(None, (None, None, None), (), 0, (("sha256:" + "a" * 64, "blob gone"),))
    rows = df.image_layers(report, facts, image, waste)
    assert "unknown" in df.image_layers_table(rows)
    assert "blob gone" in df.image_waste_text(waste)
    assert json.loads(df.to_json(df.image_dict(image, rows, waste)))["wasted_bytes"] is None
