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
#     parameter message its README gives) and YOLOv2's Reorg with `reverse` (gklz1982/caffe-yolov2);
#   - optionally (the last four arguments) BVLC master's Clip and Swish (BVLC/caffe, added after
#     1.0) at BVLC's field numbers, and master's InfogainLoss and SigmoidCrossEntropyLoss (softmax
#     inside, axis, ignore_label, normalization; a second top "prob") as "InfogainLossMaster" and
#     "SigmoidCrossEntropyLossMaster" beside brocolli's 1.0 ones, with master's
#     InfogainLossParameter.axis; FlowNet 2.0's layers with CPU code, Accum, ChannelNorm and
#     FlowWarp (lmb-freiburg/flownet2), at FlowNet's field numbers; CTPN's Transpose, Reverse and
#     its own recurrent "Lstm" (tianzhi0549/CTPN's caffe/), whose field numbers 140/142/143
#     brocolli uses, so they get 4140/4142/4143 here; and C3D v1.0's Convolution3D, Pooling3D and
#     Deconvolution3D (facebook/C3D's C3D-v1.0/, the Caffe of the Sports-1M model) as
#     "C3DConvolution3D", "C3DPooling3D" and "C3DDeconvolution3D" with its vol2col, their fields in
#     C3DConvolution3DParameter (C3D's ConvolutionParameter) and C3DPooling3DParameter (its
#     PoolingParameter) at c3d_convolution3d_param = 6661 and c3d_pooling3d_param = 6662 (C3D
#     v1.1's numbers for the same messages).
#
# The renames (class, type and message names) and dropping interp.hpp's unused <cublas_v2.h> are
# the only edits to the first group. For the optional ones: CTPN declares its layers in
# common_layers.hpp and caffe_bound in math_functions, which brocolli lacks, so the declarations
# are cut out of CTPN's files into layers/{transpose,reverse,ctpn_lstm}_layer.hpp and caffe_bound's
# two definitions into util/ctpn_math_functions.cpp (its lstm_layer.cpp becomes ctpn_lstm_layer.cpp
# beside BVLC's); flow_warp_layer.cpp loses its unused OpenCV includes and gets the CPU_ONLY GPU
# stubs the other layers have. The master losses get the *Master renames (class, header, guard,
# type, registration) and nothing else. C3D v1.0 is a Caffe with 5-D Blobs and the old Layer API;
# its three layers are ported mechanically and compute what they did: SetUp becomes LayerSetUp
# (C3D has no Reshape: here Reshape only refuses a bottom whose shape changed since setup), Forward
# returns void, top/bottom are const references, propagate_down a vector, num/channels/length/
# height/width become shape(0..4), 5-argument Blob/Reshape a shape vector and offset(n, c, l, h, w)
# C3D's own formula (util/c3d_blob.hpp); convolution_param and pooling_param become the C3D
# messages. Nothing here is copied into fcn-port. Usage, as root, outside the repository:
#
#   tools/build_fork_oracle.sh ORACLE PSPNET_GIT SEGNET_GIT SENET_GIT SHUFFLENET_GIT YOLOV2_GIT \
#     [BVLC_GIT FLOWNET2_GIT CTPN_GIT C3D_GIT]
#
# ORACLE is the folder of tools/README.md (holding brocolli-caffe-9.0.2/ and venv/); the GIT
# arguments are git directories of the repositories named above (any clone; pass "" to skip one of
# the optional four). The result is ORACLE/forks/src/python (PYTHONPATH). ORACLE/forks/build is
# kept, so a rerun recompiles what changed (with a changed caffe.proto, nearly everything).
set -euo pipefail
ORACLE=$(realpath "$1")
PSP=$2
SEG=$3
SENET=$4
SHUFFLE=$5
YOLO=$6
BVLC=${7:-}
FLOWNET2=${8:-}
CTPN=${9:-}
C3D=${10:-}
SRC=$ORACLE/forks/src
BUILD=$ORACLE/forks/build
show() { git --git-dir="$1" show "HEAD:$2"; }
# grab START STOP: from the line before the first line matching START through the next matching STOP
# (a declaration with its template line), for every START
grab() { awk -v start="$1" -v stop="$2" '!p && $0 ~ start { p = 1; print prev } p { print; if ($0 ~ stop) p = 0 } { prev = $0 }'; }

