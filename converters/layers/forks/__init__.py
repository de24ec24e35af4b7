"""Layers of Caffe forks (DeepLab, SegNet, SSD, ShuffleNet, FlowNet 2.0, CTPN, C3D, ...), each with its
fork's semantics. Importing this package registers them; each fork family is one module here."""

from . import c3d, ctpn, deeplab, flownet, mobile, rcnn, segnet, ssd, yolo  # noqa: F401  (imported to register their converters)
