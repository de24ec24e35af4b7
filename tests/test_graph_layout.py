"""Channels-last blobs between convolutions on oneDNN's channels-last kernel (converters.graph.layout):
they stay so through the readers that give the same numbers on them, every other reader and the
net's outputs get them contiguous, and the numbers are those of each layer's own kernel."""

from __future__ import annotations

import copy
import time

import pytest
import torch
import torch.nn.functional as F

from converters import build_graph, load_caffe, parse_text
from converters.fcn.nets import net_definition
from converters.graph import border, speed
from converters.graph.layout import channels_last_readers, is_channels_last, nchw
from converters.graph.speed import optimize_for_cpu
from converters.layers.pooling import max_pool_pairwise

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN (mkldnn)")

NET = """
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 2 dim: 5 dim: 20 dim: 18 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 12 kernel_size: 3 pad: 1 } }
layer { name: "conv3" type: "Convolution" bottom: "pool1" top: "conv3"
        convolution_param { num_output: 12 kernel_size: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "conv2" bottom: "conv3" top: "sum" }
layer { name: "conv4" type: "Convolution" bottom: "sum" top: "conv4"
        convolution_param { num_output: 6 kernel_size: 3 } }
layer { name: "prob" type: "Softmax" bottom: "conv4" top: "prob" }
layer { name: "avg" type: "Pooling" bottom: "sum" top: "avg"
        pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
"""


@pytest.fixture
def every_layer_channels_last(monkeypatch):
    """Every calibrated convolution on oneDNN's channels-last kernel, as a calibration may choose (at
    load too: no kept calibration is read)."""
    monkeypatch.setattr(speed, "CALIBRATION_CACHE", None)
    monkeypatch.setattr(speed, "_calibrate", lambda conv, started: speed.KernelChoice("onednn-nhwc", (), 0.0))


def _nets(text: str, seed: int = 0):
    plain = load_caffe(parse_text(text), None, optimize=False)
    generator = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(v.shape, generator=generator) * 0.3 for k, v in plain.state_dict().items()}
    plain.load_state_dict(state)
    default = load_caffe(parse_text(text), None)
    default.load_state_dict(state)
    return default, plain


def _layouts(net, x: torch.Tensor) -> dict[str, bool]:
    """Per convolution: whether its input came channels-last."""
    seen, hooks = {}, []
    for name, module in net.named_modules():
        if isinstance(module, speed.FastConv2d):
            hooks.append(
                module.register_forward_pre_hook(
                    lambda m, a, n=name: seen.update({n: is_channels_last(a[0])})
                )
            )
    try:
        with torch.no_grad():
            net(data=x)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def test_blobs_stay_channels_last_between_convolutions_and_other_readers_get_them_contiguous(
    every_layer_channels_last,
) -> None:
    default, plain = _nets(NET)
    code = default.code
    # the readers that do not give the same numbers on a channels-last blob read a converted one
    assert "softmax(conv4_nchw" in code and "self.avg(sum_1_nchw" in code.replace("sum_2", "sum_1")
    for name in ("conv1", "pool1", "conv2", "conv3"):
        assert f"{name}_nchw" not in code
    x = torch.randn(2, 5, 20, 18, generator=torch.Generator().manual_seed(3))
    assert _layouts(default, x) == {"conv1": False, "conv2": True, "conv3": True, "conv4": True}
    hinted = {n: m.channels_last_input for n, m in default.named_modules() if isinstance(m, speed.FastConv2d)}
    assert hinted == {"conv1": False, "conv2": True, "conv3": True, "conv4": True}
    # and the race of a layer whose output reaches such a layer counts the reorder into that layout
    convs = [(n, m) for n, m in default.named_modules() if isinstance(m, speed.FastConv2d)]
    feeding = {n: m.channels_last_output for n, m in convs}
    assert feeding == {"conv1": True, "conv2": True, "conv3": True, "conv4": False}
    with torch.no_grad():
        got, want = default(data=x), plain(data=x)
    assert set(got) == set(want)
    for name, value in got.items():
        assert value.stride() == want[name].stride(), name  # the caller gets the blobs it always got
        torch.testing.assert_close(value, want[name], rtol=0, atol=1e-5 * float(want[name].abs().max()))


def test_the_pass_twice_changes_nothing_more(every_layer_channels_last) -> None:
    default, _ = _nets(NET)
    code = default.code
    assert channels_last_readers(default) and default.code == code


def _choose(readers_kernel: str):
    """A calibration where conv1 wins on the channels-last kernel unless its race counts the reorder
    of its output back (then the direct kernel wins), and the other layers run ``readers_kernel``."""

    def calibrate(conv, started):
        if conv.out_channels == 16:  # conv1
            return speed.KernelChoice("onednn" if conv.contiguous_output else "onednn-nhwc", (), 0.0)
        return speed.KernelChoice(readers_kernel, (), 0.0)

    return calibrate


