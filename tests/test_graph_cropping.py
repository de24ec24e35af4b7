"""From the second forward at a shape, FCN's chain computes only the rows and columns that read the
image and takes the others from the first forward (converters.graph.cropping): the plain graph's
numbers, at every size, until the weights, the batch or autograd change what may be kept."""

from __future__ import annotations

import copy

import pytest
import torch

from converters import build_graph
from converters.fcn.nets import net_definition
from converters.graph import cropping
from converters.graph.border import BorderPlanner, skip_constant_border
from converters.graph.cropping import ring


def _relative_error(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max()) / max(float(expected.abs().max()), 1e-30)


def _plain(model: str, seed: int) -> torch.nn.Module:
    """A narrow FCN with random weights and random biases (Caffe's bias filler, constant 0, would
    make every fixed value 0, and a wrong one would go unseen)."""
    plain = build_graph(net_definition(model, "deploy", width=0.0625), seed=seed)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in plain.named_parameters():
            if name.endswith("bias"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return plain


def _fcn(model: str, seed: int) -> tuple[torch.nn.Module, torch.nn.Module, BorderPlanner]:
    plain = _plain(model, seed)
    fast = skip_constant_border(copy.deepcopy(plain))
    planner = next(m for m in fast.modules() if isinstance(m, BorderPlanner))
    return plain, fast, planner


def _keeps(planner: BorderPlanner, inputs: dict) -> bool:
    return any(planner.keeps(value.shape) for value in inputs.values())


def _inputs(net: torch.nn.Module, shape: tuple[int, int, int], generator: torch.Generator) -> dict:
    height, width, batch = shape
    return {
        name: torch.randn(batch, dims[1], height, width, generator=generator) * 50
        for name, dims in net.caffe.inputs.items()
    }


@pytest.mark.parametrize("model", ["voc-fcn8s", "voc-fcn32s", "voc-fcn-alexnet", "nyud-fcn32s-color-hha"])
def test_the_second_forward_computes_only_the_image_rect_and_gives_the_plain_outputs(model: str) -> None:
    plain, fast, planner = _fcn(model, seed=7)
    generator = torch.Generator().manual_seed(8)
    cropped = 0
    for shape in [(120, 97, 1), (64, 64, 2), (200, 31, 1), (9, 150, 1), (1, 1, 1)]:
        plan = planner.plan(shape[0], shape[1])
        for call in range(3):
            inputs = _inputs(plain, shape, generator)
            with torch.inference_mode():
                expected, got = plain(**inputs), fast(**inputs)
            for blob in expected:
                assert got[blob].shape == expected[blob].shape
                assert _relative_error(got[blob], expected[blob]) < 1e-5, (shape, call, blob)
        if plan.crop is not None:
            cropped += 1
            assert _keeps(planner, inputs)  # the later forwards read kept values
            last = plan.crop.last
            computed = plan.crop.images[last]
            assert (computed[0][1] - computed[0][0]) * (computed[1][1] - computed[1][0]) < (
                plan.crop.shapes[last][0] * plan.crop.shapes[last][1]
            )
    assert cropped >= 2


def test_new_weights_a_new_batch_and_autograd_are_never_served_kept_values() -> None:
    plain, fast, planner = _fcn("voc-fcn8s", seed=9)
    generator = torch.Generator().manual_seed(10)
    shape = (90, 110, 1)
    assert planner.plan(90, 110).crop is not None

    def agree(batch: int = 1) -> None:
        inputs = _inputs(plain, (shape[0], shape[1], batch), generator)
        with torch.inference_mode():
            expected, got = plain(**inputs), fast(**inputs)
        assert _relative_error(got["score"], expected["score"]) < 1e-5

    for _ in range(2):
        agree()
    assert planner.keeps((1, 3, 90, 110))
    with torch.no_grad():  # the same change to both nets' deepest cropped layer
        for net in (plain, fast):
            net.conv4_2.bias.add_(0.5)
            net.conv2_1.weight.mul_(1.5)
    for _ in range(2):
        agree()
    for _ in range(2):
        agree(batch=2)
    assert planner.keeps((2, 3, 90, 110)) and planner.keeps((1, 3, 90, 110))  # each batch its own
    # A forward that autograd records computes everything (no kept value is a constant to it).
    x = _inputs(plain, shape, generator)["data"]
    plain(data=x)["score"].square().sum().backward()
    fast(data=x)["score"].square().sum().backward()
    for (name, a), b in zip(plain.named_parameters(), fast.parameters(), strict=True):
        assert _relative_error(b.grad, a.grad) < 1e-4, name


def test_the_kept_buffers_serve_one_forward_at_a_time_in_any_grad_mode() -> None:
    """From the third forward at a shape, a blob completed from kept values is the buffer the forward
    before used, only the image's rect written again; a forward outside inference mode after ones
    inside it (whose buffers it could not write) makes new ones; another shape's forward lets them
    go; forwards in two threads at once get buffers of their own. Every output is the plain graph's."""
    plain, fast, planner = _fcn("voc-fcn8s", seed=15)
    generator = torch.Generator().manual_seed(16)
    shape = (90, 110, 1)

    def agree(mode=torch.inference_mode, inputs: dict | None = None) -> None:
        inputs = inputs or _inputs(plain, shape, generator)
        with mode():
            expected, got = plain(**inputs), fast(**inputs)
        assert _relative_error(got["score"], expected["score"]) < 1e-5

    for _ in range(3):
        agree()
    edges = planner._edges[(1, 3, 90, 110)]
    kept = dict(edges._buffers)
    assert kept
    agree()
    assert edges._buffers.keys() == kept.keys() and all(edges._buffers[k] is v for k, v in kept.items())
    agree(torch.no_grad)
    assert edges._buffers and not any(b.is_inference() for b in edges._buffers.values())
    agree(torch.no_grad)
    agree()
    agree(inputs=_inputs(plain, (64, 72, 1), generator))
    assert edges._buffers == {} and planner.keeps((1, 3, 90, 110))  # (the fixed values stay)
    agree()
    # two threads, each its own inputs, at once (a barrier before each forward)
    import threading

    inputs = [[_inputs(plain, shape, generator) for _ in range(4)] for _ in range(2)]
    with torch.inference_mode():
        expected = [[plain(**x)["score"] for x in row] for row in inputs]
    barrier, got = threading.Barrier(2), [[], []]

    def run(thread: int) -> None:
        for x in inputs[thread]:
            barrier.wait()
            with torch.inference_mode():
                got[thread].append(fast(**x)["score"])

    threads = [threading.Thread(target=run, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for thread in range(2):
        assert len(got[thread]) == 4
        for a, b in zip(got[thread], expected[thread], strict=True):
            assert _relative_error(a, b) < 1e-5


def test_a_buffer_in_use_is_not_served_again_until_its_block_ends() -> None:
    """``EdgeCache.assembled``: a second use of a buffer while the first one's block runs (another
    thread's forward) gets a new blob with the same values; once the block ends the kept one serves."""
    generator = torch.Generator().manual_seed(17)
    blob = torch.randn(2, 3, 12, 14, generator=generator)
    outer, inner = ((1, 11), (2, 13)), ((3, 8), (4, 10))
    cache = cropping.EdgeCache((), 1)
    cache.record("a", blob, outer, inner)
    x = blob[..., 3:8, 4:10].clone()
    expected = blob[..., 1:11, 2:13]
    with cache.assembled("a", x, outer, inner, inner) as first:
        with cache.assembled("a", x, outer, inner, inner) as second:
            assert second is not first and torch.equal(second, expected) and torch.equal(first, expected)
    with cache.assembled("a", x * 2, outer, inner, inner) as again:
        assert again is first and torch.equal(again[..., 2:7, 2:8], x * 2)
        assert torch.equal(again[..., :2, :], expected[..., :2, :])  # the fixed values in place


def test_an_input_with_nan_keeps_no_nan_in_the_fixed_values() -> None:
    """The fixed values never read the input: a NaN in the first forward's image stays out of them."""
    plain, fast, planner = _fcn("voc-fcn16s", seed=11)
    generator = torch.Generator().manual_seed(12)
    shape = (70, 80, 1)
    first = _inputs(plain, shape, generator)
    first["data"][0, 0, 35, 40] = float("nan")
    with torch.inference_mode():
        fast(**first)
        inputs = _inputs(plain, shape, generator)
        expected, got = plain(**inputs), fast(**inputs)
    assert planner.keeps((1, 3, 70, 80))
    assert torch.isfinite(got["score"]).all()
    assert _relative_error(got["score"], expected["score"]) < 1e-5


def test_exported_programs_run_the_plain_computation() -> None:
    plain, fast, _ = _fcn("voc-fcn32s", seed=13)
    x = _inputs(plain, (48, 40, 1), torch.Generator().manual_seed(14))["data"]
    with torch.inference_mode():
        fast(data=x), fast(data=x)  # kept values ready
    program = torch.export.export(fast, (), {"data": x})
    with torch.inference_mode():
        assert _relative_error(program.module()(data=x)["score"], plain(data=x)["score"]) < 1e-5


def test_computed_rects_lie_in_their_blobs_and_no_pooling_reads_past_its_own() -> None:
    _, _, planner = _fcn("voc-fcn8s", seed=15)
    planned = 0
    for height, width in [(500, 500), (375, 500), (64, 300), (33, 33)]:
        crop = planner.plan(height, width).crop
        if crop is None:
            continue
        planned += 1
        for position in range(crop.last + 1):
            rect, shape = crop.computed[position], crop.shapes[position]
            assert all(0 <= r[0] < r[1] <= n for r, n in zip(rect, shape, strict=True)), position
            if position in crop.ends:
                assert rect == crop.images[position]
            if position > 0 and planner.whole_chain[position - 1][0].pooling:
                assert crop.pads[position] == ((0, 0), (0, 0)), position
        assert crop.buffers[crop.last] == ((0, crop.shapes[crop.last][0]), (0, crop.shapes[crop.last][1]))
    assert planned >= 3


def test_a_ring_covers_the_outer_rect_less_the_inner_once() -> None:
    outer, inner = ((0, 7), (2, 11)), ((3, 5), (4, 6))
    cover = torch.zeros(7, 11, dtype=torch.int32)
    for (a, b), (c, d) in ring(outer, inner):
        cover[a:b, c:d] += 1
    expected = torch.zeros(7, 11, dtype=torch.int32)
    expected[:, 2:] = 1
    expected[3:5, 4:6] = 0
    assert torch.equal(cover, expected)
    assert ring(outer, outer) == []
    assert cropping.COPY_COST > 0


@pytest.mark.parametrize("kernel", ["onednn-nhwc", "winograd-f2", "gemm"])
def test_the_image_rect_runs_on_every_kernel_and_layout_the_calibration_may_choose(
    kernel: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The EPYC's choices (channels-last blobs through the chain, Winograd's tiles on cropped maps)."""
    from converters.graph import speed

    def choose(layer: torch.nn.Conv2d, began: float) -> speed.KernelChoice:
        square = tuple(layer.kernel_size) == (3, 3) and tuple(layer.stride) == (1, 1)
        return speed.KernelChoice(kernel if square or kernel != "winograd-f2" else "onednn", (), 0.0)

    monkeypatch.setattr(speed, "_calibrate", choose)
    monkeypatch.setattr(speed, "CALIBRATION_CACHE", None)
    plain = _plain("voc-fcn8s", seed=16)
    fast = speed.optimize_for_cpu(copy.deepcopy(plain))
    planner = next(m for m in fast.modules() if isinstance(m, BorderPlanner))
    generator = torch.Generator().manual_seed(17)
    for shape in [(75, 90, 1), (64, 64, 2)]:
        for _ in range(3):
            inputs = _inputs(plain, shape, generator)
            with torch.inference_mode():
                expected, got = plain(**inputs), fast(**inputs)
            assert _relative_error(got["score"], expected["score"]) < 1e-5, shape
        assert _keeps(planner, inputs)


def _random_chain(seed: int) -> str:
    """A prototxt: a convolution padded past its window, then random convolutions (strides,
    rectangular kernels and pads, dilations), MAX and AVE poolings (pads, strides over and under
    the kernel), ReLUs, and a second reader of one blob (a 1x1 convolution off the chain)."""
    import random

    r = random.Random(seed)
    channels = r.choice([1, 2, 3])
    lines = [
        f'layer {{ name: "input" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: {channels} '
        "dim: 20 dim: 20 } } }",
    ]
    k = r.choice([1, 2, 3, 5])
    lines.append(
        'layer { name: "c0" type: "Convolution" bottom: "data" top: "b0" convolution_param { '
        f"num_output: {r.randint(2, 4)} kernel_size: {k} pad: {r.randint(k, 30)} "
        f"stride: {r.choice([1, 1, 2])} }} }}"
    )
    blob, side = "b0", None
    for i in range(1, r.randint(3, 9)):
        kind = r.choice(["conv", "conv", "pool", "relu"])
        top = f"b{i}"
        if kind == "conv":
            kh, kw = r.choice([1, 2, 3]), r.choice([1, 3, 4])
            param = (
                f"num_output: {r.randint(2, 4)} kernel_h: {kh} kernel_w: {kw} pad_h: {r.randint(0, kh)} "
                f"pad_w: {r.randint(0, kw)} stride_h: {r.choice([1, 1, 2])} stride_w: {r.choice([1, 2])}"
            )
            if r.random() < 0.2:
                param += " dilation: 2"
            lines.append(
                f'layer {{ name: "l{i}" type: "Convolution" bottom: "{blob}" top: "{top}" '
                f"convolution_param {{ {param} }} }}"
            )
        elif kind == "pool":
            kernel = r.choice([2, 3])
            stride = r.choice([1, 2, kernel])
            pad = r.choice([0, 0, 1]) if kernel > 1 else 0
            method = r.choice(["MAX", "AVE"])
            lines.append(
                f'layer {{ name: "l{i}" type: "Pooling" bottom: "{blob}" top: "{top}" pooling_param {{ '
                f"pool: {method} kernel_size: {kernel} stride: {stride} pad: {pad} }} }}"
            )
        else:
            lines.append(f'layer {{ name: "l{i}" type: "ReLU" bottom: "{blob}" top: "{top}" }}')
        if side is None and r.random() < 0.3:
            side = blob
            lines.append(
                f'layer {{ name: "side" type: "Convolution" bottom: "{blob}" top: "side" '
                "convolution_param { num_output: 2 kernel_size: 1 } }"
            )
        blob = top
    return "\n".join(lines)


@pytest.mark.parametrize("seed", range(24))
def test_random_chains_after_a_large_padding_give_the_plain_outputs_at_every_forward(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copies cost nothing here, so that the cost models skip bands and end segments wherever
    they may on these narrow chains (at their real cost they would not bother)."""
    from converters import parse_text
    from converters.graph import border, speed

    monkeypatch.setattr(border, "COPY_COST", 0)
    monkeypatch.setattr(cropping, "COPY_COST", 0)

    text = _random_chain(seed)
    try:
        plain = build_graph(parse_text(text), seed=seed)
    except ValueError:  # (a random chain that leaves no output: Caffe refuses it too)
        pytest.skip("the random chain leaves no output at its declared size")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in plain.named_parameters():
            if name.endswith("bias"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
    fast = speed.optimize_for_cpu(copy.deepcopy(plain))
    channels = plain.caffe.inputs["data"][1]
    for height, width in [(20, 20), (13, 31), (40, 7), (1, 1)]:
        x = torch.randn(1, channels, height, width, generator=generator) * 10
        for call in range(3):
            try:
                with torch.inference_mode():
                    expected = plain(data=x)
            except (RuntimeError, ValueError):
                break  # (no output at this size)
            with torch.inference_mode():
                got = fast(data=x)
            for blob in expected:
                assert got[blob].shape == expected[blob].shape, (text, height, width, call, blob)
                assert _relative_error(got[blob], expected[blob]) < 1e-5, (text, height, width, call, blob)
