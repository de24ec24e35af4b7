#!/usr/bin/env bash
# Build the fork oracle: the BVLC oracle of tools/README.md (brocolli-caffe 9.0.2, already edited
# and built once) plus the forks' own layer sources, compiled unchanged in what they compute:
#
#   - PSPNet's Caffe (hszhao/PSPNet, DeepLab v2's Interp): Interp with zoom/shrink factors,
#     height/width and pad_beg/pad_end, and PSPNet's four-blob BN (moving *variance*) as "PSPBN";
#   - brocolli-caffe's own four-blob BN (moving *inverse std*), which its build compiles but never
#     registers: registered here as "BN";
#   - SegNet's BN (TimoSaemann/caffe-segnet-cudnn5, the numbers of alexgkendall/caffe-segnet) with
#     LEARN and INFERENCE modes, as "SegNetBN" with its parameter message renamed SegNetBNParameter
#     (brocolli's BNParameter has the same name and other fields), and SegNet's Upsample (ENet's
#     too) as "SegNetUpsample" with SegNetUpsampleParameter (brocolli's Upsample is the YOLO one);
#   - SENet's Axpy (hujie-frank/SENet), ShuffleNet's ShuffleChannel (farmingyard/ShuffleNet, the
#     parameter message its README gives) and YOLOv2's Reorg with `reverse` (gklz1982/caffe-yolov2).
#
# The renames (class, type and message names) and dropping interp.hpp's unused <cublas_v2.h> are
# the only edits; nothing here is copied into fcn-port. Usage, as root, outside the repository:
#
#   tools/build_fork_oracle.sh ORACLE PSPNET_GIT SEGNET_GIT SENET_GIT SHUFFLENET_GIT YOLOV2_GIT
#
# ORACLE is the folder of tools/README.md (holding brocolli-caffe-9.0.2/ and venv/); the GIT
# arguments are git directories of the fork repositories named above (any clone). The result is
# ORACLE/forks/src/python (PYTHONPATH) and takes about as long as the first build.
set -euo pipefail
ORACLE=$(realpath "$1")
PSP=$2
SEG=$3
SENET=$4
SHUFFLE=$5
YOLO=$6
SRC=$ORACLE/forks/src
BUILD=$ORACLE/forks/build
show() { git --git-dir="$1" show "HEAD:$2"; }

rm -rf "$SRC" && mkdir -p "$ORACLE/forks" "$BUILD"
cp -a "$ORACLE/brocolli-caffe-9.0.2" "$SRC"
rm -f "$SRC/python/caffe/_caffe.so"

# PSPNet: Interp and its interpolation kernels
show "$PSP" include/caffe/layers/interp_layer.hpp >"$SRC/include/caffe/layers/interp_layer.hpp"
show "$PSP" include/caffe/util/interp.hpp | grep -v 'cublas_v2.h' >"$SRC/include/caffe/util/interp.hpp"
show "$PSP" src/caffe/layers/interp_layer.cpp >"$SRC/src/caffe/layers/interp_layer.cpp"
show "$PSP" src/caffe/util/interp.cpp >"$SRC/src/caffe/util/interp.cpp"

# PSPNet's BN, renamed PSPBN
rename_psp='s/BNLayer/PSPBNLayer/g; s/bn_layer\.hpp/psp_bn_layer.hpp/; s/CAFFE_BN_LAYER_HPP_/CAFFE_PSP_BN_LAYER_HPP_/g;
            s/return "BN"/return "PSPBN"/; s/REGISTER_LAYER_CLASS(BN)/REGISTER_LAYER_CLASS(PSPBN)/'
show "$PSP" include/caffe/layers/bn_layer.hpp | sed "$rename_psp" >"$SRC/include/caffe/layers/psp_bn_layer.hpp"
show "$PSP" src/caffe/layers/bn_layer.cpp | sed "$rename_psp" >"$SRC/src/caffe/layers/psp_bn_layer.cpp"

# brocolli's BN: register it
grep -q 'REGISTER_LAYER_CLASS(BN)' "$SRC/src/caffe/layers/bn_layer.cpp" ||
  sed -i 's/^INSTANTIATE_CLASS(BNLayer);/&\nREGISTER_LAYER_CLASS(BN);/' "$SRC/src/caffe/layers/bn_layer.cpp"

# SegNet's BN, renamed SegNetBN
rename_seg='s/BNLayer/SegNetBNLayer/g; s/bn_layer\.hpp/segnet_bn_layer.hpp/; s/CAFFE_BN_LAYER_HPP_/CAFFE_SEGNET_BN_LAYER_HPP_/g;
            s/bn_param()/segnet_bn_param()/g; s/BNParameter_BNMode/SegNetBNParameter_BNMode/g;
            s/return "BN"/return "SegNetBN"/; s/REGISTER_LAYER_CLASS(BN)/REGISTER_LAYER_CLASS(SegNetBN)/'
