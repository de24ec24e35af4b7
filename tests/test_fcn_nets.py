"""The official FCN nets as NetSpec code: equal to the official prototxts, deploy nets, widths, bases.

Golden data: the official repository's prototxts (../shared/fcn-reference), the crop offsets and
Table 1 of the paper (../shared/published-results.md), and the published parameter counts of
VGG16 (138,357,544) and CaffeNet (60,965,224).
"""

from __future__ import annotations

import ast

import pytest

from converters import Message, format_message, parse_text, read_prototxt
from converters.caffe.geometry import crop_offsets, max_stride, receptive_field
from converters.caffe.netspec import net_difference
from converters.fcn.nets import BASE_MODELS, MODELS, SPLITS, net_definition
from converters.graph.shapes import blob_shapes, parameter_count

OFFICIAL = [(m, s) for m in MODELS for s in SPLITS[m] if s != "deploy"]
CLASSES = {"voc": 21, "pascalcontext": 60, "nyud": 40}
SCORE_BLOBS = {"siftflow": {"score_sem": 33, "score_geo": 3}}


def _score_blobs(model: str) -> dict[str, int]:
    dataset = model.split("-")[0]
    return SCORE_BLOBS.get(dataset) or {"score": CLASSES[dataset]}


@pytest.mark.parametrize(("model", "split"), OFFICIAL, ids=[f"{m}/{s}" for m, s in OFFICIAL])
def test_equals_the_official_prototxt(fcn_reference, model: str, split: str) -> None:
    official = read_prototxt(fcn_reference / model / f"{split}.prototxt")
    ours = net_definition(model, split)
    assert net_difference(official, ours) is None
    assert ours == official


def test_deploy_equals_the_official_voc_fcn8s_deploy(fcn_reference) -> None:
    """The official deploy.prototxt is hand-edited from val: an Input layer named "input" (top
    "data", 1x3x500x500), no Dropout and no loss; its param specs stay. Ours is built the same way,
    so no difference remains (the file's comments are not part of the message).
    """
    official = read_prototxt(fcn_reference / "voc-fcn8s" / "deploy.prototxt")
    assert net_difference(official, net_definition("voc-fcn8s", "deploy")) is None


def _inference_layers(net: Message) -> list[Message]:
    """The layers an inference net keeps: no data, dropout, loss or input-assembling layers."""
    dropped = {"Python", "Input", "Dropout", "SoftmaxWithLoss", "Accuracy", "Concat"}
    return [layer for layer in net.getall("layer") if layer.get("type") not in dropped]


@pytest.mark.parametrize("model", MODELS)
def test_deploy_is_the_official_test_net_without_data_dropout_and_loss(fcn_reference, model: str) -> None:
    test_split = SPLITS[model][1]
    official = read_prototxt(fcn_reference / model / f"{test_split}.prototxt")
    deploy = net_definition(model, "deploy")
    inputs = [layer for layer in deploy.getall("layer") if layer.get("type") == "Input"]
    assert len(inputs) == 1 and inputs[0].get("name") == "input"
    assert deploy.getall("layer")[0] is inputs[0]
    expected_inputs = {"nyud-fcn32s-color-hha": ["color", "hha"]}.get(model, ["data"])
    assert inputs[0].getall("top") == expected_inputs
    channels = 4 if model == "nyud-fcn32s-color-d" else 3
    shapes = [s.getall("dim") for s in inputs[0].get("input_param").getall("shape")]
    assert shapes == [[1, channels, 500, 500]] * len(expected_inputs)
    mine = Message("NetParameter", layer=_inference_layers(deploy))
    theirs = Message("NetParameter", layer=_inference_layers(official))
    assert net_difference(theirs, mine) is None
    assert {layer.get("type") for layer in deploy.getall("layer")}.isdisjoint(
        {"Python", "Dropout", "SoftmaxWithLoss", "Accuracy"}
    )


PAPER_OFFSETS = {
    "fcn32s": {"score": (19,)},
    "fcn16s": {"score_pool4c": (5,), "score": (27,)},
    "fcn8s": {"score_pool4c": (5,), "score_pool3c": (9,), "score": (31,)},
    "alexnet": {"score": (18,)},
}


