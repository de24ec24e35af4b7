#!/usr/bin/env python3
"""Differential fuzzing against real Caffe: random nets, solvers and sizes made by the oracle, then
compared with ``converters`` (the default and the plain graph, and the backward pass).

Two steps, two Pythons. ``make`` runs in the oracle's Python (tools/README.md) and writes Caffe's
results in the fixture formats of ``tests/fixtures/``; ``check`` runs in the project's ``.venv``,
compares, and prints one line per case (``ok``, ``known`` for a second run Caffe's reuse of the
first run's blobs explains, or ``FAIL`` with the first difference)::

    GLOG_minloglevel=2 PYTHONPATH=/work/oracle/brocolli-caffe-9.0.2/python:. \\
        /work/oracle/venv/bin/python tools/differential_fuzz.py make layers --count 200 --out /tmp/dfz
    .venv/bin/python tools/differential_fuzz.py check /tmp/dfz

Targets of ``make``:

- ``layers``: chains of one to five random layers (Convolution with groups, dilation and rectangular
  windows, Deconvolution, Pooling, activations in and out of place, BatchNorm + Scale, LRN, MVN,
  Softmax, Eltwise and Concat branches, Crop, SPP, Slice, Reshape, Flatten, Permute, Normalize,
  ArgMax, Bias, Scale over other axes, Im2col, InnerProduct, Reduction, Tile), a random loss or
  Accuracy head, an LSTM or RNN, N-D (1-D and 3-D) convolutions, or one of Embed, BatchReindex,
  Filter, LSTMUnit, Parameter and Silence, Caffe 1.0's InfogainLoss and Log, or (``--family params``
  only) one BVLC layer (or loss, LSTM, RNN) whose parameter fields are each left out or drawn from
  boundary values (0, -1, 1, 2, ..., both halves of an ``_h``/``_w`` pair or one, a field and its
  legacy twin), so that Caffe's own checks decide what is valid, or (``--family net`` only) a
  whole net built in a random net state (phase, level, stages) over layers under include and
  exclude rules, legacy input fields, parameters shared by name, tops in place or written twice
  and repeated layer names, or (``--family nonfinite`` only) a chain over inputs of which 2%, 10%
  or 30% of the values are NaN, +inf or -inf; a second run at another size
  where Caffe takes it, and Caffe's backward pass for some. Each case runs in a child process: a
  Caffe ``CHECK`` aborts only it, and the net is kept under ``refused/`` with Caffe's message, so
  ``check`` also reports a net we accept that Caffe refused;
- ``forks``: fork layers in the fork oracle's Python (``PYTHONPATH=/work/oracle/forks/src/python``):
  PSPNet's Interp (zoom, shrink, size, pads), BVLC master's Clip and Swish in in-place chains,
  FlowNet's ChannelNorm, FlowWarp and Accum, CTPN's Transpose and Reverse, ShuffleChannel, Reorg
  and Axpy (with the backward pass for most), PSPNet's and brocolli's BN in TEST and TRAIN, SegNet's
  Upsample after max pooling, Caffe-SSD's PriorBox and DetectionOutput (code types, shared or
  per-class locations, backgrounds, NMS top_k and eta, keep_top_k, thresholds; PriorBox's ``clip``
  always written: brocolli's caffe.proto defaults it to true, Caffe-SSD's and ours to false), and
  (a fifth of the cases) C3D's Convolution3D, Pooling3D and Deconvolution3D chains with their
  backward pass;
- ``solvers``: random solver types, schedules, momenta, decay, regularization and gradient clipping
  over the small nets of ``make_solver_fixtures.py``, ten iterations;
- ``fcn``: the 15 official FCN deploy nets at random widths, sizes (1 x 1 and up), batches and
  deconvolution fills;
- ``zoo``: the nets of ``../shared/caffe-zoo`` that BVLC Caffe runs, at another input size and batch.

``check`` knows the target from ``target.json`` in the folder. Some differences are Caffe's and not
ours; each was read in Caffe's sources: a second run whose sizes change a parameter blob's shape
(Caffe reads the old blob), an empty top Caffe leaves behind from an earlier run, a gradient through
Reshape or Flatten of a consumed blob whose diff was seeded (Caffe's shared diffs), MAX pooling
whose backward writes before the blob (memory corruption, reported as a refusal), NaN and infinity
patterns of sums over the -FLT_MAX of a MAX window that holds no input (which partial sums
overflow depends on the order of the sum) and of NaN through the BLAS (OpenBLAS's ``sscal`` by 0
writes zeros over NaN: SSD's Normalize of a NaN blob gives zeros), and a loss weight on a top
whose second run is larger or that a layer computes in place (Caffe's loss weight lives in the
top's diff, set once; a reallocation or an in-place backward loses it), an Eltwise of bottoms of
other shapes or a Scale or Bias of a factor of another shape (the oracle's fork commented out
BVLC's CHECKs, which we keep), a NaN in LRN's backward (its running sum over channels carries it to
the same pixel of every later channel), and a NaN in a bottom
of a (de)convolution, which Caffe's gradient carries to every weight through the zeros of its padded
column buffers (0 x NaN = NaN) where ours reaches only the taps that read it (C3D's AVE Pooling3D of
a window past the input gives 0 / 0 in both). Ours: a NaN gradient reaching a ReLU (Caffe
multiplies it by the mask, NaN x 0 = NaN; PyTorch's ReLU passes 0), and a ReLU of -inf (Caffe's
``max(x, 0) + 0 * min(x, 0)`` gives NaN, PyTorch's ReLU 0).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
for path in (REPO, REPO / "tools"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

Shape = tuple[int, ...]


# --------------------------------------------------------------------------------------------------
# make: layers (oracle side)


def _window(size: int, kernel: int, stride: int, pad: int, dilation: int = 1, ceil: bool = False) -> int:
    span = size + 2 * pad - (dilation * (kernel - 1) + 1)
    return (math.ceil(span / stride) if ceil else span // stride) + 1


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


class _Chain:
    """A random chain of layers over ``data``; each method adds one or a few layers after blob ``b``
    of shape ``s`` and returns ``(top, shape)``, or ``None`` where the shape does not allow it."""

    def __init__(self, rng: random.Random, backward: bool) -> None:
        from make_layer_fixtures import L

        self.L, self.r, self.layers, self.count = L, rng, [], 0
        self.backward, self.forward_only = backward, False

    def name(self, kind: str) -> str:
        self.count += 1
        return f"{kind.lower()}{self.count}"

    def add(self, layer: dict) -> str:
        self.layers.append(layer)
        return layer["top"][0]

    def convolution(self, b: str, s: Shape) -> tuple[str, Shape] | None:
        r, (n, c, h, w) = self.r, s
        group = r.choice(_divisors(c)) if r.random() < 0.4 else 1
        out = group * r.randint(1, max(1, 8 // group))
        kh, kw = r.randint(1, 5), r.randint(1, 5)
        sh, sw = r.randint(1, 3), r.randint(1, 3)
        ph, pw = r.randint(0, 3), r.randint(0, 3)
        kw, sw, pw = (kh, sh, ph) if r.random() < 0.6 else (kw, sw, pw)
        dilation = r.choice([1, 1, 1, 2, 3])
        oh, ow = _window(h, kh, sh, ph, dilation), _window(w, kw, sw, pw, dilation)
        if oh < 1 or ow < 1:
            return None
        p: dict[str, Any] = {"num_output": out, "group": group, "bias_term": r.random() < 0.7}
        p.update({"kernel_size": kh} if kh == kw and r.random() < 0.5 else {"kernel_h": kh, "kernel_w": kw})
        p.update({"stride": sh} if sh == sw and r.random() < 0.5 else {"stride_h": sh, "stride_w": sw})
        p.update({"pad": ph} if ph == pw and r.random() < 0.5 else {"pad_h": ph, "pad_w": pw})
        if dilation > 1:
            p["dilation"] = dilation
        return self.add(self.L(self.name("conv"), "Convolution", b, convolution_param=p)), (n, out, oh, ow)

    def deconvolution(self, b: str, s: Shape) -> tuple[str, Shape] | None:
        r, (n, c, h, w) = self.r, s
        group = r.choice(_divisors(c)) if r.random() < 0.3 else 1
        out = group * r.randint(1, max(1, 6 // group))
        k, stride, pad = r.randint(1, 5), r.randint(1, 3), r.randint(0, 2)
        kw, sw, pw = k, stride, pad
        if r.random() < 0.3:  # rectangular
            kw, sw, pw = r.randint(1, 5), r.randint(1, 3), r.randint(0, 2)
        dilation = r.choice([1, 1, 1, 2, 3])
        oh = (h - 1) * stride - 2 * pad + dilation * (k - 1) + 1
        ow = (w - 1) * sw - 2 * pw + dilation * (kw - 1) + 1
        if oh < 1 or ow < 1 or oh * ow > 20000:
            return None
        p: dict[str, Any] = {"num_output": out, "group": group, "bias_term": r.random() < 0.6}
        if (kw, sw, pw) == (k, stride, pad):
            p.update(kernel_size=k, stride=stride, pad=pad)
        else:
            p.update(kernel_h=k, kernel_w=kw, stride_h=stride, stride_w=sw, pad_h=pad, pad_w=pw)
        if dilation > 1:
            p["dilation"] = dilation
        return self.add(self.L(self.name("deconv"), "Deconvolution", b, convolution_param=p)), (
            n,
            out,
            oh,
            ow,
        )

    def pooling(self, b: str, s: Shape) -> tuple[str, Shape] | None:
        r, (n, c, h, w) = self.r, s
        method = r.choice(["MAX", "AVE"])
        if r.random() < 0.12:
            p = {"pool": method, "global_pooling": True}
            return self.add(self.L(self.name("pool"), "Pooling", b, pooling_param=p)), (n, c, 1, 1)
        k, stride = r.randint(1, 4), r.randint(1, 3)
        pad = r.randint(0, k - 1) if r.random() < 0.4 else 0
        if self.backward and method == "MAX" and pad:
            pad = 0  # Caffe's MAX backward writes before the blob for a window wholly in the padding
        floor = r.random() < 0.25

        def pooled(size: int) -> int:
            out = _window(size, k, stride, pad, ceil=not floor)
            return out - 1 if not floor and pad and (out - 1) * stride >= size + pad else out

        oh, ow = pooled(h), pooled(w)
        if oh < 1 or ow < 1:
            return None
        p: dict[str, Any] = {"pool": method, "kernel_size": k, "stride": stride}
        if pad:
            p["pad"] = pad
        if floor:
            p["round_mode"] = "FLOOR"
        return self.add(self.L(self.name("pool"), "Pooling", b, pooling_param=p)), (n, c, oh, ow)

    def activation(self, b: str, s: Shape) -> tuple[str, Shape]:
        r = self.r
        kinds = [
            "ReLU",
            "ReLU",
            "Sigmoid",
            "TanH",
            "AbsVal",
            "BNLL",
            "ELU",
            "PReLU",
            "Power",
            "Dropout",
            "Exp",
        ]
        kind = r.choice(kinds)
        name = self.name(kind)
        top = b if r.random() < 0.5 and kind not in ("PReLU", "AbsVal") else name
        extra: dict[str, Any] = {}
        if kind == "ReLU" and r.random() < 0.4:
            extra["relu_param"] = {"negative_slope": round(r.uniform(-0.5, 0.5), 3)}
        elif kind == "ELU":
            extra["elu_param"] = {"alpha": round(r.uniform(-1, 2), 3)}
        elif kind == "PReLU":
            extra["prelu_param"] = {"channel_shared": r.random() < 0.3}
        elif kind == "Power":
            extra["power_param"] = {
                "power": float(r.choice([1, 2, 3])),
                "scale": round(r.uniform(-2, 2), 3),
                "shift": round(r.uniform(-1, 1), 3),
            }
        elif kind == "Exp":
            extra["exp_param"] = {
                "scale": round(r.uniform(-0.5, 0.5), 3),
                "shift": round(r.uniform(-0.5, 0.5), 3),
            }
        elif kind == "Dropout":
            extra["dropout_param"] = {"dropout_ratio": 0.3}
        self.layers.append(self.L(name, kind, b, top, **extra))
        return top, s

    def batchnorm_scale(self, b: str, s: Shape) -> tuple[str, Shape]:
        r = self.r
        name = self.name("bn")
        top = b if r.random() < 0.6 else name
        eps = r.choice([1e-5, 1e-3, 0.1])
        p: dict[str, Any] = {"use_global_stats": r.random() < 0.7, "eps": eps}
        if not p["use_global_stats"] and r.random() < 0.5:  # (batch statistics, and their running sums)
            p["moving_average_fraction"] = r.choice([0.9, 0.999, 0.5])
        self.layers.append(self.L(name, "BatchNorm", b, top, batch_norm_param=p))
        if r.random() < 0.8:
            scale = self.name("scale")
            scaled = top if r.random() < 0.6 else scale
            self.layers.append(
                self.L(scale, "Scale", top, scaled, scale_param={"bias_term": r.random() < 0.7})
            )
            return scaled, s
        return top, s

    def lrn(self, b: str, s: Shape) -> tuple[str, Shape]:
        r = self.r
        region = r.choice(["ACROSS_CHANNELS", "WITHIN_CHANNEL"])
        p: dict[str, Any] = {
            "local_size": r.choice([1, 3, 5]),
            "alpha": round(r.uniform(0.0001, 1), 4),
            "beta": round(r.uniform(0.1, 1), 3),
            "norm_region": region,
        }
        if region == "ACROSS_CHANNELS":
            p["k"] = round(r.uniform(0.5, 2), 3)
        return self.add(self.L(self.name("lrn"), "LRN", b, lrn_param=p)), s

    def branches(self, b: str, s: Shape) -> tuple[str, Shape]:
        """Two convolutions of ``b`` joined by Eltwise (same widths) or Concat."""
        r, (n, _, h, w) = self.r, s
        out, k = r.randint(1, 6), r.choice([1, 3])
        one = self.add(
            self.L(
                self.name("conv"),
                "Convolution",
                b,
                convolution_param={"num_output": out, "kernel_size": k, "pad": k // 2},
            )
        )
        out2 = out if r.random() < 0.7 else r.randint(1, 6)
        two = self.add(
            self.L(
                self.name("conv"), "Convolution", b, convolution_param={"num_output": out2, "kernel_size": 1}
            )
        )
        if out2 == out and r.random() < 0.6:
            p: dict[str, Any] = {"operation": r.choice(["SUM", "PROD", "MAX"])}
            if p["operation"] == "SUM" and r.random() < 0.5:
                p["coeff"] = [round(r.uniform(-2, 2), 3), round(r.uniform(-2, 2), 3)]
            return self.add(self.L(self.name("eltwise"), "Eltwise", [one, two], eltwise_param=p)), (
                n,
                out,
                h,
                w,
            )
        return self.add(self.L(self.name("concat"), "Concat", [one, two])), (n, out + out2, h, w)

    def crop(self, b: str, s: Shape) -> tuple[str, Shape] | None:
        """A Crop of ``b`` to a smaller reference made by an unpadded convolution."""
        r, (n, c, h, w) = self.r, s
        if h < 2 and w < 2:
            return None
        ref_h, ref_w = r.randint(1, h), r.randint(1, w)
        ref = self.add(
            self.L(
                self.name("conv"),
                "Convolution",
                b,
                convolution_param={"num_output": 1, "kernel_h": h - ref_h + 1, "kernel_w": w - ref_w + 1},
            )
        )
        offset = [r.randint(0, h - ref_h), r.randint(0, w - ref_w)]
        p = {"axis": 2, "offset": offset}
        return self.add(self.L(self.name("crop"), "Crop", [b, ref], crop_param=p)), (n, c, ref_h, ref_w)

    def spp(self, b: str, s: Shape) -> tuple[str, Shape] | None:
        r, (n, c, h, w) = self.r, s
        height = r.randint(1, 3)
        for bins in (2**i for i in range(height)):
            for size in (h, w):
                k = math.ceil(size / bins)
                if (k * bins - size + 1) // 2 >= k:
                    return None
        p = {"pyramid_height": height, "pool": r.choice(["MAX", "AVE"])}
        return self.add(self.L(self.name("spp"), "SPP", b, spp_param=p)), (
            n,
            c * sum(4**i for i in range(height)),
        )

    def mvn(self, b: str, s: Shape) -> tuple[str, Shape]:
        p = {"normalize_variance": self.r.random() < 0.6, "across_channels": self.r.random() < 0.4}
        return self.add(self.L(self.name("mvn"), "MVN", b, mvn_param=p)), s

    def softmax(self, b: str, s: Shape) -> tuple[str, Shape]:
        axis = self.r.choice([1, 1, -1] + list(range(2, len(s))))
        return self.add(self.L(self.name("softmax"), "Softmax", b, softmax_param={"axis": axis})), s

    def inner_product(self, b: str, s: Shape) -> tuple[str, Shape]:
        r = self.r
        out, axis = r.randint(1, 7), r.choice([1, 1, 2]) if len(s) == 4 else 1
        p: dict[str, Any] = {"num_output": out, "bias_term": r.random() < 0.7, "axis": axis}
        if r.random() < 0.3:
            p["transpose"] = True
        return self.add(self.L(self.name("ip"), "InnerProduct", b, inner_product_param=p)), (*s[:axis], out)

    def reduction(self, b: str, s: Shape) -> tuple[str, Shape]:
        r = self.r
        axis = r.randint(0, len(s) - 1)
        p = {
            "operation": r.choice(["SUM", "ASUM", "SUMSQ", "MEAN"]),
            "axis": axis,
            "coeff": round(r.uniform(-2, 2), 3),
        }
        return self.add(self.L(self.name("reduction"), "Reduction", b, reduction_param=p)), tuple(s[:axis])

    def tile_or_flatten(self, b: str, s: Shape) -> tuple[str, Shape]:
        r = self.r
        if r.random() < 0.5 and len(s) >= 2:
            axis, tiles = r.randint(1, len(s) - 1), r.randint(1, 3)
            shape = list(s)
            shape[axis] *= tiles
            p = {"axis": axis, "tiles": tiles}
            return self.add(self.L(self.name("tile"), "Tile", b, tile_param=p)), tuple(shape)
        axis = r.randint(1, len(s) - 1) if len(s) > 1 else 0
        p = {"axis": axis, "end_axis": -1}
        return self.add(self.L(self.name("flatten"), "Flatten", b, flatten_param=p)), (
            *s[:axis],
            math.prod(s[axis:]),
        )

    def slice_concat(self, b: str, s: Shape) -> tuple[str, Shape] | None:
        r = self.r
        axis = r.randint(1, len(s) - 1)
        if s[axis] < 2:
            return None
        first, second = self.name("slice_a"), self.name("slice_b")
        p = {"axis": axis, "slice_point": [r.randint(1, s[axis] - 1)]}
        self.layers.append(self.L(self.name("slice"), "Slice", b, [first, second], slice_param=p))
        return self.add(
            self.L(self.name("concat"), "Concat", [second, first], concat_param={"axis": axis})
        ), s

    def views(self, b: str, s: Shape) -> tuple[str, Shape]:
        """Blobs sharing ``b``'s memory in Caffe (an explicit Split, a one-bottom Concat, a one-top
        Slice, a Reshape, a Flatten), an activation (often in place) on one of them, and the chain
        going on from another, or from ``b`` itself."""
        r = self.r
        kind = r.choice(["Split", "Concat", "Slice", "Reshape", "Flatten"])
        if kind == "Split":
            tops = [self.name("split_a"), self.name("split_b")]
            self.layers.append(self.L(self.name("split"), "Split", b, tops))
            view, other, shape = tops[0], tops[1], s
        elif kind == "Reshape":
            view, shape = self.reshape(b, s)
            other = b
        elif kind == "Flatten":
            view, shape = self.add(self.L(self.name("flatten"), "Flatten", b)), (s[0], math.prod(s[1:]))
            other = b
        else:
            view, shape = self.add(self.L(self.name(kind.lower()), kind, b)), s
            other = b
        top, shape = self.activation(view, shape)
        if r.random() < 0.3 and len(shape) >= 2:  # (Caffe's quirk: a Flatten reading a view alone)
            flat = self.add(self.L(self.name("flatten"), "Flatten", top))
            top, shape = flat, (shape[0], math.prod(shape[1:]))
        if r.random() < 0.5:
            return top, shape
        return other, s

    def permute(self, b: str, s: Shape) -> tuple[str, Shape]:
        order = list(range(len(s)))
        self.r.shuffle(order)
        return self.add(self.L(self.name("permute"), "Permute", b, permute_param={"order": order})), tuple(
            s[i] for i in order
        )

    def normalize(self, b: str, s: Shape) -> tuple[str, Shape]:
        r = self.r
        p = {
            "across_spatial": r.random() < 0.5,
            "channel_shared": r.random() < 0.3,
            "eps": r.choice([1e-10, 1e-3]),
        }
        return self.add(self.L(self.name("normalize"), "Normalize", b, norm_param=p)), s

    def relu6(self, b: str, s: Shape) -> tuple[str, Shape]:
        name = self.name("relu6")
        top = b if self.r.random() < 0.5 else name
        self.layers.append(self.L(name, "ReLU6", b, top))
        return top, s

    def reshape(self, b: str, s: Shape) -> tuple[str, Shape]:
        r, rest, dims = self.r, math.prod(s), []
        for _ in range(r.randint(1, 4)):
            d = r.choice([d for d in _divisors(rest) if d <= 12])
            dims.append(d)
            rest //= d
        dims.append(rest)
        spec = list(dims)
        if r.random() < 0.5:
            spec[r.randrange(len(spec))] = -1
        if r.random() < 0.3 and len(s) >= 2:  # axis and num_axes: a part of the shape, 0 copying an axis
            axis = r.randint(0, len(s) - 1)
            count = r.randint(0, len(s) - axis)
            part = math.prod(s[axis : axis + count])
            if part > 1 and r.random() < 0.6:
                d = r.choice([d for d in _divisors(part) if d <= 12])
                middle, new_part = [d, -1], (d, part // d)
            else:
                middle, new_part = [0] * count, tuple(s[axis : axis + count])
            param = {"shape": {"dim": middle}, "axis": axis, "num_axes": count}
            shape = (*s[:axis], *new_part, *s[axis + count :])
            return self.add(self.L(self.name("reshape"), "Reshape", b, reshape_param=param)), shape
        return self.add(
            self.L(self.name("reshape"), "Reshape", b, reshape_param={"shape": {"dim": spec}})
        ), tuple(dims)

    def argmax(self, b: str, s: Shape) -> tuple[str, Shape]:
        r = self.r
        self.forward_only = True  # (Caffe has no backward for it)
        axis = r.choice([None, 1, len(s) - 1]) if len(s) > 1 else None
        items = math.prod(s[1:]) if axis is None else s[axis]
        p: dict[str, Any] = {"top_k": r.randint(1, max(1, min(3, items))), "out_max_val": r.random() < 0.4}
        if axis is None:
            shape: Shape = (s[0], 2 if p["out_max_val"] else 1, p["top_k"])
        else:
            p["axis"] = axis
            shape = (*s[:axis], p["top_k"], *s[axis + 1 :])
        return self.add(self.L(self.name("argmax"), "ArgMax", b, argmax_param=p)), shape

    def threshold(self, b: str, s: Shape) -> tuple[str, Shape]:
        self.forward_only = True
        p = {"threshold": round(self.r.uniform(-1, 1), 3)}
        return self.add(self.L(self.name("threshold"), "Threshold", b, threshold_param=p)), s

    def bias_or_scale(self, b: str, s: Shape) -> tuple[str, Shape] | None:
        r = self.r
        axis = r.randint(0, len(s) - 1)
        num_axes = r.randint(1, len(s) - axis) if r.random() < 0.7 else -1
        kind = r.choice(["Scale", "Bias"])
        p: dict[str, Any] = {"axis": axis, "num_axes": num_axes}
        if kind == "Scale":
            p["bias_term"] = r.random() < 0.5
        field = "scale_param" if kind == "Scale" else "bias_param"
        if r.random() < 0.3:  # the scale (bias) as a second bottom: a learned Parameter blob
            axes = len(s) - axis if num_axes == -1 else num_axes
            factor = self.name("factor")
            shape = {"dim": list(s[axis : axis + axes])}
            self.layers.append(self.L(factor, "Parameter", [], [factor], parameter_param={"shape": shape}))
            p.pop("num_axes")
            p.pop("bias_term", None)
            return self.add(self.L(self.name(kind), kind, [b, factor], **{field: p})), s
        return self.add(self.L(self.name(kind), kind, b, **{field: p})), s

    def im2col(self, b: str, s: Shape) -> tuple[str, Shape] | None:
        r, (n, c, h, w) = self.r, s
        k, stride, pad, dilation = r.randint(1, 3), r.randint(1, 2), r.randint(0, 1), r.choice([1, 1, 2])
        oh, ow = _window(h, k, stride, pad, dilation), _window(w, k, stride, pad, dilation)
        if oh < 1 or ow < 1:
            return None
        p = {"kernel_size": k, "stride": stride, "pad": pad, "dilation": dilation}
        return self.add(self.L(self.name("im2col"), "Im2col", b, convolution_param=p)), (n, c * k * k, oh, ow)


_SPATIAL = [
    "convolution",
    "convolution",
    "convolution",
    "deconvolution",
    "pooling",
    "pooling",
    "activation",
    "activation",
    "batchnorm_scale",
    "lrn",
    "branches",
    "crop",
    "mvn",
    "softmax",
    "slice_concat",
    "permute",
    "normalize",
    "relu6",
    "reshape",
    "argmax",
    "threshold",
    "bias_or_scale",
    "im2col",
    "views",
]
_ANY = [
    "activation",
    "inner_product",
    "reduction",
    "tile_or_flatten",
    "softmax",
    "slice_concat",
    "reshape",
    "argmax",
    "bias_or_scale",
    "relu6",
    "views",
]


def _chain_case(name: str, r: random.Random) -> tuple[Any, Shape | None]:
    """A chain case and another input shape for its second run (``None``: one run)."""
    import make_layer_fixtures as fx

    chain = _Chain(r, backward=r.random() < 0.4)
    first = (r.choice([1, 1, 2, 3]), r.randint(1, 6), r.randint(1, 24), r.randint(1, 24))
    blob, shape = "data", first
    for _ in range(r.randint(1, 5)):
        kinds = _SPATIAL if len(shape) == 4 else _ANY
        for _attempt in range(20):
            extra = ["spp", "inner_product"] if len(shape) == 4 and r.random() < 0.15 else []
            made = getattr(chain, r.choice(kinds + extra))(blob, shape)
            if made is not None:
                blob, shape = made
                break
        if not shape or math.prod(shape) > 200_000:
            break
    other = (r.choice([1, 2, 3]), *first[1:])
    if r.random() < 0.5:
        other = (other[0], first[1], max(1, first[2] + r.randint(-3, 3)), max(1, first[3] + r.randint(-3, 3)))
    # A fifth of the backward cases: no seeded diffs and no force_backward; loss weights on the last
    # top (and sometimes another) drive Caffe's backward pass, which then skips what no loss needs
    # and honours propagate_down: false, given to some layers here.
    # (Not on a Softmax, an MVN or a BatchNorm, whose summed output has no gradient but float noise;
    # and one run only:
    # Caffe's loss weight lives in the top's diff, set once by SetLossWeights, and is lost when
    # that diff reallocates for a larger top or an in-place layer's backward writes over it.)
    driven = chain.backward and not chain.forward_only and r.random() < 0.2 and bool(chain.layers)
    driven = driven and chain.layers[-1]["type"] not in ("Softmax", "MVN", "BatchNorm")
    if driven:
        other = None
        chain.layers[-1]["loss_weight"] = [round(r.uniform(0.5, 2.0), 3)] * len(chain.layers[-1]["top"])
        for layer in chain.layers[:-1]:
            if r.random() < 0.15 and len(layer["top"]) == 1 and layer["type"] != "Softmax":
                layer["loss_weight"] = [round(r.uniform(0.5, 2.0), 3)]
            if r.random() < 0.2 and layer["bottom"]:
                layer["propagate_down"] = [r.random() < 0.5 for _ in layer["bottom"]]
    params: dict[str, Callable] = {}
    for layer in chain.layers:
        if layer["type"] == "BatchNorm":
            params[layer["name"]] = fx.batchnorm_blobs(r.choice([1.0, 0.5, 999.98]))
        elif layer["type"] == "Normalize":
            params[layer["name"]] = lambda rng, layer, shapes: [
                fx.normal(rng, 0.5, s, mean=1.0) for s in shapes
            ]
    case = fx.Case(
        name,
        "random chain",
        chain.layers,
        [{"data": first}],
        params=params,
        backward=chain.backward and not chain.forward_only,
        input_grads=not driven,
        seed_outputs=not driven,
    )
    return case, other


def _loss_case(name: str, r: random.Random) -> Any:
    """A random loss (or Accuracy) over random scores, labels drawn to suit it."""
    import make_layer_fixtures as fx
    import numpy as np

    kind = r.choice(
        [
            "SoftmaxWithLoss",
            "SoftmaxWithLoss",
            "EuclideanLoss",
            "SigmoidCrossEntropyLoss",
            "HingeLoss",
            "MultinomialLogisticLoss",
            "ContrastiveLoss",
            "Accuracy",
        ]
    )
    n, c = r.randint(1, 4), r.randint(2, 6)
    maps = kind in ("SoftmaxWithLoss", "Accuracy", "EuclideanLoss", "SigmoidCrossEntropyLoss")
    spatial = (r.randint(1, 5), r.randint(1, 5)) if maps and r.random() < 0.6 else ()
    scores: Shape = (n, c, *spatial)
    inputs: dict[str, Shape] = {"score": scores}
    p: dict[str, Any] = {}
    makers: dict[str, Callable] = {}
    load: dict[str, Any] = {}
    ignore = r.choice([None, fx.IGNORE_LABEL, 1, -1])
    if kind in ("SoftmaxWithLoss", "Accuracy"):
        inputs["label"] = (n, 1, *spatial) if r.random() < 0.5 or not spatial else (n, *spatial)
        if kind == "SoftmaxWithLoss":
            loss: dict[str, Any] = {} if ignore is None else {"ignore_label": ignore}
            mode = r.choice([None, "FULL", "VALID", "BATCH_SIZE", "NONE", False, True])
            if isinstance(mode, bool):
                loss["normalize"] = mode
            elif mode:
                loss["normalization"] = mode
            if loss:
                p["loss_param"] = loss
        else:
            p["accuracy_param"] = {
                "top_k": r.randint(1, c),
                **({} if ignore is None else {"ignore_label": ignore}),
            }

        def labels(rng: Any, shape: Shape, classes: int = c, ignored: int | None = ignore) -> Any:
            values = rng.integers(0, classes, shape)
            if ignored is not None:
                values = np.where(rng.uniform(size=shape) < 0.25, ignored, values)
            return values.astype(np.float32)

        makers["label"], bottoms = labels, ["score", "label"]
    elif kind == "EuclideanLoss":
        inputs["target"], bottoms = scores, ["score", "target"]
    elif kind == "SigmoidCrossEntropyLoss":  # brocolli's is Caffe 1.0's
        inputs["target"], bottoms, makers["target"] = scores, ["score", "target"], fx.uniform(0, 1)
        load = {"variants": {"SigmoidCrossEntropyLoss": "caffe-1.0"}}
    elif kind == "HingeLoss":
        inputs["label"], bottoms, makers["label"] = (n,), ["score", "label"], fx.integers(0, c)
        p["hinge_loss_param"] = {"norm": r.choice(["L1", "L2"])}
    elif kind == "MultinomialLogisticLoss":
        inputs, bottoms = {"prob": scores, "label": (n,)}, ["prob", "label"]
        makers.update(label=fx.integers(0, c), prob=fx.probabilities)
    else:
        inputs, bottoms = {"a": (n, c, 1, 1), "b": (n, c, 1, 1), "similar": (n,)}, ["a", "b", "similar"]
        makers.update(similar=fx.integers(0, 2), a=fx.uniform(-0.6, 0.6), b=fx.uniform(-0.6, 0.6))
        p["contrastive_loss_param"] = {
            "margin": round(r.uniform(0.2, 2), 2),
            "legacy_version": r.random() < 0.5,
        }
    weight = r.choice([None, None, 0.5, 2.0])
    if weight is not None and kind != "Accuracy":
        p["loss_weight"] = [weight]
    layers = [fx.L("loss", kind, bottoms, **p)]
    return fx.Case(
        name,
        f"random {kind}",
        layers,
        [inputs],
        make_input=fx.inputs_by_blob(**makers),
        backward=kind != "Accuracy",
        load_options=load,
    )


def _recurrent_case(name: str, r: random.Random) -> Any:
    import make_layer_fixtures as fx

    kind = r.choice(["LSTM", "RNN"])
    t, n, c, out = r.randint(2, 5), r.randint(1, 3), r.randint(1, 5), r.randint(1, 5)
    inputs: dict[str, Shape] = {"x": (t, n, c), "cont": (t, n)}
    bottoms, tops = ["x", "cont"], ["rec"]
    if r.random() < 0.4:
        inputs["x_static"] = (n, r.randint(1, 3))
        bottoms.append("x_static")
    expose = r.random() < 0.4
    if expose:
        inputs["h0"] = (1, n, out)
        bottoms, tops = [*bottoms, "h0"], [*tops, "h_t"]
        if kind == "LSTM":
            inputs["c0"] = (1, n, out)
            bottoms, tops = [*bottoms, "c0"], [*tops, "c_t"]
    p = fx.recurrent(out, expose_hidden=True) if expose else fx.recurrent(out)
    layers = [fx.L("rec", kind, bottoms, tops, recurrent_param=p)]
    return fx.Case(
        name,
        f"random {kind}",
        layers,
        [dict(inputs), dict(inputs)],
        make_input=fx.sequence_inputs,
        backward=r.random() < 0.6,
        stateful=True,
    )


def _indexing_case(name: str, r: random.Random) -> Any | None:
    """BVLC's layers that index, select or hold blobs: Embed, BatchReindex, Filter, LSTMUnit,
    Parameter (with a Silence), Caffe 1.0's InfogainLoss, and Log; each between Scales and a loss
    where Caffe's backward pass cannot be forced through an index input."""
    import make_layer_fixtures as fx
    import numpy as np

    L = fx.L
    kind = r.choice(["embed", "reindex", "filter", "lstm_unit", "infogain", "parameter", "log"])
    n = r.randint(1, 4)
    makers: dict[str, Callable] = {}
    load: dict[str, Any] = {}
    backward, input_grads = r.random() < 0.7, False
    if kind == "embed":
        dim, out = r.randint(1, 7), r.randint(1, 5)
        index = tuple(r.randint(1, 3) for _ in range(r.randint(1, 3)))
        p = {"num_output": out, "input_dim": dim, "bias_term": r.random() < 0.6}
        layers = [L("embed", "Embed", ["index"], embed_param=p)]
        if r.random() < 0.5:
            layers.append(L("relu", "ReLU", ["embed"], ["embed"]))
        layers.append(L("scaled", "Scale", ["embed"], scale_param={"axis": len(index), "bias_term": True}))
        inputs = {"index": index}
        makers["index"] = fx.integers(0, dim)
    elif kind == "reindex":
        item = tuple(r.randint(1, 4) for _ in range(r.randint(0, 3)))
        picks = r.randint(1, 6)
        layers = [
            L("scaled", "Scale", ["data"], scale_param={"axis": 0, "num_axes": 0, "bias_term": True}),
            L("reindex", "BatchReindex", ["scaled", "permut"]),
        ]
        inputs = {"data": (n, *item), "permut": (picks,)}
        makers["permut"] = fx.integers(0, n)
    elif kind == "filter":
        blobs = r.randint(1, 3)
        shapes = [(n, *(r.randint(1, 4) for _ in range(r.randint(0, 3)))) for _ in range(blobs)]
        inputs = {f"in{i}": shape for i, shape in enumerate(shapes)}
        selector = (n, 1) if r.random() < 0.5 else (n,)
        inputs["select"] = selector
        layers = [L(f"scaled{i}", "Scale", [f"in{i}"], scale_param={"axis": 0, "num_axes": 0})
                  for i in range(blobs)]  # fmt: skip
        layers.append(L("filter", "Filter", [*(f"scaled{i}" for i in range(blobs)), "select"],
                        [f"picked{i}" for i in range(blobs)]))  # fmt: skip

        def select(rng: Any, shape: Shape) -> Any:
            values = (rng.uniform(size=shape) < 0.5).astype(np.float32)
            values.reshape(-1)[rng.integers(0, shape[0])] = 1.0  # at least one item kept
            return values

        makers["select"] = select
    elif kind == "lstm_unit":
        dim = r.randint(1, 4)
        inputs = {"c_prev": (1, n, dim), "gates": (1, n, 4 * dim), "cont": (1, n)}
        layers = [L("unit", "LSTMUnit", ["c_prev", "gates", "cont"], ["c", "h"])]
        makers["cont"] = lambda rng, shape: rng.choice(np.float32([0, 1, 0.5, 1]), shape)
    elif kind == "infogain":
        c = r.randint(2, 5)
        spatial = (r.randint(1, 3), r.randint(1, 3)) if r.random() < 0.4 else ()
        label = (n, 1, *spatial) if spatial else (n,)
        inputs = {"score": (n, c, *spatial), "label": label, "H": (1, 1, c, c)}
        loss: dict[str, Any] = {"loss_weight": [r.choice([1.0, 0.5, 2.0])]}
        layers = [
            L("scaled", "Scale", ["score"], scale_param={"bias_term": True}),
            L("prob", "Softmax", ["scaled"]),
            L("infogain", "InfogainLoss", ["prob", "label", "H"], **loss),
        ]
        makers.update(score=fx.uniform(-3, 3), label=fx.integers(0, c), H=fx.uniform(0, 1))
        load = {"variants": {"InfogainLoss": "caffe-1.0"}}
        backward = True
    elif kind == "parameter":
        shape = (n, *(r.randint(1, 4) for _ in range(r.randint(0, 3))))
        inputs = {"data": shape}
        layers = [
            L("param", "Parameter", [], ["param"], parameter_param={"shape": {"dim": list(shape)}}),
            L("sum", "Eltwise", ["data", "param"],
              eltwise_param={"operation": r.choice(["SUM", "PROD", "MAX"])}),  # fmt: skip
        ]
        if r.random() < 0.5:
            layers.append(L("unused", "Parameter", [], ["unused"], parameter_param={"shape": {"dim": [2]}}))
            layers.append(L("silence", "Silence", ["unused"], []))
        input_grads = True
    else:  # Log of a positive blob (an AbsVal before it), in place or not
        shape = (n, r.randint(1, 4), r.randint(1, 5), r.randint(1, 5))
        inputs = {"data": shape}
        p = {"base": r.choice([-1.0, 2.0, 10.0, 0.5]), "scale": round(r.uniform(0.2, 2), 3),
             "shift": round(r.uniform(0.05, 1), 3)}  # fmt: skip
        top = "abs" if r.random() < 0.5 else "log"
        layers = [L("abs", "AbsVal", ["data"], ["abs"]), L("log", "Log", ["abs"], [top], log_param=p)]
        input_grads = True
    if kind in ("embed", "reindex", "filter"):  # a loss on each top drives Caffe's backward pass
        for top in [t for layer in layers[-1:] for t in layer["top"]]:
            operation = r.choice(["SUMSQ", "ASUM", "SUM", "MEAN"])
            layers.append(L(f"{top}_loss", "Reduction", [top], reduction_param={"operation": operation},
                            loss_weight=[r.choice([1.0, 0.5, 2.0])]))  # fmt: skip
    if kind == "lstm_unit":
        input_grads = True
    return fx.Case(
        name,
        f"random {kind}",
        layers,
        [inputs],
        make_input=fx.inputs_by_blob(**makers),
        backward=backward,
        input_grads=input_grads,
        load_options=load,
    )


