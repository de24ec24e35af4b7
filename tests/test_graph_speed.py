"""The CPU-optimised graph (border skipping, NNPACK convolutions, in-place ReLU) is the default on
the CPU and still gives Caffe's numbers (every parity test in tests/test_fcn_parity.py and
tests/test_layers_parity.py runs it; full-width voc-fcn8s there too)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from converters import build_graph, load_caffe, load_converted, parse_text, save_converted, write_prototxt
from converters.fcn.nets import net_definition
from converters.graph.border import BorderPlanner
from converters.graph.speed import FastConv2d, kernel_choices, nnpack_available, optimize_for_cpu
from eval import timing
from tests.test_fcn_parity import ROOT, SMALL, arrays, assert_matches_caffe, case, graph, run_inputs, weights

needs_nnpack = pytest.mark.skipif(not nnpack_available(), reason="this PyTorch build or CPU has no NNPACK")


@needs_nnpack
@pytest.mark.parametrize(
    "folder", [f for f in SMALL if f in ("voc-fcn8s", "voc-fcn-alexnet", "siftflow-fcn16s")]
)
def test_optimised_graph_matches_caffe(folder: str) -> None:
    net = optimize_for_cpu(load_caffe(ROOT / folder / "deploy.prototxt", weights(folder), optimize=False))
    assert any(isinstance(m, FastConv2d) for m in net.children())
    for run in range(len(case(folder)["runs"])):
        with torch.no_grad():
            got = net(**run_inputs(folder, run))
        for blob, value in got.items():
            assert_matches_caffe(value, arrays(folder)[f"output:{blob}:{run}"], f"{folder} run {run} {blob}")


def test_state_dict_and_gradients_are_unchanged() -> None:
    net = build_graph(net_definition("voc-fcn16s", "deploy", width=0.0625), seed=2)
    fast = optimize_for_cpu(copy.deepcopy(net))
    assert list(fast.state_dict()) == list(net.state_dict())
    x = torch.randn(2, 3, 19, 27, generator=torch.Generator().manual_seed(3)) * 50
    with torch.no_grad():
        torch.testing.assert_close(fast(data=x)["score"], net(data=x)["score"], rtol=1e-4, atol=1e-4)
    fast(data=x)["score"].sum().backward()  # falls back to PyTorch's kernel under autograd
    net(data=x)["score"].sum().backward()
    torch.testing.assert_close(fast.conv1_1.weight.grad, net.conv1_1.weight.grad, rtol=1e-4, atol=1e-4)
    assert "torch.relu(" in net.code and "torch.relu" not in fast.code  # (each ReLU inside its layer now)
    assert fast.conv1_1.relu and fast.conv1_2.relu


def test_a_relu_after_an_eltwise_runs_in_place_only_where_nothing_else_reads_the_sum() -> None:
    from converters import parse_text

    text = (
        'layer { name: "in" type: "Input" top: "data" '
        "input_param { shape { dim: 2 dim: 4 dim: 6 dim: 6 } } }\n"
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
        "convolution_param { num_output: 4 kernel_size: 1 } }\n"
        'layer { name: "sum" type: "Eltwise" bottom: "c" bottom: "data" top: "sum" }\n'
        'layer { name: "sum_relu" type: "ReLU" bottom: "sum" top: "r" }\n'
        'layer { name: "max" type: "Eltwise" bottom: "r" bottom: "c" top: "max" '
        "eltwise_param { operation: MAX } }\n"
        'layer { name: "max_relu" type: "ReLU" bottom: "max" top: "max_relu" }\n'
        'layer { name: "out" type: "Eltwise" bottom: "max" bottom: "max_relu" top: "out" '
        "eltwise_param { operation: PROD } }"
    )
    plain = build_graph(parse_text(text), seed=1)
    fast = optimize_for_cpu(copy.deepcopy(plain))
    assert "torch.relu_(sum_1)" in fast.code  # the sum's only reader
    assert "torch.relu(max_1)" in fast.code  # the max is read again after its ReLU
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(2), requires_grad=True)
    assert torch.equal(fast(data=x)["out"], plain(data=x)["out"])
    (got,) = torch.autograd.grad(fast(data=x)["out"].sum(), x)
    (expected,) = torch.autograd.grad(plain(data=x)["out"].sum(), x)
    assert torch.equal(got, expected)


def test_load_caffe_rewrites_the_graph_while_the_weights_are_read_and_then_uses_the_read_weights(
    monkeypatch, tmp_path
) -> None:
    """The graph passes run before the first blob is taken from the background reader; the factors of
    BatchNorm/Scale and the kernels' calibrations come after, from the weights read (the memory
    read into replaces the parameters' own without moving their version counters: the caches key
    on the memory too)."""
    from converters import write_weights
    from converters.caffe import formats
    from converters.graph import speed

    text = (
        'layer { name: "in" type: "Input" top: "data" '
        "input_param { shape { dim: 1 dim: 8 dim: 12 dim: 12 } } }\n"
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
        "convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }\n"
        'layer { name: "bn" type: "BatchNorm" bottom: "c" top: "c" '
        "batch_norm_param { use_global_stats: true } }\n"
        'layer { name: "sc" type: "Scale" bottom: "c" top: "c" scale_param { bias_term: true } }\n'
        'layer { name: "r" type: "ReLU" bottom: "c" top: "c" }'
    )
    (tmp_path / "net.prototxt").write_text(text)
    generator = torch.Generator().manual_seed(8)

    def draw(*shape: int, low: float = -1.0) -> np.ndarray:
        return (torch.rand(shape, generator=generator) * (1 - low) + low).numpy()

    weights = {
        "c": [draw(16, 8, 3, 3), draw(16)],
        "bn": [draw(16), draw(16, low=0.5), np.array([2.0], np.float32)],
        "sc": [draw(16, low=0.5), draw(16)],
    }
    write_weights(weights, tmp_path / "net.caffemodel")
    order = []
    real_rewrite, real_take = speed.rewrite_for_cpu, formats.FileWeights.take
    monkeypatch.setattr(speed, "rewrite_for_cpu", lambda n: order.append("rewrite") or real_rewrite(n))
    monkeypatch.setattr(formats.FileWeights, "take", lambda w, a: order.append("take") or real_take(w, a))
    net = load_caffe(tmp_path / "net.prototxt", tmp_path / "net.caffemodel")
    monkeypatch.undo()
    assert order[0] == "rewrite" and "take" in order
    assert any(type(m).__name__ == "ConvNormScale" for m in net.modules())
    plain = load_caffe(tmp_path / "net.prototxt", weights, optimize=False)
    expected = optimize_for_cpu(load_caffe(tmp_path / "net.prototxt", weights, optimize=False))
    x = torch.randn(1, 8, 12, 12, generator=generator)
    with torch.no_grad():
        got = net(data=x)["c"]
        assert torch.equal(got, expected(data=x)["c"])
        torch.testing.assert_close(got, plain(data=x)["c"], rtol=1e-5, atol=1e-6)


def test_load_caffe_gives_the_fast_graph_on_the_cpu_and_the_plain_one_on_request() -> None:
    definition = net_definition("voc-fcn32s", "deploy", width=0.0625)
    fast, plain = load_caffe(definition, None), load_caffe(definition, None, optimize=False)
    assert any(isinstance(m, BorderPlanner) for m in fast.modules())
    assert not any(isinstance(m, (BorderPlanner, FastConv2d)) for m in plain.modules())
    assert list(fast.state_dict()) == list(plain.state_dict())
    meta = load_caffe(definition, None, device="meta")
    assert not any(isinstance(m, BorderPlanner) for m in meta.modules())
    assert not any(isinstance(m, BorderPlanner) for m in build_graph(definition).modules())


def test_the_caffe_parity_tests_run_the_default_fast_graph() -> None:
    net = graph("voc-fcn8s")
    assert any(isinstance(m, BorderPlanner) for m in net.modules())
    if nnpack_available():
        assert any(isinstance(m, FastConv2d) for m in net.modules())


def test_optimising_twice_changes_nothing_more() -> None:
    net = load_caffe(net_definition("voc-fcn8s", "deploy", width=0.0625), None)
    code = net.code
    assert optimize_for_cpu(net).code == code


def test_converted_files_load_fast_on_the_cpu_with_the_same_outputs(tmp_path) -> None:
    definition = net_definition("voc-fcn8s", "deploy", width=0.0625)
    plain = load_caffe(definition, None, optimize=False)
    save_converted(plain, tmp_path / "net.safetensors")
    fast = load_converted(tmp_path / "net.safetensors")
    assert any(isinstance(m, BorderPlanner) for m in fast.modules())
    assert not any(
        isinstance(m, BorderPlanner)
        for m in load_converted(tmp_path / "net.safetensors", optimize=False).modules()
    )
    x = torch.randn(1, 3, 23, 31, generator=torch.Generator().manual_seed(1)) * 50
    with torch.no_grad():
        expected, got = plain(data=x)["score"], fast(data=x)["score"]
    assert float((got - expected).abs().max()) <= 1e-5 * float(expected.abs().max())


def test_timing_on_the_cpu_times_the_default_graph_beside_the_plain_one(tmp_path, capsys) -> None:
    definition = net_definition("voc-fcn32s", "deploy", width=0.0625)
    write_prototxt(definition, tmp_path / "deploy.prototxt")
    args = ["--model", str(tmp_path / "deploy.prototxt"), "--size", "8x8", "--device", "cpu", "--runs", "20"]
    assert timing.main([*args, "--warmup", "1", "--json", str(tmp_path / "t.json"), "--no-progress"]) == 0
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["fp32", "cpu_fast"]


def _conv(cin: int, cout: int, k: int, seed: int, scale: float = 1.0) -> FastConv2d:
    conv = FastConv2d(cin, cout, k, padding=k // 2)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * scale / (cin * k * k) ** 0.5)
        conv.bias.copy_(torch.randn(cout, generator=generator) * 0.05)
    return conv.eval()


def test_a_layer_runs_a_candidate_only_where_the_probe_finds_it_more_precise_and_the_race_faster() -> None:
    """The rule of converters.graph.speed: a candidate kernel is kept only where its error on the
    probe, RMS and largest, is within RMS_RATIO / MAX_RATIO of the direct kernel's (a kernel of the
    same products, SAME_PRODUCTS_RMS_RATIO / SAME_PRODUCTS_MAX_RATIO), or its outputs are the direct
    kernel's, bit for bit; and then runs only if it was the fastest on the speed probe; else the layer
    is the plain convolution, bit for bit.
    NNPACK's Winograd F(6x6, 3x3) on an RGB input is far less precise on every CPU we know."""
    from converters.graph import speed

    def within_rule(m: speed.Measured) -> bool:
        same = m.kernel in speed.SAME_PRODUCTS
        rms = speed.SAME_PRODUCTS_RMS_RATIO if same else speed.RMS_RATIO
        largest = speed.SAME_PRODUCTS_MAX_RATIO if same else speed.MAX_RATIO
        return m.identical or (m.rms <= rms and m.max <= largest)

    assert speed.RMS_RATIO < 1 < speed.SAME_PRODUCTS_RMS_RATIO < 1.3  # the transforms: clearly more precise
    first = _conv(3, 64, 3, seed=1)
    choice = first.kernel_choice()
    assert choice.kernel not in ("winograd-f2", "nnpack-winograd", "nnpack-fft")
    assert {m.kernel for m in choice.measured} >= {"winograd-f2", "gemm"}
    if nnpack_available():
        (nnpack,) = [m for m in choice.measured if m.kernel == "nnpack-winograd"]
        assert nnpack.rms > speed.RMS_RATIO and not nnpack.precise
        assert "nnpack-winograd refused" in str(choice)
    x = torch.randn(2, 3, 31, 29, generator=torch.Generator().manual_seed(4)) * 50
    with torch.no_grad():
        plain = torch.nn.functional.conv2d(x, first.weight, first.bias, padding=1)
        if choice.kernel in speed.FAST_KERNELS:
            torch.testing.assert_close(first(x), plain, rtol=0, atol=1e-4 * float(plain.abs().max()))
        else:
            assert torch.equal(first(x), plain)
    for cin, k in ((3, 3), (64, 3), (64, 5), (256, 7), (16, 2), (96, 1), (256, 3), (512, 1)):
        choice = _conv(cin, 32, k, seed=cin + k).kernel_choice()
        precise = [m for m in choice.measured if m.precise]
        assert all(within_rule(m) == m.precise for m in choice.measured)
        # (the prepacked direct kernel, giving the direct kernel's numbers, needs no margin)
        margin = {m.kernel: 1.0 if m.kernel == "onednn-packed" and m.identical else speed.SPEED_MARGIN
                  for m in precise}  # fmt: skip
        if choice.kernel in speed.FAST_KERNELS:  # kept: precise, faster than the direct kernel and the rest
            (kept,) = [m for m in precise if m.kernel == choice.kernel]
            assert kept.time < margin[kept.kernel] and all(kept.time <= m.time for m in precise), choice
        else:  # the direct kernel: no precise candidate beat it by the margin
            assert all(not m.time < margin[m.kernel] for m in precise), choice


