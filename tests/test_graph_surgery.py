"""Section 3.1 of the paper: fully connected layers cast as convolutions give the same scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from converters import load_caffe, read_prototxt, read_weights
from converters.fcn.nets import net_definition
from converters.graph.surgery import convolutionize


def test_real_classifier_gives_the_same_scores_as_1x1_maps(real_models) -> None:
    folder = real_models / "cifar10_quick_v2"
    net = read_prototxt(folder / "deploy.prototxt")
    weights = read_weights(folder / "cifar10_quick_iter_5000.caffemodel")
    conv_net, conv_weights = convolutionize(net, weights)
    kinds = {str(layer.get("name")): str(layer.get("type")) for layer in conv_net.getall("layer")}
    assert kinds["ip1"] == kinds["ip2"] == "Convolution"
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 50
    with torch.no_grad():
        scores = load_caffe(net, weights)(data=x)["prob"]
        maps = load_caffe(conv_net, conv_weights)(data=x)["prob"]
    assert maps.shape == (2, 10, 1, 1)
    torch.testing.assert_close(maps.flatten(1), scores, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        larger = load_caffe(conv_net, conv_weights)(data=torch.randn(1, 3, 64, 96))["prob"]
    # Three stride-2 pools: 64x96 -> 8x12; the 4x4 kernel of ip1 then leaves a 5x9 map of scores.
    assert larger.shape[2:] == (5, 9)


@pytest.mark.parametrize("base", ["vgg16", "caffenet"])
def test_imagenet_base_fc6_becomes_a_convolution(base: str) -> None:
    """fc6 of VGG16 (on 512x7x7) becomes a 7x7 convolution; CaffeNet's (on 256x6x6) a 6x6 one."""
    net = net_definition(base, width=0.0625)
    rng = np.random.default_rng(0)
    random = load_caffe(net)
    weights = {
        name: [
            rng.standard_normal(tuple(random.state_dict()[key].shape)).astype(np.float32) * 0.05
            for key in keys
        ]
        for name, keys in random.caffe.parameter_blobs.items()
    }
    conv_net, conv_weights = convolutionize(net, weights)
    fc6 = conv_weights["fc6"][0]
    side = 7 if base == "vgg16" else 6
    assert fc6.shape[2:] == (side, side) and fc6.shape[0] == weights["fc6"][0].shape[0]
    size = random.caffe.inputs["data"][2]
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1)) * 50
    with torch.no_grad():
        classifier = load_caffe(net, weights)(data=x)
        fully_conv = load_caffe(conv_net, conv_weights)(data=x)
    for blob, value in classifier.items():
        torch.testing.assert_close(fully_conv[blob].flatten(1), value, rtol=1e-4, atol=1e-5)


def test_only_named_layers_are_cast_and_unknown_names_are_refused(real_models) -> None:
    folder = real_models / "cifar10_quick_v2"
    net = read_prototxt(folder / "deploy.prototxt")
    weights = read_weights(folder / "cifar10_quick_iter_5000.caffemodel")
    conv_net, _ = convolutionize(net, weights, layers=["ip1"])
    kinds = {str(layer.get("name")): str(layer.get("type")) for layer in conv_net.getall("layer")}
    assert kinds["ip1"] == "Convolution" and kinds["ip2"] == "InnerProduct"
    with pytest.raises(ValueError, match="fc9"):
        convolutionize(net, weights, layers=["fc9"])
