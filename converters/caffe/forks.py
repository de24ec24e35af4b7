# ruff: noqa: E501  (the table of the forks' added fields reads best one row a line)
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
from .schema import ENUMS, MESSAGES, V1_TYPE_NAMES, WIRE_NUMBERS, FieldSpec, extend_schema

FORK_SCHEMA_TEXT = """
enum BNParameter.BNMode LEARN=0 INFERENCE=1
enum ImageDataParameter.LabelType NONE=0 IMAGE=1 PIXEL=2
enum BatchNormParameter.Engine DEFAULT=0 CAFFE=1 CUDNN=2 MKL2017=3 MKLDNN=4
enum ConcatParameter.Engine DEFAULT=0 CAFFE=1 MKL2017=3 MKLDNN=4
enum EltwiseParameter.Engine DEFAULT=0 CAFFE=1 MKL2017=3 MKLDNN=4
enum InnerProductParameter.Engine DEFAULT=0 CAFFE=1 CUDNN=2 MKLDNN=3
enum DropoutParameter.Engine DEFAULT=0 CAFFE=1 CUDNN=2
enum ConvolutionParameter.CuDNNConvolutionAlgorithmSeeker GET=0 FINDEX=1
enum ConvolutionParameter.FusionType NONE_FUSION=0 SUM_FUSION=1
enum Pooling3DParameter.PoolMethod MAX=0 AVE=1
enum CTCParameter.Decoder best_path=0 best_path_thres=1 prefix_search=2
enum PriorBoxParameter.CodeType CORNER=1 CENTER_SIZE=2 CORNER_SIZE=3
enum FlowWarpParameter.FillParameter ZERO=1 NOT_A_NUMBER=2
enum CorrelationParameter.CorrelationType MULTIPLY=0 SUBTRACT=1
enum ResampleParameter.ResampleType NEAREST=1 LINEAR=2 CUBIC=3 AREA=4
enum MeanParameter.MeanOperation ADD=1 SUBTRACT=4
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
message ReverseParameter
  1 axis int32 =0
message LSTMParameter
  1 num_output uint32
  2 clipping_threshold float =0
  3 weight_filler FillerParameter
  4 bias_filler FillerParameter
  5 batch_size uint32 =1
message CTCParameter
  1 threshold float =0.7
  2 decode_type CTCParameter.Decoder =best_path
message Convolution3DParameter
  1 num_output uint32
  2 bias_term bool =true
  3 pad uint32 =0
  4 kernel_size uint32
  5 group uint32 =1
  6 kernel_depth uint32
  7 stride uint32 =1
  8 temporal_stride uint32 =1
  9 weight_filler FillerParameter
  10 bias_filler FillerParameter
  11 filter_group uint32 =1
  12 temporal_pad uint32 =0
message Pooling3DParameter
  1 pool Pooling3DParameter.PoolMethod =MAX
  2 kernel_size uint32
  3 stride uint32 =1
  4 pad uint32 =0
  5 kernel_depth uint32
  6 temporal_stride uint32 =1
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
message AccumParameter
  1 top_height uint32 =0
  2 top_width uint32 =0
  3 size_divisible_by uint32 =0
  4 have_reference bool =false
message FlowWarpParameter
  1 fill_value FlowWarpParameter.FillParameter =ZERO
message CorrelationParameter
  2 pad uint32 =0
  3 kernel_size uint32
  4 max_displacement uint32
  5 stride_1 uint32 =1
  6 stride_2 uint32 =1
  7 do_abs bool =false
  8 single_direction int32 =0
  15 correlation_type CorrelationParameter.CorrelationType =MULTIPLY
message ResampleParameter
  1 width uint32
  2 height uint32
  3 type ResampleParameter.ResampleType =LINEAR
  4 antialias bool =true
  5 factor float =1
message DownsampleParameter
  1 top_height uint32 =0
  2 top_width uint32 =0
message MeanParameter
  1 operation MeanParameter.MeanOperation
  2 file string
  3 value float*
  4 mean_scale float =1
  5 input_scale float =1
  6 output_scale float =1
message CoeffScheduleParameter
  1 half_life float =1
  2 initial_coeff float =1
  3 final_coeff float =1
message RandomGeneratorParameter
  1 rand_type string ="uniform"
  2 exp bool =false
  4 mean float =0
  5 spread float =0
  6 prob float =1
  7 apply_schedule bool =true
  8 discretize bool =false
  9 multiplier float =1
message BlackAugmentationParameter
  10 black RandomGeneratorParameter
  11 border RandomGeneratorParameter
message AugmentationCoeff
  1 mirror float =0
  2 dx float =0
  3 dy float =0
  4 angle float =0
  5 zoom_x float =1
  6 zoom_y float =1
  10 pow_nomean0 float =1
  11 pow_nomean1 float =1
  12 pow_nomean2 float =1
  13 add_nomean0 float =0
  14 add_nomean1 float =0
  15 add_nomean2 float =0
  16 mult_nomean0 float =1
  17 mult_nomean1 float =1
  18 mult_nomean2 float =1
  19 pow_withmean0 float =1
  20 pow_withmean1 float =1
  21 pow_withmean2 float =1
  22 add_withmean0 float =0
  23 add_withmean1 float =0
  24 add_withmean2 float =0
  25 mult_withmean0 float =1
  26 mult_withmean1 float =1
  27 mult_withmean2 float =1
  28 lmult_pow float =1
  29 lmult_add float =0
  30 lmult_mult float =1
  31 col_angle float =0
  38 fog_amount float =0
  39 fog_size float =0
  40 motion_blur_angle float =0
  41 motion_blur_size float =0
  42 shadow_angle float =0
  43 shadow_distance float =0
  44 shadow_strength float =0
  45 noise float =0
  100 gamma float =1
  101 brightness float =0
  102 contrast float =1
  103 color1 float =1
  104 color2 float =1
  105 color3 float =1
message AugmentationParameter
  2 write_augmented string =""
  3 max_multiplier float =255
  4 augment_during_test bool =false
  5 recompute_mean uint32 =0
  6 write_mean string =""
  7 mean_per_pixel bool =true
  8 mode string ="add"
  10 mirror RandomGeneratorParameter
  11 translate RandomGeneratorParameter
  12 rotate RandomGeneratorParameter
  13 zoom RandomGeneratorParameter
  14 squeeze RandomGeneratorParameter
  15 translate_x RandomGeneratorParameter
  16 translate_y RandomGeneratorParameter
  18 mean float*
  20 lmult_pow RandomGeneratorParameter
  21 lmult_mult RandomGeneratorParameter
  22 lmult_add RandomGeneratorParameter
  23 sat_pow RandomGeneratorParameter
  24 sat_mult RandomGeneratorParameter
  25 sat_add RandomGeneratorParameter
  26 col_pow RandomGeneratorParameter
  27 col_mult RandomGeneratorParameter
  28 col_add RandomGeneratorParameter
  29 ladd_pow RandomGeneratorParameter
  30 ladd_mult RandomGeneratorParameter
  31 ladd_add RandomGeneratorParameter
  32 col_rotate RandomGeneratorParameter
  33 crop_width uint32 =0
  34 crop_height uint32 =0
  35 gamma RandomGeneratorParameter
  36 brightness RandomGeneratorParameter
  37 contrast RandomGeneratorParameter
  38 color RandomGeneratorParameter
  80 bottomwidth uint32 =0
  81 bottomheight uint32 =0
  82 num uint32 =0
  83 chromatic_eigvec float*
  100 fog_amount RandomGeneratorParameter
  101 fog_size RandomGeneratorParameter
  102 motion_blur_angle RandomGeneratorParameter
  103 motion_blur_size RandomGeneratorParameter
  104 shadow_angle RandomGeneratorParameter
  105 shadow_distance RandomGeneratorParameter
  106 shadow_strength RandomGeneratorParameter
  107 noise RandomGeneratorParameter
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
    # CTPN's layers (BVLC's 140-143 are elu_param, bias_param, scale_param, input_param)
    "transpose_param": ("TransposeParameter", 142, "CTPN", ("Transpose",)),
    "reverse_param": ("ReverseParameter", 143, "CTPN", ("Reverse",)),
    "lstm_param": ("LSTMParameter", 140, "CTPN", ("Lstm",)),
    "ctc_param": ("CTCParameter", 141, "CTPN", ("CtcLoss", "CTCLoss")),
    # FlowNet 2.0's layers (BVLC's 148 is clip_param; 149 is brocolli's psroi_pooling_param, 159 the
    # YOLOv2 forks' reorg_param: binary files are read by the layer's type)
    "coeff_schedule_param": ("CoeffScheduleParameter", 148, "FlowNet 2.0",
                             ("DataAugmentation", "FlowAugmentation", "GenerateAugmentationParameters")),
    "augmentation_param": ("AugmentationParameter", 149, "FlowNet 2.0",
                           ("DataAugmentation", "FlowAugmentation", "GenerateAugmentationParameters")),
    "correlation_param": ("CorrelationParameter", 150, "FlowNet 2.0", ("Correlation", "Correlation1D")),
    "mean_param": ("MeanParameter", 154, "FlowNet 2.0", ("Mean",)),
    "resample_param": ("ResampleParameter", 155, "FlowNet 2.0", ("Resample",)),
    "downsample_param": ("DownsampleParameter", 156, "FlowNet 2.0", ("Downsample",)),
    "flow_warp_param": ("FlowWarpParameter", 159, "FlowNet 2.0", ("FlowWarp",)),
    "accum_param": ("AccumParameter", 160, "FlowNet 2.0", ("Accum",)),
    "black_augmentation_param": ("BlackAugmentationParameter", 161, "FlowNet 2.0", ("BlackAugmentation",)),
    # C3D v1.1's 3-D layers
    "convolution3d_param": ("Convolution3DParameter", 6661, "C3D v1.1", ("Convolution3D",)),
    "pooling3d_param": ("Pooling3DParameter", 6662, "C3D v1.1", ("Pooling3D",)),
}

#: What the forks add to BVLC's own messages, each with what it does here: ``applied`` (a
#: converter reads it with its fork's meaning), ``inert`` (an engine or algorithm choice: it
#: cannot change the numbers), or ``unimplemented`` (it changes what the layer computes and no
#: converter here follows it: accepted at its default, refused in one line naming the fork
#: otherwise). Rows: (message, field, type, default, the fork's field number or None, fork, effect);
#: where forks give one number two meanings the layer's own fields decide in text, BVLC's in binary.
ADDED_FIELDS: list[tuple[str, str, str, Any, int | None, str, str]] = [  # fmt: skip
    ("PoolingParameter", "ceil_mode", "bool", True, 13, "OpenCV", "applied"),
    ("PoolingParameter", "avg_include_pad", "bool", True, 13, "Intel Caffe", "unimplemented"),
    ("PoolingParameter", "torch_pooling", "bool", False, 40, "NVIDIA Caffe", "unimplemented"),
    ("PoolingParameter", "kernel_depth", "uint32", None, None, "C3D v1.0", "unimplemented"),
    ("PoolingParameter", "temporal_stride", "uint32", 1, None, "C3D v1.0", "unimplemented"),
    ("DropoutParameter", "scale_train", "bool", True, 2, "py-faster-rcnn / CTPN / OpenCV", "applied"),
    ("DropoutParameter", "sample_weights_test", "bool", False, 2, "SegNet (Bayesian SegNet)", "applied"),
    ("DropoutParameter", "engine", "DropoutParameter.Engine", "DEFAULT", 2, "NVIDIA Caffe", "inert"),
    ("DropoutParameter", "random_seed", "int64", -1, 3, "NVIDIA Caffe", "inert"),
    ("DetectionOutputParameter", "clip", "bool", False, None, "OpenCV", "applied"),
    ("BatchNormParameter", "engine", "BatchNormParameter.Engine", "DEFAULT", 15, "NVIDIA / Intel Caffe", "inert"),
    ("BatchNormParameter", "update_global_stats", "bool", False, 4, "DeepLab v2 / PSPNet", "unimplemented"),
    ("BatchNormParameter", "scale_bias", "bool", False, 7, "NVIDIA Caffe / OpenCV", "unimplemented"),
    ("BatchNormParameter", "use_weight_bias", "bool", True, 5, "Intel Caffe", "unimplemented"),
    ("BatchNormParameter", "bias_term", "bool", True, 6, "Intel Caffe", "unimplemented"),
    ("BatchNormParameter", "relu", "bool", False, 10, "Intel Caffe", "unimplemented"),
    ("BatchNormParameter", "stats_batch_size", "uint32", 0, 9, "Intel Caffe", "inert"),
    ("ConcatParameter", "engine", "ConcatParameter.Engine", "DEFAULT", 3, "Intel Caffe", "inert"),
    ("ConcatParameter", "per_fla_fuse", "bool", False, 4, "Intel Caffe", "inert"),
    ("EltwiseParameter", "engine", "EltwiseParameter.Engine", "DEFAULT", 4, "Intel Caffe", "inert"),
    ("InnerProductParameter", "engine", "InnerProductParameter.Engine", "DEFAULT", 7, "Intel Caffe", "inert"),
    ("InnerProductParameter", "relu", "bool", False, 8, "Intel Caffe", "unimplemented"),
    ("InnerProductParameter", "negative_slope", "float", 0.0, 9, "Intel Caffe", "unimplemented"),
    ("ConvolutionParameter", "cudnn_convolution_algo_seeker", "ConvolutionParameter.CuDNNConvolutionAlgorithmSeeker",
     "FINDEX", 19, "NVIDIA Caffe", "inert"),
    ("ConvolutionParameter", "conv_algos_override", "string", "-1,-1,-1", 20, "NVIDIA Caffe", "inert"),
    ("ConvolutionParameter", "conv_algorithm", "string", "direct", 21, "Intel Caffe", "inert"),
    ("ConvolutionParameter", "relu", "bool", False, 19, "Intel Caffe", "unimplemented"),
    ("ConvolutionParameter", "negative_slope", "float", 0.0, 20, "Intel Caffe", "unimplemented"),
    ("ConvolutionParameter", "fusion_type", "ConvolutionParameter.FusionType", "NONE_FUSION", 24, "Intel Caffe",
     "unimplemented"),
    ("ConvolutionParameter", "binary", "int32", 0, 19, "OpenPose's training Caffe", "unimplemented"),
    ("ConvolutionParameter", "dilation_h", "uint32", None, 17, "TSN (yjxiong/caffe)", "unimplemented"),
    ("ConvolutionParameter", "dilation_w", "uint32", None, 18, "TSN (yjxiong/caffe)", "unimplemented"),
    ("ConvolutionParameter", "kernel_depth", "uint32", None, None, "C3D v1.0", "unimplemented"),
    ("ConvolutionParameter", "temporal_pad", "uint32", 0, None, "C3D v1.0", "unimplemented"),
    ("ConvolutionParameter", "temporal_stride", "uint32", 1, None, "C3D v1.0", "unimplemented"),
    ("ConvolutionParameter", "filter_group", "uint32", 1, None, "C3D v1.0", "unimplemented"),
    ("ELUParameter", "lambda", "float", 1.0, 2, "NVIDIA Caffe", "unimplemented"),
    ("ReLUParameter", "fuse", "bool", False, 3, "Intel Caffe", "unimplemented"),
    ("ReductionParameter", "k", "int32", 1, 4, "TSN (yjxiong/caffe)", "unimplemented"),
    ("ReshapeParameter", "pixelshuffler", "int32", 1, 4, "Intel Caffe", "unimplemented"),
    ("ImageDataParameter", "ignore_label", "int32", 255, 15, "DeepLab v2 / PSPNet", "inert"),
    ("ImageDataParameter", "label_type", "ImageDataParameter.LabelType", "IMAGE", 16, "DeepLab v2 / PSPNet", "inert"),
    ("ImageDataParameter", "new_length", "uint32", None, None, "C3D v1.0", "inert"),
    ("ImageDataParameter", "show_data", "int32", None, None, "C3D v1.0", "inert"),
    ("ImageDataParameter", "use_image", "bool", None, None, "C3D v1.0", "inert"),
]

#: The V1 layer types of C3D v1.0 (its enum reuses BVLC's numbers 30-38: read by name in text only).
V1_FORK_TYPES = {
    "CONVOLUTION3D": "Convolution3D", "POOLING3D": "Pooling3D", "VOLUME_DATA": "VolumeData",
    "VIDEO_DATA": "VideoData", "DECONVOLUTION3D": "Deconvolution3D",
    "VIDEO_SEGMENTATION_DATA": "VideoSegmentationData", "VOXEL_SOFTMAX": "VoxelSoftmax",
    "VOXEL_SOFTMAX_LOSS": "VoxelSoftmaxLoss", "VIDEO_WITH_VOXEL_TRUTH_DATA": "VideoWithVoxelTruthData",
}  # fmt: skip

#: The schemas whose field names a prototxt may use: BVLC master's and these forks' (their
#: caffe.proto files, read for the names and numbers above).
SCHEMAS_CONSULTED = (
    "BVLC caffe.proto (master)", "Caffe-SSD", "py-faster-rcnn", "DeepLab v2", "SegNet", "PSPNet",
    "ENet", "R-FCN", "C3D", "CTPN", "FlowNet 2.0", "ShuffleNet", "YOLOv2 ports", "brocolli-caffe",
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
    for message, name, type_name, default, wire_number, _, _ in ADDED_FIELDS:
        NAME_ONLY[(message, name)] = (type_name, default, wire_number)
    # read by name (text): a binary file's number keeps BVLC's (or the first fork's) meaning
    for (message, name), (type_name, default, wire_number) in NAME_ONLY.items():
        spec = MESSAGES[message]
        if name not in spec.by_name:
            number = -len(spec.by_name) - 1  # not read by number: a second fork's field, by name
            spec.by_name[name] = FieldSpec(number, name, type_name, False, False, default)
        if wire_number is not None:
            WIRE_NUMBERS[(message, name)] = wire_number
    v1 = ENUMS["V1LayerParameter.LayerType"]
    for name, v2_name in V1_FORK_TYPES.items():
        v1.by_name.setdefault(name, -1 - len(v1.by_name))  # text only: no number of its own
        V1_TYPE_NAMES.setdefault(name, v2_name)
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


#: Forks whose added fields their own layer types apply (C3D v1.0's 3-D layers read
#: ``kernel_depth``, ``temporal_stride`` and ``temporal_pad`` from ``convolution_param`` /
#: ``pooling_param``: converters/layers/forks/c3d.py); on any other type they stay unimplemented.
APPLIED_BY_FORK_TYPES: dict[str, frozenset[str]] = {
    "C3D v1.0": frozenset({"Convolution3D", "Deconvolution3D", "Pooling3D"}),
}


def refuse_unimplemented_fields(layers: list[Message]) -> None:
    """Raise :class:`NetError` naming the layer, the field and its fork for the first field of
    :data:`ADDED_FIELDS` marked ``unimplemented`` that a layer sets to other than its default: it
    changes what the layer computes, in a way no converter here follows."""
    from ..errors import NetError

    unimplemented = {
        (m, f): (d, fork) for m, f, _, d, _, fork, effect in ADDED_FIELDS if effect == "unimplemented"
    }
    for layer in layers:
        for param_name, value in layer.fields():
            for param in value if isinstance(value, list) else [value]:
                if not isinstance(param, Message):
                    continue
                for field, values in param.fields():
                    known = unimplemented.get((param.type or "", field))
                    if known is None:
                        continue
                    default, fork = known
                    if str(layer.get("type")) in APPLIED_BY_FORK_TYPES.get(fork, ()):
                        continue
                    given = values[0] if isinstance(values, list) and len(values) == 1 else values
                    if default is not None and given == default:
                        continue
                    raise NetError(
                        f"layer '{layer.get('name')}' ({layer.get('type')}): field "
                        f"'{param_name}.{field}: {given}' of {fork} changes what the layer computes, and fcn-port does not implement it"
                    )