@pytest.mark.parametrize("model", MODELS)
def test_crop_offsets_are_the_published_ones(model: str) -> None:
    kind = next(k for k in PAPER_OFFSETS if k in model)
    expected = dict(PAPER_OFFSETS[kind])
    if model.startswith("siftflow"):
        # one head per label set: score_pool4_semc ... score_sem, then the same with _geo
        expected = {
            (f"{name[:-1]}_{head}c" if name != "score" else f"score_{head}"): offset
            for head in ("sem", "geo")
            for name, offset in PAPER_OFFSETS[kind].items()
        }
    for split in SPLITS[model]:
        assert crop_offsets(net_definition(model, split)) == expected, split


def test_table1_receptive_field_and_max_stride_at_fc7() -> None:
    vgg, alex = net_definition("voc-fcn32s"), net_definition("voc-fcn-alexnet")
    assert (receptive_field(vgg, "fc7"), max_stride(vgg, "fc7")) == (404, 32)
    assert (receptive_field(alex, "fc7"), max_stride(alex, "fc7")) == (355, 32)
    assert max_stride(net_definition("voc-fcn8s"), "score") == 32


def test_base_classifier_parameter_counts() -> None:
    assert parameter_count(net_definition("vgg16")) == 138_357_544
    assert parameter_count(net_definition("caffenet")) == 60_965_224
    # Table 1 counts the FCN trunks without the 1000-way classifier: 134M and 57M.
    fc8 = 4096 * 1000 + 1000
    assert round((138_357_544 - fc8) / 1e6) == 134 and round((60_965_224 - fc8) / 1e6) == 57


def test_base_classifier_shapes() -> None:
    caffenet = blob_shapes(net_definition("caffenet"))
    assert [caffenet[b][2] for b in ("conv1", "pool1", "pool2", "pool5")] == [55, 27, 13, 6]
    assert caffenet["prob"] == (1, 1000)
    vgg = blob_shapes(net_definition("vgg16"))
    assert vgg["pool5"] == (1, 512, 7, 7) and vgg["prob"] == (1, 1000)
    googlenet = blob_shapes(net_definition("googlenet"))
    assert googlenet["inception_5b/output"] == (1, 1024, 7, 7) and googlenet["prob"] == (1, 1000)
    assert set(BASE_MODELS) == {"vgg16", "caffenet", "googlenet"}


def test_googlenet_matches_table1() -> None:
    """FCN-GoogLeNet in Table 1: receptive field 907, max stride 32 (at the last pooling, before
    the classifier), about 6M parameters without the 1000-way classifier.
    """
    net = net_definition("googlenet")
    assert (receptive_field(net, "pool5/7x7_s1"), max_stride(net, "pool5/7x7_s1")) == (907, 32)
    classifier = 1024 * 1000 + 1000
    assert round((parameter_count(net) - classifier) / 1e6) == 6


@pytest.mark.parametrize("model", MODELS)
def test_deploy_outputs_cover_the_input(model: str) -> None:
    shapes = blob_shapes(net_definition(model, "deploy"))
    for blob, classes in _score_blobs(model).items():
        assert shapes[blob] == (1, classes, 500, 500)


SCALED = {64: 16, 128: 32, 256: 64, 512: 128, 4096: 1024, 96: 24, 384: 96, 192: 48, 16: 4, 32: 8, 112: 28,
          160: 40, 208: 52, 224: 56, 24: 6, 144: 36, 288: 72, 320: 80, 48: 12}


def _geometry_fields(layer: Message) -> dict[str, object]:
    out: dict[str, object] = {}
    for field in ("convolution_param", "pooling_param", "crop_param"):
        if field in layer:
            p = layer.get(field)
            out[field] = {k: list(v) for k, v in p.fields() if k != "num_output"}
    return out