def _nd_case(name: str, r: random.Random) -> Any | None:
    """Convolutions and Deconvolutions over 1 or 3 spatial axes."""
    import make_layer_fixtures as fx

    dims = r.choice([1, 3, 3])
    first = (r.randint(1, 2), r.randint(1, 4), *(r.randint(1, 9) for _ in range(dims)))
    layers, blob, shape = [], "data", list(first)
    for k in range(r.randint(1, 3)):
        transposed = r.random() < 0.3
        group = r.choice(_divisors(shape[1])) if r.random() < 0.3 else 1
        out = group * r.randint(1, 3)
        kernel = [r.randint(1, 3) for _ in range(dims)]
        stride = [r.randint(1, 2) for _ in range(dims)]
        pad = [r.randint(0, 1) for _ in range(dims)]
        dilation = [1] * dims if transposed else [r.choice([1, 1, 2]) for _ in range(dims)]
        sizes = [
            (size - 1) * s - 2 * q + kk if transposed else _window(size, kk, s, q, d)
            for size, kk, s, q, d in zip(shape[2:], kernel, stride, pad, dilation, strict=True)
        ]
        if min(sizes) < 1 or math.prod(sizes) > 4000:
            continue
        p: dict[str, Any] = {
            "num_output": out,
            "group": group,
            "kernel_size": kernel,
            "stride": stride,
            "pad": pad,
            "bias_term": r.random() < 0.7,
        }
        if any(d > 1 for d in dilation):
            p["dilation"] = dilation
        top = f"{'deconv' if transposed else 'conv'}{k}"
        layers.append(fx.L(top, "Deconvolution" if transposed else "Convolution", blob, convolution_param=p))
        blob, shape = top, [shape[0], out, *sizes]
        if r.random() < 0.4:
            layers.append(fx.L(f"relu{k}", "ReLU", blob, blob))
    if not layers:
        return None

    def fan_in(rng: Any, layer: dict, shapes: list[Shape]) -> list[Any]:  # (any number of axes)
        weight = fx.normal(rng, math.sqrt(2.0 / max(1, math.prod(shapes[0][1:]))), shapes[0])
        return [weight, *(fx.normal(rng, 0.2, s) for s in shapes[1:])]

    params = {layer["name"]: fan_in for layer in layers if layer["type"] != "ReLU"}
    return fx.Case(
        name, "random N-D convolution", layers, [{"data": first}], params=params, backward=r.random() < 0.5
    )


