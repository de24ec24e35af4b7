"""BatchNorm and Scale after a convolution as one in-place pass (converters.graph.folding): the
default CPU graph computes the chain with the plain graph's numbers (to a rounding) and state."""

from __future__ import annotations

import torch

from converters import load_caffe, parse_text
from converters.graph.folding import ConvNormScale

CHAIN = """
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 2 dim: 8 dim: 11 dim: 9 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 12 kernel_size: 3 pad: 1 BIAS } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" batch_norm_param { eps: 0.001 } }
layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
"""


def _nets(text: str, seed: int = 0):
    """The default and the plain graph of ``text``, with the same random parameters and statistics
    (a scale factor that is not 1, as Caffe's moving averages leave it)."""
    plain = load_caffe(parse_text(text), None, optimize=False)
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, value in plain.state_dict().items():
        drawn = torch.randn(value.shape, generator=generator)
        state[key] = drawn.abs() * 3 + 0.1 if key.endswith(("variance", "scale_factor")) else drawn
    plain.load_state_dict(state)
    default = load_caffe(parse_text(text), None)
    default.load_state_dict(state)
    return default, plain


def _input(seed: int = 1) -> torch.Tensor:
    return torch.randn(2, 8, 11, 9, generator=torch.Generator().manual_seed(seed)) * 4


def _assert_same_numbers(default, plain, x) -> None:
    with torch.no_grad():
        got, want = default(data=x)["conv"], plain(data=x)["conv"]
    torch.testing.assert_close(got, want, rtol=0, atol=2e-6 * float(want.abs().max()))


def test_a_batchnorm_scale_chain_runs_as_one_pass_after_the_convolution_with_the_same_numbers() -> None:
    for bias in ("", "bias_term: false"):
        default, plain = _nets(CHAIN.replace("BIAS", bias))
        (folded,) = [m for m in default.modules() if isinstance(m, ConvNormScale)]
        assert "bn" not in default.code and "scale" not in default.code  # one call in the graph
        assert list(default.state_dict()) == list(plain.state_dict())
        _assert_same_numbers(default, plain, _input())


def test_the_pass_follows_new_parameters_and_statistics() -> None:
    default, plain = _nets(CHAIN.replace("BIAS", ""))
    x = _input()
    _assert_same_numbers(default, plain, x)
    _, other = _nets(CHAIN.replace("BIAS", ""), seed=5)
    default.load_state_dict(other.state_dict())
    plain.load_state_dict(other.state_dict())
    _assert_same_numbers(default, plain, x)
    with torch.no_grad():
        default.bn.scale_factor.zero_()  # Caffe reads a zero factor as zero statistics
        plain.bn.scale_factor.zero_()
    _assert_same_numbers(default, plain, x)


def test_gradients_flow_through_caffes_own_chain() -> None:
    default, plain = _nets(CHAIN.replace("BIAS", ""))
    x = _input()
    default(data=x)["conv"].sum().backward()
    plain(data=x)["conv"].sum().backward()
    for name in ("conv.weight", "scale.weight", "scale.bias"):
        got, want = default.get_parameter(name).grad, plain.get_parameter(name).grad
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_chain_whose_blobs_another_layer_reads_is_not_folded() -> None:
    text = CHAIN.replace("BIAS", "").split('layer { name: "bn"')[0] + """
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "normed" }
layer { name: "scale" type: "Scale" bottom: "normed" top: "scaled" scale_param { bias_term: true } }
layer { name: "sum" type: "Eltwise" bottom: "conv" bottom: "scaled" top: "sum" }
"""
    default, plain = _nets(text)
    assert not any(isinstance(m, ConvNormScale) for m in default.modules())
    with torch.no_grad():
        got, want = default(data=_input())["sum"], plain(data=_input())["sum"]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_a_batchnorm_on_the_batchs_own_statistics_is_not_folded() -> None:
    text = CHAIN.replace("BIAS", "").replace("eps: 0.001", "eps: 0.001 use_global_stats: false")
    default, plain = _nets(text)
    assert not any(isinstance(m, ConvNormScale) for m in default.modules())
    _assert_same_numbers(default, plain, _input())


def test_statistics_that_do_not_fold_to_finite_weights_run_caffes_chain() -> None:
    """A zero variance with eps 0 (or a NaN mean) would make the factors infinite or NaN; the chain
    then runs as Caffe's, so the default graph gives the plain graph's NaN and infinities."""
    default, plain = _nets(CHAIN.replace("BIAS", "").replace("eps: 0.001", "eps: 0"))
    for net in (default, plain):
        with torch.no_grad():
            net.bn.variance[0] = 0.0
            net.bn.mean[1] = float("nan")
    (folded,) = [m for m in default.modules() if isinstance(m, ConvNormScale)]
    with torch.no_grad():
        assert folded.affine() is None
        got, want = default(data=_input())["conv"], plain(data=_input())["conv"]
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.isinf(), want.isinf())
    finite = want.isfinite()
    torch.testing.assert_close(got[finite], want[finite], rtol=1e-5, atol=1e-5)
