"""Net surgery: the paper's section 3.1, a classifier's fully connected layers cast as convolutions.

``InnerProduct`` fc6 of VGG16 (4096 x 25088 on a 512x7x7 input) becomes a 7x7 convolution with
4096 outputs holding the same numbers; the layers after it become 1x1 convolutions. The result
gives the classifier's scores at 224x224 (as 1x1 maps) and coarse score maps on larger inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from ..caffe.message import Message
from ..caffe.netdef import layer_type


def convolutionize(
    net: Message,
    weights: Mapping[str, list[np.ndarray]],
    *,
    layers: Iterable[str] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> tuple[Message, dict[str, list[np.ndarray]]]:
    """``net`` with its InnerProduct layers (or those named in ``layers``) turned into
    convolutions whose kernels cover each layer's whole input, and the weights reshaped to match.

    Only layers over axis 1 without ``transpose`` can be cast; the blob shapes come from the net at
    its declared input size (or ``input_shapes``).
    """
    from .builder import build_graph

    module = build_graph(net, weights, input_shapes=input_shapes, initialise=False, strict=False)
    shapes = module.caffe.bottom_shapes
    wanted = None if layers is None else set(layers)
    out_net = module.caffe.definition.copy()
    out_weights = {name: list(blobs) for name, blobs in weights.items()}
    converted = []
    new_layers = []
    for layer in out_net.getall("layer"):
        name = str(layer.get("name"))
        if layer_type(layer) != "InnerProduct" or (wanted is not None and name not in wanted):
            new_layers.append(layer)
            continue
        ip = layer.get("inner_product_param")
        if int(ip.get("axis")) != 1 or bool(ip.get("transpose")):
            raise ValueError(f"layer '{name}': only InnerProduct over axis 1 without transpose can be cast")
        bottom_shape = shapes[name][0]
        kernel = tuple(bottom_shape[2:]) if len(bottom_shape) > 2 else (1, 1)
        channels = int(np.prod(bottom_shape[1:2])) if len(bottom_shape) > 2 else bottom_shape[1]
        conv = Message("LayerParameter")
        for field, values in layer.fields():
            if field not in ("type", "inner_product_param"):
                conv.set(field, values if conv.field_spec(field).repeated else values[-1])
        conv.set("type", "Convolution")
        conv_param = Message("ConvolutionParameter", num_output=int(ip.get("num_output")))
        if not bool(ip.get("bias_term")):
            conv_param.set("bias_term", False)
        if kernel[0] == kernel[1]:
            conv_param.set("kernel_size", [kernel[0]])
        else:
            conv_param.set("kernel_h", kernel[0])
            conv_param.set("kernel_w", kernel[1])
        for field in ("weight_filler", "bias_filler"):
            if field in ip:
                conv_param.set(field, ip.get(field))
        conv.set("convolution_param", conv_param)
        new_layers.append(conv)
        if name in out_weights:
            blobs = out_weights[name]
            weight = np.asarray(blobs[0], dtype=np.float32)
            outputs = int(ip.get("num_output"))
            blobs[0] = weight.reshape(outputs, channels, *kernel)
            if len(blobs) > 1:
                blobs[1] = np.asarray(blobs[1], dtype=np.float32).reshape(outputs)
        converted.append(name)
    if wanted is not None and wanted - set(converted):
        raise ValueError(f"no InnerProduct layer named {', '.join(sorted(wanted - set(converted)))}")
    out_net.set("layer", new_layers)
    return out_net, out_weights