def test_the_race_decides_among_the_precise_kernels_only(monkeypatch) -> None:
    """A refused kernel is never raced (so never runs); among the kept ones and the direct kernel the
    fastest runs (here made so by a stand-in race)."""
    from converters.graph import speed

    conv = _conv(128, 64, 3, seed=7)
    measured = speed._calibrate(conv, 0.0).measured
    kept = [m.kernel for m in measured if m.precise]
    for fastest in [*kept, "the direct kernel"]:

        def race(layer, kernels, padding, fastest=fastest):
            assert all(k in kept for k in kernels[1:]) and kernels[0] not in speed.FAST_KERNELS
            return {k: 0.5 if k == fastest or (fastest not in kernels and i == 0) else 1.0
                    for i, k in enumerate(kernels)}  # fmt: skip

        monkeypatch.setattr(speed, "_race", race)
        choice = speed._calibrate(conv, 0.0)
        assert choice.kernel == fastest if fastest in kept else choice.kernel not in speed.FAST_KERNELS


@pytest.mark.parametrize("kernel", ["winograd-f2", "gemm"])
def test_a_layer_on_our_kernels_gives_the_convolution_and_trains_on_pytorchs(monkeypatch, kernel) -> None:
    from converters.graph import speed

    conv = _conv(16, 8, 3, seed=3)
    monkeypatch.setattr(speed, "_calibrate", lambda layer, started: speed.KernelChoice(kernel, (), 0.0))
    x = torch.randn(2, 16, 13, 10, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        got = conv(x)
        border = conv.convolve(x, (0, 2))  # the border skipping's own padding
    exact = torch.nn.functional.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    torch.testing.assert_close(got.double(), exact, rtol=0, atol=1e-5)
    exact = torch.nn.functional.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=(0, 2))
    torch.testing.assert_close(border.double(), exact, rtol=0, atol=1e-5)
    x.requires_grad_(True)
    conv(x).sum().backward()  # autograd: PyTorch's own kernel
    assert x.grad is not None and conv.weight.grad is not None


