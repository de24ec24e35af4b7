"""Fuzz targets for the surfaces added after the readers (issue 21): layer parameter values, the
training data of ``python -m converters.train`` (HDF5Data and ImageData: source lists, HDF5 files,
images and labels), ``reproduce.train``'s VOC-layout data (split lists, pictures, label images)
and its resume state (``run.json``).

Each case is one byte string, so a finding saves and replays like the readers' cases. A case that
needs several files is a JSON object (:func:`pack`): ``files`` (name -> bytes as latin-1 text),
``special`` (name -> ``fifo``, ``dir`` or ``loop``: made in the case's folder at run time) and
target settings. The generators are pure functions of a ``random.Random``; every file a case makes
lies in its temporary folder.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import re
import struct
import zlib
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MAX_FORWARD_VALUES = 4_000_000
MAX_BLOB_VALUES = 100_000_000
#: A forward of more multiply-adds than this (as :func:`forward_work` counts them) is a long run,
#: not a fault: a Deconvolution with a 1,000,000-wide kernel over a 65,536-wide input does
#: 10^12 of them in Caffe too, where its column buffer even passes INT_MAX.
MAX_FORWARD_WORK = 20_000_000_000
#: The region layers, and their work per region and feature value (the masked max steps over
#: ``pooled_w + 1`` bins; 32 bounds the fixtures' and the zoo's)
REGION_LAYERS = {"ROIPooling", "PSROIPooling"}
REGION_WORK_PER_VALUE = 32

# ----------------------------------------------------------------------------------------------
# Cases made of several files


def pack(files: dict[str, bytes], special: dict[str, str] | None = None, **settings: Any) -> bytes:
    """One case: the files (and special files) a target lays out, and its settings."""
    record = {"files": {k: v.decode("latin-1") for k, v in files.items()}, "special": special or {}}
    record.update(settings)
    return json.dumps(record, sort_keys=True).encode()


def unpack(data: bytes, directory: str) -> dict[str, Any]:
    """Lay the case out in ``directory``; its settings (a mutated case that is not JSON is a case
    of nothing but defaults)."""
    try:
        record = json.loads(data)
    except ValueError:
        record = {}
    if not isinstance(record, dict):
        record = {}
    root = Path(directory)
    for name, text in dict(record.get("files") or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(str(text).encode("latin-1", "replace"))
    for name, kind in dict(record.get("special") or {}).items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() or path.is_symlink():
            path.unlink() if not path.is_dir() else None
        if kind == "fifo" and not path.exists():
            os.mkfifo(path)
        elif kind == "dir":
            path.mkdir(exist_ok=True)
        elif kind == "loop" and not path.exists():
            os.symlink(path.name, path)
    return record


# ----------------------------------------------------------------------------------------------
# Hostile values and files

HOSTILE_VALUES = [
    "nan", "-nan", "inf", "-inf", "0", "-0", "-1", "1", "2", "3", "0.5", "-0.5", "1e30", "-1e30",
    "1e-30", "1e-45", "3.4028235e38", "2147483647", "-2147483648", "4294967295", "65536", "1000000",
    "1e9", "7",
]  # fmt: skip
_VALUE = re.compile(r"(\b[a-z_][a-z0-9_]*\s*:\s*)(-?(?:[0-9][0-9.eE+-]*|\.[0-9]+)|-?nan|-?inf)(?=\s)")


def parameter_seeds() -> list[bytes]:
    """Every fork-layer fixture net and the small BVLC layer nets: the parameter values to poison."""
    paths = sorted(FIXTURES.glob("forks/*/net.prototxt")) + sorted(FIXTURES.glob("layers/*/net.prototxt"))
    return [p.read_bytes() for p in paths if p.stat().st_size < 20_000]


def poison_values(rng: random.Random, text: bytes) -> bytes:
    """``text`` with one to three numeric field values replaced by NaN, inf, 0, negatives or huge
    numbers (the structure, names and types stay: only values change)."""
    source = text.decode("utf-8", "replace")
    spots = list(_VALUE.finditer(source))
    if not spots:
        return text
    chosen = sorted(rng.sample(spots, min(len(spots), rng.randint(1, 3))), key=lambda m: m.start())
    out, last = [], 0
    for match in chosen:
        out += [source[last : match.start(2)], rng.choice(HOSTILE_VALUES)]
        last = match.end(2)
    out.append(source[last:])
    return "".join(out).encode()


def png(width: int, height: int, mode: str = "L", rng: random.Random | None = None) -> bytes:
    """A PNG by PIL of ``mode`` with random pixels."""
    from PIL import Image

    rng = rng or random.Random(0)
    bands = {"L": 1, "P": 1, "RGB": 3, "RGBA": 4, "1": 1, "I;16": 1, "I": 1, "LA": 2}[mode]
    size = width * height * bands * (2 if mode == "I;16" else 4 if mode == "I" else 1)
    raw = bytes(rng.randrange(256) for _ in range(min(size, 4096))) * (size // 4096 + 1)
    if mode == "1":
        image = Image.new("1", (width, height))
    else:
        image = Image.frombytes(mode, (width, height), raw[:size])
    if mode == "P":
        image.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def jpeg(width: int, height: int, rng: random.Random) -> bytes:
    from PIL import Image

    raw = bytes(rng.randrange(256) for _ in range(width * height * 3))
    buffer = io.BytesIO()
    Image.frombytes("RGB", (width, height), raw).save(buffer, "JPEG", quality=rng.choice([5, 75, 95]))
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG declaring ``width`` x ``height`` grey pixels whose data is a few bytes: a decompression
    bomb when large, a truncated image always."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = chunk(b"IDAT", zlib.compress(b"\0" * 64))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + pixels + chunk(b"IEND", b"")


def damage(rng: random.Random, data: bytes) -> bytes:
    """Bytes cut, flipped or duplicated."""
    raw = bytearray(data)
    kind = rng.choice(["cut", "flip", "flip", "dup", "empty"])
    if kind == "cut" and raw:
        del raw[rng.randrange(len(raw)) :]
    elif kind == "flip" and raw:
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
    elif kind == "dup" and raw:
        i = rng.randrange(len(raw))
        raw[i:i] = raw[i : i + rng.randint(1, 64)]
    elif kind == "empty":
        raw = bytearray()
    return bytes(raw)


def picture(rng: random.Random, width: int, height: int, *, label: bool = False) -> bytes:
    """A picture or label image as users' folders hold them: mostly fine, sometimes odd (mode, size,
    format), damaged, or a bomb."""
    roll = rng.random()
    if roll < 0.04:
        return png_header_only(rng.choice([70000, 20000, 9000, 1]), rng.choice([70000, 20000, 9000, 1]))
    if roll < 0.12:
        return damage(rng, png(width, height, "P" if label else "RGB", rng))
    if roll < 0.2:
        return rng.choice([b"", b"not an image", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"])
    if roll < 0.3:
        width, height = rng.choice([(1, 1), (width + 1, height), (width, height * 2), (3, 500)])
    if label:
        return png(width, height, rng.choice(["P", "P", "P", "L", "RGB", "I;16", "1", "LA"]), rng)
    if rng.random() < 0.4:
        return jpeg(width, height, rng)
    return png(width, height, rng.choice(["RGB", "RGB", "L", "RGBA", "P", "I;16"]), rng)


SPECIALS = ["fifo", "dir", "loop"]


def maybe_special(rng: random.Random, name: str, special: dict[str, str], p: float = 0.03) -> bool:
    """Make ``name`` a FIFO, a folder or a symlink loop with probability ``p``."""
    if rng.random() < p:
        special[name] = rng.choice(SPECIALS)
        return True
    return False


# ----------------------------------------------------------------------------------------------
# params: layer parameter values


def params_case(rng: random.Random, seeds: list[bytes]) -> bytes:
    return poison_values(rng, rng.choice(seeds))


def forward_work(net: Any) -> int:
    """About how many multiply-adds one forward of ``net`` does: each layer's weights times the
    positions of its largest bottom, and each region layer's regions times its feature maps."""
    info = net.caffe
    work = 0
    for name, kind in info.layers:
        bottoms = info.bottom_shapes.get(name, [])
        if kind in REGION_LAYERS and len(bottoms) == 2 and bottoms[1]:
            work += bottoms[1][0] * math.prod(bottoms[0][1:]) * REGION_WORK_PER_VALUE
        weights = info.parameter_shapes.get(name)
        if weights and weights[0]:
            positions = max((s[0] * math.prod(s[2:]) for s in bottoms if s), default=1)
            work += math.prod(weights[0]) * positions
    return work


