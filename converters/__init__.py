"""Caffe model files and nets, without Caffe.

Reading and writing files needs only numpy (and h5py for HDF5); the PyTorch side
(``load_caffe``, ``build_graph``, ``load_converted``, ``register_layer``...) is imported on first use.
"""

from typing import Any

from .errors import CaffeFormatError
from .formats import (
    array_to_blob,
    blob_array,
    blob_shape,
    read_net,
    read_prototxt,
    read_weights,
    sniff_format,
    weights_to_net,
    write_caffemodel,
    write_prototxt,
    write_weights,
)
from .message import Ident, Message
from .netdef import layer_type, upgrade_net
from .text import format_message, parse_text

_TORCH_NAMES = {
    "load_caffe": "graph",
    "build_graph": "graph",
    "filter_layers": "graph",
    "WeightsMismatchError": "graph",
    "CaffeNetInfo": "graph",
    "load_converted": "converted",
    "save_converted": "converted",
    "register_layer": "layers",
    "Converted": "layers",
    "LayerContext": "layers",
    "UnsupportedLayerError": "layers",
    "optimize_for_cpu": "speed",
}


def __getattr__(name: str) -> Any:
    module = _TORCH_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'converters' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    *_TORCH_NAMES,
    "CaffeFormatError",
    "Ident",
    "Message",
    "array_to_blob",
    "blob_array",
    "blob_shape",
    "format_message",
    "layer_type",
    "parse_text",
    "read_net",
    "read_prototxt",
    "read_weights",
    "sniff_format",
    "upgrade_net",
    "weights_to_net",
    "write_caffemodel",
    "write_prototxt",
    "write_weights",
]