needs_onednn = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="this PyTorch has no oneDNN"
)


@needs_onednn
@pytest.mark.parametrize(("groups", "stride", "with_bias"), [(1, 1, True), (1, 2, False), (8, 1, True)])
def test_onednns_channels_last_kernel_on_weights_reordered_once_gives_its_numbers_at_every_call(
    groups, stride, with_bias
) -> None:
    """The weights are reordered into oneDNN's blocked layout once, for the first input's shape; at
    other shapes, batches and paddings the numbers are still oneDNN's on a channels-last input, bit
    for bit (the same kernel, only without the reorder at every call)."""
    from converters.graph.speed import prepared_weights, run_kernel

    generator = torch.Generator().manual_seed(7)
    weight = torch.randn(16, 16 // groups, 3, 3, generator=generator)
    bias = torch.randn(16, generator=generator) if with_bias else None
    packed = prepared_weights("onednn-nhwc", weight, (stride, stride), (1, 1), groups, (1, 16, 24, 24))
    for shape, padding in [((1, 16, 24, 24), (1, 1)), ((2, 16, 9, 14), (0, 2)), ((1, 16, 5, 31), (2, 0))]:
        x = torch.randn(shape, generator=generator).contiguous(memory_format=torch.channels_last)
        got = run_kernel("onednn-nhwc", x, weight, bias, (stride, stride), padding, packed, groups)
        assert got.is_contiguous(memory_format=torch.channels_last)
        onednn = torch.mkldnn_convolution(x, weight, bias, padding, (stride, stride), (1, 1), groups)
        assert torch.equal(got, onednn)
        for given in (x.contiguous(), x):  # (a contiguous input is made channels-last; also unkept weights)
            again = run_kernel("onednn-nhwc", given, weight, bias, (stride, stride), padding, packed, groups)
            unkept = run_kernel("onednn-nhwc", given, weight, bias, (stride, stride), padding, None, groups)
            assert torch.equal(again, got) and torch.equal(unkept, got)


@pytest.mark.parametrize(
    "kernel", ["winograd-f2", "gemm", "onednn-forced", "onednn-nhwc", "onednn-packed", "direct"]
)
def test_a_kernel_with_its_relu_gives_the_relu_of_its_output_bit_for_bit(kernel) -> None:
    """``run_kernel(..., relu=True)`` (oneDNN's kernels apply it as they write) is ``relu`` of the
    kernel's output, on kept and unkept weights, contiguous and channels-last."""
    from converters.graph.speed import prepared_weights, run_kernel

    if kernel.startswith("onednn") and not torch.backends.mkldnn.is_available():
        pytest.skip("this PyTorch has no oneDNN")
    generator = torch.Generator().manual_seed(11)
    weight = torch.randn(12, 8, 3, 3, generator=generator)
    bias = torch.randn(12, generator=generator)
    x = torch.randn(2, 8, 10, 13, generator=generator)
    # (kept weights are made for the bias and ReLU they run with: the prepacked kernel holds both)
    kept = {relu: prepared_weights(kernel, weight, (1, 1), (1, 1), 1, tuple(x.shape), bias, relu)
            for relu in (False, True)}  # fmt: skip
    for given in (x, x.contiguous(memory_format=torch.channels_last)):
        for keep in (True, False):
            plain = run_kernel(kernel, given, weight, bias, (1, 1), (1, 1), kept[False] if keep else None)
            prepared = kept[True] if keep else None
            fused = run_kernel(kernel, given, weight, bias, (1, 1), (1, 1), prepared, relu=True)
            assert (plain < 0).any() and torch.equal(fused, torch.relu(plain))


@needs_onednn
@pytest.mark.parametrize("relu", [True, False])
def test_the_prepacked_direct_kernel_gives_the_direct_kernels_numbers_and_needs_only_be_faster(
    monkeypatch, relu
) -> None:
    """``onednn-packed``: oneDNN's direct kernel on weights reordered once, with the layer's ReLU
    applied as it writes. Where the probe finds its numbers the direct kernel's it runs if the race
    finds it faster at all (it is that kernel less work), and gives ``F.conv2d`` (and its ReLU) bit
    for bit wherever PyTorch picks oneDNN, at other shapes, batches, strides and paddings (one kept
    prepacked convolution per padding), on contiguous and channels-last inputs; where PyTorch picks
    its own kernel (a small single image), oneDNN's sums of the same products."""
    from converters.graph import speed

    def race(layer, kernels, padding):  # the prepacked kernel faster, but not by the margin
        return {k: 0.99 if k == "onednn-packed" else 1.0 if i == 0 else 2.0 for i, k in enumerate(kernels)}

    monkeypatch.setattr(speed, "_race", race)
    generator = torch.Generator().manual_seed(12)
    for stride in (1, 2):
        conv = _conv(16, 24, 3, seed=stride)
        conv.stride, conv.relu = (stride, stride), relu
        assert "onednn-packed" in speed.candidate_kernels(conv)
        choice = speed._calibrate(conv, 0.0)
        (packed,) = [m for m in choice.measured if m.kernel == "onednn-packed"]
        assert packed.identical and choice.kernel == "onednn-packed", choice
        monkeypatch.setattr(conv, "choice", choice)
        monkeypatch.setattr(conv, "_calibrated_for", conv._weights_key())
        # (PyTorch picks oneDNN for the first two, its own kernel for the small single image)
        for shape, padding in [((1, 16, 40, 41), (1, 1)), ((2, 16, 9, 14), (0, 2)), ((1, 16, 5, 31), (0, 0))]:
            x = torch.randn(shape, generator=generator)
            for given in (x, x.contiguous(memory_format=torch.channels_last)):
                with torch.no_grad():
                    got = conv.convolve(given, padding)
                    plain = torch.nn.functional.conv2d(x, conv.weight, conv.bias, conv.stride, padding)
                    plain = plain.relu() if relu else plain
                assert got.is_contiguous() and (plain == 0).any() == relu
                if speed.direct_kernel(x, conv.weight, conv.stride, padding) == "onednn":
                    assert torch.equal(got, plain)
                else:
                    torch.testing.assert_close(got, plain, rtol=0, atol=1e-5 * float(plain.abs().max()))
            assert conv._prepared[0][2] == padding  # (kept for the padding it ran with last)
    # where the probe finds other numbers (another kernel inside oneDNN), it needs the margin
    real = speed.run_kernel

    def other(kernel, x, *args, **kwargs):
        y = real(kernel, x, *args, **kwargs)
        return y * (1 + 2**-20) if kernel == "onednn-packed" else y

    monkeypatch.setattr(speed, "run_kernel", other)
    choice = speed._calibrate(conv, 0.0)
    (packed,) = [m for m in choice.measured if m.kernel == "onednn-packed"]
    assert not packed.identical and choice.kernel not in speed.FAST_KERNELS, choice


def test_a_relu_that_is_its_convolutions_only_reader_runs_inside_the_fast_layer() -> None:
    """An in-place ReLU on a convolution's output that nothing else reads goes into the layer
    (``relu=True``); one whose input is also an output of the net stays a node. Outputs and
    gradients are the plain graph's (gradients through PyTorch's kernel and ``torch.relu``)."""
    from converters import parse_text

    conv = "convolution_param { num_output: 8 kernel_size: 3 pad: 1 }"
    text = (
        'layer { name: "in" type: "Input" top: "data" '
        "input_param { shape { dim: 1 dim: 3 dim: 12 dim: 12 } } }\n"
        f'layer {{ name: "a" type: "Convolution" bottom: "data" top: "a" {conv} }}\n'
        'layer { name: "relu_a" type: "ReLU" bottom: "a" top: "a" }\n'
        f'layer {{ name: "b" type: "Convolution" bottom: "a" top: "b" {conv} }}\n'
        'layer { name: "relu_b" type: "ReLU" bottom: "b" top: "b_relu" }\n'
    )
    plain = build_graph(parse_text(text), seed=5, outputs=["b", "b_relu"])
    fast = optimize_for_cpu(copy.deepcopy(plain))
    assert fast.a.relu and not fast.b.relu
    assert "relu_a" not in fast.code and "torch.relu" in fast.code  # (b's ReLU: b is also an output)
    assert "relu=True" in repr(fast.a)
    choices = kernel_choices(fast)
    assert choices["a"].endswith(" + its ReLU in the layer") and "ReLU" not in choices["b"]
    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        got, want = fast(data=x), plain(data=x)
    for blob in ("b", "b_relu"):
        torch.testing.assert_close(got[blob], want[blob], rtol=1e-5, atol=1e-5)
    weight = fast.a.weight
    fast(data=x)["b_relu"].sum().backward()
    plain(data=x)["b_relu"].sum().backward()
    torch.testing.assert_close(weight.grad, plain.a.weight.grad, rtol=1e-5, atol=1e-5)
    assert optimize_for_cpu(fast).code == fast.code  # (again: nothing more)


@needs_onednn
def test_a_layer_keeps_its_reordered_weights_until_they_change_and_copies_and_saves_without_them(
    monkeypatch, tmp_path
) -> None:
    from converters.graph import speed

    conv = _conv(16, 8, 3, seed=4)
    monkeypatch.setattr(speed, "_calibrate", lambda layer, began: speed.KernelChoice("onednn-nhwc", (), 0.0))
    made = []
    real = speed.prepared_weights
    monkeypatch.setattr(speed, "prepared_weights", lambda *a: made.append(a[0]) or real(*a))
    x = torch.randn(1, 16, 12, 12, generator=torch.Generator().manual_seed(6))
    x = x.contiguous(memory_format=torch.channels_last)

    def plain(x: torch.Tensor) -> torch.Tensor:  # oneDNN's kernel at every call
        x = x.contiguous(memory_format=torch.channels_last)
        return torch.mkldnn_convolution(x, conv.weight, conv.bias, (1, 1), (1, 1), (1, 1), 1)

    with torch.no_grad():
        assert torch.equal(conv(x), plain(x))
        assert torch.equal(conv(x[:, :, 1:]), plain(x[:, :, 1:]))
        assert made == ["onednn-nhwc"]
        conv.weight.mul_(-1)  # new weights: reordered again
        assert torch.equal(conv(x), plain(x))
        assert made == ["onednn-nhwc"] * 2
        copied = copy.deepcopy(conv)
        torch.save(conv, tmp_path / "conv.pt")
        loaded = torch.load(tmp_path / "conv.pt", weights_only=False)
        assert torch.equal(copied(x), conv(x)) and torch.equal(loaded(x), conv(x))


@pytest.mark.parametrize("kernel", ["winograd-f2", "onednn-nhwc"])
def test_weights_given_new_memory_through_data_are_calibrated_and_prepared_again(monkeypatch, kernel) -> None:
    """``param.data = tensor`` (as the loader and many users assign) moves no version counter; a layer
    that kept its old calibration and prepared weights would compute with the old weights."""
    from converters.graph import speed

    if kernel == "onednn-nhwc" and not torch.backends.mkldnn.is_available():
        pytest.skip("this PyTorch has no oneDNN")
    conv = _conv(16, 8, 3, seed=9)
    monkeypatch.setattr(speed, "_calibrate", lambda layer, began: speed.KernelChoice(kernel, (), 0.0))
    generator = torch.Generator().manual_seed(10)
    x = torch.randn(1, 16, 10, 10, generator=generator)
    with torch.no_grad():
        conv(x)
        conv.weight.data = torch.randn(8, 16, 3, 3, generator=generator) * 0.1
        conv.bias.data = torch.randn(8, generator=generator)
        got = conv(x).double()
    exact = torch.nn.functional.conv2d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
    torch.testing.assert_close(got, exact, rtol=0, atol=1e-5)


def test_batch_norm_statistics_given_new_memory_through_data_are_folded_again() -> None:
    from converters import parse_text

    text = (
        'layer { name: "in" type: "Input" top: "data" '
        "input_param { shape { dim: 1 dim: 4 dim: 6 dim: 6 } } }\n"
        'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
        "convolution_param { num_output: 4 kernel_size: 1 } }\n"
        'layer { name: "bn" type: "BatchNorm" bottom: "c" top: "c" '
        "batch_norm_param { use_global_stats: true } }"
    )
    plain = build_graph(parse_text(text), seed=3)
    fast = optimize_for_cpu(copy.deepcopy(plain))
    assert any(type(m).__name__ == "ConvNormScale" for m in fast.modules())
    x = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        fast(data=x)
        for net in (plain, fast):
            net.bn.mean.data = torch.full((4,), 3.0)
        torch.testing.assert_close(fast(data=x)["c"], plain(data=x)["c"], rtol=1e-6, atol=1e-6)


@needs_nnpack
def test_calibration_follows_the_weights_and_is_done_at_load(monkeypatch) -> None:
    from converters.graph import speed

    net = load_caffe(net_definition("voc-fcn8s", "deploy", width=0.0625), None)
    convs = [m for m in net.modules() if isinstance(m, FastConv2d)]
    assert convs and all(m.choice is not None for m in convs)  # calibrated by load_caffe
    calls = []
    real = speed.calibrate
    monkeypatch.setattr(speed, "calibrate", lambda conv: calls.append(conv) or real(conv))
    x = torch.randn(1, 3, 20, 20) * 50
    with torch.no_grad():
        net(data=x)
    assert calls == []  # the first forward pays nothing per layer
    with torch.no_grad():
        convs[0].weight.mul_(2)  # new weights: calibrated again, once
        net(data=x)
        net(data=x)
    assert calls == [convs[0]]
    net.load_state_dict(net.state_dict())
    with torch.no_grad():
        net(data=x)
    assert len(calls) == 1 + len(convs)


def test_kernel_choices_name_every_convolutions_kernel() -> None:
    net = load_caffe(net_definition("voc-fcn8s", "deploy", width=0.0625), None)
    choices = kernel_choices(net)
    convs = [n for n, m in net.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert sorted(choices) == sorted(convs)  # (the upsampling layers too: upscore2, upscore_pool4, upscore8)
    assert {"upscore2", "upscore_pool4", "upscore8"} <= set(choices)
    assert all(text.split(" ")[0] for text in choices.values())
    if nnpack_available():
        assert "nnpack-winograd refused" in choices["conv1_1"]


def test_kernel_choices_on_the_nets_feeds_name_what_pytorch_picked_for_each_layers_input() -> None:
    from converters.graph.speed import FAST_KERNELS, KernelChoice, direct_kernel

    net = load_caffe(net_definition("voc-fcn8s", "deploy", width=0.0625), None)
    name = "conv4_2"  # one on PyTorch's kernel (whatever the race chose), called as a module
    conv = net.get_submodule(name)
    conv.choice = KernelChoice("onednn", conv.kernel_choice().measured, 0.0)
    assert conv.kernel_choice().kernel not in FAST_KERNELS
    x = torch.randn(1, 3, 40, 40)
    seen = {}
    hook = net.get_submodule(name).register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0].clone()))
    with torch.no_grad():
        net(data=x)
    hook.remove()
    on_feeds, on_probe = kernel_choices(net, {"data": x}), kernel_choices(net)
    assert sorted(on_feeds) == sorted(on_probe)
    conv = net.get_submodule(name)
    expected = direct_kernel(seen["x"], conv.weight, conv.stride, conv.padding, conv.dilation, conv.groups)
    assert on_feeds[name].split(" ")[0] == expected


