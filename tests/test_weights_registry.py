"""The weights registry and the published numbers, checked against the official reference files."""

from __future__ import annotations

import re

import pytest

import weights
from weights import published
from weights.registry import (
    CONTEXT_CLASSES,
    FCN_RECORDS,
    NYUD_CLASSES,
    SIFTFLOW_GEOMETRIC_CLASSES,
    SIFTFLOW_SEMANTIC_CLASSES,
    VOC_CLASSES,
)

OFFICIAL_FOLDERS = {
    "voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn8s-atonce", "voc-fcn-alexnet", "nyud-fcn32s-color",
    "nyud-fcn32s-hha", "nyud-fcn32s-color-hha", "nyud-fcn32s-color-d", "pascalcontext-fcn32s",
    "pascalcontext-fcn16s", "pascalcontext-fcn8s", "siftflow-fcn32s", "siftflow-fcn16s", "siftflow-fcn8s",
}


def test_names_are_the_official_folders_then_the_bases():
    assert weights.names() == [r.name for r in FCN_RECORDS] + ["vgg16", "caffenet", "googlenet"]
    assert {r.name for r in FCN_RECORDS} == OFFICIAL_FOLDERS
    assert [r.name for r in weights.records()] == weights.names()


def test_record_urls_are_the_official_caffemodel_url_files(fcn_reference):
    folders = {p.name for p in fcn_reference.iterdir() if list(p.glob("*.prototxt"))}
    assert folders == OFFICIAL_FOLDERS
    url_files = sorted(fcn_reference.glob("*/caffemodel-url"))
    assert len(url_files) == 14
    for url_file in url_files:
        record = weights.get(url_file.parent.name)
        assert record.url == url_file.read_text().strip()
        assert record.url.endswith("/" + record.filename)
        assert record.released and record.kind == "fcn"


def test_color_depth_nyud_net_says_it_has_no_released_weights(fcn_reference):
    assert not (fcn_reference / "nyud-fcn32s-color-d" / "caffemodel-url").exists()
    record = weights.get("nyud-fcn32s-color-d")
    assert not record.released and record.url is None and record.filename is None
    assert "no released weights" in record.notes
    with pytest.raises(weights.NotReleasedError, match="no released weights"):
        weights.fetch("nyud-fcn32s-color-d")
    with pytest.raises(ValueError, match="no released weights"):
        weights.cached_path("nyud-fcn32s-color-d")


def _lines(path):
    return [line.rstrip("\n") for line in path.read_text().splitlines()]


def test_class_names_match_the_official_class_lists(fcn_reference):
    data = fcn_reference / "data"
    assert VOC_CLASSES == tuple(_lines(data / "pascal" / "classes.txt")[:21])
    assert NYUD_CLASSES == tuple(_lines(data / "nyud" / "classes.txt")[:40])
    context = [line.split(":", 1)[1].strip() for line in _lines(data / "pascal-context" / "classes-59.txt")
               if ":" in line]
    assert CONTEXT_CLASSES == tuple(context)
    sift = [line.split(" ", 1)[1] for line in _lines(data / "sift-flow" / "classes.txt")
            if re.match(r"^\d\d ", line)]
    assert SIFTFLOW_SEMANTIC_CLASSES + SIFTFLOW_GEOMETRIC_CLASSES == tuple(sift)


def _official_net(fcn_reference, name):
    from converters import read_prototxt

    folder = fcn_reference / name
    for candidate in ("deploy.prototxt", "test.prototxt", "val.prototxt"):
        if (folder / candidate).exists():
            return read_prototxt(folder / candidate)
    raise AssertionError(f"no evaluation prototxt in {folder}")


@pytest.mark.parametrize("record", FCN_RECORDS, ids=lambda r: r.name)
def test_output_blobs_and_class_counts_match_the_official_prototxts(fcn_reference, record):
    net = _official_net(fcn_reference, record.name)
    layers = net.get("layer")
    producer = {top: layer for layer in layers for top in layer.get("top")}
    for out in record.outputs:
        crop = producer[out.blob]
        assert crop.get("type") == "Crop"
        upsample = producer[crop.get("bottom")[0]]
        assert upsample.get("type") == "Deconvolution"
        assert upsample.get("convolution_param").get("num_output") == out.num_classes
        assert len(out.classes) == out.num_classes
        assert out.palette().shape == (out.num_classes, 3)


