"""The PyTorch side of each Caffe layer type: one registry (:mod:`.registry`), and one module per
family of layers, each op next to its converter. Importing this package registers them all."""

from . import (  # noqa: F401  (imported to register their converters)
    activations,
    convolution,
    eltwise,
    forks,
    inner_product,
    loss,
    normalization,
    pooling,
    recurrent,
    reduction,
    scale,
    shape,
    structure,
)
from .fillers import bilinear_kernel, fill
from .registry import (
    Converted,
    Converter,
    LayerContext,
    UnsupportedLayerError,
    converter_for,
    register_layer,
    registered_types,
    unregister_layer,
)

__all__ = [
    "Converted",
    "Converter",
    "LayerContext",
    "UnsupportedLayerError",
    "bilinear_kernel",
    "converter_for",
    "fill",
    "register_layer",
    "registered_types",
    "unregister_layer",
]
