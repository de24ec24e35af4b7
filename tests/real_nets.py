"""Real nets of public repositories whose definitions are not in ``../shared``: each written here by
our own code from the facts of the original (layer types, sizes, wiring, inputs), run with seeded
random weights. Shared by ``tools/make_real_net_fixtures.py`` (which runs real Caffe, or the fork's
Caffe, on them) and ``tests/test_real_nets.py`` (which runs ours); only Caffe's outputs are
committed (``tests/fixtures/real_nets/<net>/``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from converters import parse_text
from converters.caffe.message import Message

FIXTURES = Path(__file__).parent / "fixtures" / "real_nets"
SEED = 20261206

#: LRCN's captioning language model, BVLC/caffe ``examples/coco_caption/
#: lrcn_word_to_preds.deploy.prototxt`` (Donahue et al., CVPR 2015): one word per forward pass
#: (T = 1), the LSTMs' state carried from pass to pass, ``cont_sentence`` 0 at a caption's start.
LRCN_VOCABULARY = 8801
LRCN_HIDDEN = 1000
LRCN_FEATURES = 1000
LRCN_STREAMS = 2  # the original's batch is 1000 streams; the weights are the original's sizes


def lrcn_word_to_preds(streams: int = LRCN_STREAMS) -> Message:
    """LRCN's ``lrcn_word_to_preds`` deploy net: Embed (no bias) -> LSTM -> LSTM with the image
    features as its static input -> InnerProduct over axis 2 -> Softmax over axis 2, with the
    legacy ``input:`` / ``input_shape`` declarations of the original."""
    text = f"""
