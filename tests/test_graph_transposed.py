"""The transposed convolutions' fast path (converters.graph.transposed): the phase kernel's numbers,
its precision beside PyTorch's kernel, and where the default graph runs it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from converters import load_caffe
from converters.caffe.text import parse_text
from converters.fcn.nets import net_definition
from converters.graph import speed, transposed
from converters.graph.kernels import phase_conv_transpose2d, phase_taps
from converters.graph.transposed import PHASE_GEMM, FastConvTranspose2d, suits_phase_gemm
from converters.layers.convolution import ConvTranspose2d

# (batch, in, out, height, width, kernel, stride, padding, bias)
SHAPES = [
    (1, 21, 21, 9, 9, (16, 16), (8, 8), (0, 0), False),  # FCN-8s's upscore8
    (1, 21, 21, 3, 3, (64, 64), (32, 32), (0, 0), True),  # FCN-32s's upscore
    (2, 5, 7, 6, 9, (4, 6), (2, 3), (1, 2), True),  # two images, sides apart, a padding that crops
    (1, 3, 4, 5, 4, (3, 3), (3, 3), (1, 0), True),  # one tap a phase
]


def _float64(x, weight, bias, stride, padding):
    exact_bias = None if bias is None else bias.double()
    return F.conv_transpose2d(x.double(), weight.double(), exact_bias, stride, padding)


@pytest.mark.parametrize("shape", SHAPES, ids=[str(s[:7]) for s in SHAPES])
def test_the_phase_kernel_gives_pytorchs_transposed_convolution_for_kernels_a_whole_number_of_strides(
    shape,
) -> None:
    batch, channels, outputs, height, width, kernel, stride, padding, has_bias = shape
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(batch, channels, height, width, generator=generator)
    weight = torch.randn(channels, outputs, *kernel, generator=generator)
    bias = torch.randn(outputs, generator=generator) if has_bias else None
    got = phase_conv_transpose2d(x, phase_taps(weight, stride), bias, kernel, stride, padding)
    expected = F.conv_transpose2d(x, weight, bias, stride, padding)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    exact = _float64(x, weight, bias, stride, padding)
    plain_error = (expected.double() - exact).pow(2).mean().sqrt()
    # (on an Intel Xeon 0.6-0.8x PyTorch's error; the calibration checks each layer on each machine)
    assert (got.double() - exact).pow(2).mean().sqrt() <= 2 * plain_error


def _bilinear(channels: int, kernel: int) -> torch.Tensor:
    """FCN's upsampling weights (surgery.interp): a bilinear kernel on the diagonal."""
    factor = (kernel + 1) // 2
    center = factor - 1 if kernel % 2 == 1 else factor - 0.5
    ramp = 1 - (torch.arange(kernel, dtype=torch.float64) - center).abs() / factor
    weight = torch.zeros(channels, channels, kernel, kernel, dtype=torch.float64)
    weight[range(channels), range(channels)] = ramp[:, None] * ramp[None, :]
    return weight.float()


@pytest.mark.parametrize("kernel, stride", [(4, 2), (16, 8), (64, 32)])
@pytest.mark.parametrize("weights", ["bilinear", "learned"])
def test_on_fcns_upsampling_layers_the_phase_kernel_is_about_as_precise_as_pytorchs_and_judged_by_the_rule(
    kernel, stride, weights
) -> None:
    """Measured on an Intel Xeon: 0.6-0.8x PyTorch's RMS error, so the calibration keeps it there; on any
    machine its errors stay near PyTorch's, and the calibration's verdict is the rule's."""
    layer = FastConvTranspose2d(21, 21, kernel, stride, bias=False)
    with torch.no_grad():
        if weights == "bilinear":
            layer.weight.copy_(_bilinear(21, kernel))
        else:  # a trained net's: near the bilinear kernel, every channel mixed a little
            noise = torch.randn(21, 21, kernel, kernel, generator=torch.Generator().manual_seed(kernel))
            layer.weight.copy_(_bilinear(21, kernel) + 0.01 * noise)
    (measured,) = transposed._calibrate(layer, 0.0).measured
    assert measured.kernel == PHASE_GEMM and measured.rms <= 2 and measured.max <= 4
    within = measured.rms <= speed.SAME_PRODUCTS_RMS_RATIO and measured.max <= speed.SAME_PRODUCTS_MAX_RATIO
    assert measured.precise == (within or measured.identical)


