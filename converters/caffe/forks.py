"""What Caffe forks add to ``caffe.proto``: their parameter messages and the ``LayerParameter``
fields that hold them, in :mod:`.schema`'s notation, so that ``inspect`` shows fork fields and a
misspelled one is still an error.

Text format goes by field name, so the fork fields are known to the text reader by name. Binary
files go by field number, and forks reuse numbers that BVLC (or another fork) gives to something
else: ENet's ``upsample_param`` is 147, BVLC's ``swish_param``; DeepLab's ``interp_param`` is 143,
BVLC's ``input_param``. The binary reader therefore keeps BVLC's meaning and leaves fork fields in
``Message.unknown``; :func:`fork_fields` decodes them with the fork's table for the layer's type.

Messages with one name in two forks (``BNParameter`` of SegNet and of PSPNet/brocolli-caffe,
``UpsampleParameter`` of SegNet and of the YOLO forks) are one message here whose field names are
the union: the first fork's numbers are the message's numbers; the other fork's fields are read by
name (:data:`NAME_ONLY`) and written under that fork's numbers (``schema.WIRE_NUMBERS``); a message
mixing both forks' fields of one number cannot be written.
"""

from __future__ import annotations

from typing import Any

from .message import Message
from .schema import MESSAGES, WIRE_NUMBERS, FieldSpec, extend_schema

FORK_SCHEMA_TEXT = """
enum BNParameter.BNMode LEARN=0 INFERENCE=1
enum ImageDataParameter.LabelType NONE=0 IMAGE=1 PIXEL=2
enum PriorBoxParameter.CodeType CORNER=1 CENTER_SIZE=2 CORNER_SIZE=3
message InterpParameter
  1 height int32 =0
  2 width int32 =0
  3 zoom_factor int32 =1
  4 shrink_factor int32 =1
  5 pad_beg int32 =0
  6 pad_end int32 =0
message UpsampleParameter
  1 scale uint32 =2
  2 scale_h uint32
  3 scale_w uint32
  4 pad_out_h bool =false
  5 pad_out_w bool =false
  6 upsample_h uint32
  7 upsample_w uint32
message BNParameter
  1 scale_filler FillerParameter
  2 shift_filler FillerParameter
  3 bn_mode BNParameter.BNMode =LEARN
message ShuffleChannelParameter
  1 group uint32 =1
message ReLU6Parameter
  1 negative_slope float =0
  2 threshold float =6
message ReorgParameter
  1 stride uint32 =1
  2 reverse bool =false
message NormalizeParameter
  1 across_spatial bool =true
  2 scale_filler FillerParameter
  3 channel_shared bool =true
  4 eps float =1e-10
message PermuteParameter
  1 order uint32*
message PriorBoxParameter
  1 min_size float*
  2 max_size float*
  3 aspect_ratio float*
  4 flip bool =true
  5 clip bool =false
  6 variance float*
  7 img_size uint32
  8 img_h uint32
  9 img_w uint32
  10 step float
  11 step_h float
  12 step_w float
  13 offset float =0.5
message ProposalParameter
  1 feat_stride uint32 =16
  2 base_size uint32 =16
  3 min_size uint32 =16
  4 ratio float*
  5 scale float*
  6 pre_nms_topn uint32 =6000
  7 post_nms_topn uint32 =300
  8 nms_thresh float =0.7
message ROIPoolingParameter
  1 pooled_h uint32 =0
  2 pooled_w uint32 =0
  3 spatial_scale float =1
message PSROIPoolingParameter
  1 spatial_scale float
  2 output_dim int32
  3 group_size int32
message NonMaximumSuppressionParameter
  1 nms_threshold float =0.3
  2 top_k int32
  3 eta float =1.0
message SaveOutputParameter
  1 output_directory string
  2 output_name_prefix string
  3 output_format string
  4 label_map_file string
  5 name_size_file string
  6 num_test_image uint32
message DenseImageDataParameter
  1 source string
  2 batch_size uint32
  3 rand_skip uint32 =0
  4 shuffle bool =false
  5 new_height uint32 =0
  6 new_width uint32 =0
  7 is_color bool =true
  8 mean_file string
  9 root_folder string =""
  10 mirror bool =false
  11 crop_width uint32 =0
  12 crop_height uint32 =0
message TransposeParameter
  1 dim int32*
message VideoDataParameter
  1 source string
  2 scale float =1
  3 mean_file string
  4 batch_size uint32 =1
  5 crop_size uint32 =0
  6 mirror bool =false
  7 rand_skip uint32 =0
  8 shuffle bool =false
  9 new_height uint32 =0
  10 new_width uint32 =0
  11 is_color bool =true
  12 root_folder string =""
  13 new_length uint32
  14 show_data bool =false
  15 use_image bool =false
  16 use_temporal_jitter bool =false
  17 sampling_rate uint32 =1
  18 max_sampling_rate uint32 =1
  19 use_sampling_rate_jitter bool =false
  20 use_multiple_label bool =false
  21 num_of_labels uint32 =1
message DetectionOutputParameter
  1 num_classes uint32
  2 share_location bool =true
  3 background_label_id int32 =0
  4 nms_param NonMaximumSuppressionParameter
  5 save_output_param SaveOutputParameter
  6 code_type PriorBoxParameter.CodeType =CORNER
  8 variance_encoded_in_target bool =false
  7 keep_top_k int32 =-1
  9 confidence_threshold float
  10 visualize bool =false
  11 visualize_threshold float
  12 save_file string
"""

