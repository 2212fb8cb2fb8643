import json

from exporter.core.accounting import account
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
