#!/usr/bin/env python3
"""Reference outputs for the real nets of ``tests/real_nets.py`` (public definitions not in
``../shared``, written by our own code): real Caffe runs each with the seeded weights and inputs of
that module and this writes ``tests/fixtures/real_nets/<net>/`` (``io.npz``: the inputs and
outputs of each forward pass; ``case.json``). Run from the repository root with the oracle's
Python (tools/README.md)::

    GLOG_minloglevel=2 PYTHONPATH=/work/oracle/brocolli-caffe-9.0.2/python:. \\
        /work/oracle/venv/bin/python tools/make_real_net_fixtures.py [NET ...]

``c3d`` needs the fork oracle (``PYTHONPATH=/work/oracle/forks/src/python:.``), which is also a
BVLC Caffe: it makes every net's fixtures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("GLOG_minloglevel", "2")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from converters import format_message, parse_text  # noqa: E402
from converters.atomic import atomic_write  # noqa: E402
from tests.real_nets import (  # noqa: E402
    C3D_INPUT,
    FIXTURES,
    SEED,
    c3d_input,
    c3d_sport1m,
    lrcn_steps,
    lrcn_word_to_preds,
)
from tests.zoo import draw_weights  # noqa: E402

ORACLE = "BVLC Caffe 1.0 as packaged in the brocolli-caffe 9.0.2 sdist, CPU build, OpenBLAS 1 thread"
FORK_ORACLE = (
    "the fork oracle (tools/build_fork_oracle.sh): brocolli-caffe 9.0.2 plus C3D v1.0's Convolution3D and "
    "Pooling3D compiled from C3D's sources, CPU build, OpenBLAS 1 thread"
)


def run_steps(caffe, net_text: str, weights: dict, steps: list[dict], blobs: list[str]) -> dict:
    """Caffe's values of ``blobs`` after each forward pass of one net (its state carried)."""
    with tempfile.TemporaryDirectory() as tmp:
        proto = Path(tmp) / "net.prototxt"
        proto.write_text(net_text)
        net = caffe.Net(str(proto), caffe.TEST)
    for layer, arrays in weights.items():
        for blob, array in zip(net.params[layer], arrays, strict=True):
            blob.data[...] = array
    out = {}
    for k, inputs in enumerate(steps):
        for blob, value in inputs.items():
            net.blobs[blob].reshape(*value.shape)
            net.blobs[blob].data[...] = value
            out[f"step{k}/input:{blob}"] = value
        net.forward()
        for blob in blobs:
            out[f"step{k}/output:{blob}"] = np.array(net.blobs[blob].data, np.float32)
    return out


def write_case(name: str, arrays: dict[str, np.ndarray], info: dict) -> None:
    """``tests/fixtures/real_nets/<name>/``: ``io.npz`` and ``case.json``, each written whole."""
    folder = FIXTURES / name
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / "io.npz") as handle:
        np.savez_compressed(handle, **arrays)
    with atomic_write(folder / "case.json") as handle:
        handle.write((json.dumps(info, indent=1) + "\n").encode())
    print(f"{name}:", {k: v.shape for k, v in arrays.items() if k.startswith("step0/output")})


def make_lrcn(caffe) -> None:
    net = lrcn_word_to_preds()
    steps = lrcn_steps()
    shapes = {blob: value.shape for blob, value in steps[0].items()}
    weights = draw_weights(net, shapes, SEED)
    blobs = ["lstm1", "lstm2", "predict", "probs"]
    arrays = run_steps(caffe, format_message(net), weights, steps, blobs)
    info = {
        "net": "LRCN captioning language model (BVLC/caffe examples/coco_caption/"
        "lrcn_word_to_preds.deploy.prototxt), written by tests/real_nets.py",
        "oracle": ORACLE,
        "seed": SEED,
        "steps": len(steps),
        "compared": blobs,
        "notes": [
            "one word per forward pass; step 0 starts the captions (cont 0), steps 1 and 2 continue "
            "them: the LSTMs start from the state the previous pass left",
        ],
    }
    write_case("lrcn", arrays, info)


def make_c3d(caffe) -> None:
    if "C3DConvolution3D" not in caffe.layer_type_list():
        raise SystemExit(
            "c3d: run with the fork oracle's pycaffe (PYTHONPATH=/work/oracle/forks/src/python:.)"
        )
    ours = parse_text(c3d_sport1m())
    weights = draw_weights(ours, {"data": C3D_INPUT}, SEED)
    blobs = ["pool5", "fc6-1", "fc8-1", "prob"]
    arrays = run_steps(caffe, c3d_sport1m(oracle=True), weights, [{"data": c3d_input()}], blobs)
    info = {
        "net": "C3D's Sports-1M feature extractor (facebook/C3D C3D-v1.0/examples/c3d_feature_extraction/"
        "prototxt/c3d_sport1m_feature_extractor_frm.prototxt), written by tests/real_nets.py in C3D "
        "v1.0's V1 form",
        "oracle": FORK_ORACLE,
        "seed": SEED,
        "steps": 1,
        "compared": blobs,
        "notes": [
            "Caffe ran the same net as V2 layers with the oracle's C3D type names (c3d_sport1m(oracle=True))"
        ],
    }
    write_case("c3d", arrays, info)