def load_and_run(path: str, weights: str | None = None) -> None:
    """``load_caffe(path, weights, strict=False)``, then one forward on zeros where the inputs and
    blobs are small (the worker's memory cap is for the build; a big forward's workspace is no
    fault)."""
    import torch

    from converters import load_caffe

    net = load_caffe(path, weights, strict=False)
    shapes = net.caffe.inputs
    blobs = sum(math.prod(s) for s in net.caffe.blob_shapes.values())
    small = sum(math.prod(s) for s in shapes.values()) <= MAX_FORWARD_VALUES
    if small and blobs <= MAX_BLOB_VALUES and forward_work(net) <= MAX_FORWARD_WORK:
        with torch.no_grad():
            try:
                net(**{name: torch.zeros(shape) for name, shape in shapes.items()})
            except RuntimeError as exc:
                # a kernel's workspace (a Deconvolution's column buffer) past the worker's memory:
                # torch's allocator refuses it, and every command reports that as one line
                # (converters.cli: "out of memory ..."); anything else is a finding
                if "can't allocate memory" not in str(exc):
                    raise


def target_params(data: bytes, directory: str) -> None:
    """A layer fixture net whose parameter values were poisoned, loaded with random weights and run
    (:func:`load_and_run`)."""
    path = Path(directory, "net.prototxt")
    path.write_bytes(data)
    load_and_run(str(path))