# Field names of a second fork's message of the same name: (message, field) -> (type, default,
# the number that fork writes it under).
NAME_ONLY: dict[tuple[str, str], tuple[str, Any, int | None]] = {
    # the four-blob BN of PSPNet and brocolli-caffe: slope/bias + moving mean and variance statistic
    ("BNParameter", "slope_filler"): ("FillerParameter", None, 1),
    ("BNParameter", "bias_filler"): ("FillerParameter", None, 2),
    ("BNParameter", "momentum"): ("float", 0.9, 3),
    ("BNParameter", "eps"): ("float", 1e-5, 4),
    ("BNParameter", "frozen"): ("bool", False, 5),
    # the YOLO forks' nearest-neighbour Upsample (brocolli-caffe: scale default 1, dims_num)
    ("UpsampleParameter", "dims_num"): ("int32", 4, 2),
    # fields the forks add to BVLC's messages, where BVLC (or another fork) uses the number:
    # OpenCV's opencv-caffe.proto and the DenseNet releases: ceil_mode (BVLC 13 is round_mode)
    ("PoolingParameter", "ceil_mode"): ("bool", True, 13),
    # py-faster-rcnn's caffe-fast-rcnn, CTPN, OpenCV (SegNet's 2 is sample_weights_test)
    ("DropoutParameter", "scale_train"): ("bool", True, 2),
    # DeepLab v2 and PSPNet: the label image's ignore value and kind (a data layer's: no effect here)
    ("ImageDataParameter", "ignore_label"): ("int32", 255, 15),
    ("ImageDataParameter", "label_type"): ("ImageDataParameter.LabelType", "IMAGE", 16),
    # OpenCV's DetectionOutput (its res10 face detector): decoded boxes clipped to [0, 1]; no
    # fork schema read gives it a number, so it is read from text only
    ("DetectionOutputParameter", "clip"): ("bool", False, None),
}

#: ``LayerParameter`` fields of the forks: name -> (message type, field number, fork, layer types).
LAYER_FIELDS: dict[str, tuple[str, int, str, tuple[str, ...]]] = {
    "interp_param": ("InterpParameter", 143, "DeepLab v2 / PSPNet", ("Interp",)),
    "upsample_param": ("UpsampleParameter", 147, "SegNet / ENet (YOLO forks: 500)", ("Upsample",)),
    "bn_param": ("BNParameter", 45, "SegNet / ENet (brocolli-caffe: 1111, PSPNet: 152)", ("BN",)),
    "shuffle_channel_param": ("ShuffleChannelParameter", 164, "ShuffleNet forks", ("ShuffleChannel",)),
    "relu6_param": ("ReLU6Parameter", 503, "brocolli-caffe", ("ReLU6",)),
    "reorg_param": ("ReorgParameter", 159, "YOLOv2 forks", ("Reorg",)),
    "norm_param": ("NormalizeParameter", 206, "Caffe-SSD (weiliu89)", ("Normalize",)),
    "permute_param": ("PermuteParameter", 202, "Caffe-SSD (weiliu89)", ("Permute",)),
    "prior_box_param": ("PriorBoxParameter", 203, "Caffe-SSD (weiliu89)", ("PriorBox",)),
    "roi_pooling_param": ("ROIPoolingParameter", 8266711, "Fast/Faster R-CNN", ("ROIPooling",)),
    "proposal_param": ("ProposalParameter", 1000, "brocolli-caffe (PVANet's C++ port)", ("Proposal",)),
    "psroi_pooling_param": ("PSROIPoolingParameter", 10002, "R-FCN (brocolli-caffe: 149)", ("PSROIPooling",)),
    "detection_output_param": ("DetectionOutputParameter", 204, "Caffe-SSD (weiliu89)", ("DetectionOutput",)),
    # data layers left in deploy files: read, never used (the layer's tops are inputs)
    "dense_image_data_param": ("DenseImageDataParameter", 138, "SegNet", ("DenseImageData",)),
    "video_data_param": ("VideoDataParameter", 6660, "C3D v1.1 (video-caffe: 7777)", ("VideoData",)),
    # CTPN's Transpose (BVLC's 142 is scale_param)
    "transpose_param": ("TransposeParameter", 142, "CTPN", ("Transpose",)),
}