def test_inputs_and_outputs_match_our_net_definitions():
    import converters.fcn.nets as fcn_nets
    for record in weights.records():
        if record.net not in fcn_nets.MODELS + fcn_nets.BASE_MODELS:
            continue
        net = record.net_definition("deploy")
        layers = net.get("layer")
        inputs = {}
        for layer in layers:
            if layer.get("type") == "Input":
                for top, shape in zip(layer.get("top"), layer.get("input_param").get("shape"), strict=True):
                    inputs[top] = list(shape.get("dim"))[1]
        assert inputs == {spec.blob: spec.channels for spec in record.inputs}, record.name
        bottoms = {b for layer in layers for b in layer.get("bottom")}
        outputs = [t for layer in layers for t in layer.get("top") if t not in bottoms]
        assert outputs == [out.blob for out in record.outputs], record.name


def test_means_are_the_published_ones(shared):
    text = " ".join((shared / "published-results.md").read_text().split())
    assert "(104.00698793, 116.66876762, 122.67891434)" in text
    for name in ("voc-fcn8s", "voc-fcn32s", "voc-fcn-alexnet"):
        assert weights.get(name).mean == (104.00698793, 116.66876762, 122.67891434)
    import converters.fcn.datasets as datasets
    assert tuple(datasets.VOC_MEAN) == weights.get("voc-fcn8s").mean


def test_voc_palette_is_the_standard_colour_map():
    colours = weights.get("voc-fcn8s").outputs[0].palette()
    assert [tuple(c) for c in colours[:4]] == [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)]
    assert tuple(colours[15]) == (192, 128, 128)  # person


def test_unknown_name_is_a_value_error_with_close_matches():
    with pytest.raises(ValueError, match="did you mean voc-fcn8s"):
        weights.get("voc-fcn8")
    with pytest.raises(weights.UnknownWeightsError):
        weights.get("resnet50")
    assert weights.get("VOC-FCN8S").name == "voc-fcn8s"


def test_checksums_come_with_their_source(shared):
    text = (shared / "published-results.md").read_text()
    fcn8s = weights.get("voc-fcn8s")
    assert fcn8s.sha1 == "c449ea74dd7d83751d1357d6a8c323fcf4038962" and fcn8s.sha1 in text
    assert "OpenCV" in fcn8s.checksum_source
    for record in weights.records():
        assert record.sha256 is None  # no sha256 is published for any of them
        if record.sha1:
            assert record.checksum_source
        elif record.kind == "fcn":
            assert record.checksum_source is None
    for entry in published.CHECKSUMS:
        if entry.filename.startswith("fcn") or entry.algorithm == "md5":
            assert entry.hexdigest in text, entry.filename
    assert weights.get("caffenet").sha1 == "4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46"
    assert weights.get("googlenet").sha1 == "405fc5acd08a3bb12de8ee5e23a96bec22f08204"


def test_published_tables_are_the_numbers_of_published_results(shared):
    text = (shared / "published-results.md").read_text()
    for row in published.TABLE2:
        cells = " | ".join(f"{v:.1f}" for v in (row.pixel_acc, row.mean_acc, row.mean_iu, row.fw_iu))
        assert f"| {row.method} | {cells} |" in text
    for row in published.REEVALUATION:
        cells = " | ".join(f"{v:.4f}" for v in (row.pixel_acc, row.mean_acc, row.mean_iu, row.fw_iu))
        assert f"| {row.method} | {cells} |" in text
    for row in published.TABLE4 + published.CONTEXT:
        values = " / ".join("-" if v is None else f"{v:.1f}"
                            for v in (row.pixel_acc, row.mean_acc, row.mean_iu, row.fw_iu))
        assert f"{row.method} {values}" in text, row
    for row in published.TABLE1[:3]:
        extra = dict(row.extra)
        assert (f"| {row.method} | {row.mean_iu:.1f} | {extra['forward_ms']} ms | {extra['conv_layers']} | "
                f"{extra['params_millions']}M | {extra['receptive_field']} | {extra['max_stride']} |") in text
    for row in published.RELEASED:
        if row.split == "seg11valid":
            record = weights.get(row.model)
            assert f"| {row.model} | {record.filename} | {row.mean_iu:.1f}" in text
    table5 = published.TABLE5[0]
    assert (f"pixel acc {table5.pixel_acc}, mean acc {table5.mean_acc}, mean IU {table5.mean_iu}, "
            f"f.w. IU {table5.fw_iu},\ngeometric accuracy {table5.get('geometric_acc')}") in text
    assert "| FCN-8s | 62.7 | 62.2 | ~175 ms |" in text
    assert [r.mean_iu for r in published.TABLE3 if r.model == "voc-fcn8s"] == [62.7, 62.2]