#: The ``params`` family: one BVLC layer, each field of its parameter message drawn (or left out)
#: from boundary values, ``(parameter field, bottoms)``; Caffe's own checks decide what is valid.
_PARAM_LAYERS: dict[str, tuple[str | None, int]] = {
    "Convolution": ("convolution_param", 1), "Deconvolution": ("convolution_param", 1),
    "Im2col": ("convolution_param", 1), "Pooling": ("pooling_param", 1),
    "InnerProduct": ("inner_product_param", 1), "LRN": ("lrn_param", 1), "ReLU": ("relu_param", 1),
    "PReLU": ("prelu_param", 1), "ELU": ("elu_param", 1), "Power": ("power_param", 1),
    "Exp": ("exp_param", 1), "Log": ("log_param", 1), "Threshold": ("threshold_param", 1),
    "Dropout": ("dropout_param", 1), "Softmax": ("softmax_param", 1), "Concat": ("concat_param", 2),
    "Slice": ("slice_param", 1), "Eltwise": ("eltwise_param", 2), "Flatten": ("flatten_param", 1),
    "Reshape": ("reshape_param", 1), "Crop": ("crop_param", 2), "Scale": ("scale_param", 1),
    "Bias": ("bias_param", 1), "BatchNorm": ("batch_norm_param", 1), "MVN": ("mvn_param", 1),
    "Reduction": ("reduction_param", 1), "ArgMax": ("argmax_param", 1), "Tile": ("tile_param", 1),
    "SPP": ("spp_param", 1), "Sigmoid": (None, 1), "TanH": (None, 1), "AbsVal": (None, 1),
    "BNLL": (None, 1), "Split": (None, 1),
}  # fmt: skip
#: Fork layers the fork oracle runs under our names (``make layers --family params`` in its Python):
#: ``(parameter field, extra bottoms and their shapes from the data's (n, c, h, w))``.
_FORK_PARAM_LAYERS: dict[str, tuple[str | None, dict[str, Callable[[Shape], Shape]]]] = {
    "Interp": ("interp_param", {}), "ShuffleChannel": ("shuffle_channel_param", {}),
    "Reorg": ("reorg_param", {}), "Clip": ("clip_param", {}), "Swish": ("swish_param", {}),
    "ReLU6": ("relu6_param", {}), "Normalize": ("norm_param", {}), "Permute": ("permute_param", {}),
    "PriorBox": ("prior_box_param", {"image": lambda s: (s[0], 3, 2 * s[2] + 1, 3 * s[3])}),
    "Transpose": ("transpose_param", {}), "Reverse": ("reverse_param", {}),
    "FlowWarp": ("flow_warp_param", {"flow": lambda s: (s[0], 2, *s[2:])}),
    "Accum": ("accum_param", {"other": lambda s: (s[0], 2, s[2] + 1, max(1, s[3] - 1))}),
    "Axpy": (None, {"x": lambda s: (s[0], s[1], 3, 2), "y": lambda s: (s[0], s[1], 3, 2)}),
}  # fmt: skip
#: Fields drawn more often than the others: without them the layer is refused whatever else holds.
_PARAM_NEEDED = {"num_output", "kernel_size", "pool", "operation", "shape", "tiles"}