# ----------------------------------------------------------------------------------------------
# solvedata: HDF5Data and ImageData through `python -m converters.train`

SOLVER = (
    'net: "net.prototxt"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: {iters}\ndisplay: 1\n'
    "snapshot_after_train: false\nrandom_seed: 1\n"
)
LOSSES = [
    "SoftmaxWithLoss", "SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss", "HingeLoss",
    "InfogainLoss", "Accuracy",
]  # fmt: skip


class Chooser:
    """Choices of a case at one hostility: ``pick(usual, odd)`` takes from ``odd`` with probability
    ``hostility`` (a case is mostly sound, so the code past the first check runs too)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.hostility = rng.choice([0.0, 0.03, 0.1, 0.3])

    def odd(self, scale: float = 1.0) -> bool:
        return self.rng.random() < self.hostility * scale

    def pick(self, usual: list[Any], odd: list[Any]) -> Any:
        return self.rng.choice(odd if odd and self.odd() else usual)


def _loss_layers(c: Chooser, classes: int) -> str:
    loss = c.pick(["SoftmaxWithLoss", "SoftmaxWithLoss", "Accuracy", "InfogainLoss"], LOSSES)
    extra = ' infogain_loss_param { source: "H.binaryproto" }' if loss == "InfogainLoss" else ""
    if loss == "SoftmaxWithLoss" and c.rng.random() < 0.3:
        extra = f" loss_param {{ ignore_label: {c.pick(['255', '0'], ['-1', '3', '2147483647'])} }}"
    if loss == "Accuracy":
        extra = f" accuracy_param {{ ignore_label: 1 top_k: {c.pick(['1', '2'], ['50', '0'])} }}"
    ip = (
        f'layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param '
        f'{{ num_output: {classes} weight_filler {{ type: "xavier" }} }} }}\n'
    )
    tail = (
        'layer { name: "sum" type: "EuclideanLoss" bottom: "ip" bottom: "ip" top: "zero" }\n'
        if loss == "Accuracy"
        else ""
    )
    loss_layer = f'layer {{ name: "loss" type: "{loss}" bottom: "ip" bottom: "label" top: "loss"{extra} }}\n'
    return ip + loss_layer + tail


def _hdf5_file(c: Chooser, classes: int, n: int) -> bytes:
    """An HDF5 data file of ``n`` rows: ``data`` and ``label`` of (sometimes odd) shapes, types and
    values; sometimes missing, a group, huge in declaration only, or strings."""
    import h5py
    import numpy as np

    buffer = io.BytesIO()
    rng = c.rng
    values_rng = np.random.default_rng(rng.randrange(2**32))
    with h5py.File(buffer, "w") as f:
        for name in ("data", "label"):
            kind = c.pick(["dataset"], ["missing", "group", "huge", "strings", "dataset"])
            if kind == "missing":
                continue
            if kind == "group":
                f.create_group(name)
            elif kind == "huge":
                f.create_dataset(name, shape=(36000, 3, 100, 100), dtype="f4")  # declared, not written
            elif kind == "strings":
                f[name] = np.array([b"text", b"more"])
            if kind != "dataset":
                continue
            if name == "data":
                shape = c.pick([(n, 2, 3, 3), (n, 5)], [(n,), (n, 1, 1, 1, 2), (), (n + 1, 2, 3, 3), (0, 5)])
                values = values_rng.normal(size=shape)
            else:
                shape = c.pick([(n,), (n, 1)], [(n + 1,), (n, classes), (), (n, 2, 2)])
                values = values_rng.integers(0, classes, size=shape).astype(np.float64)
                if values.size and c.odd():
                    values.flat[rng.randrange(values.size)] = rng.choice(
                        [float(classes), 30.0, -1.0, math.nan, math.inf, -math.inf, 1e20, 255.0, 0.5, -0.0]
                    )
            dtype = c.pick(["f4", "f4", "f8"], ["i4", "u1", "bool", "f2", "c8", "i8"])
            f.create_dataset(name, data=np.asarray(values).astype(dtype))
    return buffer.getvalue()


def solvedata_case(rng: random.Random) -> bytes:
    """A train net with an HDF5Data or ImageData layer, its source list and its files."""
    c = Chooser(rng)
    files: dict[str, bytes] = {}
    special: dict[str, str] = {}
    classes = rng.choice([2, 3, 5])
    batch = c.pick(["1", "2", "3"], ["0", "-1", "100000", "4294967295"])
    names: list[str] = []
    if rng.random() < 0.5:
        for k in range(rng.randint(1, 3)):
            name = f"d{k}.h5"
            if not maybe_special(rng, name, special, c.hostility / 5):
                content = _hdf5_file(c, classes, rng.choice([1, 2, 3, 4]))
                files[name] = damage(rng, content) if c.odd(0.3) else content
            names.append(name)
        shuffle = rng.choice(["true", "false"])
        data = (
            f'layer {{ name: "data" type: "HDF5Data" top: "data" top: "label" hdf5_data_param '
            f'{{ source: "list.txt" batch_size: {batch} shuffle: {shuffle} }} }}\n'
        )
        lines = list(names)
    else:
        size = c.pick([(8, 8), (6, 9), (12, 12)], [(1, 1), (3, 500)])
        for k in range(rng.randint(1, 4)):
            name = f"img{k}.{rng.choice(['png', 'jpg'])}"
            if not maybe_special(rng, name, special, c.hostility / 5):
                files[name] = picture(rng, *size) if c.odd() else png(*size, "RGB", rng)
            names.append(name)
        odd_labels = ["-1", "30", "abc", "1e3", "99999999999999999999", "", "2147483648"]
        lines = [f"{name} {c.pick([str(rng.randrange(classes))], odd_labels)}" for name in names]
        data = _image_data_layer(c, "64" if batch == "100000" else batch)  # 1e5 image decodes: slow
    if c.odd(0.3):
        lines.append(rng.choice(["missing.h5", "missing.png 1", "sub", "../../../etc/passwd 0", " ", "\0 1"]))
    elif c.odd(0.1):
        lines = []
    elif c.odd(0.2) and lines:
        lines = [rng.choice(lines)] * rng.randint(2, 5)
    if not maybe_special(rng, "list.txt", special, c.hostility / 5):
        end = c.pick(["\n", ""], ["\r\n", "\n\n\n"])
        files["list.txt"] = ("\n".join(lines) + end).encode("utf-8", "replace")
    files["H.binaryproto"] = _infogain_matrix(c, classes)
    net = ('name: "fuzz"\n' + data + _loss_layers(c, classes)).encode()
    return pack(files | {"net.prototxt": net}, special, iters=rng.choice([1, 2, 3]))


def _image_data_layer(c: Chooser, batch: str) -> str:
    resize = c.pick(["", "new_height: 6 new_width: 6"], ["new_height: 6", "new_height: 60000 new_width: 9"])
    crop = c.pick(["", "crop_size: 4"], ["crop_size: 100", "crop_size: 0", "crop_size: 9"])
    means = ["", "mean_value: 100", "mean_value: 1 mean_value: 2 mean_value: 3"]
    mean = c.pick(means, ["mean_value: 1 mean_value: 2"])
    choose = c.rng.choice
    transform = f"transform_param {{ {crop} {mean} mirror: {choose(['true', 'false'])} }}"
    param = (
        f'image_data_param {{ source: "list.txt" batch_size: {batch} {resize} '
        f"is_color: {c.pick(['true'], ['false'])} shuffle: {choose(['true', 'false'])} "
        f"rand_skip: {c.pick(['0', '2'], ['1000', '4294967295'])} }}"
    )
    return f'layer {{ name: "data" type: "ImageData" top: "data" top: "label" {transform} {param} }}\n'


def _infogain_matrix(c: Chooser, classes: int) -> bytes:
    import numpy as np

    from converters.caffe.binary import encode_message
    from converters.caffe.formats import array_to_blob

    matrix = np.eye(c.pick([classes], [classes + 1, 1]), dtype=np.float32)
    if c.odd():
        matrix[0, 0] = c.rng.choice([math.nan, math.inf, -1.0])
    return encode_message(array_to_blob(matrix[None, None]))


def target_solvedata(data: bytes, directory: str) -> None:
    """``python -m converters.train solver.prototxt`` (its body: errors propagate) over the case's
    train net and data files, for one to three iterations."""
    from converters.train.__main__ import _main

    record = unpack(data, directory)
    iters = int(record.get("iters", 1)) if str(record.get("iters", 1)).isdigit() else 1
    solver = Path(directory, "solver.prototxt")
    solver.write_text(SOLVER.format(iters=min(max(iters, 1), 3)))
    _main([str(solver), "--no-progress"])


# ----------------------------------------------------------------------------------------------
# vocdata: reproduce.train's VOC-layout data (split list, pictures, label images)

VOC_IDS = [f"2000_{i:06d}" for i in range(3)]
VOC = "VOC2011"


def vocdata_case(rng: random.Random) -> bytes:
    """A VOC-layout tree of three samples: the split list, the JPEG pictures and the palette label
    PNGs as a user's folder holds them, at one hostility (:class:`Chooser`)."""
    c = Chooser(rng)
    files: dict[str, bytes] = {}
    special: dict[str, str] = {}
    size = c.pick([(24, 32), (32, 32)], [(1, 1), (600, 3)])
    for image_id in VOC_IDS:
        picture_name = f"{VOC}/JPEGImages/{image_id}.jpg"
        label_name = f"{VOC}/SegmentationClass/{image_id}.png"
        if not maybe_special(rng, picture_name, special, c.hostility / 5):
            files[picture_name] = picture(rng, *size) if c.odd() else jpeg(*size, rng)
        if not maybe_special(rng, label_name, special, c.hostility / 5):
            files[label_name] = picture(rng, *size, label=True) if c.odd() else _voc_label(c, size)
    ids = list(VOC_IDS)
    if c.odd(0.5):
        odd_ids = ["2000_999999", "../JPEGImages/2000_000000", "", " 2000_000000", "a b", "\0", "."]
        ids.append(rng.choice(odd_ids))
    if c.odd(0.2):
        ids = []
    listed = ("\n".join(ids) + c.pick(["\n"], ["", "\r\n", "\n\n"])).encode("utf-8", "replace")
    if c.odd(0.1):
        listed = damage(rng, listed)
    split = f"{VOC}/ImageSets/Segmentation/train.txt"
    if not maybe_special(rng, split, special, c.hostility / 5):
        files[split] = listed
    return pack(files, special)