def test_a_channels_last_layer_whose_readers_all_take_contiguous_blobs_is_raced_counting_the_reorder_back(
    monkeypatch,
) -> None:
    monkeypatch.setattr(speed, "CALIBRATION_CACHE", None)  # (no kept calibration of these weights)
    monkeypatch.setattr(speed, "_calibrate", _choose("onednn"))  # conv2, conv3: the direct kernel
    default, plain = _nets(NET)
    convs = {n: m for n, m in default.named_modules() if isinstance(m, speed.FastConv2d)}
    assert {n: m.contiguous_output for n, m in convs.items()} == {
        "conv1": True, "conv2": False, "conv3": False, "conv4": False,
    }  # fmt: skip
    assert convs["conv1"].kernel_choice().kernel == "onednn"
    x = torch.randn(2, 5, 20, 18, generator=torch.Generator().manual_seed(3))
    assert _layouts(default, x) == dict.fromkeys(convs, False)
    with torch.no_grad():
        torch.testing.assert_close(default(data=x)["prob"], plain(data=x)["prob"], rtol=0, atol=1e-6)
    assert speed.settle_layouts(default) == []  # settled: a second pass changes nothing


def test_a_channels_last_layer_stays_so_where_a_reader_keeps_the_layout(monkeypatch) -> None:
    monkeypatch.setattr(speed, "CALIBRATION_CACHE", None)
    monkeypatch.setattr(speed, "_calibrate", _choose("gemm"))  # conv3 (1x1) takes it as it is
    default, _ = _nets(NET)
    assert default.conv1.kernel_choice().kernel == "onednn-nhwc" and not default.conv1.contiguous_output
    x = torch.randn(2, 5, 20, 18, generator=torch.Generator().manual_seed(3))
    assert _layouts(default, x)["conv3"] is True


def test_a_layer_takes_a_channels_last_input_as_its_kernel_wants_it() -> None:
    """The direct kernel computes it as a contiguous one, bit for bit (the plain convolution, whatever
    the layer before gave); our kernels take it as it is (a 3x3 layer's Winograd F(2x2, 3x3), a 1x1
    layer's matrix product) and give a channels-last output with the same sums; a wider gemm
    converts it."""
    default, _ = _nets(NET)
    generator = torch.Generator().manual_seed(5)
    for conv, x in ((default.conv2, torch.randn(2, 16, 10, 9, generator=generator)),
                    (default.conv3, torch.randn(2, 16, 10, 9, generator=generator))):  # fmt: skip
        last = x.contiguous(memory_format=torch.channels_last)
        for kernel in ("direct", "winograd-f2", "gemm"):
            if kernel == "winograd-f2" and conv.kernel_size != (3, 3):
                continue
            conv.choice, conv._calibrated_for = speed.KernelChoice(kernel, (), 0.0), conv._weights_key()
            with torch.no_grad():
                got, want = conv(last), conv(x)
            if kernel == "direct":
                plain = F.conv2d(x, conv.weight.detach(), conv.bias.detach(), padding=conv.padding)
                assert torch.equal(got, want) and torch.equal(got, plain) and got.is_contiguous()
                continue
            keeps = kernel == "winograd-f2" or conv.kernel_size == (1, 1)
            assert is_channels_last(got) == keeps, kernel
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6 * float(want.abs().max()))


def test_the_border_skipping_copies_channels_last_blobs_with_the_same_numbers(
    every_layer_channels_last, monkeypatch
) -> None:
    """A narrow FCN-8s, its stages ending wherever rows may be removed (copy cost 0), so that blobs are
    both expanded and restored for the readers outside the chain (pool3)."""
    monkeypatch.setattr(border, "COPY_COST", 0)
    plain = build_graph(net_definition("voc-fcn8s", "deploy", width=0.0625), seed=4)
    default = optimize_for_cpu(copy.deepcopy(plain))
    assert "expand" in default.code and "restore" in default.code
    assert default.conv1_2.channels_last_input  # the border's first convolution counts as a producer
    x = torch.randn(1, 3, 37, 53, generator=torch.Generator().manual_seed(6)) * 50
    assert all(came for name, came in _layouts(default, x).items() if name != "conv1_1")
    with torch.no_grad():
        got, want = default(data=x)["score"], plain(data=x)["score"]
    assert got.stride() == want.stride()  # the plain graph's layout (a Crop's view)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * float(want.abs().max()))


def test_2x2_max_pooling_keeps_a_channels_last_blob_so_with_the_same_values() -> None:
    x = torch.randn(2, 6, 9, 12, generator=torch.Generator().manual_seed(7))
    x[0, 1, 2, 3] = float("nan")
    last = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got = max_pool_pairwise(last, (2, 2), (2, 2), (0, 0))
    assert is_channels_last(got)
    torch.testing.assert_close(got, F.max_pool2d(x, 2, 2, ceil_mode=True), rtol=0, atol=0, equal_nan=True)


def test_nchw_converts_only_channels_last_blobs() -> None:
    x = torch.randn(1, 3, 4, 5)
    assert nchw(x) is x and nchw(x[..., 1:]) is not None and not is_channels_last(x)
    last = x.contiguous(memory_format=torch.channels_last)
    assert is_channels_last(last) and nchw(last).is_contiguous() and torch.equal(nchw(last), x)
    single = torch.randn(1, 1, 4, 5)  # one channel: both layouts at once, nothing to convert
    assert nchw(single) is single