def _param_value(r: random.Random, field: Any) -> Any:
    """A boundary value for the oracle's field descriptor ``field`` (``None``: not drawn)."""
    kind = field.type
    if kind == field.TYPE_BOOL:
        return r.random() < 0.5
    if kind == field.TYPE_ENUM:
        names = [v.name for v in field.enum_type.values if v.name != "STOCHASTIC"]  # (CPU Caffe: none)
        if field.name == "engine":  # (CUDNN: a CPU-only Caffe refuses the engine, not the net)
            names = [n for n in names if n in ("DEFAULT", "CAFFE")]
        return r.choice(names)
    if kind in (field.TYPE_INT32, field.TYPE_INT64, field.TYPE_SINT32):
        return r.choice([-5, -2, -1, 0, 1, 1, 2, 2, 3, 4])
    if kind in (field.TYPE_UINT32, field.TYPE_UINT64):
        return r.choice([0, 1, 1, 2, 2, 3, 4, 5]) if r.random() < 0.97 else -1
    if kind in (field.TYPE_FLOAT, field.TYPE_DOUBLE):
        return r.choice([-1.0, 0.0, 1e-5, 0.25, 0.5, 1.0, 1.0, 2.0, 3.0])
    if kind == field.TYPE_MESSAGE and field.message_type.name == "BlobShape":
        return {"dim": [r.choice([-1, 0, 1, 2, 3, 4, 6]) for _ in range(r.randint(0, 5))]}
    return None  # (fillers: the weights are drawn by the case; strings)


#: The loss types' own parameter fields (``_loss_case`` draws the type).
_LOSS_PARAMS = {"SoftmaxWithLoss": "softmax_param", "HingeLoss": "hinge_loss_param",
                "ContrastiveLoss": "contrastive_loss_param", "Accuracy": "accuracy_param"}  # fmt: skip


def _drawn_fields(r: random.Random, field_name: str) -> dict[str, Any]:
    """The fields of ``LayerParameter.<field_name>`` that BVLC's message (the oracle's) and ours both
    hold at the same number, each left out or drawn from boundary values."""
    from caffe.proto import caffe_pb2

    from converters.caffe.schema import MESSAGES

    descriptor = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name[field_name].message_type
    ours = MESSAGES[descriptor.name].by_name
    params: dict[str, Any] = {}
    for field in descriptor.fields:
        if field.name not in ours or ours[field.name].number != field.number:
            continue  # (a field of one schema only: brocolli's ceil_mode, ...)
        if r.random() > (0.85 if field.name in _PARAM_NEEDED else 0.35):
            continue
        if field.label == field.LABEL_REPEATED:
            values = [_param_value(r, field) for _ in range(r.choice([1, 1, 2, 3, 0]))]
            if any(v is None for v in values):
                continue
            params[field.name] = values
        else:
            value = _param_value(r, field)
            if value is not None:
                params[field.name] = value
    return params


def _fork_params_case(name: str, r: random.Random) -> Any:
    """One fork layer of :data:`_FORK_PARAM_LAYERS`, its parameter fields drawn as
    :func:`_params_case` draws BVLC's (PriorBox's ``clip`` always written: brocolli's default is
    true, Caffe-SSD's and ours false)."""
    import make_layer_fixtures as fx

    kind = r.choice(sorted(_FORK_PARAM_LAYERS))
    field_name, extra = _FORK_PARAM_LAYERS[kind]
    axes = 4 if extra or kind in ("Interp", "ShuffleChannel", "Reorg", "PriorBox") else r.choice([4, 4, 2, 3])
    shape = tuple(r.randint(1, 3) if i == 0 else r.randint(1, 6) for i in range(axes))
    inputs = {"data": shape, **{blob: make(shape) for blob, make in extra.items()}}
    params = _drawn_fields(r, field_name) if field_name is not None else {}
    if kind == "PriorBox":
        params["clip"] = r.random() < 0.5
    bottoms = ["data", *extra] if kind != "Axpy" else ["data", "x", "y"]
    if kind == "Axpy":  # (its scale a (n, c, 1, 1) blob)
        inputs["data"] = (shape[0], shape[1], 1, 1)
    layer = fx.L("layer", kind, bottoms, ["out"], **({field_name: params} if field_name else {}))
    # (the YOLOv2 fork's Reorg backward reads an internal blob it never writes, not its top's diff)
    backward = r.random() < 0.5 and kind not in ("PriorBox", "Accum", "Reorg")
    makers: dict[str, Callable] = {}
    if kind == "Normalize":
        makers["layer"] = lambda rng, layer, shapes: [fx.normal(rng, 0.5, s, mean=1.0) for s in shapes]
    return fx.Case(name, f"{kind} with drawn parameters", [layer], [inputs], params=makers,
                   backward=backward, oracle=fx.FORK_ORACLE)  # fmt: skip


def _params_case(name: str, r: random.Random) -> Any | None:
    """One layer of :data:`_PARAM_LAYERS` whose parameter fields (those BVLC's message and ours both
    hold, at the same number) are left out or drawn from boundary values, on small inputs."""
    import make_layer_fixtures as fx
    from caffe.proto import caffe_pb2

    pick = r.random()
    if "interp_param" in caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name and pick < 0.5:
        return _fork_params_case(name, r)
    if pick < 0.08:  # an LSTM or RNN, its recurrent_param drawn (the inputs as the recurrent family's)
        case = _recurrent_case(name, r)
        case.layers[0]["recurrent_param"] = _drawn_fields(r, "recurrent_param")
        case.description = f"{case.layers[0]['type']} with drawn parameters"
        return case
    if pick < 0.3:  # a loss or Accuracy (labels drawn to suit it), its parameters drawn
        case = _loss_case(name, r)
        layer = case.layers[0]
        for field_name in ("loss_param", _LOSS_PARAMS.get(layer["type"])):
            if field_name is not None and (field_name != "loss_param" or layer["type"] != "Accuracy"):
                layer[field_name] = _drawn_fields(r, field_name)
        case.description = f"{layer['type']} with drawn parameters"
        return case
    kind = r.choice(sorted(_PARAM_LAYERS))
    field_name, bottoms = _PARAM_LAYERS[kind]
    axes = r.choice([4, 4, 4, 2, 3, 1, 5]) if kind not in ("Convolution", "Pooling", "LRN", "SPP") else 4
    shape = tuple(r.randint(1, 3) if i == 0 else r.randint(1, 6) for i in range(axes))
    inputs = {"data": shape}
    if bottoms == 2 or (kind in ("Scale", "Bias") and r.random() < 0.4):
        other = list(shape)
        if r.random() < 0.5 and other:  # another size on some axis (Concat's, Crop's reference)
            k = r.randrange(len(other))
            other[k] = r.randint(1, 6)
        if kind in ("Scale", "Bias") and r.random() < 0.7:
            start = r.randint(0, len(shape))
            other = list(shape[start : start + r.randint(0, len(shape) - start)])
        inputs["other"] = tuple(other)
    params = _drawn_fields(r, field_name) if field_name is not None else {}
    tops = [f"out{k}" for k in range(r.randint(1, 3))] if kind in ("Slice", "Split") else ["out"]
    in_place = r.random() < 0.3 and kind in (
        "ReLU", "PReLU", "ELU", "Power", "Exp", "Log", "Threshold", "Dropout", "Sigmoid", "TanH", "AbsVal",
        "BNLL", "Scale", "Bias", "BatchNorm")  # fmt: skip
    layer = fx.L("layer", kind, list(inputs), ["data"] if in_place else tops,
                 **({field_name: params} if field_name else {}))  # fmt: skip
    makers: dict[str, Callable] = {}
    backward = r.random() < 0.5 and kind not in ("ArgMax", "Threshold")  # (Caffe has no backward pass)
    if kind == "Log":  # (positive inputs where the base allows the log)
        return fx.Case(name, f"{kind} with drawn parameters", [layer], [inputs], backward=backward,
                       make_input=fx.positive_input)  # fmt: skip
    if kind == "BatchNorm":
        makers[layer["name"]] = fx.batchnorm_blobs(r.choice([1.0, 0.5, 0.0]))
    return fx.Case(name, f"{kind} with drawn parameters", [layer], [inputs], params=makers,
                   backward=backward)  # fmt: skip


_STAGES = ("a", "b", "deploy")


def _state_rule(r: random.Random) -> dict[str, Any]:
    """A random ``NetStateRule``: any of phase, min_level, max_level, stages and not_stages (none: a
    rule every state meets)."""
    rule: dict[str, Any] = {}
    if r.random() < 0.5:
        rule["phase"] = r.choice(["TRAIN", "TEST"])
    for bound in ("min_level", "max_level"):
        if r.random() < 0.25:
            rule[bound] = r.randint(-1, 2)
    for field_name in ("stage", "not_stage"):
        if r.random() < 0.3:
            rule[field_name] = r.sample(_STAGES, r.randint(1, 2))
    return rule