def _voc_label(c: Chooser, size: tuple[int, int]) -> bytes:
    """A palette PNG of classes 0..20 and 255, sometimes with one out-of-range value."""
    import numpy as np
    from PIL import Image

    values = np.random.default_rng(c.rng.randrange(2**32)).integers(0, 21, size=(size[1], size[0]))
    values[0, 0] = 255
    if c.odd():
        values[-1, -1] = c.rng.choice([21, 30, 254, 100])
    image = Image.fromarray(values.astype(np.uint8), mode="L").convert("P")
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def target_vocdata(data: bytes, directory: str) -> None:
    """``fcn-port train``'s data for voc-fcn32s over the case's VOC-layout tree: the training and
    scoring sets, then every sample as the net's feeds (files, sizes and label values checked)."""
    from reproduce.training import data as training

    unpack(data, directory)
    roots = training.DataRoots(voc=directory)
    for dataset in (training.train_dataset("voc-fcn32s", roots, "train"),
                    training.val_dataset("voc-fcn32s", roots, "train")):  # fmt: skip
        for index in range(len(dataset)):
            training.load_feeds("voc-fcn32s", dataset, index)


# ----------------------------------------------------------------------------------------------
# runjson: the resume state of `fcn-port train --resume`

_RUN_TEMPLATE: list[Path] = []


