# ruff: noqa: E501
"""The Caffe files people have, as their forks read them: fork fields that take effect or are inert,
deploy files as they are (sinks, data layers, unsized inputs), missing weights filled as Caffe
fills them, and py-faster-rcnn's proposal layer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from converters import load_caffe, parse_text, read_prototxt
from converters.errors import NetError, WeightsMismatchError
from converters.graph.builder import build_graph
from converters.graph.lazy import LazyCaffeNet, UnbuiltNetError
from converters.layers.forks.rcnn import faster_rcnn_anchors
from tests.conftest import need_shared

INPUT = 'layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ {dims} }} }} }}\n'


def _dims(*shape: int) -> str:
    return " ".join(f"dim: {d}" for d in shape)


def test_opencvs_ceil_mode_false_pools_with_floor_rounding_as_round_mode_floor_does() -> None:
    pool = 'layer {{ name: "p" type: "Pooling" bottom: "x" top: "p" pooling_param {{ pool: MAX kernel_size: 3 stride: 2 {} }} }}'
    head = INPUT.format(dims=_dims(1, 2, 8, 8))
    x = torch.randn(1, 2, 8, 8)
    floor = build_graph(parse_text(head + pool.format("ceil_mode: false")))(x=x)["p"]
    assert floor.shape == (1, 2, 3, 3)  # ceil rounding gives 4 x 4
    torch.testing.assert_close(floor, build_graph(parse_text(head + pool.format("round_mode: FLOOR")))(x=x)["p"])
    assert build_graph(parse_text(head + pool.format("ceil_mode: true")))(x=x)["p"].shape == (1, 2, 4, 4)


def test_py_faster_rcnns_scale_train_false_scales_the_test_output_by_the_keep_rate() -> None:
    text = INPUT.format(dims=_dims(2, 5)) + (
        'layer { name: "d" type: "Dropout" bottom: "x" top: "d" dropout_param { dropout_ratio: 0.3 scale_train: false } }'
    )
    x = torch.randn(2, 5)
    torch.testing.assert_close(build_graph(parse_text(text))(x=x)["d"], x * 0.7)
    plain = build_graph(parse_text(text.replace("scale_train: false", "scale_train: true")))
    torch.testing.assert_close(plain(x=x)["d"], x)


def test_opencvs_detection_output_clip_keeps_boxes_inside_the_image() -> None:
    text = (
        'layer { name: "in" type: "Input" top: "loc" top: "conf" top: "prior" input_param { '
        f"shape {{ {_dims(1, 4)} }} shape {{ {_dims(1, 2)} }} shape {{ {_dims(1, 2, 4)} }} }} }}\n"
        'layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "prior" top: "det" '
        "detection_output_param { num_classes: 2 code_type: CENTER_SIZE keep_top_k: 5 "
        "nms_param { nms_threshold: 0.45 } confidence_threshold: 0.1 CLIP } }"
    )
    prior = torch.tensor([[[0.8, 0.7, 1.2, 1.1], [0.1, 0.1, 0.2, 0.2]]])  # a prior past the edge
    inputs = {"loc": torch.zeros(1, 4), "conf": torch.tensor([[0.1, 0.9]]), "prior": prior}
    free = build_graph(parse_text(text.replace("CLIP", "")))(**inputs)["det"]
    clipped = build_graph(parse_text(text.replace("CLIP", "clip: true")))(**inputs)["det"]
    assert float(free[0, 0, 0, 5:].max()) > 1  # unclipped: the box leaves the image
    torch.testing.assert_close(clipped[..., 3:], free[..., 3:].clamp(0, 1))


def test_data_layers_of_forks_left_in_deploy_files_become_inputs_with_their_parameters_read() -> None:
    text = (
        'layer { name: "data" type: "DenseImageData" top: "data" top: "label" '
        'dense_image_data_param { source: "train.txt" batch_size: 1 shuffle: true } }\n'
        'layer { name: "seg" type: "ImageSegData" top: "img" top: "gt" '
        'image_data_param { source: "list.txt" label_type: PIXEL ignore_label: 255 } }\n'
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 2 kernel_size: 1 } }\n'
        'layer { name: "e" type: "Eltwise" bottom: "c" bottom: "img" top: "e" }'
    )
    net = build_graph(parse_text(text), input_shapes={"data": (1, 2, 3, 3), "img": (1, 2, 3, 3)})
    assert set(net.caffe.inputs) == {"data", "img"}
    assert net(data=torch.ones(1, 2, 3, 3), img=torch.ones(1, 2, 3, 3))["e"].shape == (1, 2, 3, 3)


def test_a_field_in_no_known_schema_is_refused_naming_the_schemas_consulted() -> None:
    text = INPUT.format(dims=_dims(1, 1, 4, 4)) + (
        'layer { name: "p" type: "Pooling" bottom: "x" top: "p" pooling_param { kernel_size: 2 ceil_mod: false } }'
    )
    with pytest.raises(NetError) as info:
        build_graph(parse_text(text))
    message = str(info.value)
    assert "layer 'p'" in message and "pooling_param.ceil_mod" in message and "\n" not in message
    assert "in none of the" in message and "OpenCV's opencv-caffe.proto" in message and "Caffe-SSD" in message


def test_blobs_that_only_feed_silence_are_the_nets_outputs() -> None:
    text = INPUT.format(dims=_dims(1, 1, 3, 3)) + (
        'layer { name: "r" type: "ReLU" bottom: "x" top: "r" }\n'
        'layer { name: "t" type: "TanH" bottom: "x" top: "t" }\n'
        'layer { name: "s" type: "Silence" bottom: "r" bottom: "t" }'
    )
    net = build_graph(parse_text(text))
    assert net.caffe.outputs == ["r", "t"]
    x = torch.randn(1, 1, 3, 3)
    torch.testing.assert_close(net(x=x)["t"], torch.tanh(x))


def test_an_input_layer_without_a_shape_is_built_by_its_first_call_never_by_a_guess() -> None:
    text = (
        'layer { name: "in" type: "Input" top: "x" top: "info" }\n'
        'layer { name: "fc" type: "InnerProduct" bottom: "x" top: "fc" inner_product_param { num_output: 3 } }\n'
        'layer { name: "f" type: "Flatten" bottom: "info" top: "f" }'
    )
    weights = {"fc": [np.ones((3, 7 * 2 * 5), np.float32), np.zeros(3, np.float32)]}
    net = load_caffe(parse_text(text), weights)
    assert isinstance(net, LazyCaffeNet) and net.unsized_inputs == ("info", "x")
    with pytest.raises(UnbuiltNetError, match=r"does not declare the shape of info, x: it is built on its first"):
        _ = net.caffe
    out = net(x=torch.ones(1, 7, 2, 5), info=torch.ones(1, 3))
    assert not isinstance(net, LazyCaffeNet) and net.caffe.inputs == {"x": (1, 7, 2, 5), "info": (1, 3)}
    torch.testing.assert_close(out["fc"], torch.full((1, 3), 70.0))
    assert sorted(net.state_dict()) == ["fc.bias", "fc.weight"]
    sized = load_caffe(parse_text(text), weights, input_shapes={"x": (1, 7, 2, 5), "info": (1, 3)})
    assert not isinstance(sized, LazyCaffeNet)
    with pytest.raises(WeightsMismatchError, match="the weights file has shape"):
        load_caffe(parse_text(text), weights)(x=torch.ones(1, 7, 3, 5), info=torch.ones(1, 3))


def test_a_data_layer_whose_guessed_size_the_net_refuses_is_sized_by_its_first_call() -> None:
    text = """
    layer { name: "data" type: "Python" top: "data" python_param { module: "m" layer: "L" } }
    layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 2 } }
    """
    weights = {"fc": [np.ones((2, 4 * 5 * 5), np.float32), np.zeros(2, np.float32)]}
    net = build_graph(parse_text(text), weights)  # the guess, 1 x 4 x 500 x 500, does not fit fc
    assert isinstance(net, LazyCaffeNet)
    assert net(data=torch.ones(2, 4, 5, 5))["fc"].shape == (2, 2)


def test_layers_the_caffemodel_lacks_get_their_deterministic_fillers_as_caffe_gives_them() -> None:
    """OpenCV's shared_weights case: two layers named 'conv' with constant fillers, in no
    caffemodel: Caffe runs them with the fillers' values."""
    text = INPUT.format(dims=_dims(1, 1, 2, 2)) + (
        'layer { name: "conv" type: "Convolution" bottom: "x" top: "a" convolution_param { num_output: 1 '
        'kernel_size: 1 weight_filler { type: "constant" value: 3 } bias_filler { type: "constant" value: 0 } } }\n'
        'layer { name: "conv" type: "Convolution" bottom: "x" top: "b" convolution_param { num_output: 1 '
        'kernel_size: 1 weight_filler { type: "constant" value: 4 } bias_filler { type: "constant" value: 0 } } }\n'
        'layer { name: "keep" type: "Scale" bottom: "a" top: "k" }'
    )
    weights = {"keep": [np.ones(1, np.float32)]}
    net = build_graph(parse_text(text), weights)
    with torch.no_grad():
        out = net(x=torch.full((1, 1, 2, 2), 4.0))
    assert float(out["k"].max()) == 12 and float(out["b"].max()) == 16
    assert net.caffe.filled_by_fillers == ["conv", "conv"] and net.caffe.randomly_initialised == []
    with pytest.raises(WeightsMismatchError, match=r"its gaussian filler draws them at random; pass strict=False"):
        build_graph(parse_text(text.replace('"constant" value: 4', '"gaussian" std: 1')), weights)
    with pytest.warns(UserWarning, match="Caffe's default fills it with zeros"):
        zero = build_graph(parse_text(text.replace('weight_filler { type: "constant" value: 4 }', "")), weights)
    with torch.no_grad():
        assert float(zero(x=torch.ones(1, 1, 2, 2))["b"].abs().max()) == 0
    with pytest.raises(WeightsMismatchError, match="covers none of the net's layers"):
        build_graph(parse_text(text), {"other": [np.ones(1, np.float32)]})