class _NetDraw:
    """A random net of 4-D blobs of one batch and size (channels vary): inputs declared as Input
    layers (some under rules) or in the legacy ``input`` fields, then layers drawn over any blob
    declared before, each perhaps under include or exclude rules, sharing parameters by name, in
    place, or writing a blob an earlier layer writes: the net state decides what Caffe builds."""

    def __init__(self, r: random.Random, size: tuple[int, int]) -> None:
        self.r, self.layers, self.count, self.size = r, [], 0, size
        self.channels: dict[str, int] = {}  # every blob declared so far -> its channels
        self.convs: list[dict] = []
        self.shared = 0
        self.fixed_size = False  # an InnerProduct: its weights fix the input's size (one run)

    def name(self, kind: str) -> str:
        self.count += 1
        plain = [layer["name"] for layer in self.layers
                 if layer["type"] in ("ReLU", "TanH", "Power", "Eltwise")]  # fmt: skip
        if self.r.random() < 0.06 and kind in ("relu", "tanh", "power") and plain:
            return self.r.choice(plain)  # (a repeated name, between layers without blobs)
        return f"{kind}{self.count}"

    def blob(self, channels: int | None = None) -> str | None:
        names = [b for b, c in self.channels.items() if channels is None or c == channels]
        return self.r.choice(names) if names else None

    def top(self, kind: str, bottom: str | None = None) -> str:
        """A fresh top, the bottom (in place) or, rarely, a blob an earlier layer writes."""
        r = self.r
        if bottom is not None and r.random() < 0.3:
            return bottom
        if r.random() < 0.07 and self.layers:
            return r.choice([t for layer in self.layers for t in layer["top"]] or [f"{kind}{self.count}"])
        return f"{kind}{self.count}"

    def add(self, layer: dict, channels: list[int]) -> None:
        r = self.r
        if r.random() < 0.35:
            rules = [_state_rule(r) for _ in range(r.choice([1, 1, 2]))]
            which = r.random()
            if which < 0.06:  # both kinds: Caffe refuses
                layer["include"], layer["exclude"] = rules[:1], [_state_rule(r)]
            else:
                layer["include" if which < 0.6 else "exclude"] = rules
        self.layers.append(layer)
        for top, c in zip(layer["top"], channels, strict=True):
            self.channels[top] = c

    def convolution(self) -> None:
        from make_layer_fixtures import L

        r, b = self.r, self.blob()
        cin, out, k = self.channels[b], r.randint(1, 4), r.choice([1, 3])
        p: dict[str, Any] = {"num_output": out, "kernel_size": k, "pad": k // 2}
        p["bias_term"] = r.random() < 0.7
        name = self.name("conv")
        layer = L(name, "Convolution", b, self.top("conv"), convolution_param=p)
        twins = [c for c in self.convs if c["_key"] == (cin, out, k)]
        if twins and r.random() < 0.6:  # share the weights (and perhaps the bias) by name
            twin = r.choice(twins)
            layer["convolution_param"]["bias_term"] = twin["convolution_param"]["bias_term"]
            if r.random() < 0.08:
                layer["convolution_param"]["bias_term"] = not twin["convolution_param"]["bias_term"]
            specs = twin.setdefault("param", [{"name": f"shared{self._next_share()}"}])
            if twin["convolution_param"]["bias_term"] and len(specs) == 1 and r.random() < 0.5:
                specs.append({"name": f"shared{self._next_share()}"})
            layer["param"] = [dict(spec) for spec in specs]
            for spec in layer["param"]:
                if r.random() < 0.2:
                    spec["lr_mult"] = r.choice([1.0, 2.0])
                if r.random() < 0.15:
                    spec["share_mode"] = r.choice(["STRICT", "PERMISSIVE"])
        elif r.random() < 0.05:  # a param spec past the layer's blobs: Caffe refuses
            layer["param"] = [{"lr_mult": 1.0}] * (3 if p["bias_term"] else 2)
        layer["_key"] = (cin, out, k)  # (dropped before the net is written)
        self.add(layer, [out])
        self.convs.append(layer)

    def _next_share(self) -> int:
        self.shared += 1
        return self.shared

    def fc_as_conv(self) -> None:
        """An InnerProduct and a Convolution whose window covers the blob, sharing the weights
        (``share_mode: PERMISSIVE``: the same count in another shape; STRICT: Caffe refuses)."""
        from make_layer_fixtures import L

        r, b = self.r, self.blob()
        out, key = r.randint(1, 4), self._next_share()
        mode = r.choice(["PERMISSIVE", "PERMISSIVE", "STRICT"])
        ip = L(self.name("fc"), "InnerProduct", b, inner_product_param={"num_output": out},
               param=[{"name": f"shared{key}"}, {"name": f"sharedb{key}"}])  # fmt: skip
        conv = L(self.name("fcconv"), "Convolution", b,
                 convolution_param={"num_output": out, "kernel_h": self.size[0], "kernel_w": self.size[1]},
                 param=[{"name": f"shared{key}", "share_mode": mode}, {"name": f"sharedb{key}"}])  # fmt: skip
        first, second = (ip, conv) if r.random() < 0.5 else (conv, ip)
        self.layers += [first, second]  # (their tops are not read on: other shapes)
        self.fixed_size = True

    def unary(self) -> None:
        from make_layer_fixtures import L

        r, b = self.r, self.blob()
        kind = r.choice(["ReLU", "TanH", "Power", "Scale", "Pooling"])
        params: dict[str, Any] = {}
        if kind == "Power":
            params["power_param"] = {"scale": r.choice([0.5, -2.0]), "shift": r.choice([0.0, 0.25])}
        elif kind == "Scale":
            params["scale_param"] = {"bias_term": r.random() < 0.5}
        elif kind == "Pooling":
            method = r.choice(["MAX", "AVE"])
            params["pooling_param"] = {"pool": method, "kernel_size": 3, "stride": 1, "pad": 1}
        top = self.top(kind.lower(), None if kind == "Pooling" else b)
        self.add(L(self.name(kind.lower()), kind, b, top, **params), [self.channels[b]])

    def eltwise(self) -> None:
        from make_layer_fixtures import L

        r, first = self.r, self.blob()
        c = self.channels[first]
        bottoms = [first] + [self.blob(c) for _ in range(r.randint(1, 2))]
        op = r.choice(["SUM", "PROD", "MAX"])
        p: dict[str, Any] = {"operation": op}
        if op == "SUM" and r.random() < 0.4:
            p["coeff"] = [r.choice([1.0, -1.0, 0.5]) for _ in bottoms]
        self.add(L(self.name("eltwise"), "Eltwise", bottoms, self.top("eltwise"), eltwise_param=p), [c])

    def concat(self) -> None:
        from make_layer_fixtures import L

        bottoms = [self.blob() for _ in range(self.r.randint(2, 3))]
        channels = sum(self.channels[b] for b in bottoms)
        self.add(L(self.name("concat"), "Concat", bottoms, self.top("concat")), [channels])

    def split(self) -> None:
        from make_layer_fixtures import L

        b = self.blob()
        name = self.name("split")
        tops = [f"{name}_{k}" for k in range(self.r.randint(1, 3))]
        self.add(L(name, "Split", b, tops), [self.channels[b]] * len(tops))


def _net_case(name: str, r: random.Random) -> tuple[Any, dict, list[tuple[int, int, int]]]:
    """A :class:`_NetDraw` net, the state Caffe builds it in, and the run sizes (batch, height,
    width) after the first."""
    import make_layer_fixtures as fx

    n, h, w = r.randint(1, 2), r.randint(1, 6), r.randint(1, 6)
    draw = _NetDraw(r, (h, w))
    inputs = {"data": r.randint(1, 3)}
    if r.random() < 0.4:
        inputs["aux"] = r.randint(1, 3)
    form = r.choice(["layer", "layers", "input_shape", "input_dim"])
    net: dict[str, Any] = {"name": name}
    if form in ("input_shape", "input_dim"):
        net["input"] = list(inputs)
        if form == "input_shape":
            net["input_shape"] = [{"dim": [n, c, h, w]} for c in inputs.values()]
        else:
            net["input_dim"] = [d for c in inputs.values() for d in (n, c, h, w)]
        draw.channels.update(inputs)
    elif form == "layer":
        shapes = [{"dim": [n, c, h, w]} for c in inputs.values()]
        draw.layers.append(fx.L("input", "Input", [], list(inputs), input_param={"shape": shapes}))
        draw.channels.update(inputs)
    else:
        for blob, c in inputs.items():
            shape = {"shape": {"dim": [n, c, h, w]}}
            draw.add(fx.L(f"input_{blob}", "Input", [], blob, input_param=shape), [c])
    for _ in range(r.randint(2, 8)):
        pick = r.random()
        if pick < 0.35:
            draw.convolution()
        elif pick < 0.6:
            draw.unary()
        elif pick < 0.75:
            draw.eltwise()
        elif pick < 0.85:
            draw.concat()
        elif pick < 0.93:
            draw.split()
        elif not draw.fixed_size:
            draw.fc_as_conv()
    for layer in draw.layers:
        layer.pop("_key", None)
    state = {"phase": r.choice(["TRAIN", "TEST"]), "level": r.choice([0, 0, 1, 2, -1]),
             "stages": r.sample(_STAGES, r.choice([0, 0, 1, 2]))}  # fmt: skip
    if r.random() < 0.2:  # the file's own state: Caffe keeps its stages, replaces phase and level
        net["state"] = {"phase": r.choice(["TRAIN", "TEST"]), "level": r.randint(-1, 2),
                        "stage": r.sample(_STAGES, r.randint(1, 2))}  # fmt: skip
    net["layer"] = draw.layers
    others = [(r.randint(1, 3), r.randint(1, 7), r.randint(1, 7))]
    others = [] if draw.fixed_size or r.random() < 0.4 else others
    return net, state, others


def make_net_case(seed: int, index: int, out: Path) -> None:
    """One :func:`_net_case` into ``out/layers`` in the layer fixtures' format (its net under
    ``out/refused`` until Caffe has built it): every blob Caffe's net holds after the forward pass,
    and for half of them the backward pass from seeded diffs of the net's outputs
    (``force_backward``); then again with a second size, where Caffe takes it."""
    import make_layer_fixtures as fx

    name = f"fz{seed}_{index}"
    r = random.Random(seed * 7919 + index)
    net, state, others = _net_case(name, r)
    backward = r.random() < 0.5
    message = fx.to_message("NetParameter", net)
    text = fx.format_message(message)
    load = {"phase": state["phase"], "level": state["level"], "stages": state["stages"]}
    refused = out / "refused" / f"{name}.prototxt"
    refused.parent.mkdir(parents=True, exist_ok=True)
    refused.write_text(text)
    refused.with_suffix(".json").write_text(json.dumps(load))
    caffe = fx.load_caffe()
    oracle = ("force_backward: true\n" if backward else "") + fx.oracle_text(message)
    runs: list[dict[str, Shape]] = []
    for more in [None, *others]:  # (a second size Caffe stops at leaves the first run's files)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            rng = fx.np.random.default_rng(fx.seed_of(name))
            proto, model, values = fx.fill_and_save(caffe, oracle, net["layer"], rng, {}, work,
                                                    "weights.caffemodel", state=state)  # fmt: skip
            built = fx.caffe_net(caffe, proto, state)
            inputs = list(built.inputs)
            if more is None:
                runs = [{b: tuple(built.blobs[b].data.shape) for b in inputs}]
            else:
                runs.append({b: (more[0], s[1], more[1], more[2]) for b, s in runs[0].items()})
            blobs = [b for b in built.blobs if b not in inputs and "_split_" not in b]
            arrays, run_info = fx.forward_runs(
                caffe, proto, model, inputs, runs, blobs, fx.normal_input, rng, backward=backward,
                state=state, seeded=frozenset(built.outputs),
            )  # fmt: skip
            staging = work / "case"
            staging.mkdir()
            shutil.copyfile(model, staging / "weights.caffemodel")
            (staging / "net.prototxt").write_text(text)
            fx.write_npz(staging / "io.npz", arrays)
            fx.write_json(staging / "case.json", {
                "case": name, "description": "a random net built in a net state",
                "layer_types": sorted({layer["type"] for layer in net["layer"]}), "inputs": inputs,
                "outputs": blobs, "params": {k: [list(a.shape) for a in v] for k, v in values.items()},
                "runs": run_info, "notes": [], "seed": fx.seed_of(name), "oracle": fx.ORACLE,
                "load_options": load,
            })  # fmt: skip
            folder = out / "layers" / name
            folder.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(staging, folder)
        refused.unlink(missing_ok=True)
        refused.with_suffix(".json").unlink(missing_ok=True)


#: The layer target's families (``make layers --family``); by default each case draws one
#: of the first five (``params`` only when asked for).
LAYER_FAMILIES = ("chain", "loss", "nd", "indexing", "recurrent", "params", "net", "nonfinite")


def make_layer_case(seed: int, index: int, out: Path, family: str | None = None) -> None:
    """One random case into ``out/layers`` (its net under ``out/refused`` until Caffe has run it),
    of ``family`` (one of :data:`LAYER_FAMILIES`) or of a family drawn at random."""
    import make_layer_fixtures as fx

    if family == "net":
        make_net_case(seed, index, out)
        return
    name = f"fz{seed}_{index}"
    r = random.Random(seed * 7919 + index)
    pick = r.random()
    if family is None:
        family = "loss" if pick < 0.2 else "nd" if pick < 0.3 else "indexing" if pick < 0.38 else (
            "recurrent" if pick > 0.85 else "chain")  # fmt: skip
    other = None
    if family == "loss":
        case = _loss_case(name, r)
    elif family == "nd":
        case = _nd_case(name, r)
    elif family == "indexing":
        case = _indexing_case(name, r)
    elif family == "recurrent":
        case = _recurrent_case(name, r)
    elif family == "params":
        case = _params_case(name, r)
    else:
        case, other = _chain_case(name, r)
    if case is None:
        return
    if family == "nonfinite":  # the chain's inputs with NaN, +inf and -inf among their values
        case.make_input = _with_non_finite(case.make_input, r.choice([0.02, 0.1, 0.3]))
    caffe = fx.load_caffe()
    refused = out / "refused" / f"{name}.prototxt"
    refused.parent.mkdir(parents=True, exist_ok=True)
    refused.write_text(fx.format_message(fx.net_message(name, dict(case.runs[0]), case.layers)))
    if case.load_options:
        refused.with_suffix(".json").write_text(json.dumps(case.load_options))
    fx.make_case(caffe, case, out / "layers" / name)
    refused.unlink()
    refused.with_suffix(".json").unlink(missing_ok=True)
    if other is not None:  # a second run at another size, where Caffe takes it (else the first stays)
        case.runs.append({"data": other})
        fx.make_case(caffe, case, out / "layers" / name)


def _with_non_finite(make: Callable[..., Any], share: float) -> Callable[..., Any]:
    """``make``'s inputs with about ``share`` of the values of each float blob made NaN, +inf or -inf."""
    import numpy as np

    def made(rng: Any, blob: str, shape: tuple[int, ...], run: int) -> Any:
        values = np.array(make(rng, blob, shape, run), dtype=np.float32, copy=True)
        hit = rng.random(values.shape) < share
        values[hit] = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), size=int(hit.sum()))
        return values

    return made


def _make_in_children(seed: int, count: int, out: Path, prefix: str, *flags: str) -> None:
    """Cases ``0 .. count-1``, each made by a child process (``make-one``): a Caffe ``CHECK`` or a
    crash stops only it, and its net stays under ``refused/`` with the reason."""
    for index in range(count):
        done = subprocess.run(
            [sys.executable, __file__, "make-one", str(seed), str(index), str(out), *flags],
            capture_output=True,
            text=True,
        )
        if done.returncode:
            lines = done.stderr.strip().splitlines() or [f"stopped by signal {-done.returncode}"]
            fatal = [line for line in lines
                     if "Check failed" in line or "Error" in line or re.match(r"F\d{8} ", line)]  # fmt: skip
            why = (fatal or lines)[-1][:300]
            net = out / "refused" / f"{prefix}{seed}_{index}.prototxt"
            if net.exists():
                net.with_suffix(".why").write_text(why)
            # (a layer case keeps its first run, made before a second size stopped Caffe)
            if "--forks" in flags:
                shutil.rmtree(out / "forks" / f"{prefix}{seed}_{index}", ignore_errors=True)
            print(f"{prefix}{seed}_{index}: Caffe stopped: {why}", flush=True)


def make_layers(seed: int, count: int, out: Path, family: str | None = None) -> None:
    _make_in_children(seed, count, out, "fz", *(["--family", family] if family else []))


# --------------------------------------------------------------------------------------------------
# make: fork layers (the fork oracle's Python: tools/build_fork_oracle.sh)


#: The fork target's kinds (``make forks --family``; ``c3d``: C3D's 3-D layers); by default each case
#: draws one (a fifth of them C3D's).
FORK_KINDS = (
    "interp", "activations", "flownet", "ctpn", "mobile", "bn", "unpool", "priorbox", "detection", "c3d",
)  # fmt: skip