def test_every_row_names_its_source():
    for row in published.ALL:
        assert row.source.work and row.source.where
        assert row.source.arxiv or row.source.url
        assert row.weights in ("released", "paper", "baseline")
        assert row.metrics(), row


def test_lookup_prefers_the_most_complete_row():
    best = published.lookup("voc-fcn8s", "voc2011", "seg11valid")
    assert best is not None and best.mean_iu == 65.5126 and best.fw_iu == 84.5445
    assert published.lookup("voc-fcn-alexnet", "voc2011", "seg11valid").mean_iu == 48.0
    assert published.lookup("voc-fcn8s", "voc2012", "test").mean_iu == 67.2
    assert published.lookup("voc-fcn8s", "voc2011", "seg11valid", weights="paper").mean_iu == 62.7
    sift = published.lookup("siftflow-fcn16s", "siftflow", "test", weights="paper")
    assert sift is not None and sift.get("geometric_acc") == 94.3
    assert published.lookup("siftflow-fcn8s", "siftflow", "test") is None
    assert published.lookup("siftflow-fcn16s", "siftflow", "test", weights="released") is None
    fallback = published.lookup("siftflow-fcn16s", "siftflow", "test")
    assert fallback is not None and fallback.weights == "paper" and fallback.mean_iu == 39.5
    geometric = published.lookup("siftflow-fcn16s", "siftflow-geometric", "test")
    assert geometric is not None and geometric.pixel_acc == 94.3


def test_lookup_understands_the_evaluation_harness_names():
    assert published.canonical("voc", "seg11valid") == ("voc2011", "seg11valid")
    assert published.canonical("voc", "val2012") == ("voc2012", "val")
    assert published.canonical("sift-flow", "test") == ("siftflow", "test")
    assert published.lookup("voc-fcn32s", "voc", "seg11valid").mean_iu == 63.6261
    assert published.lookup("voc-fcn8s", "voc", "test2012").mean_iu == 67.2
    assert published.lookup("voc-fcn8s", "pascal", "test2011").mean_iu == 62.7
    assert published.lookup("voc-fcn8s", "voc", "val2012") is None
    assert len(published.lookup_all(dataset="pascalcontext-33")) == 3


def test_records_reference_their_published_rows():
    for record in weights.records():
        assert all(row.model == record.name for row in record.metrics)
    assert weights.get("voc-fcn32s").metric("voc2011", "seg11valid").mean_iu == 63.6261
    assert {row.dataset for row in weights.get("pascalcontext-fcn8s").metrics} == {"pascalcontext",
                                                                                    "pascalcontext-33"}
    assert weights.get("nyud-fcn32s-color-d").metrics[0].mean_iu == 30.5


def test_preprocess_uses_the_record_mean():
    import numpy as np

    rgb = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 7
    inputs = weights.get("siftflow-fcn8s").preprocess(rgb)
    assert list(inputs) == ["data"]
    expected = rgb[:, :, ::-1].astype(np.float64) - np.array([114.578, 115.294, 108.353])
    assert np.allclose(inputs["data"][0].numpy(), expected.transpose(2, 0, 1).astype(np.float32))
    with pytest.raises(ValueError, match="HHA"):
        weights.get("nyud-fcn32s-hha").preprocess(rgb)


def test_crop_offsets_are_the_official_prototxts(fcn_reference, shared):
    text = " ".join((shared / "published-results.md").read_text().split())
    assert ("FCN-32s 19; FCN-16s 5 then 27; FCN-8s and at-once 5, 9, 31; FCN-AlexNet 18; "
            "NYUD FCN-32s 19") in text
    for model, offsets in published.CROP_OFFSETS.items():
        layers = _official_net(fcn_reference, model).get("layer")
        crops = [layer for layer in layers if layer.get("type") == "Crop"]
        found = tuple(layer.get("crop_param").get("offset")[0] for layer in crops)
        assert found == offsets, model


def test_an_official_net_is_found_by_its_deploy_definition_and_others_are_not():
    from converters import parse_text
    from weights.registry import find_by_definition

    assert find_by_definition(weights.get("voc-fcn8s").net_definition("deploy")) == ["voc-fcn8s"]
    # the NYUD colour and HHA nets share one definition (different inputs): both are named
    assert set(find_by_definition(weights.get("nyud-fcn32s-hha").net_definition("deploy"))) == {
        "nyud-fcn32s-color",
        "nyud-fcn32s-hha",
    }
    assert find_by_definition(parse_text('layer { name: "i" type: "Input" top: "data" }')) == []