def test_a_layer_too_wide_to_probe_cheaply_keeps_the_direct_kernel_and_loads_in_bounded_time() -> None:
    """A million input channels (the params fuzz target's case) made the probe hold gigabytes and take
    a minute at load; such a layer is not probed and runs the direct kernel, exact as the plain graph."""
    from converters import parse_text
    from converters.graph import speed

    channels = speed.PROBE_VALUES // (3 * 10 * 10) + 1  # an unpadded 3x3 probe: 10 x 10 pixels a channel
    text = (
        f'layer {{ name: "in" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: {channels} '
        "dim: 4 dim: 4 } } }\n"
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "y" '
        "convolution_param { num_output: 2 kernel_size: 3 } }"
    )
    net = load_caffe(parse_text(text), None)
    (conv,) = [m for m in net.modules() if isinstance(m, FastConv2d)]
    assert conv.choice is not None and conv.choice.kernel == "direct (too wide to probe)"
    assert "not probed" in str(conv.choice)


@pytest.fixture()
def calibration_file(tmp_path, monkeypatch):
    """A fresh calibration file in a cache folder of the test's own (the process's copy forgotten)."""
    from converters.graph import speed

    monkeypatch.setenv("FCN_PORT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(speed, "_CALIBRATION_STATE", {"entries": None, "dirty": False, "path": None})
    return tmp_path / "cache" / speed.CALIBRATION_CACHE


@needs_nnpack
def test_a_calibration_is_kept_per_machine_and_weights_and_read_back_instead_of_probing_again(
    calibration_file, monkeypatch
) -> None:
    from converters.graph import speed, transposed

    calibrated = (FastConv2d, transposed.FastConvTranspose2d)
    net = load_caffe(net_definition("voc-fcn8s", "deploy", width=0.0625), None)
    fresh = {name: m.choice for name, m in net.named_modules() if isinstance(m, calibrated)}
    assert fresh and not any(c.cached for c in fresh.values())
    assert {"upscore2", "upscore_pool4", "upscore8"} <= set(fresh)  # (the upsampling layers too)
    # one per layer, and one more per layer settle_layouts raced again counting its reorder back
    settled = [m for m in net.modules() if isinstance(m, FastConv2d) and m.contiguous_output]
    assert len(json.loads(calibration_file.read_text())) == len(fresh) + len(settled)
    monkeypatch.setattr(speed, "_CALIBRATION_STATE", {"entries": None, "dirty": False, "path": None})
    probes = []
    monkeypatch.setattr(speed, "_calibrate", lambda conv, started: probes.append(conv))
    monkeypatch.setattr(transposed, "_calibrate", lambda conv, started: probes.append(conv))
    again = load_caffe(net_definition("voc-fcn8s", "deploy", width=0.0625), None)
    kept = {name: m.choice for name, m in again.named_modules() if isinstance(m, calibrated)}
    assert probes == [] and all(c.cached for c in kept.values())
    assert {n: c.kernel for n, c in kept.items()} == {n: c.kernel for n, c in fresh.items()}
    with torch.no_grad():
        again.conv1_1.weight.mul_(3)  # other weights: another key, probed
        probe = lambda conv, started: probes.append(conv) or fresh["conv1_1"]  # noqa: E731
        monkeypatch.setattr(speed, "_calibrate", probe)
        again.conv1_1.kernel_choice()
    assert probes == [again.conv1_1]


@needs_nnpack
@pytest.mark.parametrize(
    "damage",
    ["not json", "[1, 2]", '{"k": ["onednn", "", 1, 2]}', "old format", "fifo", "folder", "huge"],
)
def test_a_damaged_calibration_file_is_read_as_empty_and_replaced(calibration_file, damage) -> None:
    import os

    from converters.graph import speed

    calibration_file.parent.mkdir(parents=True)
    if damage == "fifo":
        os.mkfifo(calibration_file)
    elif damage == "folder":
        calibration_file.mkdir()
    elif damage == "old format":  # the entries of the NNPACK-only calibration: read as none
        calibration_file.write_text(json.dumps({"a" * 64: ["onednn", "nnpack-winograd", 9.5, 12.0]}))
    elif damage == "huge":
        calibration_file.write_text("{" + " " * (speed._CALIBRATION_BYTES + 1) + "}")
    else:
        calibration_file.write_text(damage)
    from converters.graph.transposed import FastConvTranspose2d

    net = load_caffe(net_definition("voc-fcn8s", "deploy", width=0.0625), None)  # neither hangs nor fails
    convs = [m for m in net.modules() if isinstance(m, (FastConv2d, FastConvTranspose2d))]
    choices = [m.choice for m in convs]
    assert choices and not any(c.cached for c in choices)
    if damage not in ("fifo", "folder"):  # (and one more per layer settle_layouts raced again)
        settled = sum(getattr(m, "contiguous_output", False) for m in convs)
        assert len(json.loads(calibration_file.read_text())) == len(choices) + settled


@needs_nnpack
def test_a_damaged_entry_is_probed_again_and_replaced_while_the_others_are_read(
    calibration_file, monkeypatch
) -> None:
    """Entries are checked when a layer looks its own up (a load reads a few of thousands)."""
    from converters.graph import speed

    load_caffe(net_definition("voc-fcn8s", "deploy", width=0.0625), None)
    entries = json.loads(calibration_file.read_text())
    damaged = next(iter(entries))
    entries[damaged][1][0][1] = "not a number"
    calibration_file.write_text(json.dumps(entries))
    monkeypatch.setattr(speed, "_CALIBRATION_STATE", {"entries": None, "dirty": False, "path": None})
    net = load_caffe(net_definition("voc-fcn8s", "deploy", width=0.0625), None)
    probed = [m for m in net.modules() if isinstance(m, FastConv2d) and not m.choice.cached]
    assert len(probed) == 1 and speed._calibration_key(probed[0]) == damaged
    assert speed._valid_entry(damaged, json.loads(calibration_file.read_text())[damaged])


def test_a_cache_folder_that_cannot_be_written_keeps_no_calibration_and_says_nothing(
    calibration_file, capsys
) -> None:
    calibration_file.parent.parent.mkdir(exist_ok=True)
    calibration_file.parent.write_text("a file where the cache folder should be")
    net = load_caffe(net_definition("voc-fcn8s", "deploy", width=0.0625), None)
    assert net is not None and capsys.readouterr() == ("", "")


def test_loading_a_net_and_its_first_forward_import_neither_sympy_nor_torch_onnx(tmp_path) -> None:
    """torch's Python meta kernels and Module.to_empty import sympy (0.3-0.9 s) on first use, and
    looking up torch.onnx imports it (0.2 s); neither a load nor the first forward may pay that
    (issue 20: first use as fast as the next)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from converters import load_caffe\n"
        "from converters.fcn.nets import net_definition\n"
        "net = load_caffe(net_definition('voc-fcn8s', 'deploy', width=0.0625), None)\n"
        "import torch\n"
        "with torch.no_grad():\n"
        "    net(data=torch.rand(1, 3, 20, 20))\n"
        "print('sympy' in sys.modules, 'torch.onnx' in sys.modules)\n"
    )
    env = {**__import__("os").environ, "FCN_PORT_CACHE": str(tmp_path)}
    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=repo, check=True
    )
    assert out.stdout.strip() == "False False", out.stderr


def test_the_speed_probe_is_the_layers_own_input_at_the_nets_declared_size(monkeypatch) -> None:
    """The race times the kernels on the input the layer gets at the declared input size (cut to
    fewer rows, keeping their parity, where that is large), not on a square of another size: oneDNN
    runs a stride-2 layer on 13 rows at half its speed on 14."""
    from converters import parse_text
    from converters.graph import speed

    text = (
        'layer { name: "in" type: "Input" top: "data" '
        "input_param { shape { dim: 1 dim: 8 dim: 40 dim: 22 } } }\n"
        'layer { name: "down" type: "Convolution" bottom: "data" top: "down" '
        "convolution_param { num_output: 16 kernel_size: 1 stride: 2 } }\n"
        'layer { name: "conv" type: "Convolution" bottom: "down" top: "conv" '
        "convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }"
    )
    raced = []
    real_run = speed.run_kernel
    record = lambda name, x, *a: raced.append(tuple(x.shape)) or real_run(name, x, *a)  # noqa: E731
    monkeypatch.setattr(speed, "run_kernel", record)
    monkeypatch.setattr(speed, "RMS_RATIO", 10.0)  # every candidate kept: each layer races
    monkeypatch.setattr(speed, "MAX_RATIO", 10.0)
    monkeypatch.setattr(speed, "CALIBRATION_CACHE", None)
    net = load_caffe(parse_text(text), None)
    assert (net.down.speed_input, net.conv.speed_input) == ((40, 22), (20, 11))
    assert (1, 8, 40, 22) in raced and (1, 16, 20, 11) in raced
    monkeypatch.setattr(speed, "SPEED_MACS", 16 * 8 * 11)  # one output row of "down": 64 outputs kept
    raced.clear()
    speed._race(net.down, ["onednn"], (0, 0))
    assert raced and all(shape[2:] == (12, 22) for shape in raced), raced  # 6 rows of 11 outputs


def test_a_grouped_layer_is_calibrated_with_all_its_channels_and_gives_the_convolution() -> None:
    """MobileNet's depthwise layers: the candidates are oneDNN's kernels forced (PyTorch may pick
    its slow grouped loop), contiguous or channels-last; the probe computes every channel, since each
    group reads its own."""
    from converters.graph import speed

    conv = FastConv2d(24, 24, 3, padding=1, groups=24)
    generator = torch.Generator().manual_seed(8)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
        conv.bias.copy_(torch.randn(24, generator=generator))
    choice = conv.kernel_choice()
    expected = ("onednn-forced", "onednn-nhwc") if torch.backends.mkldnn.is_available() else ()
    assert speed.candidate_kernels(conv) == expected
    assert [m.kernel for m in choice.measured] == list(expected)
    x = torch.randn(2, 24, 9, 13, generator=generator)
    with torch.no_grad():
        got = conv(x)
        forced = speed.run_kernel("onednn-forced", x, conv.weight, conv.bias, (1, 1), (1, 1), None, 24)
        nhwc = speed.run_kernel("onednn-nhwc", x, conv.weight, conv.bias, (1, 1), (1, 1), None, 24)
    weight, bias = conv.weight.double(), conv.bias.double()
    exact = torch.nn.functional.conv2d(x.double(), weight, bias, padding=1, groups=24)
    for out in (got, forced, nhwc):
        torch.testing.assert_close(out.double(), exact, rtol=0, atol=1e-5)
    assert nhwc.is_contiguous(memory_format=torch.channels_last)


def test_a_grouped_layer_with_too_many_weights_to_copy_keeps_the_direct_kernel() -> None:
    """The probe copies every weight of a grouped layer; past PROBE_VALUES it is not probed (the params
    fuzz target's case: 1.5 GB copied at load)."""
    from converters.graph import speed

    conv = FastConv2d(4, speed.PROBE_VALUES // 18 + 2, 3, groups=2, device="meta")
    conv.weight = torch.nn.Parameter(torch.zeros(1).expand(conv.weight.shape), requires_grad=False)
    conv.bias = None
    choice = conv.kernel_choice()
    assert choice.kernel == "direct (too wide to probe)" and "not probed" in str(choice)


def test_a_map_too_wide_for_the_probe_is_raced_on_fewer_rows_not_skipped(monkeypatch) -> None:
    """A Cityscapes-sized declared input (1024 x 2048) makes an eighth of a layer's rows pass what the
    probe may hold; the race then takes as many rows as fit (their parity kept) instead of none."""
    from converters.graph import speed

    raced = []
    real_run = speed.run_kernel
    record = lambda name, x, *a: raced.append(tuple(x.shape)) or real_run(name, x, *a)  # noqa: E731
    monkeypatch.setattr(speed, "run_kernel", record)
    conv = FastConv2d(8, 8, 3, padding=1)
    conv.speed_input = (200, 64)
    monkeypatch.setattr(speed, "PROBE_VALUES", 8 * 64 * 10)  # ten input rows at most
    times = speed._race(conv, ["onednn"], (1, 1))
    assert times and raced and all(shape[2] <= 10 and shape[2] % 2 == 0 for shape in raced), raced
    conv.speed_input = (200, 10**6)  # not even one row fits: not raced
    assert speed._race(conv, ["onednn"], (1, 1)) == {}


def test_a_layer_with_a_padding_larger_than_its_input_is_raced_on_fewer_rows_too(monkeypatch) -> None:
    """FCN's pad 100 on a small input with many channels: the speed probe cut to fewer rows keeps one
    input row at least (its outputs mostly padding), where it asked for a negative height at load."""
    from converters.graph import speed

    raced = []
    real_run = speed.run_kernel
    record = lambda name, x, *a: raced.append(tuple(x.shape)) or real_run(name, x, *a)  # noqa: E731
    monkeypatch.setattr(speed, "run_kernel", record)
    monkeypatch.setattr(speed, "SPEED_MACS", 10**6)  # one output row would pass it: cut to an eighth
    conv = FastConv2d(16, 8, 3, padding=100)
    conv.speed_input = (10, 10)
    times = speed._race(conv, ["onednn", "gemm"], (100, 100))
    assert set(times) == {"onednn", "gemm"} and raced
    assert all(shape[2] in (1, 2) and shape[2] % 2 == 10 % 2 for shape in raced), raced  # parity kept
    monkeypatch.setattr(speed, "RMS_RATIO", 1e9)  # a candidate kept, so the load races the layer
    monkeypatch.setattr(speed, "MAX_RATIO", 1e9)
    monkeypatch.setattr(speed, "SAME_PRODUCTS_RMS_RATIO", 1e9)
    monkeypatch.setattr(speed, "SAME_PRODUCTS_MAX_RATIO", 1e9)
    # (im2col + GEMM only: which kernel wins the race depends on the machine's load, and a transform's
    # error on these weights may pass the tolerance below)
    monkeypatch.setattr(speed, "candidate_kernels", lambda conv: ("gemm",))
    monkeypatch.setattr(speed, "CALIBRATION_CACHE", None)
    from converters import parse_text

    net = load_caffe(
        parse_text(
            'layer { name: "in" type: "Input" top: "data" '
            "input_param { shape { dim: 1 dim: 16 dim: 10 dim: 10 } } } "
            'layer { name: "c" type: "Convolution" bottom: "data" top: "c" '
            "convolution_param { num_output: 8 kernel_size: 3 pad: 100 } }"
        ),
        None,
    )
    x = torch.randn(1, 16, 10, 10, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        got = net(data=x)["c"]
    want = torch.nn.functional.conv2d(x.double(), net.c.weight.double(), net.c.bias.double(), padding=100)
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this PyTorch has no oneDNN")
@pytest.mark.parametrize("room", ["within the budget", "over it"])
def test_prepared_weights_are_made_at_load_where_they_are_small_else_at_first_use(monkeypatch, room) -> None:
    from converters.graph import speed

    monkeypatch.setattr(speed, "CALIBRATION_CACHE", None)
    monkeypatch.setattr(speed, "_calibrate", lambda layer, began: speed.KernelChoice("onednn-nhwc", (), 0.0))
    if room == "over it":
        monkeypatch.setattr(speed, "PREPARE_AT_LOAD_VALUES", 0)
        monkeypatch.setattr(speed, "PREPARE_AT_LOAD_SHARE", 0.01)
    made = []
    real = speed.prepared_weights
    monkeypatch.setattr(speed, "prepared_weights", lambda *a: made.append(a[0]) or real(*a))
    net = load_caffe(net_definition("voc-fcn8s", "deploy", width=0.0625), None)
    layers = [m for m in net.modules() if isinstance(m, FastConv2d)]
    at_load = len(made)
    assert at_load == (len(layers) if room == "within the budget" else 0)
    x = torch.randn(1, 3, 500, 500, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        first = net(data=x)["score"]
    assert len(made) == len(layers)  # each made once: at load, or at its first use
    plain = load_caffe(net_definition("voc-fcn8s", "deploy", width=0.0625), None, optimize=False)
    plain.load_state_dict(net.state_dict())
    with torch.no_grad():
        want = plain(data=x)["score"]
    torch.testing.assert_close(first, want, rtol=0, atol=1e-4 * float(want.abs().max()))


@pytest.mark.parametrize("small", [True, False])
def test_a_small_nets_onednn_convolutions_run_once_at_load_so_its_first_forward_makes_no_kernels(
    monkeypatch, small
) -> None:
    """oneDNN makes a layer's kernel for its shape at the first call: a small net's are made at load, on
    zeros of each layer's input size at the declared input (one image); ours (gemm) make none."""
    from converters.graph import speed

    monkeypatch.setattr(speed, "CALIBRATION_CACHE", None)
    kernels = {4: "onednn-nhwc", 6: "gemm", 8: "onednn"}  # by output channels

    def calibrate(layer, began):
        return speed.KernelChoice(kernels[layer.out_channels], (), 0.0)

    monkeypatch.setattr(speed, "_calibrate", calibrate)
    if not small:
        monkeypatch.setattr(speed, "WARM_AT_LOAD_MACS", 100)
    calls = []
    real = FastConv2d.convolve

    def convolve(self, x, padding):
        calls.append((self.out_channels, tuple(x.shape)))
        return real(self, x, padding)

    monkeypatch.setattr(FastConv2d, "convolve", convolve)
    layers = [("a", "data", 4, 3, 1), ("b", "a", 6, 1, 1), ("c", "b", 8, 3, 2)]
    text = 'input: "data" input_shape { dim: 2 dim: 3 dim: 12 dim: 10 } ' + " ".join(
        f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" '
        f"convolution_param {{ num_output: {outputs} kernel_size: {kernel} stride: {stride} }} }}"
        for name, bottom, outputs, kernel, stride in layers
    )
    load_caffe(parse_text(text), None)
    assert calls == ([(4, (1, 3, 12, 10)), (8, (1, 6, 10, 8))] if small else [])


def test_a_layer_that_refuses_its_declared_size_at_loads_warm_up_does_not_stop_the_load(monkeypatch) -> None:
    from converters.graph import speed

    monkeypatch.setattr(speed, "CALIBRATION_CACHE", None)
    monkeypatch.setattr(speed, "_calibrate", lambda layer, began: speed.KernelChoice("onednn", (), 0.0))

    def refuse(self, x, padding):
        raise RuntimeError("Calculated padded input size per channel: (2 x 2). Kernel size: (3 x 3).")

    monkeypatch.setattr(FastConv2d, "convolve", refuse)
    text = (
        'input: "data" input_shape { dim: 1 dim: 3 dim: 12 dim: 10 } layer { name: "a" type: "Convolution" '
        'bottom: "data" top: "a" convolution_param { num_output: 4 kernel_size: 3 } }'
    )
    net = load_caffe(parse_text(text), None)  # loads; the layer's own call says what is wrong
    with pytest.raises(RuntimeError, match="Kernel size"), torch.no_grad():
        net(data=torch.zeros(1, 3, 12, 10))


def test_the_relus_after_the_border_skippings_layers_run_inside_them() -> None:
    """FCN's chain (conv1_1 with pad 100, then the layers the border skipping runs through
    ``windowed``): each in-place ReLU goes into its layer, with the plain graph's outputs at several
    sizes (twice each: the second forward computes only the image's rect)."""
    from converters.fcn.nets import net_definition

    plain = build_graph(net_definition("voc-fcn8s", "deploy", width=0.0625), seed=7)
    fast = optimize_for_cpu(copy.deepcopy(plain))
    assert "windowed(conv1_1_layer" in fast.code and "windowed(conv4_2_layer" in fast.code
    assert not any(f"relu{i}_" in fast.code for i in range(1, 6))
    assert fast.conv1_1.relu and fast.conv5_3.relu
    generator = torch.Generator().manual_seed(8)
    for height, width in ((40, 52), (17, 23), (1, 1)):
        x = torch.randn(1, 3, height, width, generator=generator) * 50
        for _ in range(2):
            with torch.no_grad():
                got, want = fast(data=x)["score"], plain(data=x)["score"]
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5 * float(want.abs().max()))
