#!/usr/bin/env python3
"""Regenerate the solver fixtures (tests/fixtures/solvers/<case>/) with real Caffe's solvers.

Our code only writes the net and solver definitions and draws the initial values and the inputs from
seeded numpy generators. Real Caffe (pycaffe, the oracle of tools/README.md) saves the initial
weights (``init.caffemodel``, ``Net::save``), loads them into its solver, feeds the inputs through the
net's Input layers (``net.blobs[...].data``; HDF5Data reads its own files), runs ``solver.step(1)`` ten
times and records each iteration's loss and every parameter after the last one. Run it with the
oracle's Python from the repository root::

    PYTHONPATH=/work/oracle/brocolli-caffe-9.0.2/python:. GLOG_minloglevel=2 \\
        /work/oracle/venv/bin/python tools/make_solver_fixtures.py [CASE ...]

A case folder holds ``solver.prototxt``, ``net.prototxt``, ``init.caffemodel`` (gzip-compressed as
``init.caffemodel.gz`` for the FCN nets, whose frozen bilinear kernels are mostly zeros),
``inputs.npz`` (``iter<k>/<blob>``, or HDF5 files and their list for HDF5Data nets), ``expected.npz``
(``loss`` per iteration, ``param/<layer>/<i>`` after the last iteration, except the blobs Caffe
left bit-identical to ``init.caffemodel``, listed in ``case.json`` as ``unchanged``) and
``case.json``. Resume cases add Caffe's snapshot at iteration 5 (``caffe_snapshot/train_iter_5.*``)
and, for the other direction, our snapshot at iteration 5 (``our_snapshot/train_iter_5.*``, written
by this repository's ``converters.train`` run in ``.venv``) with what Caffe computed after restoring it
(``caffe_from_ours.npz``, checked here against Caffe's own uninterrupted run).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from converters import Message, format_message  # noqa: E402
from converters.fcn.nets import net_definition  # noqa: E402

FIXTURES = REPO / "tests" / "fixtures" / "solvers"
ORACLE = "BVLC Caffe 1.0 as packaged in the brocolli-caffe 9.0.2 sdist, CPU build, OpenBLAS 1 thread"
ITERS = 10
RESUME_AT = 5

TINY_NET = """name: "tiny"
layer { name: "input" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 2 dim: 3 dim: 7 dim: 6 } shape { dim: 2 dim: 1 dim: 7 dim: 6 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 1 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  param { lr_mult: 0.5 } param { lr_mult: 1 } convolution_param { num_output: 5 kernel_size: 2 pad: 1 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "score" type: "Convolution" bottom: "conv2" top: "score"
  convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
  loss_param { ignore_label: 255 } }
"""

FROZEN_NET = TINY_NET.replace(
    "param { lr_mult: 0.5 } param { lr_mult: 1 }", "param { lr_mult: 0 } param { lr_mult: 0 decay_mult: 0 }"
)

BATCHNORM_NET = """name: "bn"
layer { name: "input" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 3 dim: 3 dim: 5 dim: 6 } shape { dim: 3 dim: 1 dim: 5 dim: 6 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1"
  param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 }
  batch_norm_param { moving_average_fraction: 0.9 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "drop1" type: "Dropout" bottom: "conv1" top: "conv1" dropout_param { dropout_ratio: 0 } }
layer { name: "score" type: "Convolution" bottom: "conv1" top: "score"
  convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
  loss_param { ignore_label: 255 } }
"""

TWO_LOSS_NET = """name: "two_losses"
layer { name: "input" type: "Input" top: "data" top: "sem" top: "geo"
  input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } shape { dim: 2 dim: 1 dim: 6 dim: 6 }
                shape { dim: 2 dim: 1 dim: 6 dim: 6 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "score_sem" type: "Convolution" bottom: "conv1" top: "score_sem"
  convolution_param { num_output: 4 kernel_size: 1 } }
layer { name: "score_geo" type: "Convolution" bottom: "conv1" top: "score_geo"
  convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "loss_sem" type: "SoftmaxWithLoss" bottom: "score_sem" bottom: "sem" top: "loss_sem"
  loss_weight: 0.7 loss_param { ignore_label: 255 normalize: false } }
layer { name: "loss_geo" type: "SoftmaxWithLoss" bottom: "score_geo" bottom: "geo" top: "loss_geo"
  loss_param { ignore_label: 255 normalization: FULL } }
"""

SHARED_NET = """name: "shared"
layer { name: "input" type: "Input" top: "data" top: "data_b" top: "label"
  input_param { shape { dim: 2 dim: 3 dim: 6 dim: 5 } shape { dim: 2 dim: 3 dim: 6 dim: 5 }
                shape { dim: 2 dim: 1 dim: 6 dim: 5 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { name: "w" decay_mult: 2 } param { name: "b" }
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "conv1_b" type: "Convolution" bottom: "data_b" top: "conv1_b"
  param { name: "w" lr_mult: 2 } param { name: "b" lr_mult: 0.5 decay_mult: 0 }
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "conv1" bottom: "conv1_b" top: "sum" }
layer { name: "relu" type: "ReLU" bottom: "sum" top: "sum" }
layer { name: "score" type: "Convolution" bottom: "sum" top: "score"
  convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
  loss_param { ignore_label: 255 } }
"""

FOUR_BLOB_BN_NET = """name: "four_blob_bn"
layer { name: "input" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 3 dim: 3 dim: 5 dim: 6 } shape { dim: 3 dim: 1 dim: 5 dim: 6 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn1" type: "BN" bottom: "conv1" top: "bn1" bn_param { momentum: 0.8 eps: 0.0001 } }
layer { name: "relu1" type: "ReLU" bottom: "bn1" top: "bn1" }
layer { name: "conv2" type: "Convolution" bottom: "bn1" top: "conv2"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "bn2" type: "BN" bottom: "conv2" top: "bn2" bn_param { frozen: true } }
layer { name: "score" type: "Convolution" bottom: "bn2" top: "score"
  convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
  loss_param { ignore_label: 255 } }
"""

SEGNET_BN_NET = """name: "segnet_bn"
layer { name: "input" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 3 dim: 3 dim: 5 dim: 6 } shape { dim: 3 dim: 1 dim: 5 dim: 6 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 bias_term: false } }
layer { name: "bn1" type: "BN" bottom: "conv1" top: "bn1" bn_param { bn_mode: LEARN } }
layer { name: "relu1" type: "ReLU" bottom: "bn1" top: "bn1" }
layer { name: "conv2" type: "Convolution" bottom: "bn1" top: "conv2"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "bn2" type: "BN" bottom: "conv2" top: "bn2" bn_param { bn_mode: INFERENCE } }
layer { name: "score" type: "Convolution" bottom: "bn2" top: "score"
  convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
  loss_param { ignore_label: 255 } }
"""

FORK_LAYERS_NET = """name: "fork_layers"
layer { name: "input" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 2 dim: 3 dim: 5 dim: 6 } shape { dim: 2 dim: 1 dim: 9 dim: 11 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 6 kernel_size: 3 pad: 1 } }
layer { name: "shuffle" type: "ShuffleChannel" bottom: "conv1" top: "shuffle"
  shuffle_channel_param { group: 2 } }
layer { name: "norm" type: "Normalize" bottom: "shuffle" top: "norm"
  norm_param { across_spatial: false channel_shared: false scale_filler { type: "constant" value: 2 } } }
layer { name: "squeeze" type: "Pooling" bottom: "norm" top: "squeeze"
  pooling_param { pool: AVE global_pooling: true } }
layer { name: "excite" type: "Convolution" bottom: "squeeze" top: "excite"
  convolution_param { num_output: 6 kernel_size: 1 } }
layer { name: "gate" type: "Sigmoid" bottom: "excite" top: "gate" }
layer { name: "se" type: "Axpy" bottom: "gate" bottom: "norm" bottom: "conv1" top: "se" }
layer { name: "norm_all" type: "Normalize" bottom: "conv1" top: "norm_all"
  norm_param { across_spatial: true channel_shared: false } }
layer { name: "both" type: "Eltwise" bottom: "se" bottom: "norm_all" top: "both" }
layer { name: "zoom" type: "Interp" bottom: "both" top: "zoom" interp_param { zoom_factor: 2 } }
layer { name: "score" type: "Convolution" bottom: "zoom" top: "score"
  convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
  loss_param { ignore_label: 255 } }
"""

SEGNET_UNPOOL_NET = """name: "segnet_unpool"
layer { name: "input" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 2 dim: 3 dim: 6 dim: 8 } shape { dim: 2 dim: 1 dim: 6 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "pool" type: "Pooling" bottom: "conv1" top: "pool" top: "mask"
  pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "decode" type: "Convolution" bottom: "pool" top: "decode"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "up" type: "Upsample" bottom: "decode" bottom: "mask" top: "up"
  upsample_param { scale: 2 } }
layer { name: "score" type: "Convolution" bottom: "up" top: "score"
  convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
  loss_param { ignore_label: 255 } }
"""

SRCNN_NET = """name: "srcnn"
layer { name: "input" type: "Input" top: "data" top: "data_hr"
  input_param { shape { dim: 2 dim: 1 dim: 17 dim: 17 } shape { dim: 2 dim: 1 dim: 5 dim: 5 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { lr_mult: 1 } param { lr_mult: 0.1 } convolution_param { num_output: 16 kernel_size: 9 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  param { lr_mult: 1 } param { lr_mult: 0.1 } convolution_param { num_output: 8 kernel_size: 1 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "conv3" type: "Convolution" bottom: "conv2" top: "conv3"
  param { lr_mult: 0.1 } param { lr_mult: 0.1 } convolution_param { num_output: 1 kernel_size: 5 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "conv3" bottom: "data_hr" top: "loss" }
"""

EDGES_NET = """name: "edges"
layer { name: "input" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 2 dim: 3 dim: 6 dim: 7 } shape { dim: 2 dim: 1 dim: 6 dim: 7 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "side" type: "Convolution" bottom: "conv1" top: "side"
  convolution_param { num_output: 1 kernel_size: 1 } }
layer { name: "loss" type: "SigmoidCrossEntropyLoss" bottom: "side" bottom: "label" top: "loss" }
"""

SIAMESE_NET = """name: "siamese"
layer { name: "input" type: "Input" top: "data" top: "data_p" top: "sim"
  input_param { shape { dim: 4 dim: 3 dim: 4 dim: 4 } shape { dim: 4 dim: 3 dim: 4 dim: 4 }
                shape { dim: 4 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  param { name: "ip1_w" } param { name: "ip1_b" } inner_product_param { num_output: 6 } }
layer { name: "ip1_p" type: "InnerProduct" bottom: "data_p" top: "ip1_p"
  param { name: "ip1_w" } param { name: "ip1_b" } inner_product_param { num_output: 6 } }
layer { name: "feat" type: "InnerProduct" bottom: "ip1" top: "feat"
  param { name: "feat_w" } param { name: "feat_b" } inner_product_param { num_output: 2 } }
layer { name: "feat_p" type: "InnerProduct" bottom: "ip1_p" top: "feat_p"
  param { name: "feat_w" } param { name: "feat_b" } inner_product_param { num_output: 2 } }
layer { name: "loss" type: "ContrastiveLoss" bottom: "feat" bottom: "feat_p" bottom: "sim" top: "loss"
  contrastive_loss_param { margin: 2.0 } }
"""

CLASSIFY_NET = """name: "classify"
layer { name: "input" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 5 dim: 4 dim: 3 dim: 3 } shape { dim: 5 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1" inner_product_param { num_output: 6 } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "score" type: "InnerProduct" bottom: "ip1" top: "score" inner_product_param { num_output: 4 } }
layer { name: "hinge" type: "HingeLoss" bottom: "score" bottom: "label" top: "hinge"
  hinge_loss_param { norm: L2 } loss_weight: 0.5 }
layer { name: "prob" type: "Softmax" bottom: "score" top: "prob" }
layer { name: "logistic" type: "MultinomialLogisticLoss" bottom: "prob" bottom: "label" top: "logistic" }
"""

RECURRENT_NET = """name: "recurrent"
layer { name: "input" type: "Input" top: "data" top: "cont" top: "label"
  input_param { shape { dim: 4 dim: 2 dim: 3 } shape { dim: 4 dim: 2 } shape { dim: 4 dim: 2 } } }
layer { name: "lstm" type: "LSTM" bottom: "data" bottom: "cont" top: "lstm"
  recurrent_param { num_output: 5 } }
layer { name: "rnn" type: "RNN" bottom: "data" bottom: "cont" top: "rnn"
  recurrent_param { num_output: 3 } }
layer { name: "both" type: "Concat" bottom: "lstm" bottom: "rnn" top: "both" concat_param { axis: 2 } }
layer { name: "score" type: "InnerProduct" bottom: "both" top: "score"
  inner_product_param { num_output: 3 axis: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
  softmax_param { axis: 2 } loss_param { ignore_label: 255 } }
"""

EMBED_NET = """name: "embed"
layer { name: "input" type: "Input" top: "index" top: "label"
  input_param { shape { dim: 2 dim: 3 } shape { dim: 2 dim: 3 } } }
layer { name: "embed" type: "Embed" bottom: "index" top: "embed"
  embed_param { num_output: 4 input_dim: 7 } }
layer { name: "score" type: "InnerProduct" bottom: "embed" top: "score"
  inner_product_param { num_output: 3 axis: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
  softmax_param { axis: 2 } }
"""

INFOGAIN_NET = """name: "infogain"
layer { name: "input" type: "Input" top: "data" top: "label" top: "data_h"
  input_param { shape { dim: 2 dim: 3 dim: 5 dim: 6 } shape { dim: 2 dim: 1 dim: 5 dim: 6 }
                shape { dim: 1 dim: 1 dim: 3 dim: 3 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "score" type: "Convolution" bottom: "conv1" top: "score"
  convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "loss" type: "InfogainLoss" bottom: "score" bottom: "label" bottom: "data_h" top: "loss"
  loss_param { ignore_label: 255 } }
"""

HDF5_NET = TINY_NET.replace(
    """layer { name: "input" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 2 dim: 3 dim: 7 dim: 6 } shape { dim: 2 dim: 1 dim: 7 dim: 6 } } }""",
    """layer { name: "data" type: "HDF5Data" top: "data" top: "label"
  hdf5_data_param { source: "train.txt" batch_size: 2 } }""",
)
HDF5_FILES = {"part0.h5": 6, "part1.h5": 4}  # rows per file; batches wrap across files as Caffe reads them


@dataclass
class Case:
    name: str
    net: Callable[[], str]
    solver: dict[str, Any]
    notes: str
    resume: str | None = None  # "binary" or "hdf5": snapshot at RESUME_AT, both directions
    seed: int = 0
    input_std: float = 1.0
    classes: dict[str, int] = field(default_factory=lambda: {"label": 3})
    compress_init: bool = False
    init_scale: dict[str, float] = field(default_factory=dict)  # layer -> factor on its seeded weights
    oracle_types: dict[str, str] = field(default_factory=dict)
    """Our layer type -> the fork oracle's name for it (tools/build_fork_oracle.sh): Caffe runs
    ``oracle_net.prototxt`` / ``oracle_solver.prototxt``, we run ``net.prototxt`` / ``solver.prototxt``."""
    oracle_edits: tuple[tuple[str, str], ...] = ()  # further text edits for the oracle's net (field names)
    ignored: float = 0.1  # share of each label blob set to 255 (0: labels, indices and pair flags all valid)


def _sgd(**extra: Any) -> dict[str, Any]:
    base = {"type": "SGD", "base_lr": 0.05, "lr_policy": "fixed", "momentum": 0.9, "weight_decay": 0.001}
    return {**base, **extra}


def _fcn(model: str, split: str) -> Callable[[], str]:
    def make() -> str:
        net = net_definition(model, split, width=1 / 64)
        out = Message("NetParameter", name=str(net.get("name")))
        for layer in net.getall("layer"):
            if layer.get("type") == "Python":
                tops = list(layer.getall("top"))
                shapes = [Message("BlobShape", dim=[1, 3, 32, 32])]
                shapes += [Message("BlobShape", dim=[1, 1, 32, 32]) for _ in tops[1:]]
                layer = Message(
                    "LayerParameter", name="input", type="Input", top=tops,
                    input_param=Message("InputParameter", shape=shapes),
                )  # fmt: skip
            elif layer.get("type") == "Dropout":
                layer = layer.copy()
                layer.set("dropout_param", Message("DropoutParameter", dropout_ratio=0.0))
            out.add("layer", layer)
        return format_message(out)

    return make


def _fcn_solver(lr: float) -> dict[str, Any]:
    return {"type": "SGD", "base_lr": lr, "lr_policy": "fixed", "momentum": 0.99, "weight_decay": 0.0005}


CASES = [
    Case("sgd_fixed", lambda: TINY_NET, _sgd(), "SGD, momentum 0.9, weight decay, lr/decay mults"),
    Case(
        "nesterov_step", lambda: TINY_NET,
        _sgd(type="Nesterov", lr_policy="step", stepsize=3, gamma=0.5), "Nesterov, step policy",
    ),
    Case(
        "adagrad_exp", lambda: TINY_NET,
        _sgd(type="AdaGrad", momentum=0, base_lr=0.1, lr_policy="exp", gamma=0.9, delta=1e-7), "AdaGrad, exp",
    ),
    Case(
        "rmsprop_inv", lambda: TINY_NET,
        _sgd(type="RMSProp", momentum=0, base_lr=0.01, lr_policy="inv", gamma=0.2, power=0.75, rms_decay=0.9),
        "RMSProp, inv",
    ),
    Case(
        "adadelta_multistep", lambda: TINY_NET,
        _sgd(type="AdaDelta", base_lr=1.0, momentum=0.95, delta=1e-6, lr_policy="multistep",
             stepvalue=[2, 5, 6], gamma=0.5),
        "AdaDelta, multistep (two history blobs per parameter)",
    ),
    Case(
        "adam_poly", lambda: TINY_NET,
        _sgd(type="Adam", base_lr=0.01, momentum=0.9, momentum2=0.999, delta=1e-8, lr_policy="poly",
             power=2.0, max_iter=12),
        "Adam, poly (two history blobs per parameter, bias correction)",
    ),
    Case(
        "sgd_sigmoid", lambda: TINY_NET, _sgd(lr_policy="sigmoid", gamma=0.5, stepsize=5), "SGD, sigmoid"
    ),
    Case(
        "sigmoid_decay", lambda: TINY_NET,
        _sgd(type="RMSProp", momentum=0, base_lr=0.01, rms_decay=0.9, lr_policy="sigmoid", gamma=-0.5,
             stepsize=5, clip_gradients=0.1),
        "RMSProp, sigmoid with a negative gamma (the decaying sigmoid), clip_gradients",
        seed=3,
    ),
    Case(
        "iter_size", lambda: HDF5_NET, _sgd(iter_size=2),
        "iter_size 2 over an HDF5Data layer (batch 2, two files read in order, wrapping)",
    ),
    Case("clip", lambda: TINY_NET, _sgd(base_lr=0.5, clip_gradients=0.05), "clip_gradients, global L2 norm"),
    Case("l1", lambda: TINY_NET, _sgd(regularization_type="L1", weight_decay=0.01), "L1 regularization"),
    Case("frozen", lambda: FROZEN_NET, _sgd(), "conv2 frozen with lr_mult 0 (bit-identical)"),
    Case(
        "batchnorm", lambda: BATCHNORM_NET, _sgd(weight_decay=0),
        "BatchNorm in TRAIN (batch statistics, moving averages), Scale with bias, Dropout ratio 0",
    ),
    Case(
        "two_losses", lambda: TWO_LOSS_NET, _sgd(base_lr=0.01),
        "two SoftmaxWithLoss: loss_weight 0.7 with legacy normalize: false, and FULL; ignore_label",
        classes={"sem": 4, "geo": 3},
    ),
    Case(
        "saturated_loss", lambda: TINY_NET, _sgd(base_lr=1e-4),
        "score weights x300: some label probabilities underflow FLT_MIN (Caffe's loss clamps the log, "
        "its gradient is still prob - 1)",
        init_scale={"score": 300.0},
    ),
    Case(
        "resume_sgd", lambda: TINY_NET, _sgd(lr_policy="multistep", stepvalue=[3, 7], gamma=0.1),
        "solverstate at iteration 5, binary, both directions", resume="binary",
    ),
    Case(
        "resume_adam_hdf5", lambda: TINY_NET, _sgd(type="Adam", base_lr=0.01, snapshot_format="HDF5"),
        "solverstate at iteration 5, HDF5, both directions", resume="hdf5",
    ),
    Case(
        "shared_params", lambda: SHARED_NET, _sgd(lr_policy="multistep", stepvalue=[3, 7], gamma=0.1),
        "a blob shared by name by two layers (one tensor, diffs from both uses summed), lr_mult and "
        "decay_mult set by whichever layer gives them first; solverstate at 5 both directions",
        resume="binary",
    ),
    Case(
        "bn_pspnet", lambda: FOUR_BLOB_BN_NET, _sgd(),
        "PSPNet's four-blob BN (fork oracle): batch statistics with the moving mean and variance "
        "following them (momentum 0.8), the statistics never learning, a frozen layer on its stored "
        "statistics learning nothing; solverstate at 5 both directions",
        resume="binary", oracle_types={"BN": "PSPBN"},
    ),
    Case(
        "bn_brocolli", lambda: FOUR_BLOB_BN_NET, _sgd(),
        "brocolli-caffe's four-blob BN (fork oracle): the moving mean and inverse std following the "
        "batch, its blobs taking the default lr and weight decay as that fork leaves them",
        oracle_types={"BN": "BN"},
    ),
    Case(
        "bn_segnet", lambda: SEGNET_BN_NET, _sgd(),
        "SegNet's BN (fork oracle): LEARN normalising by the batch, INFERENCE as a learned scale and "
        "shift, both learning",
        oracle_types={"BN": "SegNetBN"}, oracle_edits=(("bn_param {", "segnet_bn_param {"),),
    ),
    Case(
        "fork_layers", lambda: FORK_LAYERS_NET, _sgd(),
        "fork layers in training (fork oracle): ShuffleChannel, SSD's Normalize (per position and "
        "across spatial, per-channel scales: SSD's own input gradient), an SE block's Axpy, Interp's "
        "zoom; their gradients as the forks' backward passes give them",
        oracle_types={"Interp": "Interp", "Axpy": "Axpy"},  # same names: only the fork oracle has them
    ),
    Case(
        "segnet_unpool", lambda: SEGNET_UNPOOL_NET, _sgd(),
        "SegNet's Upsample in training after overlapping 3x3 stride-2 max pooling of 6x8 maps (fork "
        "oracle): the later window's value forward, every window the gradient at its position "
        "backward (SegNet's backward needs scale, not upsample_h/w, which leave its bound unset)",
        oracle_types={"Upsample": "SegNetUpsample"},
        oracle_edits=(("upsample_param {", "segnet_upsample_param {"),),
    ),
    Case(
        "srcnn_euclidean", lambda: SRCNN_NET, _sgd(base_lr=0.001),
        "a super-resolution net of SRCNN's 9-1-5 shape (narrower) trained with EuclideanLoss, the last "
        "layer at a tenth of the learning rate as SRCNN trains it",
    ),
    Case(
        "sigmoid_cross_entropy", lambda: EDGES_NET, _sgd(base_lr=0.05),
        "an edge map trained with SigmoidCrossEntropyLoss on 0/1 targets (HED's loss)",
        classes={"label": 2}, ignored=0.0,
    ),
    Case(
        "contrastive", lambda: SIAMESE_NET, _sgd(base_lr=0.002),
        "a siamese pair sharing its InnerProducts by name, trained with ContrastiveLoss (margin 2)",
        classes={"sim": 2}, ignored=0.0,
    ),
    Case(
        "hinge_logistic", lambda: CLASSIFY_NET, _sgd(base_lr=0.05),
        "HingeLoss L2 (loss_weight 0.5) and MultinomialLogisticLoss after a Softmax on one score",
        classes={"label": 4}, ignored=0.0,
    ),
    Case(
        "infogain", lambda: INFOGAIN_NET, _sgd(base_lr=0.01),
        "BVLC master's InfogainLoss (softmax inside, ignore_label, VALID) with H fed as a third bottom "
        "(fork oracle: master's layer as InfogainLossMaster)",
        oracle_types={"InfogainLoss": "InfogainLossMaster"},
    ),
    Case(
        "lstm_rnn", lambda: RECURRENT_NET, _sgd(base_lr=0.1),
        "LSTM and RNN over 4 steps of 2 streams (cont 0 at each sequence start), an InnerProduct on "
        "axis 2 and SoftmaxWithLoss on axis 2; the recurrent layers' state carries from one "
        "iteration into the next where cont is 1, as Caffe's does",
        classes={"label": 3},
    ),
    Case(
        "embed", lambda: EMBED_NET, _sgd(base_lr=0.5),
        "Embed (7 x 4) of integer indices, an InnerProduct on axis 2 and SoftmaxWithLoss on axis 2",
        classes={"index": 7, "label": 3}, ignored=0.0,
    ),
    Case(
        "voc-fcn32s", _fcn("voc-fcn32s", "train"), _fcn_solver(1e-6),
        "official voc-fcn32s train net at width 1/64, Input layers, dropout 0, bilinear frozen upscore",
        input_std=50.0, classes={"label": 21}, compress_init=True,
    ),
    Case(
        "voc-fcn8s-atonce", _fcn("voc-fcn8s-atonce", "train"), _fcn_solver(1e-6),
        "official voc-fcn8s-atonce train net at width 1/64 with its fixed Scale layers",
        input_std=50.0, classes={"label": 21}, compress_init=True,
    ),
    Case(
        "siftflow-fcn16s", _fcn("siftflow-fcn16s", "trainval"), _fcn_solver(1e-6),
        "official siftflow-fcn16s trainval net at width 1/64: two losses (sem, geo)",
        input_std=50.0, classes={"sem": 33, "geo": 3}, compress_init=True,
    ),
]  # fmt: skip


def _solver_text(case: Case) -> str:
    fields = {"net": "net.prototxt", **case.solver, "snapshot_prefix": "snap/train", "display": 0}
    if "snapshot_format" not in fields:
        fields["snapshot_format"] = "BINARYPROTO"
    fields["solver_mode"] = "CPU"
    lines = []
    for key, value in fields.items():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str) and key not in ("snapshot_format", "solver_mode"):
                lines.append(f'{key}: "{v}"')
            else:
                lines.append(f"{key}: {v}")
    return "\n".join(lines) + "\n"


def _bilinear(k: int) -> np.ndarray:
    """The official surgery.upsample_filt (FCN's bilinear kernel)."""
    f = (k + 1) // 2
    c = f - 1 if k % 2 == 1 else f - 0.5
    og = np.ogrid[:k, :k]
    return ((1 - abs(og[0] - c) / f) * (1 - abs(og[1] - c) / f)).astype(np.float32)


def _initial_values(net: Any, definition: Message, rng: np.random.RandomState) -> None:
    """Seeded values for every parameter of the Caffe net (frozen deconvolutions: diagonal bilinear)."""
    types = {str(layer.get("name")): str(layer.get("type")) for layer in definition.getall("layer")}
    for name, blobs in net.params.items():
        kind = types[name]
        for i, blob in enumerate(blobs):
            shape = blob.data.shape
            if kind == "Deconvolution" and i == 0:
                values = np.zeros(shape, np.float32)
                for c in range(min(shape[0], shape[1])):
                    values[c, c] = _bilinear(shape[2])
            elif kind == "BatchNorm":
                values = [rng.normal(0, 0.3, shape), rng.uniform(0.5, 1.5, shape), np.full(shape, 1.7)][i]
            elif kind == "Normalize":
                values = rng.uniform(1, 3, shape)
            elif kind == "BN":  # slope, bias, moving mean, moving variance or inverse std (SegNet: 2)
                values = [rng.normal(1, 0.2, shape), rng.normal(0, 0.1, shape), rng.normal(0, 0.3, shape),
                          rng.uniform(0.5, 1.5, shape)][i]  # fmt: skip
            elif kind == "Scale" and i == 0:
                fixed = definition_filler_value(definition, name)
                values = np.full(shape, fixed) if fixed is not None else rng.normal(1, 0.2, shape)
            elif i == 0 and len(shape) > 1:
                fan_in = int(np.prod(shape[1:]))
                values = rng.normal(0, np.sqrt(2.0 / fan_in), shape)
            else:
                values = rng.normal(0, 0.1, shape)
            blob.data[...] = np.asarray(values, np.float32)


def definition_filler_value(definition: Message, name: str) -> float | None:
    """A Scale layer's constant filler value (the at-once FCN's fixed skip scales), else None."""
    for layer in definition.getall("layer"):
        if layer.get("name") == name and "scale_param" in layer and "filler" in layer.get("scale_param"):
            return float(layer.get("scale_param").get("filler").get("value"))
    return None


def _loss_tops(definition: Message) -> dict[str, float]:
    tops: dict[str, float] = {}
    for layer in definition.getall("layer"):
        if str(layer.get("type")).endswith("Loss"):
            weights = [float(w) for w in layer.getall("loss_weight")] or [1.0]
            tops[str(layer.getall("top")[0])] = weights[0]
    return tops


def _inputs(case: Case, definition: Message, rng: np.random.RandomState) -> dict[str, np.ndarray]:
    """Per-iteration inputs for the Input layer: ``iter<k>/<blob>``."""
    layer = next(layer for layer in definition.getall("layer") if layer.get("type") == "Input")
    tops = list(layer.getall("top"))
    shapes = [tuple(int(d) for d in s.get("dim")) for s in layer.get("input_param").getall("shape")]
    out = {}
    for k in range(ITERS):
        for top, shape in zip(tops, shapes, strict=True):
            if top == "cont":  # recurrent continuation: each sequence starts at t = 0 and once more
                cont = np.ones(shape, np.float32)
                cont[0] = 0
                cont[rng.randint(1, shape[0]), rng.randint(0, shape[1])] = 0
                out[f"iter{k}/{top}"] = cont
            elif top.startswith("data"):
                values = rng.normal(0, case.input_std, shape)
                if case.input_std > 1:  # pixel-like inputs: whole numbers (and a smaller fixture)
                    values = np.round(values)
                out[f"iter{k}/{top}"] = values.astype(np.float32)
            else:
                labels = rng.randint(0, case.classes[top], shape).astype(np.float32)
                labels[rng.uniform(size=shape) < case.ignored] = 255
                out[f"iter{k}/{top}"] = labels
    return out


def _write_hdf5_inputs(folder: Path, rng: np.random.RandomState) -> None:
    import h5py

    for name, rows in HDF5_FILES.items():
        with h5py.File(folder / name, "w") as f:
            f.create_dataset("data", data=rng.normal(0, 1, (rows, 3, 7, 6)).astype(np.float32))
            labels = rng.randint(0, 3, (rows, 1, 7, 6)).astype(np.float32)
            labels[rng.uniform(size=labels.shape) < 0.1] = 255
            f.create_dataset("label", data=labels)
    (folder / "train.txt").write_text("".join(f"{name}\n" for name in HDF5_FILES))


def _hdf5_batches() -> list[dict[str, np.ndarray]]:
    """The batches HDF5Data gives, in order (each file whole, batch_size 2, files in list order)."""
    import h5py

    rows: list[tuple[np.ndarray, np.ndarray]] = []
    for name in HDF5_FILES:
        with h5py.File(name, "r") as f:
            rows += list(zip(f["data"][()], f["label"][()], strict=True))
    out = []
    position = 0
    for _ in range(ITERS * 2):
        batch = [rows[(position + j) % len(rows)] for j in range(2)]
        position += 2
        out.append({"data": np.stack([b[0] for b in batch]), "label": np.stack([b[1] for b in batch])})
    return out


def _params(net: Any) -> dict[str, np.ndarray]:
    return {
        f"param/{n}/{i}": np.array(b.data) for n, blobs in net.params.items() for i, b in enumerate(blobs)
    }


def _run_ours(folder: Path, work: Path, case: Case) -> None:
    """Our solver (this repository, .venv) for RESUME_AT iterations, then its snapshot."""
    script = f"""
import numpy as np, converters, gzip, shutil
solver = converters.load_solver({str(work / "solver.prototxt")!r}, weights={str(work / "init.caffemodel")!r})
inputs = np.load({str(work / "inputs.npz")!r})
for k in range({RESUME_AT}):
    solver.step({{key.split('/')[1]: inputs[key] for key in inputs.files if key.startswith(f'iter{{k}}/')}})
print(*solver.snapshot(), sep='\\n')
"""
    python = REPO / ".venv" / "bin" / "python"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    env.pop("GLOG_minloglevel", None)
    result = subprocess.run([str(python), "-c", script], cwd=work, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"our solver failed for {case.name}:\n{result.stderr}")


def generate(case: Case) -> None:
    import caffe

    caffe.set_mode_cpu()
    rng = np.random.RandomState(case.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.chdir(work)
        (work / "snap").mkdir()
        net_text = case.net()
        (work / "net.prototxt").write_text(net_text)
        (work / "solver.prototxt").write_text(_solver_text(case))
        caffe_net, caffe_solver = work / "net.prototxt", work / "solver.prototxt"
        if case.oracle_types:
            missing = set(case.oracle_types.values()) - set(caffe.layer_type_list())
            if missing:
                raise SystemExit(f"{case.name}: use the fork oracle's pycaffe (it lacks {sorted(missing)})")
            oracle_text = net_text
            for ours, theirs in case.oracle_types.items():
                oracle_text = oracle_text.replace(f'type: "{ours}"', f'type: "{theirs}"')
            for old, new in case.oracle_edits:
                oracle_text = oracle_text.replace(old, new)
            caffe_net, caffe_solver = work / "oracle_net.prototxt", work / "oracle_solver.prototxt"
            caffe_net.write_text(oracle_text)
            oracle_solver = _solver_text(case).replace('net: "net.prototxt"', 'net: "oracle_net.prototxt"')
            caffe_solver.write_text(oracle_solver)
        from converters import parse_text

        definition = parse_text(net_text)
        hdf5 = any(layer.get("type") == "HDF5Data" for layer in definition.getall("layer"))
        if hdf5:
            _write_hdf5_inputs(work, rng)
        init = caffe.Net(str(caffe_net), caffe.TRAIN)
        _initial_values(init, definition, rng)
        for layer, factor in case.init_scale.items():
            init.params[layer][0].data[...] *= factor
        init.save(str(work / "init.caffemodel"))
        inputs = {} if hdf5 else _inputs(case, definition, rng)
        np.savez_compressed(work / "inputs.npz", **inputs)
        losses_of = _loss_tops(definition)

        solver = caffe.get_solver(str(caffe_solver))
        solver.net.copy_from(str(work / "init.caffemodel"))
        if hdf5:  # Caffe's own per-pass losses, from a twin net with Input layers and the same weights
            twin_text = TINY_NET
            (work / "twin.prototxt").write_text(twin_text)
            twin = caffe.Net(str(work / "twin.prototxt"), caffe.TRAIN)
            batches = _hdf5_batches()
        losses = []
        for k in range(ITERS):
            if hdf5:
                for name, blobs in solver.net.params.items():
                    for i, b in enumerate(blobs):
                        twin.params[name][i].data[...] = b.data
                iteration = np.float32(0)
                for p in range(2):
                    batch = batches[2 * k + p]
                    twin.blobs["data"].data[...] = batch["data"]
                    twin.blobs["label"].data[...] = batch["label"]
                    iteration += np.float32(twin.forward()["loss"])
                losses.append(iteration / np.float32(2))
            else:
                for key in inputs:
                    if key.startswith(f"iter{k}/"):
                        solver.net.blobs[key.split("/")[1]].data[...] = inputs[key]
            solver.step(1)
            if not hdf5:
                total = np.float32(0)
                for top, weight in losses_of.items():
                    total += np.float32(weight) * np.float32(solver.net.blobs[top].data)
                losses.append(total)
            if case.resume and solver.iter == RESUME_AT:
                solver.snapshot()
                params_at_resume = _params(solver.net)
        final = _params(solver.net)
        initial = _params(init)
        unchanged = sorted(k for k in final if np.array_equal(final[k], initial[k]))
        expected = {"loss": np.array(losses, np.float32)}
        expected.update({k: v for k, v in final.items() if k not in unchanged})

        folder = FIXTURES / case.name
        staging = FIXTURES / f".{case.name}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name in ("net.prototxt", "solver.prototxt", "inputs.npz"):
            shutil.copy(work / name, staging / name)
        if case.compress_init:
            with (
                open(work / "init.caffemodel", "rb") as src,
                gzip.GzipFile(staging / "init.caffemodel.gz", "wb", mtime=0) as dst,
            ):
                shutil.copyfileobj(src, dst)
        else:
            shutil.copy(work / "init.caffemodel", staging / "init.caffemodel")
        if hdf5:
            for name in [*HDF5_FILES, "train.txt"]:
                shutil.copy(work / name, staging / name)
        np.savez_compressed(staging / "expected.npz", **expected)
        info: dict[str, Any] = {
            "case": case.name, "notes": case.notes, "iterations": ITERS, "seed": case.seed,
            "oracle": ORACLE, "loss_tops": losses_of, "unchanged": unchanged,
        }  # fmt: skip

        if case.resume:
            ext = ".h5" if case.resume == "hdf5" else ""
            (staging / "caffe_snapshot").mkdir()
            for suffix in (".caffemodel", ".solverstate"):
                src = work / "snap" / f"train_iter_{RESUME_AT}{suffix}{ext}"
                shutil.copy(src, staging / "caffe_snapshot" / src.name)
            np.savez_compressed(staging / f"caffe_params_at_{RESUME_AT}.npz", **params_at_resume)
            # The other direction: our snapshot at RESUME_AT, restored and continued by Caffe.
            for path in (work / "snap").iterdir():
                path.unlink()
            _run_ours(staging, work, case)
            ours_state = work / "snap" / f"train_iter_{RESUME_AT}.solverstate{ext}"
            resumed = caffe.get_solver(str(caffe_solver))
            resumed.restore(str(ours_state))
            assert resumed.iter == RESUME_AT, resumed.iter
            for k in range(RESUME_AT, ITERS):
                for key in inputs:
                    if key.startswith(f"iter{k}/"):
                        resumed.net.blobs[key.split("/")[1]].data[...] = inputs[key]
                resumed.step(1)
            continued = _params(resumed.net)
            worst = max(
                float(np.abs(continued[k] - final[k]).max() / (np.abs(final[k]).max() + 1e-12))
                for k in continued
            )
            info["caffe_continuing_ours_max_relative_difference"] = worst
            if worst > 1e-4:
                raise SystemExit(f"{case.name}: Caffe continuing our solverstate is off by {worst:.3g}")
            np.savez_compressed(staging / "caffe_from_ours.npz", **continued)
            (staging / "our_snapshot").mkdir()
            for suffix in (".caffemodel", ".solverstate"):
                src = work / "snap" / f"train_iter_{RESUME_AT}{suffix}{ext}"
                shutil.copy(src, staging / "our_snapshot" / src.name)
        (staging / "case.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        os.chdir(REPO)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    print(f"{case.name}: losses {np.round(expected['loss'], 5).tolist()}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases", nargs="*", help="case names (default: all)")
    parser.add_argument("--list", action="store_true", help="print the case names")
    args = parser.parse_args()
    names = [c.name for c in CASES]
    if args.list:
        print("\n".join(names))
        return 0
    unknown = [n for n in args.cases if n not in names]
    if unknown:
        parser.error(f"unknown case(s) {', '.join(unknown)}; see --list")
    for case in CASES:
        if not args.cases or case.name in args.cases:
            generate(case)
    return 0


if __name__ == "__main__":
    sys.exit(main())