def test_the_default_fcn8s_graph_upsamples_on_the_calibrated_kernel_with_the_plain_graphs_numbers() -> None:
    definition = net_definition("voc-fcn8s", "deploy", width=0.0625)
    plain = load_caffe(definition, None, optimize=False)
    fast = load_caffe(definition, None)
    fast.load_state_dict(plain.state_dict())  # (the same weights; the state dict is unchanged)
    assert sorted(fast.state_dict()) == sorted(plain.state_dict())
    layers = {name: m for name, m in fast.named_modules() if isinstance(m, FastConvTranspose2d)}
    assert sorted(layers) == ["upscore2", "upscore8", "upscore_pool4"]
    for layer in layers.values():
        assert layer.kernel_choice().kernel in (PHASE_GEMM, transposed.DIRECT)
        assert layer.speed_input is not None  # raced at its input size at the declared 500 x 500
    x = torch.randn(1, 3, 64, 80) * 50
    with torch.no_grad():
        expected, got = plain(data=x)["score"], fast(data=x)["score"]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_transposed_convolutions_the_phase_kernel_cannot_compute_stay_pytorchs() -> None:
    assert suits_phase_gemm(ConvTranspose2d(21, 21, 16, 8))
    assert not suits_phase_gemm(ConvTranspose2d(21, 21, 63, 32))  # FCN-AlexNet's: not whole strides
    assert not suits_phase_gemm(ConvTranspose2d(4, 4, 4, 2, groups=2))
    assert not suits_phase_gemm(ConvTranspose2d(4, 4, 3, 1))  # stride 1: a convolution
    assert not suits_phase_gemm(ConvTranspose2d(64, 4, 4, 2))  # columns larger than the output
    assert not suits_phase_gemm(ConvTranspose2d(4, 4, 4, 2, dilation=2))
    assert not suits_phase_gemm(torch.nn.ConvTranspose2d(4, 4, 4, 2).double())
    text = (
        'input: "data" input_shape { dim: 1 dim: 2 dim: 5 dim: 5 } '
        'layer { name: "up" type: "Deconvolution" bottom: "data" top: "up" '
        "convolution_param { num_output: 2 kernel_size: 63 stride: 32 } }"
    )
    net = load_caffe(parse_text(text), None)
    assert type(net.up) is ConvTranspose2d


def _scripted(monkeypatch, times: tuple[float, float] | None, error: float = 0.0) -> FastConvTranspose2d:
    """A layer whose race takes ``times`` (PyTorch's, the phase kernel's) and whose phase kernel is
    off by ``error`` (relative to its largest value) on the probe."""
    real = transposed.phase_conv_transpose2d
    monkeypatch.setattr(transposed, "_race", lambda module: times)

    def noisy(x, *args):
        y = real(x, *args)
        return y + error * y.abs().max() * torch.randn_like(y)

    monkeypatch.setattr(transposed, "phase_conv_transpose2d", noisy)
    monkeypatch.setattr(speed, "CALIBRATION_CACHE", None)
    return FastConvTranspose2d(6, 6, 4, 2)


def test_the_phase_kernel_runs_only_where_it_is_within_the_rule_and_faster(monkeypatch) -> None:
    assert _scripted(monkeypatch, (2.0, 1.0)).kernel_choice().kernel == PHASE_GEMM
    slower = _scripted(monkeypatch, (1.0, 0.99)).kernel_choice()  # within SPEED_MARGIN: a tie
    assert slower.kernel == transposed.DIRECT and "slower" in str(slower)
    refused = _scripted(monkeypatch, (2.0, 1.0), error=1e-3).kernel_choice()
    assert refused.kernel == transposed.DIRECT and "refused" in str(refused)


def test_gradients_tracing_and_an_output_size_run_the_plain_layer(monkeypatch) -> None:
    layer = _scripted(monkeypatch, (2.0, 1.0))
    assert layer.kernel_choice().kernel == PHASE_GEMM
    calls = []
    real = transposed.phase_conv_transpose2d
    monkeypatch.setattr(transposed, "phase_conv_transpose2d", lambda *a: calls.append(1) or real(*a))
    x = torch.randn(1, 6, 5, 5)
    with torch.no_grad():
        layer(x)
    assert calls == [1]
    y = layer(x.requires_grad_())  # autograd: PyTorch's kernel, with its gradient
    y.sum().backward()
    assert x.grad is not None and calls == [1]
    with torch.no_grad():
        assert layer(x, output_size=[13, 13]).shape[-2:] == (13, 13)
        torch.jit.trace(layer, x.detach(), check_trace=False)  # tracing: the plain layer, as exported
    assert calls == [1]


def test_new_weights_are_calibrated_again_and_the_kept_taps_follow_them(monkeypatch) -> None:
    layer = _scripted(monkeypatch, (2.0, 1.0))
    x = torch.randn(1, 6, 5, 5)
    with torch.no_grad():
        layer(x)
        layer.weight.mul_(-2)  # in place: the version counter moves
        expected = F.conv_transpose2d(x, layer.weight, layer.bias, 2)
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_the_race_of_a_layer_with_a_large_padding_keeps_input_rows_that_give_an_output(monkeypatch) -> None:
    """Cut to fewer rows for the race, a transposed convolution whose padding passes what those rows
    would output is raced on as many rows as give one (it asked oneDNN for an empty output)."""
    monkeypatch.setattr(speed, "SPEED_MACS", 10**5)  # two input rows of 40 would pass it
    layer = FastConvTranspose2d(16, 16, 4, stride=2, padding=30, bias=False)
    layer.speed_input = (40, 40)
    times = transposed._race(layer)
    assert times is not None and all(t > 0 for t in times)
