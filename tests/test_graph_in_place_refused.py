"""Layers that Caffe computes in place over the memory they read are refused in one line.

Caffe lets any layer name its top as its bottom. The elementwise layers then compute their
function, and so do those whose in-place forms the graph reproduces (Eltwise, LRN, MVN, Softmax,
BatchNorm, Scale). Pooling, (de)convolution, InnerProduct and a Concat of several bottoms do not:
their forward pass reads the one blob after writing into it (or reshapes it first), and a
same-shape convolution's backward pass takes its output for its input. The fixtures in
``tests/fixtures/in_place_refused`` are Caffe's own numbers for each (``make_layer_fixtures.py
in_place_refused``; Caffe ended that run with "double free or corruption"). They show that Caffe's
numbers are not the layer's, which is why the graph refuses these nets rather than compute either.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from converters import NetError, load_caffe, parse_text
from tests.conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "in_place_refused"
CASES = sorted(p.stem for p in FIXTURES.glob("*.prototxt"))


def _npz() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "io.npz") as npz:
        return {key: npz[key] for key in npz.files}


def _out_of_place(name: str) -> str:
    """The fixture's net with its last layer's top renamed ``out``: the layer's own function."""
    text = (FIXTURES / f"{name}.prototxt").read_text()
    head, last = text.rsplit("layer {", 1)
    return head + "layer {" + re.sub(r'top: "x"', 'top: "out"', last)


def test_the_fixtures_are_present() -> None:
    assert len(CASES) == 9, "tests/fixtures/in_place_refused is missing: tools/make_layer_fixtures.py"


@pytest.mark.parametrize("name", CASES)
def test_a_layer_caffe_computes_in_place_over_what_it_reads_is_refused_in_one_line(name: str) -> None:
    with pytest.raises(NetError) as caught:
        load_caffe(FIXTURES / f"{name}.prototxt", FIXTURES / f"{name}.caffemodel")
    message = str(caught.value)
    assert "\n" not in message
    pattern = r"layer '\w+' \(\w+\) computes blob 'x' in place, but .*: give its top a name of its own$"
    assert re.search(pattern, message), message


@pytest.mark.parametrize("name", CASES)
def test_caffes_numbers_in_place_are_not_the_layers_function(name: str) -> None:
    npz = _npz()
    net = load_caffe(parse_text(_out_of_place(name)), str(FIXTURES / f"{name}.caffemodel"), optimize=False)
    data = torch.from_numpy(npz[f"{name}/input:data"]).requires_grad_(True)
    out = net(data=data)["out"]
    caffe = npz[f"{name}/output:x"]
    forward_same = out.shape == caffe.shape and np.allclose(out.detach().numpy(), caffe, atol=1e-4)
    if f"{name}/top_diff:x" not in npz:
        assert not forward_same
        return
    (out * torch.from_numpy(npz[f"{name}/top_diff:x"])).sum().backward()
    grads = {f"{name}/grad:data": data.grad}
    for layer, keys in net.caffe.parameter_blobs.items():
        state = dict(net.named_parameters())
        grads.update({f"{name}/param_grad:{layer}/{j}": state[key].grad for j, key in enumerate(keys)})
    backward_same = all(
        key not in npz or (grad is not None and np.allclose(grad.numpy(), npz[key], atol=1e-4))
        for key, grad in grads.items()
    )
    assert not (forward_same and backward_same)
