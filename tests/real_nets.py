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
