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


def test_bases_duplicates_and_created_in_the_tables():
    import dataclasses

    from exporter.core.bases import BaseSpec
    from tests.fakes import digest

    facts = sample_facts()
    facts = dataclasses.replace(facts, images=tuple(dataclasses.replace(i, created=1704164645.0) for i in facts.images))
    catalog = [
        BaseSpec("debian", diff_ids=(digest("B"), digest("OS")), version="12"),
        BaseSpec("debian", diff_ids=(digest("B"), digest("O2")), version="11"),
    ]
    report = account(facts, catalog)
    images = df.images_table(report)
    assert "CREATED" in images.splitlines()[0] and "2024-01-02 03:04" in images and "debian:12" in images
    bases = df.bases_table(report).splitlines()
    assert bases[0].split() == [
        "BASE",
        "VERSION",
        "SOURCE",
        "LAYERS",
        "SIZE",
        "STACK",
        "IMAGES",
        "PODS",
        "VERSIONS",
        "DRIFT",
    ]
    # Family debian: 12 is B+OS (1300), 11 is B+O2 (1250): drift = 1550 - 1300 = 250.
    assert bases[1].split()[:3] == ["debian", "12", "catalog"] and bases[1].split()[-2:] == ["2", "250B"]
    dups = df.duplicates_table(report).splitlines()
    assert dups[0].split()[:2] == ["DIFF", "ID"] and len(dups) == 3
    assert "localhost/app-a:1, localhost/app-b:1" not in "\n".join(dups)  # A is in app-a and app-c only
    assert "localhost/app-a:1" in dups[1] + dups[2] and "localhost/app-c:1" in dups[1] + dups[2]
    data = json.loads(df.to_json(df.report_dict(report)))
    assert data["totals"]["duplicate_bytes"] == 200 and data["totals"]["unused_logical"] == 2700
    assert data["families"] == [
        {"name": "debian", "versions": ["11", "12"], "bytes": 1550, "largest": 1300, "drift": 250}
    ]
    assert data["duplicates"][0]["bytes"] == 200 and len(data["duplicates"][0]["copies"]) == 2


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


def test_wide_adds_columns_and_no_trunc_shows_whole_digests():
    import dataclasses

    from exporter.core.facts import Workload

    facts = sample_facts()
    facts = dataclasses.replace(
        facts, workloads={(p.namespace, p.name): Workload("Deployment", "web") for p in facts.pods}
    )
    report = account(facts)
    narrow, wide = df.images_table(report), df.images_table(report, df.Style(wide=True))
    assert "COMPRESSED" not in narrow.splitlines()[0]
    assert all(column in wide.splitlines()[0] for column in ("COMPRESSED", "BASE SOURCE", "IMAGE REF"))
    assert APP_A.image_id not in narrow and APP_A.image_id.removeprefix("sha256:")[:12] in narrow
    assert APP_A.image_id in df.images_table(report, df.Style(full=True))
    assert "Deployment/web" in df.pods_table(report, df.Style(wide=True))
    assert "WORKLOAD" not in df.pods_table(report)


def test_yaml_is_the_json_document():
    import yaml

    data = df.report_dict(account(sample_facts()))
    assert yaml.safe_load(df.serialize(data, "yaml")) == json.loads(df.serialize(data, "json"))