def _run_template() -> Path:
    """A finished one-iteration run of a width-1/16 voc-fcn32s on two 32 x 32 pictures (made once
    per worker process; about five seconds)."""
    if _RUN_TEMPLATE:
        return _RUN_TEMPLATE[0]
    import contextlib
    import tempfile

    from vocgen import write_voc  # tests/ is on the worker's path

    from reproduce.train import main

    folder = Path(tempfile.mkdtemp(prefix="fuzz-run-template-"))
    write_voc(folder / "voc", VOC_IDS[:2], size=(32, 32))
    split = folder / "voc" / VOC / "ImageSets" / "Segmentation" / "train.txt"
    split.write_text("\n".join(VOC_IDS[:2]) + "\n")
    argv = [
        "voc-fcn32s", "--voc-root", str(folder / "voc"), "--train-list", "train", "--val-split", "train",
        "--width", "0.0625", "--out", str(folder / "run"), "--no-progress", "--init", "random",
        "--iterations", "1", "--score-every", "0",
    ]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        if main(argv) != 0:
            raise RuntimeError("the fuzz run template did not train")
    _RUN_TEMPLATE.append(folder)
    return folder


RUN_VALUES: list[Any] = [
    None, True, False, 0, -1, 1, 2, 0.5, 1e308, -1e308, 2**63, 2**31, "", "x", "../..", "/dev/null",
    [], ["random"], ["random", "random"], [1], {}, {"voc": 1}, "NaN", "Infinity", 1e-320,
]  # fmt: skip