def _fork_net(r: random.Random, kind: str | None = None) -> tuple[str, dict[str, Shape], bool]:
    """A random net of fork layers (of ``kind``, else drawn): ``(layers, input shapes, backward)``."""
    kinds = ["interp", "interp", "activations", "flownet", "ctpn", "mobile", "bn", "unpool"]
    kinds += ["priorbox", "detection"]
    drawn = r.choice(kinds)
    kind = kind or drawn
    n, c, h, w = r.randint(1, 2), r.randint(1, 4), r.randint(1, 12), r.randint(1, 12)
    layers: list[str] = []

    def layer(name: str, kind: str, bottoms: list[str], top: str, param: str = "") -> None:
        blobs = " ".join(f'bottom: "{b}"' for b in bottoms)
        layers.append(f'layer {{ name: "{name}" type: "{kind}" {blobs} top: "{top}" {param}}}')

    if kind == "priorbox":  # Caffe-SSD's PriorBox (brocolli's): sizes, ratios, flip, clip, variances, steps
        for k in range(r.randint(1, 3)):
            mins = sorted(r.sample([4, 6, 8.5, 10, 16, 20, 30.5, 37], r.randint(1, 2)))
            fields = [f"min_size: {m}" for m in mins]
            if r.random() < 0.6:
                fields += [f"max_size: {m + r.choice([1, 5, 12.5, 30])}" for m in mins]
            ratios = r.sample([0.5, 1.0, 1.5, 2.0, 3.0, 0.3333], r.randint(0, 3))
            fields += [f"aspect_ratio: {a}" for a in ratios]
            fields += [f"flip: {str(r.random() < 0.5).lower()}", f"clip: {str(r.random() < 0.5).lower()}"]
            fields += [f"variance: {v}" for v in r.choice([[], [0.1], [0.1, 0.1, 0.2, 0.2]])]
            size, side = r.randint(8, 64), r.randint(8, 64)
            fields += r.choice([[], [f"img_size: {size}"], [f"img_h: {size}", f"img_w: {side}"]])
            step, step_h, step_w = r.choice([4, 6.5, 8, 16]), r.randint(2, 9), r.randint(2, 9)
            fields += r.choice([[], [f"step: {step}"], [f"step_h: {step_h}", f"step_w: {step_w}"]])
            fields += r.choice([[], ["offset: 0.25"], ["offset: 0"], ["offset: 0.7"]])
            param = f"prior_box_param {{ {' '.join(fields)} }} "
            layer(f"prior{k}", "PriorBox", ["data", "image"], f"prior{k}", param)
        image = (n, 3, r.randint(1, 80), r.randint(1, 80))
        return "\n".join(layers), {"data": (n, c, h, w), "image": image}, False
    if kind == "detection":  # Caffe-SSD's DetectionOutput over a PriorBox's boxes
        prior, per_place = r.choice([
            ("min_size: 8 max_size: 16 aspect_ratio: 2 flip: true variance: 0.1 variance: 0.1 variance: 0.2 "
             "variance: 0.2", 4),
            ("min_size: 10 aspect_ratio: 2 aspect_ratio: 3 flip: false clip: true variance: 0.1", 3),
            ("min_size: 6 min_size: 12", 2),
        ])  # fmt: skip
        h, w, classes = r.randint(1, 4), r.randint(1, 4), r.randint(2, 4)
        shared = r.random() < 0.6
        fields = [f"num_classes: {classes}", f"share_location: {str(shared).lower()}",
                  f"background_label_id: {r.randint(-1, classes - 1)}"]  # fmt: skip
        nms = [f"nms_threshold: {r.choice([0.3, 0.45, 0.6, 0.7])}"]
        nms += r.choice([[], [f"top_k: {r.randint(1, 30)}"]])
        nms += r.choice([[], [f"eta: {r.choice([0.7, 0.9])}"]])
        fields.append(f"nms_param {{ {' '.join(nms)} }}")
        fields.append(f"code_type: {r.choice(['CORNER', 'CENTER_SIZE', 'CORNER_SIZE'])}")
        fields += r.choice([[], ["variance_encoded_in_target: true"]])
        fields += r.choice([[], [f"keep_top_k: {r.choice([-1, 1, 5, 20])}"]])
        fields += r.choice([[], [f"confidence_threshold: {r.choice([0.01, 0.2, 0.5, 0.9])}"]])
        # (clip written out: brocolli's caffe.proto defaults it to true, Caffe-SSD's to false)
        prior += f" clip: {str(r.random() < 0.5).lower()}" if "clip" not in prior else ""
        layer("prior", "PriorBox", ["feat", "image"], "prior", f"prior_box_param {{ {prior} }} ")
        layer("det", "DetectionOutput", ["loc", "conf", "prior"], "det",
              f"detection_output_param {{ {' '.join(fields)} }} ")  # fmt: skip
        boxes, batch = h * w * per_place, r.randint(1, 2)
        image = (1, 3, r.randint(16, 40), r.randint(16, 40))
        locations = (batch, boxes * 4 * (1 if shared else classes))
        sizes = {"feat": (1, 2, h, w), "image": image, "loc": locations, "conf": (batch, boxes * classes)}
        return "\n".join(layers), sizes, False
    if kind == "bn":  # PSPNet's or brocolli's four-blob BN, as ours ("BN") and as the oracle names it
        eps = f" eps: {r.choice([1e-5, 1e-3, 0.5])}" if r.random() < 0.6 else ""
        frozen = " frozen: true" if r.random() < 0.4 else ""
        layer("bn", "BN", ["data"], "bn", f"bn_param {{{eps}{frozen} }} ")
        return "\n".join(layers), {"data": (max(n, 2), c, h, w)}, False
    if kind == "unpool":  # SegNet's Upsample after BVLC max pooling and its mask
        k, stride = r.randint(2, 3), r.randint(2, 3)
        h, w = max(h, k), max(w, k)
        layers.append(
            f'layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool" top: "mask" '
            f"pooling_param {{ pool: MAX kernel_size: {k} stride: {stride} }} }}"
        )
        pooled = [math.ceil((size - k) / stride) + 1 for size in (h, w)]
        form = r.choice(["scale", "size", "pad"])
        if form == "scale":
            param = f"scale: {stride}"
        elif form == "size":
            size_h, size_w = (p * stride - r.randint(0, 1) for p in pooled)
            param = f"upsample_h: {size_h} upsample_w: {size_w}"
        else:
            pads = " ".join(f"pad_out_{a}: {str(r.random() < 0.5).lower()}" for a in "hw")
            param = f"scale: {stride} {pads}"
        layer("up", "Upsample", ["pool", "mask"], "up", f"upsample_param {{ {param} }} ")
        return "\n".join(layers), {"data": (n, c, h, w)}, False
    if kind == "interp":
        for k in range(r.randint(1, 3)):
            fields = []
            form = r.choice(["zoom", "shrink", "both", "size"])
            if form in ("zoom", "both"):
                fields.append(f"zoom_factor: {r.randint(1, 4)}")
            if form in ("shrink", "both"):
                fields.append(f"shrink_factor: {r.randint(1, 4)}")
            if form == "size":
                fields.append(f"height: {r.randint(1, 16)} width: {r.randint(1, 16)}")
            if r.random() < 0.5:
                fields.append(f"pad_beg: {r.randint(-2, 0)} pad_end: {r.randint(-2, 0)}")
            layer(f"interp{k}", "Interp", ["data"], f"interp{k}", f"interp_param {{ {' '.join(fields)} }} ")
        return "\n".join(layers), {"data": (n, c, h, w)}, r.random() < 0.5
    if kind == "activations":  # BVLC master's Clip and Swish, in place and not
        layer("scaled", "Power", ["data"], "chain", f"power_param {{ scale: {r.choice([0.5, 2.0, -1.5])} }} ")
        for k in range(r.randint(1, 4)):
            step = r.choice(["Clip", "Swish", "ReLU", "Clip"])
            top = "chain" if r.random() < 0.6 else f"{step.lower()}{k}"
            param = ""
            if step == "Clip":
                low, high = sorted(round(r.uniform(-1.5, 1.5), 2) for _ in range(2))
                low, high = (high, low) if r.random() < 0.15 else (low, high)
                param = f"clip_param {{ min: {low} max: {high} }} "
            elif step == "Swish" and r.random() < 0.5:
                param = f"swish_param {{ beta: {round(r.uniform(0.2, 2), 2)} }} "
            layer(f"{step.lower()}{k}", step, ["chain"], top, param)
            if top != "chain":
                break
        return "\n".join(layers), {"data": (n, c, h, w)}, True
    if kind == "flownet":
        h, w = max(h, 3), max(w, 3)  # (the flow maker sets a few edge pixels)
        layer("norm", "ChannelNorm", ["data"], "norm")
        sizes: dict[str, Shape] = {"data": (n, c, h, w), "image": (n, c, h, w), "flow": (n, 2, h, w)}
        fill = r.choice(["", "flow_warp_param { fill_value: NOT_A_NUMBER } "])
        layer("warp", "FlowWarp", ["image", "flow"], "warp", fill)
        sizes["b"] = (n, r.randint(1, 3), r.randint(1, 12), r.randint(1, 12))
        accum = r.choice(
            [
                "",
                f"accum_param {{ size_divisible_by: {r.randint(2, 5)} }} ",
                f"accum_param {{ top_height: {r.randint(1, 14)} top_width: {r.randint(1, 14)} }} ",
            ]
        )
        layer("accum", "Accum", ["data", "b"], "accum", accum)
        return "\n".join(layers), sizes, r.random() < 0.7
    if kind == "ctpn":
        order = list(range(4))
        r.shuffle(order)
        layer(
            "transpose",
            "Transpose",
            ["data"],
            "transposed",
            "transpose_param { " + " ".join(f"dim: {d}" for d in order) + " } ",
        )
        layer("reverse", "Reverse", ["data"], "reversed", f"reverse_param {{ axis: {r.randint(0, 3)} }} ")
        return "\n".join(layers), {"data": (n, c, h, w)}, True
    stride = r.choice([2, 3])
    groups = r.choice([g for g in range(1, 5) if (c * stride * stride) % g == 0])
    channels = c * stride * stride
    layer("shuffle", "ShuffleChannel", ["data"], "shuffled", f"shuffle_channel_param {{ group: {groups} }} ")
    layer("reorg", "Reorg", ["spatial"], "reorg", f"reorg_param {{ stride: {stride} }} ")
    layer("reorg_back", "Reorg", ["data"], "reorg_back", f"reorg_param {{ stride: {stride} reverse: true }} ")
    layer("axpy", "Axpy", ["scale", "data", "data"], "axpy")
    sizes = {
        "data": (n, channels, h, w),
        "spatial": (n, c, h * stride, w * stride),
        "scale": (n, channels, 1, 1),
    }
    return "\n".join(layers), sizes, False


def make_fork_case(seed: int, index: int, out: Path, kind: str | None = None) -> None:
    import make_fork_fixtures as fx

    name = f"fk{seed}_{index}"
    text, shapes, backward = _fork_net(random.Random(seed * 104729 + index), kind)
    r = random.Random(seed * 7 + index)
    folder = out / "forks" / name
    refused = out / "refused" / f"{name}.prototxt"
    refused.parent.mkdir(parents=True, exist_ok=True)
    net = fx.input_layer(shapes) + text + "\n"
    refused.write_text(net)
    folder.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {}
    if '"BN"' in text:  # (the oracle's names for the forks' BN and Upsample)
        oracle, phase = r.choice([("PSPBN", "TEST"), ("PSPBN", "TRAIN"), ("BN", "TEST"), ("BN", "TRAIN")])
        extra = {"oracle_net": net.replace('"BN"', f'"{oracle}"'), "params": fx.bn_params, "phase": phase}
        extra["types"] = {oracle: "BN"}
    elif '"Upsample"' in text:
        renamed = net.replace('"Upsample"', '"SegNetUpsample"')
        extra = {"oracle_net": renamed.replace("upsample_param {", "segnet_upsample_param {")}
    inputs = fx.detection_inputs if '"DetectionOutput"' in text else fx.flow_inputs
    case = fx.Case(
        name, "forks", net, [shapes], "random fork layers", inputs=inputs, backward=backward, **extra
    )
    fx.make_case(case, folder)
    refused.unlink()


