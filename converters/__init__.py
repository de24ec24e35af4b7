"""Caffe model files and nets, without Caffe.

The path from Caffe to PyTorch, one sub-package per floor (each imports only those above it):

- :mod:`converters.caffe`: Caffe's files and net definitions, torch-free (schema, protobuf binary
  and text codecs, HDF5, file reading and writing, net upgrade and phase filtering, layer traits,
  net specification, coordinate mapping);
- :mod:`converters.layers`: one registry of layer converters, one module per family of layers;
- :mod:`converters.graph`: the graph builder, blob shapes, converted files, surgery, CPU speed-ups;
- :mod:`converters.fcn`: the FCN models (net definitions, dataset facts, preprocessing, named modules).

Reading and writing files needs only numpy (and h5py for HDF5); the PyTorch side (``load_caffe``,
``build_graph``, ``load_converted``, ``register_layer``...) is imported on first use.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

from . import _startup  # noqa: F401 - first: a Ctrl-C while torch loads under `python -m` is quiet
from .caffe.formats import (
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
from .caffe.message import Ident, Message
from .caffe.netdef import filter_layers, layer_type, upgrade_net
from .caffe.text import format_message, parse_text
from .errors import CaffeFormatError, GeometryError, NetError, UnsupportedLayerError, WeightsMismatchError

_TORCH_NAMES = {
    "load_caffe": "graph.builder",
    "build_graph": "graph.builder",
    "CaffeNetInfo": "graph.builder",
    "blob_shapes": "graph.shapes",
    "parameter_count": "graph.shapes",
    "load_converted": "graph.converted",
    "save_converted": "graph.converted",
    "optimize_for_cpu": "graph.speed",
    "export_onnx": "graph.export",
    "export_program": "graph.export",
    "register_layer": "layers.registry",
    "unregister_layer": "layers.registry",
    "registered_types": "layers.registry",
    "Converted": "layers.registry",
    "LayerContext": "layers.registry",
    "load_solver": "train.solver",
    "Solver": "train.solver",
}

#: Modules of the flat layout before the sub-packages, kept importable under their old names.
MOVED_MODULES = {
    "schema": "caffe.schema",
    "message": "caffe.message",
    "binary": "caffe.binary",
    "text": "caffe.text",
    "hdf5": "caffe.hdf5",
    "formats": "caffe.formats",
    "netdef": "caffe.netdef",
    "netspec": "caffe.netspec",
    "geometry": "caffe.geometry",
    "converted": "graph.converted",
    "speed": "graph.speed",
    "surgery": "graph.surgery",
    "fcn_nets": "fcn.nets",
    "preprocess": "fcn.preprocess",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import converters.fcn_nets`` gives the module now at ``converters.fcn.nets`` (same object)."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        prefix, _, name = fullname.rpartition(".")
        if prefix != __name__ or name not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: Any) -> Any:
        return importlib.import_module(f"{__name__}.{MOVED_MODULES[spec.name.rpartition('.')[2]]}")

    def exec_module(self, module: Any) -> None:
        pass  # already executed under its new name


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())


def __getattr__(name: str) -> Any:
    module = _TORCH_NAMES.get(name)
    if module is None:
        if name in MOVED_MODULES:
            value = importlib.import_module(f"{__name__}.{MOVED_MODULES[name]}")
            globals()[name] = value
            return value
        raise AttributeError(f"module 'converters' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    *_TORCH_NAMES,
    "CaffeFormatError",
    "GeometryError",
    "Ident",
    "Message",
    "NetError",
    "UnsupportedLayerError",
    "WeightsMismatchError",
    "array_to_blob",
    "blob_array",
    "blob_shape",
    "filter_layers",
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