def runjson_case(rng: random.Random) -> bytes:
    """``run.json`` of the template run with a few settings changed in value or type, added,
    removed, or the file itself replaced (not JSON, not an object, huge), and the command's
    ``--iterations`` (1: already complete, checks only; 2: one more iteration)."""
    iterations = 2 if rng.random() < 0.1 else 1
    return json.dumps({"seed": rng.randrange(2**32), "iterations": iterations}).encode()


def _mutated_run(rng: random.Random, stored: dict[str, Any]) -> bytes:
    roll = rng.random()
    if roll < 0.05:
        return rng.choice([b"", b"[]", b'"run"', b"null", b"{", b"\xff\xfe", b'{"model": "x"}', b"1" * 9999])
    for _ in range(rng.randint(1, 3)):
        kind = rng.choice(["value", "value", "value", "delete", "add", "root"])
        key = rng.choice(sorted(stored))
        if kind == "value":
            stored[key] = rng.choice(RUN_VALUES)
        elif kind == "delete":
            stored.pop(key, None)
        elif kind == "add":
            stored[rng.choice(["extra", "procesess", "Width"])] = rng.choice(RUN_VALUES)
        elif kind == "root":
            voc = rng.choice(["/nonexistent", "/dev/null", "/", "", "relative"])
            stored["roots"] = rng.choice([{"voc": voc}, {"sbd": "/"}, {}, ["voc"]])
    text = json.dumps(stored, allow_nan=True)
    return text.encode() if rng.random() > 0.05 else damage(rng, text.encode())


def target_runjson(data: bytes, directory: str) -> None:
    """``fcn-port train voc-fcn32s --resume --out RUN`` over a copy of the template run whose
    ``run.json`` the case's seed mutates (:func:`_mutated_run`)."""
    import shutil

    from reproduce.train import build_parser, train

    try:
        case = json.loads(data)
        seed, iterations = int(case["seed"]), int(case["iterations"])
    except (ValueError, KeyError, TypeError):
        seed, iterations = 0, 1
    template = _run_template()
    run = Path(directory, "run")
    shutil.copytree(template / "run", run)
    stored = json.loads((template / "run" / "run.json").read_text())
    mutated = _mutated_run(random.Random(seed), stored)
    (run / "run.json").write_bytes(mutated)
    iterations = min(max(iterations, 1), 2)
    try:  # a huge iter_size (up to Caffe's int32) is a long iteration, not a fault: check only
        kept = json.loads(mutated)
        size = kept.get("iter_size") if isinstance(kept, dict) else None
        if isinstance(size, (int, float)) and size > 8:
            iterations = 1
    except ValueError:
        pass
    argv = ["voc-fcn32s", "--resume", "--out", str(run), "--iterations", str(iterations), "--no-progress"]
    before = _folder_state(run)
    try:
        train(build_parser().parse_args(argv))
    except ValueError:
        if _folder_state(run) != before:  # a refused resume must leave the run as it was
            raise AssertionError("a refused resume changed the run folder") from None
        raise


def _folder_state(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` by relative name: its bytes (small files) or size and mtime."""
    state: dict[str, bytes] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            stat = path.stat()
            small = stat.st_size < 65536
            state[str(path.relative_to(folder))] = path.read_bytes() if small else f"{stat.st_size}".encode()
    return state