def make_c3d_case(seed: int, index: int, out: Path, kind: str | None = None) -> None:
    """C3D v1.0's Convolution3D, Pooling3D and Deconvolution3D (fork oracle), a layer-fixture case."""
    import make_layer_fixtures as fx

    r = random.Random(seed * 15485863 + index)
    name = f"fk{seed}_{index}"
    shape = (r.randint(1, 2), r.randint(1, 3), r.randint(1, 7), r.randint(1, 9), r.randint(1, 9))
    layers, params, blob, size = [], {}, "video", list(shape)
    for k in range(r.randint(1, 3)):
        kind = r.choice(["Convolution3D", "Convolution3D", "Pooling3D", "Deconvolution3D"])
        kernel, depth = r.randint(1, 3), r.randint(1, 3)
        stride, temporal = r.randint(1, 2), r.randint(1, 2)
        if kind == "Pooling3D":
            method = r.choice(["MAX", "AVE"])
            pad = r.randint(0, kernel - 1) if method == "AVE" and r.random() < 0.5 else 0
            length = math.ceil((size[2] - depth) / temporal) + 1
            rows = [math.ceil((n + 2 * pad - kernel) / stride) + 1 for n in size[3:]]
            if size[2] < depth or min(n + 2 * pad for n in size[3:]) < kernel:
                continue
            p: dict[str, Any] = {"pool": method, "kernel_size": kernel, "kernel_depth": depth}
            p.update(stride=stride, temporal_stride=temporal)
            if pad:
                p["pad"] = pad
            layers.append(fx.L(f"pool{k}", kind, blob, pooling3d_param=p))
            blob, size = f"pool{k}", [size[0], size[1], length, *rows]
            continue
        out_channels = r.randint(1, 4)
        pad, temporal_pad = r.randint(0, 1), r.randint(0, 1)
        if kind == "Convolution3D":
            length = (size[2] + 2 * temporal_pad - depth) // temporal + 1
            rows = [(n + 2 * pad - kernel) // stride + 1 for n in size[3:]]
        else:
            length = (size[2] - 1) * temporal - 2 * temporal_pad + depth
            rows = [(n - 1) * stride - 2 * pad + kernel for n in size[3:]]
        if min(length, *rows) < 1 or length * math.prod(rows) > 3000:
            continue
        p = {"num_output": out_channels, "kernel_size": kernel, "kernel_depth": depth, "stride": stride,
             "temporal_stride": temporal, "pad": pad, "temporal_pad": temporal_pad}  # fmt: skip
        if kind == "Convolution3D":  # (v1.1's Deconvolution3D reads bias_term from convolution_param)
            p["bias_term"] = r.random() < 0.7
        top = f"{kind[:4].lower()}{k}"
        layers.append(fx.L(top, kind, blob, convolution3d_param=p))
        params[top] = fx.c3d_params
        blob, size = top, [size[0], out_channels, length, *rows]
    if not layers:
        return
    case = fx.Case(
        name, "random C3D layers", layers, fx.runs(shape, blob="video"), make_input=fx.argmax_input,
        params=params, backward=True, oracle=fx.FORK_ORACLE,
        oracle_types={"Convolution3D": "C3DConvolution3D", "Pooling3D": "C3DPooling3D",
                      "Deconvolution3D": "C3DDeconvolution3D"},
        oracle_edits=(("convolution3d_param {", "c3d_convolution3d_param {"),
                      ("pooling3d_param {", "c3d_pooling3d_param {")),
    )  # fmt: skip
    fx.make_case(fx.load_caffe(), case, out / "layers" / name)


def make_forks(seed: int, count: int, out: Path, family: str | None = None) -> None:
    _make_in_children(seed, count, out, "fk", "--forks", *(["--family", family] if family else []))


# --------------------------------------------------------------------------------------------------
# make: solvers, FCN nets, zoo sizes (oracle side)


def make_solvers(seed: int, count: int, out: Path) -> None:
    import make_solver_fixtures as fx

    fx.FIXTURES = out
    for index in range(count):
        r = random.Random(seed * 1009 + index)
        kind = r.choice(["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"])
        s: dict[str, Any] = {"type": kind, "weight_decay": r.choice([0, 0.0005, 0.01])}
        if r.random() < 0.3:
            s["regularization_type"] = "L1"
        s.update(
            {
                "SGD": {"base_lr": r.choice([0.01, 0.05, 0.1]), "momentum": r.choice([0, 0.5, 0.9])},
                "Nesterov": {"base_lr": r.choice([0.01, 0.05]), "momentum": r.choice([0.5, 0.9])},
                "AdaGrad": {"base_lr": r.choice([0.01, 0.1]), "momentum": 0, "delta": r.choice([1e-8, 1e-4])},
                "RMSProp": {
                    "base_lr": r.choice([0.001, 0.01]),
                    "momentum": 0,
                    "rms_decay": r.choice([0.9, 0.98]),
                },
                "AdaDelta": {
                    "base_lr": r.choice([1.0, 0.5]),
                    "momentum": r.choice([0.9, 0.95]),
                    "delta": 1e-6,
                },
                "Adam": {
                    "base_lr": r.choice([0.001, 0.01]),
                    "momentum": 0.9,
                    "momentum2": r.choice([0.999, 0.99]),
                },
            }[kind]
        )
        policy = r.choice(["fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid"])
        s["lr_policy"] = policy
        s.update(
            {
                "fixed": {},
                "step": {"stepsize": r.randint(1, 5), "gamma": r.choice([0.1, 0.5])},
                "exp": {"gamma": r.choice([0.9, 0.99])},
                "inv": {"gamma": r.choice([0.1, 1e-4]), "power": 0.75},
                "multistep": {"stepvalue": sorted(r.sample(range(1, 10), r.randint(1, 3))), "gamma": 0.5},
                "poly": {"power": r.choice([0.5, 1.0, 2.0]), "max_iter": r.randint(10, 20)},
                "sigmoid": {"gamma": r.choice([-0.5, 0.5]), "stepsize": r.randint(2, 8)},
            }[policy]
        )
        if r.random() < 0.25:
            s["clip_gradients"] = r.choice([0.01, 0.1, 1.0])
        net = r.choice([fx.TINY_NET, fx.TINY_NET, fx.BATCHNORM_NET, fx.FROZEN_NET])
        if net is fx.BATCHNORM_NET:
            s["weight_decay"] = 0  # (this Caffe decays the statistics blobs: tools/README.md)
        case = fx.Case(f"sz{seed}_{index}", lambda net=net: net, s, "random", seed=r.randint(0, 10**6))
        try:
            fx.generate(case)
        except Exception as exc:  # (a CHECK aborts the whole run instead)
            print(f"{case.name}: {type(exc).__name__}: {exc}", flush=True)


def make_fcn(seed: int, count: int, out: Path) -> None:
    import make_fcn_fixtures as fx

    from converters.fcn.nets import MODELS

    r = random.Random(seed)
    caffe, seeded = fx.import_caffe(), fx.load_seeded_weights()
    for index in range(count):
        model = r.choice(MODELS)
        sizes = tuple(
            (
                r.choice([1, 1, 1, 2, 3]),
                r.choice([1, 2, r.randint(1, 40), r.randint(20, 120)]),
                r.choice([1, 3, r.randint(1, 40), r.randint(20, 120)]),
            )
            for _ in range(r.randint(1, 3))
        )
        fill = "bilinear" if r.random() < 0.3 else "fan_in"

        class Fixture(fx.Fixture):
            @property
            def deconvolution_fill(self, fill: str = fill) -> str:
                return fill

        folder = f"{model}-s{seed}-{index}"
        fx.make_fixture(
            caffe,
            seeded,
            Fixture(folder, model, r.choice([1 / 16, 1 / 16, 1 / 8, 1 / 32]), sizes),
            out / folder,
        )


#: Zoo nets BVLC Caffe cannot run: they need the fork oracle, OpenCV or py-faster-rcnn.
_ZOO_NEEDS_OTHER = {
    "pspnet50_ade20k",
    "segnet_basic",
    "shufflenet_v2",
    "icnet",
    "faster_rcnn_zf",
    "res10_ssd_face",
    "se_bn_inception",
}


def _zoo_nets() -> list[str]:
    """The zoo target's nets (``make zoo --family``): those of ../shared/caffe-zoo BVLC Caffe runs."""
    source = REPO.parent / "shared" / "caffe-zoo"
    if not source.is_dir():
        return []
    runs = [p for p in source.iterdir() if (p / "deploy.prototxt").exists()]
    return sorted(p.name for p in runs if p.name not in _ZOO_NEEDS_OTHER)


def make_zoo(seed: int, count: int, out: Path, family: str | None = None) -> None:
    import make_zoo_fixtures as fx

    from tests import zoo

    r = random.Random(seed)
    fx.ZOO, zoo.FIXTURES = out / "zoo", out / "fixtures"
    source = REPO.parent / "shared" / "caffe-zoo"
    nets = [family] if family else _zoo_nets()
    for _ in range(count):
        name = r.choice(nets)
        text = (source / name / "SOURCE.txt").read_text()
        declared = re.findall(r"^input: (\w+)=([\dx]+)", text, re.M)
        if len(declared) != 1:
            continue
        blob, dims = declared[0]
        _, c, h, w = (int(v) for v in dims.split("x"))
        scale = r.choice([0.5, 0.75, 1.25, 1.5])
        size = (
            r.choice([1, 1, 2]),
            max(1, int(h * scale) + r.randint(-3, 3)),
            max(1, int(w * scale) + r.randint(-3, 3)),
        )
        tag = f"{name}-{'x'.join(map(str, size))}"
        folder = out / "zoo" / tag
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / name / "deploy.prototxt", folder / "deploy.prototxt")
        shape = f"{size[0]}x{c}x{size[1]}x{size[2]}"
        (folder / "SOURCE.txt").write_text(re.sub(r"^input: .*$", f"input: {blob}={shape}", text, flags=re.M))
        try:
            print(fx.make(tag, False), flush=True)
        except Exception as exc:  # our shape inference refuses the size (as Caffe would)
            print(f"{tag}: {type(exc).__name__}: {exc}", flush=True)


# --------------------------------------------------------------------------------------------------
# check (project side)


def _compare(got: Any, want: Any, what: str, floor: float = 1e-6) -> None:
    """Same shape, the same NaN and infinity pattern, -FLT_MAX where Caffe has it, and the finite
    values within 1e-4 of Caffe's largest (or of ``floor``, where that is larger)."""
    import numpy as np

    assert got.shape == want.shape, f"{what}: shape {got.shape}, Caffe's {want.shape}"
    for mask in (np.isnan, np.isposinf, np.isneginf):
        assert np.array_equal(mask(got), mask(want)), f"{what}: {mask.__name__} differs"
    extreme = np.abs(want) == np.finfo(np.float32).max
    assert np.array_equal(got[extreme], want[extreme]), f"{what}: -FLT_MAX differs"
    finite = np.isfinite(want) & ~extreme
    if finite.any():
        scale = max(float(np.abs(want[finite]).max()), floor)
        error = float(np.abs(got[finite] - want[finite]).max())
        assert error <= 1e-4 * scale, f"{what}: max error {error:.3g} (scale {scale:.3g})"


def check_layer_case(folder: Path) -> None:
    """Every recorded top, on the default and the plain graph; with a recorded backward pass, every
    input's and parameter's diff (the seeded diffs of the tops no layer consumes, as Caffe keeps them;
    a Crop never writes its reference's)."""
    import numpy as np
    import torch

    from converters import load_caffe
    from tests.conftest import seeded_total

    case = json.loads((folder / "case.json").read_text())
    npz = np.load(folder / "io.npz")
    losses = any(kind.endswith("Loss") or kind == "Accuracy" for kind in case["layer_types"])
    options = case.get("load_options", {})

    def load(run: dict, shapes: dict, with_loss: bool, optimize: bool) -> Any:
        return load_caffe(
            folder / "net.prototxt",
            folder / "weights.caffemodel",
            with_loss=with_loss,
            input_shapes=shapes,
            outputs=list(run["outputs"]) or None,  # (none recorded: a chain in place on its input)
            optimize=optimize,
            **options,
        )

    for optimize in (True, False):
        net = None
        for index, run in enumerate(case["runs"]):
            prefix, shapes = run["prefix"], {b: tuple(s) for b, s in run["inputs"].items()}
            if net is None or not case.get("stateful"):
                try:
                    net = load(run, shapes, losses, optimize)
                except ValueError as exc:
                    _known_second_run(index, exc)
                    _known_refusal(exc)
                    if not run["outputs"] and "the net computes nothing" in str(exc):
                        raise KnownDifference(
                            "no layer but the inputs in this state: Caffe builds it (its inputs are its "
                            "outputs); we refuse it in one line"
                        ) from None
                    raise
            read = [b for b in run["inputs"] if b in net.caffe.inputs]  # (Caffe's outputs where unread)
            with torch.no_grad():
                try:
                    got = net(**{b: torch.from_numpy(npz[f"{prefix}input:{b}"]) for b in read})
                except ValueError as exc:
                    _known_refusal(exc)
                    raise
            for blob in run["outputs"]:
                try:
                    want = npz[f"{prefix}output:{blob}"]
                    _compare(got[blob].numpy(), want, f"optimize={optimize} {prefix}{blob}")
                except AssertionError:
                    _known_blas_non_finite(case, npz, prefix)
                    raise
    if not any(run.get("backward") for run in case["runs"]) or not case["runs"][0]["outputs"]:
        return
    net, padding_nan, overflow = None, False, False
    for run in case["runs"]:
        prefix, shapes = run["prefix"], {b: tuple(s) for b, s in run["inputs"].items()}
        if net is None or not case.get("stateful"):
            net = load(run, shapes, True, False)
        net.zero_grad(set_to_none=True)
        inputs = {b: torch.from_numpy(npz[f"{prefix}input:{b}"]).requires_grad_(True)
                  for b in run["inputs"] if b in net.caffe.inputs}  # fmt: skip
        total = seeded_total(net, run, npz, net(**inputs))
        if not total.requires_grad:
            continue
        total.backward()
        recorded = [npz[k] for k in npz.files if k.startswith(prefix) and "grad:" in k]
        largest = max(
            (float(np.abs(v[np.isfinite(v)]).max()) for v in recorded if np.isfinite(v).any()), default=0
        )
        state = {**dict(net.named_buffers()), **dict(net.named_parameters(remove_duplicate=False))}
        pairs = [(f"grad:{b}", inputs[b]) for b in inputs if f"{prefix}grad:{b}" in npz.files]
        pairs += [
            (f"param_grad:{layer}/{j}", state[key])
            for layer, keys in net.caffe.parameter_blobs.items()
            for j, key in enumerate(keys)
        ]
        for key, tensor in pairs:
            want = npz[f"{prefix}{key}"]
            got = (
                np.zeros(want.shape, np.float32)
                if tensor.grad is None
                else tensor.grad.numpy().reshape(want.shape)
            )
            if key.startswith("param_grad:") and _padding_nan(got, want, npz, prefix):
                padding_nan = True  # (its finite values and the other gradients are still compared)
                both = ~np.isnan(want)
                _compare(got[both], want[both], f"{prefix}{key}", floor=max(1e-6, 1e-2 * largest))
                continue
            if key.startswith("param_grad:") and _overflowing_sums(got, want, npz, prefix):
                overflow = True  # (the values finite in both and the other gradients are still compared)
                both = np.isfinite(want) & np.isfinite(got)
                _compare(got[both], want[both], f"{prefix}{key}", floor=max(1e-6, 1e-2 * largest))
                continue
            # (a diff near zero beside large ones is the rounding of a cancelling sum)
            try:
                _compare(got, want, f"{prefix}{key}", floor=max(1e-6, 1e-2 * largest))
            except AssertionError as exc:
                nan_out = any(np.isnan(npz[k]).any() for k in npz.files if k.startswith(f"{prefix}output:"))
                if "isnan differs" in str(exc) and "LRN" in case["layer_types"] and nan_out:
                    raise KnownDifference(
                        "LRN's backward sums its ratios over channels as a running sum (add the next, "
                        "subtract the last): a NaN that enters it stays at its pixel in later channels"
                    ) from None
                raise
    if padding_nan:
        raise KnownDifference(
            "a NaN in a bottom reaches every weight of Caffe's gradient through its padded column "
            "buffers (0 x NaN); ours only through the taps that read it"
        )
    if overflow:
        raise KnownDifference(
            "a weight gradient sums products of -FLT_MAX (a MAX window that holds no input) or of "
            "infinities: which partial sums overflow, and so where it is inf or NaN, follows the sum's order"
        )


def _padding_nan(got: Any, want: Any, npz: Any, prefix: str) -> bool:
    """Whether a parameter gradient is NaN in Caffe's wherever it is in ours and more, in a run whose
    forward blobs hold NaN."""
    import numpy as np

    ours, caffes = np.isnan(got), np.isnan(want)
    if np.array_equal(ours, caffes) or (ours & ~caffes).any():
        return False
    return any(np.isnan(npz[k]).any() for k in npz.files if k.startswith(f"{prefix}output:"))


def _known_blas_non_finite(case: dict, npz: Any, prefix: str) -> None:
    """Raise :class:`KnownDifference` for SSD's Normalize over non-finite inputs: its sums and scalings
    are BLAS calls (``sasum``, ``gemv``, ``sscal``), and the oracle's OpenBLAS kernels do not carry NaN
    and infinities as IEEE arithmetic does (``sscal`` by 0 writes zeros over NaN; its ``sasum`` gave
    a finite norm over a NaN), so another BLAS gives other values there."""
    import numpy as np

    inputs = [npz[k] for k in npz.files if k.startswith(f"{prefix}input:")]
    if "Normalize" in case["layer_types"] and any(not np.isfinite(v).all() for v in inputs):
        raise KnownDifference(
            "SSD's Normalize over NaN or infinities: the oracle's OpenBLAS sums and scales them unlike "
            "IEEE arithmetic (a NaN dropped or zeroed), as another BLAS would not"
        )