def test_a_callers_channels_last_input_gives_the_contiguous_inputs_numbers() -> None:
    """Whatever the kernels the calibration chose, a caller's channels-last image is the same image
    (each layer's kernel takes it as its own layout wants it)."""
    default, plain = _nets(NET, seed=9)
    x = torch.randn(3, 5, 20, 18, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        got, same, want = (
            default(data=x.contiguous(memory_format=torch.channels_last)),
            default(data=x),
            plain(data=x),
        )
    for name, value in want.items():
        for result in (got[name], same[name]):
            torch.testing.assert_close(result, value, rtol=0, atol=1e-5 * float(value.abs().max()))


def test_two_convolutions_that_take_one_channels_last_blob_contiguous_share_one_conversion_of_it(
    monkeypatch,
) -> None:
    """ResNet's first block of a stage: its shortcut and first 1x1 layer read the same channels-last
    blob on the direct kernel; one copy of it serves both."""
    from converters.graph import layout

    monkeypatch.setattr(speed, "CALIBRATION_CACHE", None)
    def calibrate(conv, started):  # conv1 channels-last whatever its race; the others the direct kernel
        return speed.KernelChoice("onednn-nhwc" if conv.out_channels == 16 else "onednn", (), 0.0)

    monkeypatch.setattr(speed, "_calibrate", calibrate)
    default, plain = _nets(NET)
    assert "pool1_nchw" in default.code
    converted = []
    real = layout.contiguous

    def counting(x):
        converted.append(is_channels_last(x))
        return real(x)

    monkeypatch.setattr(layout, "contiguous", counting)
    monkeypatch.setattr(speed, "contiguous", counting)
    x = torch.randn(2, 5, 20, 18, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = default(data=x)["prob"]
    assert converted.count(True) == 1  # pool1's, once (each of conv2 and conv3 made its own before)
    with torch.no_grad():
        torch.testing.assert_close(got, plain(data=x)["prob"], rtol=0, atol=1e-6)
    assert speed.share_conversions(default) == []  # a second pass changes nothing


@pytest.mark.parametrize("shape", [(1, 64, 56, 56), (2, 24, 31, 17), (1, 512, 7, 7)])
@pytest.mark.parametrize("which", [0, 1])
def test_a_channels_last_blob_made_contiguous_by_either_copy_holds_the_same_values(shape, which) -> None:
    from converters.graph import layout

    x = torch.randn(shape, generator=torch.Generator().manual_seed(11))
    x[0, 1, 2, 3] = float("nan")
    got = layout._COPIES[which](x.contiguous(memory_format=torch.channels_last))
    assert got.is_contiguous() and torch.equal(got.nan_to_num(), x.nan_to_num())
    assert layout.contiguous(x) is x  # already contiguous: itself


def test_the_copies_race_in_turns_on_conversions_the_net_makes_and_the_faster_is_kept(monkeypatch) -> None:
    from converters.graph import layout

    shape = (1, 40, 41, 43)  # (a shape no other test converts)
    calls = []
    slow = lambda x: calls.append("slow") or time.sleep(0.01) or x.contiguous()  # noqa: E731
    fast = lambda x: calls.append("fast") or x.contiguous()  # noqa: E731
    monkeypatch.setattr(layout, "_COPIES", (slow, fast))
    monkeypatch.setattr(layout, "_COPY_TIMES", {})
    x = torch.randn(shape).contiguous(memory_format=torch.channels_last)
    for _ in range(2 * layout.RACE_RUNS + 3):
        assert torch.equal(layout.contiguous(x), x)
    assert calls == ["slow", "fast"] * layout.RACE_RUNS + ["fast"] * 3  # (one copy a conversion)
    small = torch.randn(1, 3, 8, 8).contiguous(memory_format=torch.channels_last)  # below RACE_VALUES
    assert layout.contiguous(small).is_contiguous() and len(calls) == 2 * layout.RACE_RUNS + 3


def test_a_layer_that_reads_only_shapes_takes_a_channels_last_blob_without_a_conversion(
    every_layer_channels_last,
) -> None:
    text = """
    layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 24 dim: 20 } } }
    layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
            convolution_param { num_output: 8 kernel_size: 3 stride: 2 } }
    layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
            convolution_param { num_output: 4 kernel_size: 1 } }
    layer { name: "boxes" type: "PriorBox" bottom: "conv1" bottom: "data" top: "boxes"
            prior_box_param { min_size: 6 max_size: 12 aspect_ratio: 2 flip: true clip: true } }
    """
    default, plain = _nets(text)
    assert "self.boxes(conv1, data)" in default.code and "conv1_nchw" not in default.code
    x = torch.randn(1, 3, 24, 20, generator=torch.Generator().manual_seed(5))
    assert _layouts(default, x)["conv2"] is True  # conv1's output is channels-last where PriorBox reads it
    with torch.no_grad():
        got, want = default(data=x), plain(data=x)
    assert torch.equal(got["boxes"], want["boxes"])