show "$SEG" include/caffe/layers/bn_layer.hpp | sed "$rename_seg" >"$SRC/include/caffe/layers/segnet_bn_layer.hpp"
show "$SEG" src/caffe/layers/bn_layer.cpp | sed "$rename_seg" >"$SRC/src/caffe/layers/segnet_bn_layer.cpp"

# SegNet's Upsample, renamed SegNetUpsample
rename_up='s/UpsampleLayer/SegNetUpsampleLayer/g; s/upsample_layer\.hpp/segnet_upsample_layer.hpp/;
           s/CAFFE_UPSAMPLE_LAYER_HPP_/CAFFE_SEGNET_UPSAMPLE_LAYER_HPP_/g; s/upsample_param()/segnet_upsample_param()/g;
           s/UpsampleParameter/SegNetUpsampleParameter/g; s/return "Upsample"/return "SegNetUpsample"/;
           s/REGISTER_LAYER_CLASS(Upsample)/REGISTER_LAYER_CLASS(SegNetUpsample)/'
show "$SEG" include/caffe/layers/upsample_layer.hpp | sed "$rename_up" >"$SRC/include/caffe/layers/segnet_upsample_layer.hpp"
show "$SEG" src/caffe/layers/upsample_layer.cpp | sed "$rename_up" >"$SRC/src/caffe/layers/segnet_upsample_layer.cpp"

# SENet's Axpy, ShuffleNet's ShuffleChannel, YOLOv2's Reorg, as they are
show "$SENET" include/caffe/layers/axpy_layer.hpp >"$SRC/include/caffe/layers/axpy_layer.hpp"
show "$SENET" src/caffe/layers/axpy_layer.cpp >"$SRC/src/caffe/layers/axpy_layer.cpp"
show "$SHUFFLE" shuffle_channel_layer.hpp >"$SRC/include/caffe/layers/shuffle_channel_layer.hpp"
show "$SHUFFLE" shuffle_channel_layer.cpp >"$SRC/src/caffe/layers/shuffle_channel_layer.cpp"
show "$YOLO" include/caffe/layers/reorg_layer.hpp >"$SRC/include/caffe/layers/reorg_layer.hpp"
show "$YOLO" src/caffe/layers/reorg_layer.cpp >"$SRC/src/caffe/layers/reorg_layer.cpp"

# caffe.proto: the forks' messages, and LayerParameter fields at numbers no one else uses
PROTO=$SRC/src/caffe/proto/caffe.proto
fields='  optional InterpParameter interp_param = 3143;\n  optional SegNetBNParameter segnet_bn_param = 3045;\n'
fields+='  optional SegNetUpsampleParameter segnet_upsample_param = 3147;\n'
fields+='  optional ShuffleChannelParameter shuffle_channel_param = 3164;\n  optional ReorgParameter reorg_param = 3159;'
sed -i "s|^  optional BNParameter bn_param = 1111;|&\n$fields|" "$PROTO"
grep -q 'reorg_param = 3159' "$PROTO"
show "$PSP" src/caffe/proto/caffe.proto | sed -n '/^message InterpParameter {/,/^}/p' >>"$PROTO"
show "$SEG" src/caffe/proto/caffe.proto | sed -n '/^message BNParameter {/,/^}/p' |
  sed 's/^message BNParameter/message SegNetBNParameter/' >>"$PROTO"
show "$SEG" src/caffe/proto/caffe.proto | sed -n '/^message UpsampleParameter {/,/^}/p' |
  sed 's/^message UpsampleParameter/message SegNetUpsampleParameter/' >>"$PROTO"
show "$YOLO" src/caffe/proto/caffe.proto | sed -n '/^message ReorgParameter {/,/^}/p' >>"$PROTO"
# ShuffleNet's README gives this message
printf 'message ShuffleChannelParameter {\n  optional uint32 group = 1 [default = 1];\n}\n' >>"$PROTO"

PY=$ORACLE/venv/bin/python
cd "$BUILD"
cmake "$SRC" -DCMAKE_BUILD_TYPE=Release -DCPU_ONLY=ON -DUSE_OPENCV=OFF -DUSE_LMDB=OFF -DUSE_LEVELDB=OFF \
  -DPYTHON_EXECUTABLE="$PY" >cmake.log
make -j2 pycaffe >make.log 2>&1
GLOG_minloglevel=2 PYTHONPATH=$SRC/python "$PY" -c '
import caffe
names = set(caffe.layer_type_list())
wanted = {"Interp", "BN", "PSPBN", "SegNetBN", "SegNetUpsample", "Axpy", "ShuffleChannel", "Reorg"}
assert not wanted - names, wanted - names
print("fork oracle ready:", sorted(wanted))'