def _overflowing_sums(got: Any, want: Any, npz: Any, prefix: str) -> bool:
    """Whether a parameter gradient differs from Caffe's only in where it is not finite, in a run
    whose forward blobs hold infinities or +-FLT_MAX."""
    import numpy as np

    if all(np.array_equal(mask(got), mask(want)) for mask in (np.isnan, np.isposinf, np.isneginf)):
        return False
    largest = np.finfo(np.float32).max
    outputs = [npz[k] for k in npz.files if k.startswith(f"{prefix}output:")]
    return any(np.isinf(v).any() or (np.abs(v) == largest).any() for v in outputs)


#: Our refusals of what the oracle takes, each a difference of the oracle's (or Caffe's ``DCHECK``s,
#: or what Caffe computes in place over memory it overwrites), not ours: ``(pattern of our message,
#: the reason check prints)``.
_KNOWN_REFUSALS = (
    (r"computes blob '[^']*' in place, but ",
     "Caffe computes this layer in place over the memory it reads (tests/test_graph_in_place_refused.py); "
     "we refuse it in one line"),
    (r"\((Convolution|Deconvolution|Im2col)\): give both stride_h and stride_w",
     "the oracle's fork defaults stride_h and stride_w to 1 (BVLC: none, so the half left out is 0, "
     "which BaseConvolutionLayer divides by)"),
    (r"\((Scale|Bias)\): bottom .* does not match bottom",
     "the oracle's Scale and Bias take a factor blob of another shape (brocolli commented out BVLC's "
     "shape CHECK, which we keep)"),
    (r"\(Eltwise\): all bottoms must have the same shape",
     "the oracle's Eltwise takes bottoms of other shapes (brocolli commented out BVLC's shape CHECK, "
     "which we keep)"),
    (r"label \S+ \(value \d+ of the label blob\) is not one of the",
     "a label outside the classes: Caffe's checks of it are DCHECKs (it reads past its probabilities); "
     "we refuse it"),
)  # fmt: skip


def _known_refusal(exc: ValueError) -> None:
    """Raise :class:`KnownDifference` where ``exc`` is one of :data:`_KNOWN_REFUSALS`."""
    for pattern, reason in _KNOWN_REFUSALS:
        if re.search(pattern, str(exc)):
            raise KnownDifference(reason) from None


class KnownDifference(Exception):
    """A difference from Caffe that is Caffe's own, read in its sources (module docstring)."""


def _known_second_run(index: int, exc: ValueError) -> None:
    """Raise :class:`KnownDifference` where a second run's load fails as Caffe's reuse of the first
    run's blobs explains: a parameter blob whose shape follows the input (Caffe keeps reading the
    first run's), a top left empty by the new size (Caffe computes into the first run's memory),
    ArgMax's top_k past a smaller axis (checked in LayerSetUp only: Caffe reads past the axis), and a
    Scale's or Bias's factor blob (a Parameter) still of the first size (brocolli's do not check)."""
    from converters.errors import WeightsMismatchError

    if index == 0:
        return
    if isinstance(exc, WeightsMismatchError):
        raise KnownDifference("a parameter blob's shape follows the input; Caffe reads the first run's")
    if any(words in str(exc) for words in ("Caffe cannot compute an empty blob", "(output size 0)",
                                           "leaves no output")):  # fmt: skip
        raise KnownDifference("an empty top at the second size; Caffe computes into the first run's memory")
    if ("(Scale)" in str(exc) or "(Bias)" in str(exc)) and "does not match bottom" in str(exc):
        raise KnownDifference("a factor blob of the first size; brocolli's Scale and Bias do not check it")
    if "(ArgMax): top_k" in str(exc) and "exceeds" in str(exc):
        raise KnownDifference("ArgMax's top_k checked at setup only; Caffe reads past the second size's axis")


#: Seeded random inputs a net Caffe stopped at runs on before it counts as accepted (a check that
#: reads values, such as an unpooling mask's index past a cropped output, may pass on some draws).
REFUSED_DRAWS = 8


#: What glibc and the kernel print where a process wrote outside its memory.
MEMORY_CORRUPTION = ("double free", "corruption", "free(): invalid", "Segmentation fault")


def _max_window_without_input(net: Path) -> bool:
    """Whether a 2-D MAX Pooling of ``net`` (at its declared sizes) has a window that holds no input,
    or may hold only NaN and -inf (the ``nonfinite`` family's inputs): Caffe's forward gives it
    -FLT_MAX and mask -1, and its backward then writes before the blob."""
    import torch

    from converters import load_caffe
    from converters.layers.pooling import CaffePooling

    empty: list[bool] = []

    def look(module: CaffePooling, args: tuple) -> None:
        sizes = args[0].shape[-len(module.kernel):]
        for size, k, st, p in zip(sizes, module.kernel, module.stride, module.pad, strict=True):
            pooled = -(-(size + 2 * p - k) // st) + 1
            if p and (pooled - 1) * st >= size + p:
                pooled -= 1
            starts = [o * st - p for o in range(pooled)]
            empty.append(any(min(start + k, size) <= max(start, 0) for start in starts))

    graph = load_caffe(net, strict=False, with_loss=True, optimize=False)
    family = json.loads((net.parent.parent / "target.json").read_text()).get("family")
    if family == "nonfinite" and any(
        isinstance(m, CaffePooling) and m.method == "MAX" and not m.global_pooling for m in graph.modules()
    ):
        return True
    for module in graph.modules():
        if isinstance(module, CaffePooling) and module.method == "MAX" and not module.global_pooling:
            module.register_forward_pre_hook(look)
    with torch.no_grad():
        graph(**{name: torch.zeros(shape) for name, shape in graph.caffe.inputs.items()})
    return any(empty)


def check_refused(net: Path) -> str | None:
    """What happened to a net Caffe stopped at: ``None`` if we refuse it too, when it is loaded or
    when it runs on any of :data:`REFUSED_DRAWS` seeded random inputs of its declared sizes (Caffe's
    own checks run in its forward)."""
    import torch

    from converters import load_caffe

    options_file = net.with_suffix(".json")  # the case's load options (variants), where it had any
    options = json.loads(options_file.read_text()) if options_file.is_file() else {}
    generator = torch.Generator().manual_seed(REFUSED_DRAWS)
    try:
        graph = load_caffe(net, strict=False, with_loss=True, **options)
        with torch.no_grad():
            shapes = graph.caffe.inputs.items()
            for _ in range(REFUSED_DRAWS):
                graph(**{name: torch.randn(shape, generator=generator) for name, shape in shapes})
    except (ValueError, RuntimeError):
        return None
    return "accepted"


def check_solver_case(folder: Path) -> None:
    import tests.test_train_solver as solver_tests

    solver_tests.FIXTURES = folder.parent
    with tempfile.TemporaryDirectory() as tmp:
        try:
            solver_tests.test_ten_iterations_give_caffes_losses_and_parameters(folder.name, Path(tmp))
        except AssertionError as exc:
            if "hardly moved" not in str(exc):  # (a small rate: nothing to compare)
                raise


def check_fcn_case(folder: Path) -> None:
    import torch

    import tests.test_fcn_parity as fcn_tests
    from converters import load_caffe

    fcn_tests.ROOT = folder.parent
    info = fcn_tests.case(folder.name)
    weights = fcn_tests.regenerate_weights(folder.name)
    assert fcn_tests.seeded_weights.weights_digest(weights) == info["weights"]["digest"]
    for optimize in (True, False):
        net = load_caffe(folder / "deploy.prototxt", weights, optimize=optimize)
        for run, recorded in enumerate(info["runs"]):
            for call in range(2 if optimize else 1):  # (the second reads the kept fixed values)
                with torch.no_grad():
                    got = net(**fcn_tests.run_inputs(folder.name, run))
                for blob in recorded["outputs"]:
                    value = got[blob] if isinstance(got, dict) else got
                    want = fcn_tests.arrays(folder.name)[f"output:{blob}:{run}"]
                    what = f"optimize={optimize} run {run} call {call} {blob}"
                    fcn_tests.assert_matches_caffe(value, want, what)


def check_zoo_case(folder: Path, root: Path) -> None:
    import numpy as np
    import torch

    from converters import load_caffe
    from tests import zoo

    case = json.loads((folder / "case.json").read_text())
    definition, shapes = zoo.load(root / "zoo" / folder.name)
    weights = zoo.draw_weights(definition, shapes)
    inputs = {b: torch.from_numpy(v) for b, v in zoo.draw_inputs(shapes).items()}
    expected = np.load(folder / "io.npz")
    blobs = [key.split(":", 1)[1] for key in expected.files]
    for optimize in (True, False):
        net = load_caffe(definition, weights, input_shapes=shapes, outputs=blobs, optimize=optimize)
        for call in range(2 if optimize else 1):  # (a second forward reads the border's kept values)
            with torch.no_grad():
                got = net(**{b: v for b, v in inputs.items() if b in net.caffe.inputs})
            for blob in blobs:
                want = expected[f"output:{blob}"]
                value = zoo.subsample(got[blob].numpy(), case.get("subsample", {}).get(blob, 1)).reshape(
                    want.shape
                )
                _compare(value, want, f"optimize={optimize} call {call} {blob}")


def check_fork_case(folder: Path) -> None:
    """The default graph's outputs within the fork tests' tolerance, and the backward pass."""
    import tests.test_forks_layers as fork_tests

    fork_tests.FORKS = folder.parent
    fork_tests.test_fork_layer_case_matches_its_oracle(folder.name)
    case = json.loads((folder / "case.json").read_text())
    if any(run.get("backward") for run in case["runs"]):
        fork_tests.test_fork_layer_gradients_match_the_oracles_backward_pass(folder.name)


def check(root: Path) -> int:
    from converters.errors import UnsupportedLayerError

    target = json.loads((root / "target.json").read_text())["target"]
    if target == "forks":  # (C3D's cases are layer fixtures)
        cases = sorted((p.parent for p in (root / "forks").glob("*/case.json")), key=lambda p: p.name)
        cases += sorted((p.parent for p in (root / "layers").glob("*/case.json")), key=lambda p: p.name)

        def run(folder: Path) -> None:
            (check_layer_case if folder.parent.name == "layers" else check_fork_case)(folder)

    elif target == "layers":
        cases = sorted((p.parent for p in (root / "layers").glob("*/case.json")), key=lambda p: p.name)
        run = check_layer_case  # type: ignore[assignment]
    elif target == "solvers":
        cases, run = sorted(p.parent for p in root.glob("*/case.json")), check_solver_case
    elif target == "fcn":
        cases, run = sorted(p.parent for p in root.glob("*/case.json")), check_fcn_case
    else:
        cases = sorted(p.parent for p in (root / "fixtures").glob("*/case.json"))
        run = lambda folder: check_zoo_case(folder, root)  # noqa: E731
    failures = known = unsupported = 0
    for folder in cases:
        try:
            run(folder)
            print(f"ok {folder.name}", flush=True)
        except KnownDifference as why:
            known += 1
            print(f"known {folder.name}: {why}", flush=True)
        except UnsupportedLayerError as exc:  # (a form of Caffe's we refuse by name; listed apart)
            unsupported += 1
            print(f"unsupported {folder.name}: {str(exc).splitlines()[0][:300]}", flush=True)
        except Exception as exc:
            failures += 1
            print(f"FAIL {folder.name}: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}", flush=True)
    accepted = 0
    for net in sorted((root / "refused").glob("*.prototxt")):
        why = net.with_suffix(".why")
        if check_refused(net) is not None:
            reason = why.read_text() if why.exists() else "?"
            if any(words in reason for words in MEMORY_CORRUPTION) and _max_window_without_input(net):
                known += 1
                why_known = ("Caffe's MAX pooling backward adds the diff of a window that holds no input (or "
                             "only NaN and -inf) at index -1, before the blob "
                             f"({reason.strip()[:80]})")  # fmt: skip
                print(f"known {net.stem}: {why_known}", flush=True)
                continue
            accepted += 1
            print(f"ACCEPTED {net.stem}, which Caffe stopped at: {reason}", flush=True)
    print(
        f"{len(cases)} cases, {failures} differ from Caffe ({known} more as Caffe's own artifacts, "
        f"{unsupported} refused as unsupported); {accepted} nets Caffe stopped at were accepted"
    )
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make", help="let Caffe make random cases (the oracle's Python)")
    make.add_argument("target", choices=["layers", "forks", "solvers", "fcn", "zoo"])
    make.add_argument("--seed", type=int, default=1)
    make.add_argument("--count", type=int, default=100)
    make.add_argument("--out", type=Path, required=True, help="a folder of its own (made)")
    family_help = f"layers: {', '.join(LAYER_FAMILIES)}; forks: {', '.join(FORK_KINDS)}; zoo: a net's folder"
    make.add_argument("--family", metavar="FAMILY", help=f"only this family of cases ({family_help})")
    look = commands.add_parser("check", help="compare converters with what Caffe made (the project's .venv)")
    look.add_argument("folder", type=Path)
    one = commands.add_parser("make-one")  # (internal: one layer case in a child process)
    one.add_argument("seed", type=int)
    one.add_argument("index", type=int)
    one.add_argument("out", type=Path)
    one.add_argument("--forks", action="store_true")
    one.add_argument("--family")
    args = parser.parse_args(argv)
    if args.command == "make-one":
        if not args.forks:
            make_layer_case(args.seed, args.index, args.out, args.family)
        elif args.family is None:  # (a fifth of them C3D's)
            (make_c3d_case if args.index % 5 == 4 else make_fork_case)(args.seed, args.index, args.out)
        else:
            maker = make_c3d_case if args.family == "c3d" else make_fork_case
            maker(args.seed, args.index, args.out, args.family)
        return 0
    if args.command == "check":
        if not (args.folder / "target.json").exists():
            parser.error(f"{args.folder} holds no target.json: make it with 'make' first")
        return check(args.folder)
    families = {"layers": LAYER_FAMILIES, "forks": FORK_KINDS, "zoo": _zoo_nets()}.get(args.target, ())
    if args.family and args.family not in families:
        known = ", ".join(families) or "none"
        parser.error(f"--family {args.family} is not one of the {args.target} target's: {known}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "target.json").write_text(json.dumps({"target": args.target, "family": args.family}))
    makers = {
        "layers": make_layers,
        "forks": make_forks,
        "solvers": make_solvers,
        "fcn": make_fcn,
        "zoo": make_zoo,
    }
    if args.family:
        makers[args.target](args.seed, args.count, args.out, args.family)
    else:
        makers[args.target](args.seed, args.count, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