name: "caffenet_to_lstm"
input: "cont_sentence"
input_shape {{ dim: 1 dim: {streams} }}
input: "input_sentence"
input_shape {{ dim: 1 dim: {streams} }}
input: "image_features"
input_shape {{ dim: {streams} dim: {LRCN_FEATURES} }}
layer {{
  name: "embedding" type: "Embed" bottom: "input_sentence" top: "embedded_input_sentence"
  embed_param {{ input_dim: {LRCN_VOCABULARY} num_output: {LRCN_HIDDEN} bias_term: false }}
}}
layer {{
  name: "lstm1" type: "LSTM" bottom: "embedded_input_sentence" bottom: "cont_sentence" top: "lstm1"
  recurrent_param {{ num_output: {LRCN_HIDDEN} }}
}}
layer {{
  name: "lstm2" type: "LSTM" bottom: "lstm1" bottom: "cont_sentence" bottom: "image_features"
  top: "lstm2" recurrent_param {{ num_output: {LRCN_HIDDEN} }}
}}
layer {{
  name: "predict" type: "InnerProduct" bottom: "lstm2" top: "predict"
  inner_product_param {{ axis: 2 num_output: {LRCN_VOCABULARY} }}
}}
layer {{
  name: "probs" type: "Softmax" bottom: "predict" top: "probs" softmax_param {{ axis: 2 }}
}}
"""
    return parse_text(text)


def lrcn_steps(streams: int = LRCN_STREAMS, steps: int = 3, seed: int = SEED) -> list[dict[str, np.ndarray]]:
    """The inputs of ``steps`` forward passes: a caption starts at step 0 (cont 0, the start word
    0) and continues (cont 1, seeded words); the image features stay."""
    rng = np.random.default_rng(seed + 1)
    features = rng.uniform(-1, 1, (streams, LRCN_FEATURES)).astype(np.float32)
    out = []
    for step in range(steps):
        words = np.zeros((1, streams)) if step == 0 else rng.integers(1, LRCN_VOCABULARY, (1, streams))
        out.append(
            {
                "cont_sentence": np.full((1, streams), float(step > 0), np.float32),
                "input_sentence": words.astype(np.float32),
                "image_features": features,
            }
        )
    return out


#: C3D's Sports-1M feature extractor, facebook/C3D ``C3D-v1.0/examples/c3d_feature_extraction/
#: prototxt/c3d_sport1m_feature_extractor_frm.prototxt`` (Tran et al., ICCV 2015): eight 3x3x3
#: convolutions in five groups, 3-D max pooling, three InnerProducts to 487 classes, on 16 frames of
#: 112 x 112 (the model people download, ``conv3d_deepnetA_sport1m_iter_1900000``).
C3D_INPUT = (1, 3, 16, 112, 112)
C3D_GROUPS = ((64,), (128,), (256, 256), (512, 512), (512, 512))
C3D_FC = (("fc6-1", 4096), ("fc7-1", 4096), ("fc8-1", 487))


def c3d_sport1m(oracle: bool = False) -> str:
    """The net as C3D v1.0 writes it (V1 ``layers``, ``CONVOLUTION3D``/``POOLING3D`` with C3D's fields
    in ``convolution_param`` / ``pooling_param``, a ``VIDEO_DATA`` source); with ``oracle``, as the
    fork oracle reads it (V2 layers, an Input, its ``C3D*`` types and ``c3d_*_param`` messages)."""
    lines = ['name: "DeepConv3DNet_Sport1M_Val"']
    if oracle:
        dims = " ".join(f"dim: {d}" for d in C3D_INPUT)
        lines.append(
            f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {dims} }} }} }}'
        )
    else:
        lines.append(
            'layers { name: "data" type: VIDEO_DATA top: "data" top: "label" image_data_param { '
            'source: "prototxt/input_list_frm.txt" use_image: true batch_size: 50 crop_size: 112 '
            "mirror: false show_data: 0 new_height: 128 new_width: 171 new_length: 16 shuffle: false } }"
        )

    def layer(name: str, v1: str, v2: str, bottom: str, top: str, body: str = "") -> None:
        if oracle:
            lines.append(f'layer {{ name: "{name}" type: "{v2}" bottom: "{bottom}" top: "{top}" {body} }}')
        else:
            lines.append(f'layers {{ name: "{name}" type: {v1} bottom: "{bottom}" top: "{top}" {body} }}')

    conv_param = "c3d_convolution3d_param" if oracle else "convolution_param"
    pool_param = "c3d_pooling3d_param" if oracle else "pooling_param"
    bottom = "data"
    for group, widths in enumerate(C3D_GROUPS, start=1):
        for index, width in enumerate(widths):
            name = f"conv{group}{'ab'[index]}"
            fields = f"num_output: {width} kernel_size: 3 kernel_depth: 3 pad: 1 temporal_pad: 1"
            layer(name, "CONVOLUTION3D", "C3DConvolution3D", bottom, name, f"{conv_param} {{ {fields} }}")
            layer(f"relu{group}{'ab'[index]}", "RELU", "ReLU", name, name)
            bottom = name
        depth = 1 if group == 1 else 2
        fields = f"pool: MAX kernel_size: 2 kernel_depth: {depth} stride: 2 temporal_stride: {depth}"
        layer(
            f"pool{group}",
            "POOLING3D",
            "C3DPooling3D",
            bottom,
            f"pool{group}",
            f"{pool_param} {{ {fields} }}",
        )
        bottom = f"pool{group}"
    for index, (name, width) in enumerate(C3D_FC):
        layer(
            name,
            "INNER_PRODUCT",
            "InnerProduct",
            bottom,
            name,
            f"inner_product_param {{ num_output: {width} }}",
        )
        if index < 2:
            layer(f"relu{6 + index}", "RELU", "ReLU", name, name)
            layer(
                f"drop{6 + index}", "DROPOUT", "Dropout", name, name, "dropout_param { dropout_ratio: 0.5 }"
            )
        bottom = name
    layer("prob", "SOFTMAX", "Softmax", bottom, "prob")
    return "\n".join(lines) + "\n"


def c3d_input(seed: int = SEED) -> np.ndarray:
    """A seeded clip: 16 frames of 112 x 112, values in [-1, 1]."""
    return np.random.default_rng(seed + 2).uniform(-1, 1, C3D_INPUT).astype(np.float32)