#: The schemas whose field names a prototxt may use: BVLC master's and these forks' (their
#: caffe.proto files, read for the names and numbers above).
SCHEMAS_CONSULTED = (
    "BVLC caffe.proto (master)", "Caffe-SSD", "py-faster-rcnn", "DeepLab v2", "SegNet", "PSPNet",
    "ENet", "R-FCN", "C3D", "CTPN", "ShuffleNet", "YOLOv2 ports", "brocolli-caffe",
    "OpenCV's opencv-caffe.proto",
)

#: Binary field numbers per layer type where a fork's number differs from the table above.
TYPE_NUMBERS: dict[str, dict[int, str]] = {
    "Upsample": {147: "upsample_param", 500: "upsample_param"},
    "BN": {45: "bn_param", 1111: "bn_param", 152: "bn_param"},  # SegNet, brocolli-caffe, PSPNet
    "PSROIPooling": {10002: "psroi_pooling_param", 149: "psroi_pooling_param"},
    "Reorg": {159: "reorg_param", 147: "reorg_param"},  # 147: gklz1982/caffe-yolov2
    "VideoData": {6660: "video_data_param", 7777: "video_data_param"},
}

_LENGTH = 2


def _install() -> None:
    extend_schema(FORK_SCHEMA_TEXT)
    for (message, name), (type_name, default, wire_number) in NAME_ONLY.items():
        spec = MESSAGES[message]
        if name not in spec.by_name:
            number = -len(spec.by_name) - 1  # not read by number: a second fork's field, by name
            spec.by_name[name] = FieldSpec(number, name, type_name, False, False, default)
        if wire_number is not None:
            WIRE_NUMBERS[(message, name)] = wire_number
    layer = MESSAGES["LayerParameter"]
    for name, (type_name, number, _, _) in LAYER_FIELDS.items():
        if name not in layer.by_name:
            layer.by_name[name] = FieldSpec(number, name, type_name, False, False, None)


_install()


def fork_fields(layer: Message) -> Message:
    """``layer`` with its fork parameter fields decoded from the binary's unknown fields (and from a
    BVLC field the fork reuses, such as ENet's ``upsample_param`` read as ``swish_param``) with the
    table of the fork that the layer's type belongs to. Text-format layers come back unchanged."""
    from .binary import decode_message, encode_message

    kind = str(layer.get("type") or "")
    numbers = dict(TYPE_NUMBERS.get(kind, {}))
    for name, (_, number, _, types) in LAYER_FIELDS.items():
        if kind in types:
            numbers.setdefault(number, name)
    if not numbers:
        return layer
    out = layer.copy()
    keep = []
    for number, wire, raw in out.unknown:
        name = numbers.get(number)
        if name is None or wire != _LENGTH or name in out:
            keep.append((number, wire, raw))
            continue
        out.set(name, decode_message(bytes(raw), LAYER_FIELDS[name][0]))
    out.unknown = keep
    for number, name in numbers.items():
        known = MESSAGES["LayerParameter"].by_number.get(number)
        if known is not None and known.name != name and known.name in out and name not in out:
            value = out.get(known.name)
            if isinstance(value, Message):
                out.set(name, decode_message(encode_message(value), LAYER_FIELDS[name][0]))
                out.remove(known.name)
    return out