rm -rf "$SRC" && mkdir -p "$ORACLE/forks" "$BUILD"
mkdir "$SRC" && cp -a "$ORACLE/brocolli-caffe-9.0.2/." "$SRC/"  # the contents, even through a symlink
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

# BVLC master's Clip and Swish, as they are; its InfogainLoss and SigmoidCrossEntropyLoss renamed
# *Master (brocolli's 1.0 ones keep their names)
if [ -n "$BVLC" ]; then
  for l in clip swish; do
    show "$BVLC" include/caffe/layers/${l}_layer.hpp >"$SRC/include/caffe/layers/${l}_layer.hpp"
    show "$BVLC" src/caffe/layers/${l}_layer.cpp >"$SRC/src/caffe/layers/${l}_layer.cpp"
  done
  for l in InfogainLoss:infogain_loss SigmoidCrossEntropyLoss:sigmoid_cross_entropy_loss; do
    t=${l%%:*} f=${l#*:}
    g=CAFFE_$(echo "$f" | tr a-z A-Z)
    rename_master="s/${t}Layer/${t}MasterLayer/g; s/${f}_layer\.hpp/${f}_master_layer.hpp/;
                   s/${g}_LAYER_HPP_/${g}_MASTER_LAYER_HPP_/g; s/return \"${t}\"/return \"${t}Master\"/;
                   s/REGISTER_LAYER_CLASS(${t})/REGISTER_LAYER_CLASS(${t}Master)/"
    show "$BVLC" include/caffe/layers/${f}_layer.hpp | sed "$rename_master" >"$SRC/include/caffe/layers/${f}_master_layer.hpp"
    show "$BVLC" src/caffe/layers/${f}_layer.cpp | sed "$rename_master" >"$SRC/src/caffe/layers/${f}_master_layer.cpp"
    grep -q "return \"${t}Master\"" "$SRC/include/caffe/layers/${f}_master_layer.hpp"
    grep -q "REGISTER_LAYER_CLASS(${t}Master)" "$SRC/src/caffe/layers/${f}_master_layer.cpp"
  done
fi

# FlowNet 2.0's Accum, ChannelNorm and FlowWarp (Correlation, Resample and DataAugmentation have no
# CPU code); FlowWarp without <opencv2/...> (unused) and with STUB_GPU for CPU_ONLY
if [ -n "$FLOWNET2" ]; then
  for l in accum channel_norm flow_warp; do
    show "$FLOWNET2" include/caffe/layers/${l}_layer.hpp >"$SRC/include/caffe/layers/${l}_layer.hpp"
    show "$FLOWNET2" src/caffe/layers/${l}_layer.cpp >"$SRC/src/caffe/layers/${l}_layer.cpp"
  done
  sed -i '/#include <opencv2\//d; s/^INSTANTIATE_CLASS(FlowWarpLayer);/#ifdef CPU_ONLY\nSTUB_GPU(FlowWarpLayer);\n#endif\n\n&/' \
    "$SRC/src/caffe/layers/flow_warp_layer.cpp"
  grep -q 'STUB_GPU(FlowWarpLayer)' "$SRC/src/caffe/layers/flow_warp_layer.cpp"
fi

# CTPN's Transpose, Reverse and Lstm: headers cut out of its common_layers.hpp (and caffe_bound's
# declaration out of its math_functions.hpp), sources with their includes pointed at them
ctpn_header() {  # ctpn_header FILE CLASS: include/caffe/layers/FILE_layer.hpp with CTPN's CLASS
  local guard=CAFFE_$(echo "$1" | tr a-z A-Z)_LAYER_HPP_
  {
    printf '#ifndef %s\n#define %s\n\n#include <vector>\n\n' "$guard" "$guard"
    printf '#include "caffe/blob.hpp"\n#include "caffe/layer.hpp"\n#include "caffe/proto/caffe.pb.h"\n\n'
    printf 'namespace caffe {\n\n'
    if [ "$1" = ctpn_lstm ]; then
      show "$CTPN" caffe/include/caffe/util/math_functions.hpp | grab '^void caffe_bound\(' ';$'
      echo
    fi
    show "$CTPN" caffe/include/caffe/common_layers.hpp | grab "^class $2 " '^};'
    printf '\n}  // namespace caffe\n\n#endif  // %s\n' "$guard"
  } >"$SRC/include/caffe/layers/$1_layer.hpp"
  grep -q "^class $2 " "$SRC/include/caffe/layers/$1_layer.hpp"
}
if [ -n "$CTPN" ]; then
  ctpn_header transpose TransposeLayer
  ctpn_header reverse ReverseLayer
  ctpn_header ctpn_lstm LstmLayer
  for l in transpose reverse; do
    show "$CTPN" caffe/src/caffe/layers/${l}_layer.cpp |
      sed "s|#include \"caffe/common_layers.hpp\"|#include \"caffe/layers/${l}_layer.hpp\"|" \
      >"$SRC/src/caffe/layers/${l}_layer.cpp"
  done
  show "$CTPN" caffe/src/caffe/layers/lstm_layer.cpp |
    sed 's|#include "caffe/vision_layers.hpp"|#include "caffe/layers/ctpn_lstm_layer.hpp"|' \
    >"$SRC/src/caffe/layers/ctpn_lstm_layer.cpp"
  {
    printf '#include <algorithm>\n\n#include "caffe/layers/ctpn_lstm_layer.hpp"\n\nnamespace caffe {\n\n'
    show "$CTPN" caffe/src/caffe/util/math_functions.cpp | grab '^void caffe_bound\(' '^}'
    printf '\n}  // namespace caffe\n'
  } >"$SRC/src/caffe/util/ctpn_math_functions.cpp"
  grep -c '^void caffe_bound(' "$SRC/src/caffe/util/ctpn_math_functions.cpp" | grep -qx 2
fi

# C3D v1.0's Convolution3D, Pooling3D and Deconvolution3D with its vol2col, ported to the N-D Blob and
# the Layer API of Caffe 1.0 by the substitutions below (the arithmetic is C3D's, line for line)
if [ -n "$C3D" ]; then
  c3d() { show "$C3D" "C3D-v1.0/$1"; }
  cat >"$SRC/include/caffe/util/c3d_blob.hpp" <<'HPP'
#ifndef CAFFE_UTIL_C3D_BLOB_HPP_
#define CAFFE_UTIL_C3D_BLOB_HPP_

#include <vector>

#include "caffe/blob.hpp"

namespace caffe {

// C3D v1.0's 5-D Blob API on an N-D Blob: Blob(n, c, l, h, w) and Reshape(n, c, l, h, w) take
// c3d_shape(n, c, l, h, w); blob->offset(n, c, l, h, w) is c3d_offset(blob, n, c, l, h, w), with
// C3D's bounds (an index may equal its dimension) and formula.
inline std::vector<int> c3d_shape(int n, int c, int l, int h, int w) {
  std::vector<int> shape(5);
  shape[0] = n; shape[1] = c; shape[2] = l; shape[3] = h; shape[4] = w;
  return shape;
}

template <typename Dtype>
inline int c3d_offset(const Blob<Dtype>* blob, const int n, const int c = 0, const int l = 0,
    const int h = 0, const int w = 0) {
  CHECK_EQ(blob->num_axes(), 5);
  CHECK_GE(n, 0); CHECK_LE(n, blob->shape(0));
  CHECK_GE(c, 0); CHECK_LE(c, blob->shape(1));
  CHECK_GE(l, 0); CHECK_LE(l, blob->shape(2));
  CHECK_GE(h, 0); CHECK_LE(h, blob->shape(3));
  CHECK_GE(w, 0); CHECK_LE(w, blob->shape(4));
  return (((n * blob->shape(1) + c) * blob->shape(2) + l) * blob->shape(3) + h) * blob->shape(4) + w;
}

}  // namespace caffe

#endif  // CAFFE_UTIL_C3D_BLOB_HPP_
HPP
  c3d include/caffe/util/vol2col.hpp >"$SRC/include/caffe/util/c3d_vol2col.hpp"
  c3d src/caffe/util/vol2col.cpp | sed 's|"caffe/util/vol2col.hpp"|"caffe/util/c3d_vol2col.hpp"|' \
    >"$SRC/src/caffe/util/c3d_vol2col.cpp"
  port_c3d='s/\b\(Convolution3D\|Pooling3D\|Deconvolution3D\)Layer\b/C3D\1Layer/g;
            s/\b\(CONVOLUTION3D\|POOL3D\|DECONVOLUTION3D\)_LAYER_HPP_/CAFFE_C3D_\1_LAYER_HPP_/g;
            /#include "caffe\/\(neuron\|loss\|data\)_layers.hpp"/d;
            s,#include "caffe/\(convolution3d\|pool3d\|deconvolution3d\)_layer.hpp",#include "caffe/layers/c3d_\1_layer.hpp",;
            s|"caffe/util/vol2col.hpp"|"caffe/util/c3d_vol2col.hpp"|;
            s|^#include "caffe/proto/caffe.pb.h"|&\n#include "caffe/util/c3d_blob.hpp"|;
            s/virtual void SetUp(/virtual void LayerSetUp(/; s/::SetUp(/::LayerSetUp(/;
            s/virtual Dtype Forward_/virtual void Forward_/; s/^Dtype \(C3D[A-Za-z0-9]*Layer<Dtype>::Forward_\)/void \1/;
            /^[[:space:]]*return Dtype(0\.);[[:space:]]*$/d;
            s/(\*top)/top/g; s/(\*bottom)/bottom/g; s/top->size()/top.size()/g;
            s/vector<Blob<Dtype>\*>\* \(top\|bottom\))/const vector<Blob<Dtype>*>\& \1)/g;
            s/const bool propagate_down/const vector<bool>\& propagate_down/;
            s/if (propagate_down)/if (propagate_down[0])/; s/if (!propagate_down)/if (!propagate_down[0])/;
            s/->num()/->shape(0)/g; s/->channels()/->shape(1)/g; s/->length()/->shape(2)/g;
            s/->height()/->shape(3)/g; s/->width()/->shape(4)/g;
            s/\b\(bottom\|top\)\[0\]->offset(/c3d_offset(\1[0], /g;
            s/convolution_param()/c3d_convolution3d_param()/g; s/pooling_param()/c3d_pooling3d_param()/g;
            s/PoolingParameter_PoolMethod_/C3DPooling3DParameter_PoolMethod_/g;
            s/^INSTANTIATE_CLASS(\(C3D[A-Za-z0-9]*\)Layer);/#ifdef CPU_ONLY\nSTUB_GPU(\1Layer);\n#endif\n\n&\nREGISTER_LAYER_CLASS(\1);/'
  for l in convolution3d:Convolution3D pool3d:Pooling3D deconvolution3d:Deconvolution3D; do
    f=${l%%:*} t=C3D${l#*:}
    # the header: C3D has no Reshape (SetUp shapes the top once), so Reshape only checks the bottom
    c3d include/caffe/${f}_layer.hpp | sed "$port_c3d" | sed "/: Layer<Dtype>(param) {}/a\\
  virtual void Reshape(const vector<Blob<Dtype>*>\& bottom,\\
      const vector<Blob<Dtype>*>\& top) {\\
    CHECK(bottom[0]->num_axes() == 5 \&\& bottom[0]->shape(0) == top[0]->shape(0) \&\&\\
        bottom[0]->shape(1) == channels_ \&\& bottom[0]->shape(2) == length_ \&\&\\
        bottom[0]->shape(3) == height_ \&\& bottom[0]->shape(4) == width_)\\
        << type() << \" (C3D v1.0) takes its bottom's shape at setup only\";\\
  }\\
  virtual inline const char* type() const { return \"$t\"; }" >"$SRC/include/caffe/layers/c3d_${f}_layer.hpp"
    # the source: 5-argument Blob(...) and Reshape(...) take c3d_shape(...)
    c3d src/caffe/layers/${f}_layer.cpp | sed "$port_c3d" |
      perl -0pe 's/(Reshape|new Blob<Dtype>)(\((?:[^()]++|(?2))*\))/$1(c3d_shape$2)/g' \
      >"$SRC/src/caffe/layers/c3d_${f}_layer.cpp"
    grep -q "return \"$t\"" "$SRC/include/caffe/layers/c3d_${f}_layer.hpp"
    grep -q "REGISTER_LAYER_CLASS($t)" "$SRC/src/caffe/layers/c3d_${f}_layer.cpp"
  done
fi

# caffe.proto: the forks' messages, and LayerParameter fields at numbers no one else uses
PROTO=$SRC/src/caffe/proto/caffe.proto
fields='  optional InterpParameter interp_param = 3143;\n  optional SegNetBNParameter segnet_bn_param = 3045;\n'
fields+='  optional SegNetUpsampleParameter segnet_upsample_param = 3147;\n'
fields+='  optional ShuffleChannelParameter shuffle_channel_param = 3164;\n  optional ReorgParameter reorg_param = 3159;'
[ -z "$BVLC" ] || fields+='\n  optional ClipParameter clip_param = 148;\n  optional SwishParameter swish_param = 147;'
[ -z "$FLOWNET2" ] || fields+='\n  optional FlowWarpParameter flow_warp_param = 159;\n  optional AccumParameter accum_param = 160;'
[ -z "$CTPN" ] || fields+='\n  optional LSTMParameter lstm_param = 4140;\n  optional TransposeParameter transpose_param = 4142;'
[ -z "$CTPN" ] || fields+='\n  optional ReverseParameter reverse_param = 4143;'
[ -z "$C3D" ] || fields+='\n  optional C3DConvolution3DParameter c3d_convolution3d_param = 6661;'
[ -z "$C3D" ] || fields+='\n  optional C3DPooling3DParameter c3d_pooling3d_param = 6662;'
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
message() { show "$1" "$2" | sed -n "/^message $3 {/,/^}/p" | grep . >>"$PROTO"; }  # grep fails if absent
if [ -n "$BVLC" ]; then
  message "$BVLC" src/caffe/proto/caffe.proto ClipParameter
  message "$BVLC" src/caffe/proto/caffe.proto SwishParameter
  # master's InfogainLossParameter.axis, which brocolli's (1.0's) lacks
  axis=$(show "$BVLC" src/caffe/proto/caffe.proto | sed -n '/^message InfogainLossParameter {/,/^}/p' | grep -m1 ' axis = ')
  if ! sed -n '/^message InfogainLossParameter {/,/^}/p' "$PROTO" | grep -q ' axis = '; then
    awk -v line="$axis" '/^message InfogainLossParameter {/ { m = 1 } m && /^}/ { print line; m = 0 } { print }' \
      "$PROTO" >"$PROTO.new" && mv "$PROTO.new" "$PROTO"
  fi
  sed -n '/^message InfogainLossParameter {/,/^}/p' "$PROTO" | grep -q ' axis = 2 '
fi
if [ -n "$FLOWNET2" ]; then
  message "$FLOWNET2" src/caffe/proto/caffe.proto AccumParameter
  message "$FLOWNET2" src/caffe/proto/caffe.proto FlowWarpParameter
fi
if [ -n "$CTPN" ]; then
  for m in LSTMParameter TransposeParameter ReverseParameter; do
    message "$CTPN" caffe/src/caffe/proto/caffe.proto $m
  done
fi
if [ -n "$C3D" ]; then  # C3D v1.0's ConvolutionParameter and PoolingParameter, renamed
  for m in Convolution Pooling; do
    show "$C3D" C3D-v1.0/src/caffe/proto/caffe.proto | sed -n "/^message ${m}Parameter {/,/^}/p" |
      sed "s/^message ${m}Parameter/message C3D${m}3DParameter/" | grep . >>"$PROTO"
  done
fi

PY=$ORACLE/venv/bin/python
cd "$BUILD"
cmake "$SRC" -DCMAKE_BUILD_TYPE=Release -DCPU_ONLY=ON -DUSE_OPENCV=OFF -DUSE_LMDB=OFF -DUSE_LEVELDB=OFF \
  -DPYTHON_EXECUTABLE="$PY" >cmake.log
make -j2 pycaffe >make.log 2>&1
wanted="Interp BN PSPBN SegNetBN SegNetUpsample Axpy ShuffleChannel Reorg"
[ -z "$BVLC" ] || wanted+=" Clip Swish InfogainLossMaster SigmoidCrossEntropyLossMaster"
[ -z "$FLOWNET2" ] || wanted+=" Accum ChannelNorm FlowWarp"
[ -z "$CTPN" ] || wanted+=" Transpose Reverse Lstm"
[ -z "$C3D" ] || wanted+=" C3DConvolution3D C3DPooling3D C3DDeconvolution3D"
GLOG_minloglevel=2 PYTHONPATH=$SRC/python "$PY" -c '
import sys, caffe
names = set(caffe.layer_type_list())
wanted = set(sys.argv[1].split())
assert not wanted - names, wanted - names
print("fork oracle ready:", sorted(wanted))' "$wanted"