def test_the_solver_fills_missing_layers_with_the_fillers_each_converter_declares() -> None:
    from converters.train.solver import _fill_like_caffe

    text = INPUT.format(dims=_dims(1, 2, 3, 3)) + (
        'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "bn" }\n'
        'layer { name: "sc" type: "Scale" bottom: "bn" top: "sc" scale_param { bias_term: true } }\n'
        'layer { name: "pr" type: "PReLU" bottom: "sc" top: "pr" }'
    )
    net = build_graph(parse_text(text), strict=False)
    assert float(net.state_dict()["bn.variance"].min()) == 1  # drawn to run: unit variance
    _fill_like_caffe(net)
    state = net.state_dict()  # BatchNormLayer, ScaleLayer, PReLULayer LayerSetUp values
    assert float(state["bn.variance"].abs().max()) == 0 and float(state["bn.scale_factor"].abs().max()) == 0
    assert float(state["sc.weight"].min()) == 1 and float(state["sc.bias"].abs().max()) == 0
    assert torch.allclose(state["pr.weight"], torch.full((2,), 0.25))


def test_py_faster_rcnn_anchors_are_those_generate_anchors_py_documents() -> None:
    """The nine default anchors printed in py-faster-rcnn's generate_anchors.py."""
    expected = [
        [-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
        [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
        [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359],
    ]  # fmt: skip
    np.testing.assert_array_equal(faster_rcnn_anchors(16, [0.5, 1, 2], [8, 16, 32]), np.array(expected, float))


def test_the_proposal_type_follows_py_faster_rcnn_unless_brocolli_is_asked_for() -> None:
    """The same prototxt as py-faster-rcnn's Python layer and as a Proposal layer gives the same
    rois; brocolli-caffe's reading (scales in pixels) gives others."""
    from tests.conftest import FIXTURES

    folder = FIXTURES / "forks" / "faster_rcnn_proposal"
    npz = np.load(folder / "io.npz")
    inputs = {b: torch.from_numpy(npz[f"run0/input:{b}"]) for b in ("scores", "deltas", "im_info")}
    head = (folder / "net.prototxt").read_text().splitlines()[0]
    proposal = (
        'layer { name: "p" type: "Proposal" bottom: "scores" bottom: "deltas" bottom: "im_info" top: "rois" '
        "proposal_param { feat_stride: 16 ratio: 0.5 ratio: 1 ratio: 2 scale: 8 scale: 16 scale: 32 } }"
    )
    rois = build_graph(parse_text(head + "\n" + proposal))(**inputs)["rois"]
    np.testing.assert_allclose(rois.numpy(), npz["run0/output:rois"], atol=1e-3)
    pixels = proposal.replace("scale: 8 scale: 16 scale: 32", "scale: 128 scale: 256 scale: 512")
    brocolli = build_graph(parse_text(head + "\n" + pixels), variants={"Proposal": "brocolli-caffe"})
    assert brocolli(**inputs)["rois"].shape != rois.shape or not torch.allclose(brocolli(**inputs)["rois"], rois)


def test_an_unknown_python_layer_is_refused_naming_its_module_and_the_known_ones() -> None:
    text = INPUT.format(dims=_dims(1, 2)) + (
        'layer { name: "py" type: "Python" bottom: "x" top: "y" python_param { module: "my.layer" layer: "L" } }'
    )
    with pytest.raises(NetError, match=r"module 'my.layer'.*known modules: rpn.proposal_layer"):
        build_graph(parse_text(text))


@pytest.mark.parametrize(
    ("param_str", "message"),
    [("'scales': (8, 16)", "needs 'feat_stride'"), ("'feat_stride': 'x'", "must be a number"),
     ("feat_stride: [", "is not a mapping")],
)  # fmt: skip
def test_a_bad_proposal_param_str_is_one_line_naming_the_layer(param_str: str, message: str) -> None:
    text = (
        'layer { name: "in" type: "Input" top: "s" top: "d" top: "i" input_param { '
        f"shape {{ {_dims(1, 18, 2, 2)} }} shape {{ {_dims(1, 36, 2, 2)} }} shape {{ {_dims(1, 3)} }} }} }}\n"
        'layer { name: "proposal" type: "Python" bottom: "s" bottom: "d" bottom: "i" top: "rois" '
        f'python_param {{ module: "rpn.proposal_layer" layer: "ProposalLayer" param_str: "{param_str}" }} }}'
    )
    with pytest.raises(NetError) as info:
        build_graph(parse_text(text))
    assert "layer 'proposal' (Python)" in str(info.value) and message in str(info.value)


def test_every_net_of_the_public_zoo_builds_with_only_its_input_sizes() -> None:
    zoo = need_shared("caffe-zoo")
    import re

    for folder in sorted(p for p in zoo.iterdir() if (p / "deploy.prototxt").exists()):
        source = (folder / "SOURCE.txt").read_text()
        shapes = {
            m.group(1): tuple(int(v) for v in m.group(2).split("x"))
            for m in re.finditer(r"^input: (\w+)=([\dx]+)", source, re.M)
        }
        net = build_graph(read_prototxt(folder / "deploy.prototxt"), input_shapes=shapes, device="meta")
        assert net.caffe.outputs, folder.name


def test_convert_names_the_missing_input_shape_and_an_unknown_variant_in_one_line(tmp_path, capsys) -> None:
    from converters import write_weights
    from converters.caffe2torch import main

    prototxt = tmp_path / "n.prototxt"
    prototxt.write_text(
        'layer { name: "in" type: "Input" top: "data" }\n'
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 1 kernel_size: 1 } }\n'
    )
    caffemodel = tmp_path / "n.caffemodel"
    write_weights({"c": [np.ones((1, 2, 1, 1), np.float32), np.zeros(1, np.float32)]}, caffemodel)
    out = tmp_path / "n.safetensors"
    assert main([str(prototxt), str(caffemodel), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "does not declare the shape of data" in err and "--input-shape" in err
    assert "\n" not in err and not out.exists()
    assert main([str(prototxt), str(caffemodel), "-o", str(out), "--input-shape", "data=1,2,3,3"]) == 0
    capsys.readouterr()
    assert main([str(prototxt), str(caffemodel), "-o", str(out), "--variant", "Proposal=opencv"]) == 2
    err = capsys.readouterr().err.strip()
    assert "'Proposal' has no variant 'opencv' (one of py-faster-rcnn, brocolli-caffe)" in err and "\n" not in err


@pytest.mark.parametrize(
    ("field", "accepted"),
    [
        ("pooling_param { pool: AVE kernel_size: 2 avg_include_pad: true }", True),  # Intel, its default
        ("pooling_param { pool: AVE kernel_size: 2 avg_include_pad: false }", False),
        ("pooling_param { pool: MAX kernel_size: 2 torch_pooling: true }", False),  # NVIDIA
        ("pooling_param { pool: MAX kernel_size: 2 engine: CUDNN }", True),
    ],
)  # fmt: skip
def test_a_forks_field_that_changes_the_numbers_is_refused_unless_at_its_default(field: str, accepted: bool) -> None:
    text = INPUT.format(dims=_dims(1, 1, 4, 4)) + f'layer {{ name: "p" type: "Pooling" bottom: "x" top: "p" {field} }}'
    if accepted:
        assert build_graph(parse_text(text))(x=torch.ones(1, 1, 4, 4))["p"].shape == (1, 1, 3, 3)
        return
    with pytest.raises(NetError) as info:
        build_graph(parse_text(text))
    message = str(info.value)
    assert "layer 'p' (Pooling): field 'pooling_param." in message and "does not implement it" in message
    assert ("Intel Caffe" in message or "NVIDIA Caffe" in message) and "\n" not in message


def test_engine_fields_of_nvidia_and_intel_caffe_are_read_and_change_nothing() -> None:
    text = INPUT.format(dims=_dims(1, 2, 3, 3)) + (
        'layer { name: "bn" type: "BatchNorm" bottom: "x" top: "bn" batch_norm_param { engine: CUDNN } }\n'
        'layer { name: "c" type: "Concat" bottom: "bn" bottom: "x" top: "c" concat_param { engine: MKLDNN } }\n'
        'layer { name: "d" type: "Dropout" bottom: "c" top: "d" dropout_param { random_seed: 7 } }'
    )
    x = torch.randn(1, 2, 3, 3)
    assert build_graph(parse_text(text))(x=x)["d"].shape == (1, 4, 3, 3)


def test_bayesian_segnets_dropout_samples_at_test_time_as_its_fork_does() -> None:
    text = INPUT.format(dims=_dims(1, 4000)) + (
        'layer { name: "d" type: "Dropout" bottom: "x" top: "d" dropout_param { dropout_ratio: 0.5 sample_weights_test: true } }'
    )
    net = build_graph(parse_text(text))
    x = torch.ones(1, 4000)
    first, second = net(x=x)["d"], net(x=x)["d"]
    assert not torch.equal(first, second) and set(first.unique().tolist()) <= {0.0, 2.0}
    assert abs(float(first.mean()) - 1) < 0.1


def test_c3ds_v1_layer_types_are_read_by_name_and_its_fields_apply_to_them_only() -> None:
    text = (
        'name: "c3d"\nlayers { name: "data" type: VIDEO_DATA top: "data" top: "label" '
        "image_data_param { new_length: 16 use_image: true } }\n"
        'layers { name: "conv1a" type: CONVOLUTION3D bottom: "data" top: "conv1a" '
        "convolution_param { num_output: 2 kernel_size: 3 kernel_depth: 3 temporal_pad: 1 } }\n"
    )
    net = build_graph(parse_text(text), input_shapes={"data": (1, 3, 4, 8, 8)})
    assert net.caffe.blob_shapes["conv1a"] == (1, 2, 4, 6, 6)
    with pytest.raises(NetError, match=r"layer 'conv1a' \(Convolution3D\): C3D needs kernel_size and kernel_depth"):
        build_graph(parse_text(text.replace(" kernel_depth: 3", "")), input_shapes={"data": (1, 3, 4, 8, 8)})
    bvlc = text.replace("type: CONVOLUTION3D", "type: CONVOLUTION")  # C3D's field on BVLC's type: refused
    with pytest.raises(NetError, match=r"'convolution_param.kernel_depth: 3' of C3D v1.0 changes what the layer"):
        build_graph(parse_text(bvlc), input_shapes={"data": (1, 3, 8, 8)})


def test_an_unexpanded_template_placeholder_is_named_as_one() -> None:
    from converters.errors import CaffeFormatError

    text = INPUT.format(dims=_dims(1, 1, 2, 2)) + (
        'layer { name: "c" type: "Convolution" bottom: "x" top: "c" convolution_param { num_output: ${NUM_LABELS} } }'
    )
    with pytest.raises(CaffeFormatError, match=r"template placeholder \$\{NUM_LABELS\}: substitute it first"):
        parse_text(text)


def test_a_data_layers_fork_fields_are_read_but_a_name_in_no_schema_is_still_refused() -> None:
    text = (
        'layer { name: "data" type: "AnnotatedData" top: "data" top: "label" '
        "transform_param { resize_param { height: 300 width: 300 } emit_constraint { } } "
        'data_param { source: "x" batch_size: 1 } }\n'
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 1 kernel_size: 1 } }'
    )
    assert build_graph(parse_text(text), input_shapes={"data": (1, 3, 4, 4)}).caffe.outputs == ["c"]
    with pytest.raises(NetError, match=r"field 'transform_param.resise_param' is in none of the"):
        build_graph(parse_text(text.replace("resize_param", "resise_param")), input_shapes={"data": (1, 3, 4, 4)})


def test_a_layer_type_without_a_converter_is_refused_by_its_type_before_its_fields() -> None:
    text = INPUT.format(dims=_dims(1, 2)) + (
        'layer { name: "yolo" type: "Yolov3DetectionOutput" bottom: "x" top: "y" yolov3_detection_output_param { } }'
    )
    with pytest.raises(NetError, match=r"layer 'yolo' has type 'Yolov3DetectionOutput', which fcn-port cannot convert"):
        build_graph(parse_text(text))
