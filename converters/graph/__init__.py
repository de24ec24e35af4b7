"""Caffe nets as PyTorch graphs: the builder (:mod:`.builder`, inputs in :mod:`.inputs`), blob
shapes and parameter counts (:mod:`.shapes`), converted files (:mod:`.converted`), net surgery
(:mod:`.surgery`) and CPU speed-ups (:mod:`.speed`: the calibrated kernels of :mod:`.kernels`, the
channels-last blobs of :mod:`.layout`, the border skipping of :mod:`.border` and the image-rect
computation of :mod:`.cropping`)."""

from .builder import CaffeNetInfo, WeightsMismatchError, build_graph, load_caffe, select_layers
from .shapes import blob_shapes, layer_parameter_counts, parameter_count

__all__ = [
    "CaffeNetInfo",
    "WeightsMismatchError",
    "blob_shapes",
    "build_graph",
    "layer_parameter_counts",
    "load_caffe",
    "parameter_count",
    "select_layers",
]