#: A small net in C3D v1.0's V1 form, for a caffemodel in C3D's own binary layout.
C3D_SMALL_NET = """name: "c3d_small"
layers { name: "data" type: VIDEO_DATA top: "data" }
layers { name: "conv1a" type: CONVOLUTION3D bottom: "data" top: "conv1a"
  convolution_param { num_output: 3 kernel_size: 3 kernel_depth: 3 pad: 1 temporal_pad: 1 } }
layers { name: "pool1" type: POOLING3D bottom: "conv1a" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 kernel_depth: 2 stride: 2 temporal_stride: 2 } }
layers { name: "fc6" type: INNER_PRODUCT bottom: "pool1" top: "fc6" inner_product_param { num_output: 5 } }
"""


def c3d_proto_classes() -> dict:
    """C3D v1.0's NetParameter, LayerParameter and BlobProto (the fields a caffemodel holds, with
    C3D's numbers and its LayerType values), built as Google protobuf classes from a descriptor:
    an encoder independent of ours."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="c3d_v1.proto", package="c3d", syntax="proto2")

    def message(
        name: str, fields: list[tuple[str, int, int, int, str | None]]
    ) -> descriptor_pb2.DescriptorProto:
        msg = file.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            field = msg.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:
                field.type_name = type_name
            if kind == F.TYPE_FLOAT and label == F.LABEL_REPEATED:
                field.options.packed = True
        return msg

    opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
    message("BlobProto", [("num", 1, F.TYPE_INT32, opt, None), ("channels", 2, F.TYPE_INT32, opt, None),
                          ("length", 3, F.TYPE_INT32, opt, None), ("height", 4, F.TYPE_INT32, opt, None),
                          ("width", 5, F.TYPE_INT32, opt, None), ("data", 6, F.TYPE_FLOAT, rep, None),
                          ("diff", 7, F.TYPE_FLOAT, rep, None)])  # fmt: skip
    layer = message("LayerParameter", [
        ("bottom", 2, F.TYPE_STRING, rep, None), ("top", 3, F.TYPE_STRING, rep, None),
        ("name", 4, F.TYPE_STRING, opt, None), ("type", 5, F.TYPE_ENUM, opt, ".c3d.LayerParameter.LayerType"),
        ("blobs", 6, F.TYPE_MESSAGE, rep, ".c3d.BlobProto"),
    ])  # fmt: skip
    enum = layer.enum_type.add(name="LayerType")
    for name, number in (("NONE", 0), ("INNER_PRODUCT", 14), ("CONVOLUTION3D", 30), ("POOLING3D", 31)):
        enum.value.add(name=name, number=number)
    message(
        "NetParameter",
        [("name", 1, F.TYPE_STRING, opt, None), ("layers", 2, F.TYPE_MESSAGE, rep, ".c3d.LayerParameter")],
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"c3d.{name}"))
            for name in ("NetParameter", "LayerParameter", "BlobProto")}  # fmt: skip


def make_c3d_caffemodel(caffe) -> None:
    """A caffemodel in C3D v1.0's binary layout (its BlobProto numbers num, channels, length, height,
    width, data = 1..6; 5-D legacy shapes), written with Google protobuf, and the values in it."""
    classes = c3d_proto_classes()
    rng = np.random.default_rng(SEED + 3)
    blobs = {  # C3D's shapes: (num, channels, length, height, width)
        "conv1a": [(3, 2, 3, 3, 3), (1, 1, 1, 1, 3)],
        "fc6": [(1, 1, 1, 5, 3 * 2 * 3 * 3), (1, 1, 1, 1, 5)],
    }
    types = {"conv1a": 30, "fc6": 14}
    net = classes["NetParameter"](name="c3d_small")
    net.layers.add(name="data_in", type=0)
    values = {}
    for name, shapes in blobs.items():
        layer = net.layers.add(name=name, type=types[name])
        for index, shape in enumerate(shapes):
            array = rng.normal(0, 0.3, shape).astype(np.float32)
            values[f"{name}/{index}"] = array
            blob = layer.blobs.add(
                num=shape[0], channels=shape[1], length=shape[2], height=shape[3], width=shape[4]
            )
            blob.data.extend(array.reshape(-1).tolist())
    folder = FIXTURES / "c3d_caffemodel"
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / "c3d_v1.caffemodel") as handle:
        handle.write(net.SerializeToString())
    with atomic_write(folder / "values.npz") as handle:
        np.savez_compressed(handle, **values)
    (folder / "c3d_v1.prototxt").write_text(C3D_SMALL_NET)
    print("c3d_caffemodel:", {k: v.shape for k, v in values.items()})


NETS = {"lrcn": make_lrcn, "c3d": make_c3d, "c3d_caffemodel": make_c3d_caffemodel}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("nets", nargs="*", help=f"nets to regenerate (default: all of {', '.join(NETS)})")
    args = parser.parse_args()
    unknown = [n for n in args.nets if n not in NETS]
    if unknown:
        print(f"error: unknown net(s) {', '.join(unknown)}; known: {', '.join(NETS)}", file=sys.stderr)
        return 2
    import caffe

    caffe.set_mode_cpu()
    for name in args.nets or NETS:
        NETS[name](caffe)
    return 0


if __name__ == "__main__":
    sys.exit(main())