@pytest.mark.parametrize("model", MODELS + BASE_MODELS)
def test_quarter_width_keeps_geometry_and_classes(model: str) -> None:
    full, small = net_definition(model), net_definition(model, width=0.25)
    assert len(full.getall("layer")) == len(small.getall("layer"))
    for a, b in zip(full.getall("layer"), small.getall("layer"), strict=True):
        where = a.get("name")
        assert (a.get("name"), a.get("type"), a.getall("bottom"), a.getall("top")) == (
            b.get("name"), b.get("type"), b.getall("bottom"), b.getall("top")
        )
        assert _geometry_fields(a) == _geometry_fields(b), where
        for field in ("convolution_param", "inner_product_param"):
            if field in a:
                n_full, n_small = a.get(field).get("num_output"), b.get(field).get("num_output")
                if where.startswith(("score", "upscore")) or where in ("fc8", "loss3/classifier"):
                    assert n_small == n_full, where
                else:
                    assert n_small == SCALED[n_full], where
    assert crop_offsets(small) == crop_offsets(full)
    shapes = blob_shapes(small)  # also checks every group divides its channels
    if model in MODELS:
        for blob, classes in _score_blobs(model).items():
            assert shapes[blob] == (1, classes, 500, 500)


@pytest.mark.parametrize(
    ("model", "width"), [("voc-fcn-alexnet", 0.1), ("caffenet", 0.03), ("voc-fcn8s", 0.001)]
)
def test_tiny_widths_round_to_valid_groups(model: str, width: float) -> None:
    net = net_definition(model, width=width)
    counts = {
        layer.get("name"): layer.get("convolution_param").get("num_output")
        for layer in net.getall("layer")
        if layer.get("type") == "Convolution"
    }
    if "alexnet" in model or model == "caffenet":
        # round(96 * 0.1 / 2) * 2 = 10, round(384 * 0.1 / 2) * 2 = 38: multiples of the group (2)
        trunk = [count for name, count in counts.items() if not name.startswith("score")]
        assert all(count % 2 == 0 and count >= 2 for count in trunk)
    else:
        assert counts["conv1_1"] == 1 and counts["fc6"] == 4  # at least one; round(4.096) = 4
    blob_shapes(net)
    if model == "voc-fcn-alexnet":
        assert counts["conv1"] == 10 and counts["conv3"] == 38


def test_data_layer_param_strings_are_python_literals() -> None:
    layer = net_definition("voc-fcn8s", "train").getall("layer")[0]
    params = ast.literal_eval(layer.get("python_param").get("param_str"))
    assert params == {
        "sbdd_dir": "../data/sbdd/dataset",
        "seed": 1337,
        "split": "train",
        "mean": (104.00699, 116.66877, 122.67892),
    }
    layer = net_definition("nyud-fcn32s-color-d", "test").getall("layer")[0]
    params = ast.literal_eval(layer.get("python_param").get("param_str"))
    assert params["tops"] == ["color", "depth", "label"] and params["split"] == "test"
    assert layer.getall("top") == ["color", "depth", "label"]


@pytest.mark.parametrize("model", ["voc-fcn8s-atonce", "nyud-fcn32s-color-hha", "siftflow-fcn16s"])
def test_text_round_trip(model: str) -> None:
    net = net_definition(model, SPLITS[model][0])
    assert parse_text(format_message(net)) == net


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown model 'voc-fcn4s'"):
        net_definition("voc-fcn4s")
    with pytest.raises(ValueError, match="has no split 'trainval'"):
        net_definition("voc-fcn8s", "trainval")
    with pytest.raises(ValueError, match="has no split 'train'"):
        net_definition("vgg16", "train")
    for width in (0, -0.5, 1.5, True, "0.5"):
        with pytest.raises(ValueError, match="width must be a number in"):
            net_definition("voc-fcn32s", width=width)
    assert len(MODELS) == 15 and len(set(MODELS)) == 15


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_narrow_deploy_nets_run_in_torch(model: str) -> None:
    """At width 0.05 every deploy net builds with converters.graph and maps a 64x80 input to
    64x80 scores (the derived crops fit any input size, as the pad-100 design promises).
    """
    import torch

    import converters.graph as graph
    net = net_definition(model, width=0.05)
    module = graph.build_graph(net)
    inputs = net.getall("layer")[0]
    channels = [s.getall("dim")[1] for s in inputs.get("input_param").getall("shape")]
    feeds = {top: torch.randn(1, c, 64, 80) for top, c in zip(inputs.getall("top"), channels, strict=True)}
    with torch.no_grad():
        out = module(**feeds)
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        blob: (1, classes, 64, 80) for blob, classes in _score_blobs(model).items()
    }
