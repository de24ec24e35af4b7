"""Caffe model files and nets, without Caffe."""

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

__all__ = [
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
