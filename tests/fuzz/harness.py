"""A seeded, structure-aware fuzz harness for the Caffe readers and ``load_caffe`` (issue 9).

Targets (``TARGETS``), each fed bytes written to a temporary file:

- ``text``: ``read_prototxt``, then ``format_message`` and a re-parse that must give the same net;
- ``binary``: ``read_net``, ``read_weights`` and ``inspect.describe`` on a binary caffemodel;
- ``hdf5``: ``read_weights`` and ``inspect.describe`` on a ``.caffemodel.h5``;
- ``load``: ``load_caffe(prototxt)`` with random weights (half the time the seed net's stored
  weights, not strict), then one forward on zeros when the inputs are small.

The property, per case: the call returns, or raises one of the project's error classes with a
one-line message. For the readers that is :class:`CaffeFormatError` (``NetError`` included); for
``load`` any ``ValueError`` subclass defined in :mod:`converters.errors`. Anything else is a
finding: another exception (``MemoryError`` for a huge allocation), a worker killed by a signal,
or no answer within the case's time limit (a hang).

Cases run in a worker process (``python -m`` this file's ``worker_main``) whose address space is
capped (``RLIMIT_AS``: what it holds after importing torch, plus ``memory_mb``), so a blow-up
becomes a ``MemoryError`` there rather than the machine's problem; the parent restarts it after a
hang or a death. Mutations come from ``random.Random(seed)`` alone, so a seed and a case count
reproduce a run exactly. ``tools/fuzz.py`` is the command line (long runs, atheris).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import math
import os
import random
import re
import select
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fuzz import surfaces

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"

# ----------------------------------------------------------------------------------------------
# Seeds

# small nets with small inputs (load: the build and the forward stay cheap)
LOAD_SEEDS = [
    "conv_basic", "conv_group", "conv_dilation", "deconv_s2", "pool_k3s2", "pool_pad_s2",
    "crop_spatial", "eltwise", "slice_concat_split", "scale_shaped", "batchnorm_scale", "lrn",
    "inner_product", "flatten_reshape", "softmax", "reduction", "tile", "argmax", "mvn", "bias",
    "power_fractional", "activations", "activations_more", "inplace_chain", "pool_global",
]  # fmt: skip


def text_seeds() -> list[bytes]:
    """Prototxts of every layer and fork-layer fixture and the tiny FCN."""
    paths = sorted(FIXTURES.glob("layers/*/net.prototxt")) + sorted(FIXTURES.glob("forks/*/net.prototxt"))
    return [p.read_bytes() for p in [*paths, FIXTURES / "tiny_fcn" / "deploy.prototxt"]]


def load_seeds() -> list[bytes]:
    """The ``load`` target's nets: the :data:`LOAD_SEEDS` layer fixtures (their weights may be
    used), then every fork-layer fixture (no weights)."""
    layers = [FIXTURES / "layers" / name / "net.prototxt" for name in LOAD_SEEDS]
    return [p.read_bytes() for p in [*layers, *sorted(FIXTURES.glob("forks/*/net.prototxt"))]]


def solver_seeds() -> list[bytes]:
    """The solver fixtures' ``solver.prototxt`` files (every solver type, lr policy, snapshot form)."""
    return [p.read_bytes() for p in sorted(FIXTURES.glob("solvers/*/solver.prototxt"))]


#: Solverstates by Caffe (binary: resume_sgd, SGD; HDF5: resume_adam_hdf5, Adam), each restored
#: into its own solver with the caffemodel it names beside it.
STATE_CASES = {
    "binary": ("resume_sgd", "train_iter_5.solverstate", "train_iter_5.caffemodel"),
    "hdf5": ("resume_adam_hdf5", "train_iter_5.solverstate.h5", "train_iter_5.caffemodel.h5"),
}


def state_seeds() -> dict[str, bytes]:
    return {
        kind: (FIXTURES / "solvers" / case / "caffe_snapshot" / state).read_bytes()
        for kind, (case, state, _) in STATE_CASES.items()
    }


def binary_seeds() -> list[bytes]:
    """Caffe-made caffemodels of the layer fixtures (small), and the tiny FCN's."""
    paths = sorted(FIXTURES.glob("layers/*/weights.caffemodel"))
    return [p.read_bytes() for p in paths if p.stat().st_size < 200_000]


def hdf5_seed() -> bytes:
    """The tiny FCN's Caffe-made ``.caffemodel.h5``."""
    return (FIXTURES / "tiny_fcn" / "tiny_fcn.caffemodel.h5").read_bytes()


# ----------------------------------------------------------------------------------------------
# Mutators (pure functions of an rng and a seed input)

INTERESTING_INTS = [
    0, 1, -1, 2, 3, 7, 8, 255, 256, 65535, 65536, 2**31 - 1, 2**31, -(2**31), 2**32 - 1, 2**32,
    2**53, 2**62, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), 1000000,
]  # fmt: skip
INTERESTING_NUMBERS = [str(n) for n in INTERESTING_INTS] + [
    "09", "010", "0x10", "0X1f", "00", "-0", "1e400", "-1e400", "1e-400", "nan", "inf", "-inf",
    "0.5", ".5", "5.", "1e", "1.5f", "3.4028236e38", "1" * 40, "0x" + "f" * 20, "010.5", "1.2.3",
]  # fmt: skip
INTERESTING_STRINGS = [
    '""', '"data"', '"\\ud800"', '"\\udc00x"', '"\\ud83d\\ude00"', '"\\U00110000"', '"\\U0010FFFF"',
    '"\\x"', '"\\777"', '"\\q"', "'single'", '"a" "b"', '"' + "a" * 300 + '"', '"\\xff\\xfe"',
    '"\\u00e9"', '"/"', '"."', '"a b"', '"\\0"',
]  # fmt: skip
_TEXT_TOKEN = re.compile(
    r"\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\\\n]|\\.)*'|[A-Za-z_][A-Za-z0-9_]*|-?[0-9.][0-9A-Za-z_.]*|\s+|#[^\n]*|.",
    re.S,
)


def _dictionary() -> list[str]:
    from converters.caffe.schema import ENUMS, MESSAGES
    from converters.layers import registered_types

    words = {name for spec in MESSAGES.values() for name in spec.by_name}
    words |= {value for enum in ENUMS.values() for value in enum.by_name}
    words |= set(registered_types())
    words |= {"true", "false", "True", "t", "f", "inf", "nan", "Infinity", "strde", "fork_param"}
    return sorted(words)


_WORDS: list[str] = []


def words() -> list[str]:
    """Field names, enum values and layer types: what the text mutator puts in place of a name."""
    if not _WORDS:
        _WORDS.extend(_dictionary())
    return _WORDS


def mutate_text(rng: random.Random, seed: bytes, others: list[bytes], *, gentle: bool = False) -> bytes:
    """Token-level mutations of a prototxt: numbers, names and strings swapped for interesting ones,
    fields inserted into blocks, tokens or layers deleted, duplicated or spliced; rarely bytes.

    ``gentle`` keeps to mutations that usually leave the file parseable (for ``load``)."""
    tokens = _TEXT_TOKEN.findall(seed.decode("utf-8", "replace"))
    for _ in range(rng.randint(1, 3 if gentle else 5)):
        if not tokens:
            break
        gentle_kinds = ["number", "number", "typed_field", "typed_field", "string", "duplicate_layer", "type"]
        kinds = gentle_kinds if gentle else [
            "number", "field", "name", "string", "delete", "duplicate", "splice", "swap",
            "duplicate_layer", "bytes", "truncate", "unicode",
        ]  # fmt: skip
        kind = rng.choice(kinds)
        i = rng.randrange(len(tokens))
        if kind == "number":
            spots = [j for j, t in enumerate(tokens) if t[:1].isdigit() or t[:2].startswith("-")]
            if spots:
                tokens[rng.choice(spots)] = rng.choice(INTERESTING_NUMBERS)
        elif kind == "field":
            spots = [j for j, t in enumerate(tokens) if t == "{"] or [0]
            j = rng.choice(spots) + 1
            value = rng.choice(
                [rng.choice(INTERESTING_NUMBERS), rng.choice(INTERESTING_STRINGS), rng.choice(words())]
            )
            if rng.random() < 0.2:
                value = "{ " + rng.choice(words()) + ": " + rng.choice(INTERESTING_NUMBERS) + " }"
            tokens[j:j] = [" ", rng.choice(words()), ": " if not value.startswith("{") else " ", value, " "]
        elif kind == "typed_field":
            _insert_typed_field(rng, tokens)
        elif kind == "type":
            spots = [j for j, t in enumerate(tokens) if t == "type"]
            if spots:
                j = spots[rng.randrange(len(spots))]
                values = [k for k in range(j + 1, min(j + 4, len(tokens))) if tokens[k][:1] == '"']
                if values:
                    tokens[values[0]] = f'"{rng.choice(registered_layer_types())}"'
        elif kind == "name":
            spots = [j for j, t in enumerate(tokens) if t[:1].isalpha()]
            if spots:
                tokens[rng.choice(spots)] = rng.choice(words())
        elif kind == "string":
            spots = [j for j, t in enumerate(tokens) if t[:1] in "\"'"]
            if spots:
                j = rng.choice(spots)
                tokens[j] = rng.choice(INTERESTING_STRINGS + [tokens[rng.choice(spots)]])
        elif kind == "delete":
            del tokens[i : i + rng.randint(1, 4)]
        elif kind == "duplicate":
            tokens[i:i] = tokens[i : i + rng.randint(1, 20)]
        elif kind == "swap":
            j = rng.randrange(len(tokens))
            tokens[i], tokens[j] = tokens[j], tokens[i]
        elif kind == "splice" and others:
            other = _TEXT_TOKEN.findall(rng.choice(others).decode("utf-8", "replace"))
            if other:
                k = rng.randrange(len(other))
                tokens[i:] = other[k:]
        elif kind == "duplicate_layer":
            starts = [j for j, t in enumerate(tokens) if t == "layer"]
            if starts:
                start = rng.choice(starts)
                end = _block_end(tokens, start)
                tokens[end:end] = ["\n"] + tokens[start:end]
        elif kind == "truncate":
            del tokens[i:]
        elif kind == "unicode":
            tokens.insert(i, rng.choice(["\ufeff", "é", "\x00", "\x7f", "€", "\u2028", "\U0001f600"]))
        elif kind == "bytes":
            raw = bytearray("".join(tokens).encode("utf-8"))
            if raw:
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            return bytes(raw)
    return "".join(tokens).encode("utf-8", "surrogatepass")


def registered_layer_types() -> list[str]:
    """The layer types the graph builder knows."""
    from converters.layers import registered_types

    return sorted(registered_types())


def _insert_typed_field(rng: random.Random, tokens: list[str]) -> None:
    """Insert a field the enclosing message really has, with a value of its type."""
    from converters.caffe.schema import ENUMS, MESSAGES

    stack = ["NetParameter"]
    spots: list[tuple[int, str]] = []
    last_name = ""
    for j, token in enumerate(tokens):
        if token == "{":
            spec = MESSAGES.get(stack[-1])
            field = spec.by_name.get(last_name) if spec else None
            stack.append(field.type if field is not None and field.is_message else "")
            if stack[-1]:
                spots.append((j + 1, stack[-1]))
        elif token == "}" and len(stack) > 1:
            stack.pop()
        elif token[:1].isalpha():
            last_name = token
    if not spots:
        return
    where, type_name = rng.choice(spots)
    field = rng.choice(list(MESSAGES[type_name].by_name.values()))
    if field.is_message:
        inner = rng.choice(list(MESSAGES[field.type].by_name.values()))
        if inner.is_message or inner.is_enum or inner.type in ("string", "bytes", "bool"):
            return
        text = f"{field.name} {{ {inner.name}: {rng.choice(INTERESTING_NUMBERS[:24])} }}"
    elif field.is_enum:
        text = f"{field.name}: {rng.choice(list(ENUMS[field.type].by_name))}"
    elif field.type in ("string", "bytes"):
        text = f"{field.name}: {rng.choice(INTERESTING_STRINGS[:2])}"
    elif field.type == "bool":
        text = f"{field.name}: {rng.choice(['true', 'false'])}"
    elif field.type in ("float", "double"):
        text = f"{field.name}: {rng.choice(['0', '1', '-1', '0.5', '2', '1e9', '-1e-9', 'inf', 'nan', '3'])}"
    else:
        text = f"{field.name}: {rng.choice(INTERESTING_NUMBERS[:24])}"
    tokens[where:where] = [" ", text, " "]


def _block_end(tokens: list[str], start: int) -> int:
    depth = 0
    for j in range(start, len(tokens)):
        if tokens[j] == "{":
            depth += 1
        elif tokens[j] == "}":
            depth -= 1
            if depth == 0:
                return j + 1
    return len(tokens)


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def mutate_binary(rng: random.Random, seed: bytes, others: list[bytes]) -> bytes:
    """Wire-format mutations: blob shapes and values rewritten through our encoder (valid wire,
    odd meaning), varints replaced by interesting ones, lengths tampered, bytes flipped, chunks
    duplicated, spliced or cut."""
    if rng.random() < 0.4:
        structured = _mutate_binary_structure(rng, seed)
        if structured is not None:
            return structured
    data = bytearray(seed)
    for _ in range(rng.randint(1, 4)):
        if not data:
            data = bytearray(rng.choice(others) if others else b"\x00")
        kind = rng.choice(["flip", "byte", "varint", "insert", "delete", "duplicate", "truncate", "splice"])
        i = rng.randrange(len(data))
        if kind == "flip":
            data[i] ^= 1 << rng.randrange(8)
        elif kind == "byte":
            data[i] = rng.choice([0x00, 0x01, 0x7F, 0x80, 0xFF, 0x08, 0x0A, 0x12, 0x3A, 0x42])
        elif kind == "varint":
            end = i
            while end < len(data) and data[end] & 0x80:
                end += 1
            data[i : end + 1] = _varint(rng.choice(INTERESTING_INTS))
        elif kind == "insert":
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == "delete":
            del data[i : i + rng.randint(1, 16)]
        elif kind == "duplicate":
            data[i:i] = data[i : i + rng.randint(1, 64)]
        elif kind == "truncate":
            del data[i:]
        elif kind == "splice" and others:
            other = rng.choice(others)
            data[i:] = other[rng.randrange(len(other)) :]
    return bytes(data)


def _mutate_binary_structure(rng: random.Random, seed: bytes) -> bytes | None:
    import numpy as np

    from converters.caffe.binary import decode_message, encode_message
    from converters.caffe.message import Message

    try:
        net = decode_message(seed, "NetParameter")
    except ValueError:
        return None
    blobs = [b for layer in net.getall("layer") + net.getall("layers") for b in layer.getall("blobs")]
    if not blobs:
        return None
    blob = rng.choice(blobs)
    kind = rng.choice(["dims", "legacy", "axes", "values", "double", "name"])
    if kind == "dims":
        dims = [rng.choice(INTERESTING_INTS[:12] + [-2, -4]) for _ in range(rng.randint(0, 5))]
        blob.set("shape", Message("BlobShape", dim=[max(min(d, 2**63 - 1), -(2**63)) for d in dims]))
    elif kind == "legacy":
        for name in ("num", "channels", "height", "width"):
            if rng.random() < 0.6:
                blob.set(name, rng.choice([0, 1, -1, 2, 2**31 - 1, -(2**31), 3]))
    elif kind == "axes":
        blob.set("shape", Message("BlobShape", dim=[1] * rng.choice([31, 32, 33, 64, 65])))
    elif kind == "values":
        blob.set("data", np.zeros(rng.choice([0, 1, 2, 7]), np.float32))
    elif kind == "double":
        blob.set("double_data", np.array([1e300, -1e300, math.nan, 1.0], np.float64)[: rng.randint(0, 4)])
    elif kind == "name":
        layers = net.getall("layer") + net.getall("layers")
        rng.choice(layers).set("name", rng.choice(["", "a/b", ".", "é", "x" * 200, "conv1"]))
    try:
        return encode_message(net)
    except ValueError:
        return None


def make_hdf5(rng: random.Random, seed: bytes) -> bytes:
    """A ``.caffemodel.h5``: built with h5py in odd ways (names, dtypes, dataspaces, filters,
    links, declared-but-unwritten data), or the Caffe-made seed with bytes mutated."""
    import h5py
    import numpy as np

    if rng.random() < 0.35:
        return mutate_binary(rng, seed, [])
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        data = handle.create_group("data") if rng.random() < 0.95 else handle.create_group("weights")
        for _ in range(rng.randint(0, 3)):
            name: Any = rng.choice(["conv", "fc", "a b", "é", "x" * 100, "1", "conv/sub"])
            if rng.random() < 0.1:
                name = b"bad\xff" + bytes([rng.randrange(256)])
            try:
                group = data.create_group(name)
            except ValueError:
                continue
            for index in range(rng.randint(0, 3)):
                key = str(index) if rng.random() < 0.9 else rng.choice(["x", "00", "-1", "10"])
                _hdf5_dataset(rng, group, key, np, h5py)
        if rng.random() < 0.1:
            data["link"] = h5py.SoftLink("/nowhere")
        if rng.random() < 0.05:
            data["ext"] = h5py.ExternalLink("/nonexistent.h5", "/data")
    return buffer.getvalue()


def _hdf5_dataset(rng: random.Random, group: Any, key: str, np: Any, h5py: Any) -> None:
    dtype = rng.choice(["f4", "f8", "f2", "i1", "u8", "i8", "?", "c8", "S4"])
    kind = rng.choice(["data", "declared", "empty", "scalar", "zero", "compressed", "big"])
    try:
        if kind == "data":
            shape = tuple(rng.randint(0, 4) for _ in range(rng.randint(0, 4)))
            group.create_dataset(key, data=np.ones(shape, dtype=dtype))
        elif kind == "declared":
            shape = tuple(rng.choice([1, 3, 1000, 25000]) for _ in range(rng.randint(1, 3)))
            group.create_dataset(key, shape=shape, dtype=dtype)
        elif kind == "empty":
            group.create_dataset(key, data=h5py.Empty(dtype))
        elif kind == "scalar":
            group.create_dataset(key, data=np.array(3, dtype=dtype))
        elif kind == "zero":
            group.create_dataset(key, shape=(rng.choice([0, 2**31, 2**40]), 0), dtype=dtype)
        elif kind == "compressed":
            group.create_dataset(key, data=np.zeros((300, 300), dtype=dtype), compression="gzip")
        else:
            group.create_dataset(key, shape=(2**20, 2**20), dtype=dtype, chunks=(64, 64))
    except (ValueError, TypeError, OSError):
        pass


def make_hdf5_state(rng: random.Random, seed: bytes) -> bytes:
    """An HDF5 solverstate: Caffe's with bytes mutated, or one built with h5py in odd ways (iter and
    current_step of every kind, history renumbered, linked, of other sizes or dtypes, declared and
    never written, a learned_net that is a group or a number)."""
    import h5py
    import numpy as np

    if rng.random() < 0.3:
        return mutate_binary(rng, seed, [])
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        for key in ("iter", "current_step"):
            if rng.random() < 0.8:
                value = rng.choice([0, 5, 2**31, -1, 5.5, float("nan")])
                handle[key] = np.array([value], "i8" if isinstance(value, int) else "f8")
            elif rng.random() < 0.5:
                _hdf5_dataset(rng, handle, key, np, h5py)
        if rng.random() < 0.9:
            history = handle.create_group("history")
            for index in range(rng.choice([0, 1, 12, 12, 12, 13])):
                key = str(index) if rng.random() < 0.95 else rng.choice(["x", "00", "-1", "99"])
                if key in history:
                    continue
                if rng.random() < 0.8:
                    shape = rng.choice([(4, 3, 3, 3), (4,), (5, 4, 2, 2), (5,), (3, 5, 1, 1), (3,), (1,)])
                    history.create_dataset(key, data=np.ones(shape, "f4"))
                else:
                    _hdf5_dataset(rng, history, key, np, h5py)
            if rng.random() < 0.05:  # a link to itself, or to another file
                if "0" in history:
                    del history["0"]
                history["0"] = (
                    h5py.SoftLink("/history/0") if rng.random() < 0.5 else h5py.ExternalLink("x.h5", "/d")
                )
        choice = rng.random()
        if choice < 0.6:
            handle["learned_net"] = np.bytes_(b"train_iter_5.caffemodel.h5")
        elif choice < 0.7:
            handle.create_group("learned_net")
        elif choice < 0.8:
            handle["learned_net"] = np.array([7])
    return buffer.getvalue()


# ----------------------------------------------------------------------------------------------
# Targets (run in the worker)


def _write(directory: str, name: str, data: bytes) -> str:
    path = os.path.join(directory, name)
    with open(path, "wb") as handle:
        handle.write(data)
    return path


def target_text(data: bytes, directory: str) -> None:
    from converters.caffe.formats import read_prototxt
    from converters.caffe.text import format_message, parse_text

    net = read_prototxt(_write(directory, "net.prototxt", data))
    again = parse_text(format_message(net))
    if again != net:
        raise AssertionError("format_message then parse_text gives another net")


def target_binary(data: bytes, directory: str) -> None:
    from converters.caffe.formats import read_net, read_weights
    from converters.inspect import describe

    path = _write(directory, "w.caffemodel", data)
    read_net(path)
    read_weights(path)
    json.dumps(describe(path))


def target_hdf5(data: bytes, directory: str) -> None:
    from converters.caffe.formats import read_weights
    from converters.inspect import describe

    path = _write(directory, "w.caffemodel.h5", data)
    read_weights(path)
    json.dumps(describe(path))




def target_load(data: bytes, directory: str) -> None:
    """``data``: one byte choosing the weights (odd: the seed's stored weights), then the prototxt."""
    choice, text = data[:1], data[1:]
    path = _write(directory, "net.prototxt", text)
    weights = None
    if choice and choice[0] % 2 and choice[0] // 2 < len(LOAD_SEEDS):
        weights = str(FIXTURES / "layers" / LOAD_SEEDS[choice[0] // 2] / "weights.caffemodel")
    surfaces.load_and_run(path, weights)


#: The tiny train net every mutated solver reads (``net: "net.prototxt"``).
SOLVER_NET = FIXTURES / "solvers" / "sgd_fixed" / "net.prototxt"


def target_solver(data: bytes, directory: str) -> None:
    """``data``: a solver prototxt over the tiny train net; load it, then run up to three
    iterations on zero inputs (rates, updates, regularization, clipping) when ``iter_size`` keeps
    that short."""
    import numpy as np

    from converters import load_solver

    Path(directory, "net.prototxt").write_bytes(SOLVER_NET.read_bytes())
    solver = load_solver(_write(directory, "solver.prototxt", data))
    shapes = solver.net.caffe.inputs
    iterations = min(3, max(solver.max_iter, 1))
    # a huge iter_size is a long run, not a fault: step only where the work stays small
    small = sum(math.prod(s) for s in shapes.values()) <= surfaces.MAX_FORWARD_VALUES
    if small and solver.iter_size * iterations <= 24:
        feeds = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
        solver.step(feeds, iters=iterations)


def target_state(data: bytes, directory: str) -> None:
    """``data``: one byte choosing the solver (0: binary SGD, 1: HDF5 Adam), then a solverstate to
    restore into it, with the caffemodel Caffe wrote beside it; then one iteration."""
    import numpy as np

    from converters import load_solver

    kind = "hdf5" if data[:1] == b"\x01" else "binary"
    case, state_name, model = STATE_CASES[kind]
    folder = FIXTURES / "solvers" / case
    Path(directory, model).write_bytes((folder / "caffe_snapshot" / model).read_bytes())
    Path(directory, "net.prototxt").write_bytes((folder / "net.prototxt").read_bytes())
    Path(directory, "solver.prototxt").write_bytes((folder / "solver.prototxt").read_bytes())
    solver = load_solver(Path(directory, "solver.prototxt"))
    solver.restore(_write(directory, state_name, data[1:]))
    shapes = solver.net.caffe.inputs
    solver.step({name: np.zeros(shape, np.float32) for name, shape in shapes.items()})


def load_case(rng: random.Random, seeds: list[bytes]) -> bytes:
    """A ``load`` case: a weights choice byte and a gently mutated fixture prototxt."""
    index = rng.randrange(len(seeds))
    text = seeds[index]
    mutated = mutate_text(rng, text, seeds, gentle=rng.random() < 0.8)
    return bytes([2 * index + (rng.random() < 0.5)]) + mutated


def target_selftest(data: bytes, directory: str) -> None:
    """Misbehaves on purpose (``hang``, ``die``, ``allocate``, ``keyerror``, ``multiline``), so the
    tests can show that the harness catches each kind of finding."""
    from converters.errors import CaffeFormatError

    if data == b"hang":
        time.sleep(3600)
    elif data == b"die":
        os.kill(os.getpid(), 9)
    elif data == b"allocate":
        bytearray(64 * 2**30)
    elif data == b"keyerror":
        raise KeyError("layer")
    elif data == b"multiline":
        raise CaffeFormatError("first line\nsecond line")
    elif data == b"refuse":
        raise CaffeFormatError("refused in one line")


_PARAMS: list[bytes] = []


def _params_case(rng: random.Random) -> bytes:
    if not _PARAMS:
        _PARAMS.extend(surfaces.parameter_seeds())
    return surfaces.params_case(rng, _PARAMS)


@dataclasses.dataclass(frozen=True)
class Target:
    run: Callable[[bytes, str], None]
    allowed: str  # "reader": CaffeFormatError; "project": any ValueError of converters.errors
    timeout_s: float
    make: Callable[[random.Random], bytes] | None = None  # the case stream, where cases() has none


TARGETS: dict[str, Target] = {
    "text": Target(target_text, "reader", 10.0),
    "binary": Target(target_binary, "reader", 10.0),
    "hdf5": Target(target_hdf5, "reader", 10.0),
    "load": Target(target_load, "project", 60.0),
    "solver": Target(target_solver, "project", 60.0),
    "state": Target(target_state, "project", 60.0),
    # issue 21's surfaces (tests/fuzz/surfaces.py)
    "params": Target(surfaces.target_params, "project", 60.0, _params_case),
    "solvedata": Target(surfaces.target_solvedata, "project", 60.0, surfaces.solvedata_case),
    "vocdata": Target(surfaces.target_vocdata, "project", 60.0, surfaces.vocdata_case),
    "runjson": Target(surfaces.target_runjson, "project", 120.0, surfaces.runjson_case),
}
SELFTEST = Target(target_selftest, "reader", 3.0)


def cases(target: str, seed: int) -> Iterator[bytes]:
    """The endless, reproducible stream of inputs for ``target`` from ``seed``."""
    rng = random.Random(f"{target}:{seed}")
    if target == "text":
        seeds = text_seeds()
        while True:
            yield mutate_text(rng, rng.choice(seeds), seeds)
    elif target == "binary":
        seeds = binary_seeds()
        while True:
            yield mutate_binary(rng, rng.choice(seeds), seeds)
    elif target == "hdf5":
        seed_bytes = hdf5_seed()
        while True:
            yield make_hdf5(rng, seed_bytes)
    elif target == "load":
        seeds = load_seeds()
        while True:
            yield load_case(rng, seeds)
    elif target == "solver":
        seeds = solver_seeds()
        while True:
            yield mutate_text(rng, rng.choice(seeds), seeds, gentle=rng.random() < 0.8)
    elif target == "state":
        states = state_seeds()
        while True:
            if rng.random() < 0.5:
                yield b"\x00" + mutate_binary(rng, states["binary"], [])
            else:
                yield b"\x01" + make_hdf5_state(rng, states["hdf5"])
    elif target in TARGETS and TARGETS[target].make is not None:
        make = TARGETS[target].make
        while True:
            yield make(rng)
    else:
        raise ValueError(f"unknown fuzz target {target!r}: one of {', '.join(TARGETS)}")


def _project_class(cls: type) -> bool:
    """Whether ``cls`` is defined in one of the project's packages."""
    return cls.__module__.split(".")[0] in ("converters", "eval", "reproduce", "weights")


def classify(target: str, exc: BaseException) -> str | None:
    """``None`` when ``exc`` is an allowed refusal for ``target``, else why it is a finding."""
    from converters import errors

    project = tuple(
        cls
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, ValueError) and cls.__module__ == errors.__name__
    )
    allowed = (errors.CaffeFormatError,) if (TARGETS.get(target) or SELFTEST).allowed == "reader" else project
    if allowed is project and isinstance(exc, ValueError) and _project_class(type(exc)):
        allowed = (type(exc),)  # the error classes of eval, reproduce and weights (DatasetError...)
    if not isinstance(exc, allowed):
        return f"{type(exc).__name__} is not one of the project's error classes"
    text = str(exc)
    if "\n" in text or not text.strip():
        return f"{type(exc).__name__} message is not one line: {text[:200]!r}"
    return None


def run_in_process(target: str, data: bytes) -> dict[str, Any]:
    """Run one case here; the result record the worker sends back."""
    with tempfile.TemporaryDirectory(prefix="fuzz-") as directory:
        try:
            (TARGETS.get(target) or SELFTEST).run(data, directory)
            return {"status": "ok"}
        except Exception as exc:  # noqa: BLE001 - every exception is classified
            problem = classify(target, exc)
            if problem is None:
                return {"status": "refused", "error": type(exc).__name__}
            frames = traceback.extract_tb(exc.__traceback__)[-4:]
            where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))
            return {
                "status": "finding",
                "problem": problem,
                "error": type(exc).__name__,
                "message": " ".join(str(exc).split())[:300],
                "where": where,
            }


# ----------------------------------------------------------------------------------------------
# Worker process: imports everything, caps its address space, answers one case per line


def _virtual_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def worker_main() -> None:
    """Read ``{"target", "data"}`` JSON lines on stdin, answer one JSON result line each."""
    import resource

    if not os.environ.get("FUZZ_LIGHT"):  # the self-test needs neither torch nor the readers
        import torch

        import converters  # noqa: F401  (import cost paid before the cap)
        import converters.inspect  # noqa: F401

        torch.set_num_threads(1)
    memory_mb = int(os.environ.get("FUZZ_MEMORY_MB", "3072"))
    if memory_mb > 0 and os.path.exists("/proc/self/statm"):
        limit = _virtual_bytes() + memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing a target prints can break the protocol
    out.write(json.dumps({"status": "ready"}) + "\n")
    out.flush()
    for line in sys.stdin:
        request = json.loads(line)
        result = run_in_process(request["target"], base64.b64decode(request["data"]))
        out.write(json.dumps(result) + "\n")
        out.flush()


STARTUP_TIMEOUT_S = 300.0


class Worker:
    """The parent's handle on one worker process (restarted after a hang or a death)."""

    def __init__(self, memory_mb: int, *, light: bool = False) -> None:
        self.memory_mb = memory_mb
        self.light = light
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = dict(os.environ, FUZZ_MEMORY_MB=str(self.memory_mb), OMP_NUM_THREADS="1")
        if self.light:
            env["FUZZ_LIGHT"] = "1"
        env["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), env.get("PYTHONPATH", "")])
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from fuzz.harness import worker_main; worker_main()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=str(REPO),
        )
        # the case time limits start once the worker has imported torch and is ready
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], STARTUP_TIMEOUT_S)
        line = self.process.stdout.readline() if ready else b""
        if not line or json.loads(line).get("status") != "ready":
            self.stop()
            raise RuntimeError("the fuzz worker did not start (try: python -c 'import converters')")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def run(self, target: str, data: bytes, timeout_s: float) -> dict[str, Any]:
        if self.process is None:
            self.start()
        process = self.process
        assert process is not None and process.stdin is not None and process.stdout is not None
        request = json.dumps({"target": target, "data": base64.b64encode(data).decode()}) + "\n"
        try:
            process.stdin.write(request.encode())
            process.stdin.flush()
        except BrokenPipeError:
            return self._died()
        ready, _, _ = select.select([process.stdout], [], [], timeout_s)
        if not ready:
            self.stop()
            return {"status": "finding", "problem": f"no answer within {timeout_s:g} s (a hang?)",
                    "error": "Timeout", "message": "", "where": ""}  # fmt: skip
        line = process.stdout.readline()
        if not line:
            return self._died()
        return json.loads(line)

    def _died(self) -> dict[str, Any]:
        assert self.process is not None
        code = self.process.wait()
        self.process = None
        return {"status": "finding", "problem": f"the worker died (exit status {code})",
                "error": "Died", "message": "", "where": ""}  # fmt: skip


@dataclasses.dataclass
class Report:
    target: str
    seed: int
    cases: int = 0
    refused: int = 0
    findings: list[tuple[int, dict[str, Any], bytes]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def summary(self) -> str:
        lines = [
            f"{self.target}: seed {self.seed}, {self.cases} cases in {self.seconds:.1f} s, "
            f"{self.refused} refused with a project error, {len(self.findings)} findings"
        ]
        for index, result, _ in self.findings[:20]:
            message, where = result.get("message", "")[:160], result.get("where", "")
            lines.append(f"  case {index}: {result['problem']}: {result.get('error')}: {message} [{where}]")
        return "\n".join(lines)


def fuzz(
    target: str,
    *,
    seed: int = 0,
    max_cases: int | None = None,
    seconds: float | None = None,
    memory_mb: int = 3072,
    known: Callable[[dict[str, Any]], bool] | None = None,
    save_to: Path | None = None,
) -> Report:
    """Run ``target`` on its seeded case stream until ``max_cases`` or ``seconds`` run out.

    Findings that ``known`` accepts are counted as refused; others are kept in the report (and
    written as ``<target>-<seed>-<case>.bin`` under ``save_to``)."""
    if target not in TARGETS:
        raise ValueError(f"unknown fuzz target {target!r}: one of {', '.join(TARGETS)}")
    report = Report(target, seed)
    worker = Worker(memory_mb)
    start = time.monotonic()
    try:
        for index, data in enumerate(cases(target, seed)):
            if max_cases is not None and index >= max_cases:
                break
            if seconds is not None and time.monotonic() - start > seconds:
                break
            result = worker.run(target, data, TARGETS[target].timeout_s)
            report.cases += 1
            if result["status"] == "refused" or (result["status"] == "finding" and known and known(result)):
                report.refused += 1
            elif result["status"] == "finding":
                report.findings.append((index, result, data))
                if save_to is not None:
                    save_to.mkdir(parents=True, exist_ok=True)
                    (save_to / f"{target}-{seed}-{index}.bin").write_bytes(data)
    finally:
        worker.stop()
    report.seconds = time.monotonic() - start
    return report


def nth_case(target: str, seed: int, index: int) -> bytes:
    """Case ``index`` of the stream of ``target`` and ``seed`` (to reproduce a finding)."""
    for i, data in enumerate(cases(target, seed)):
        if i == index:
            return data
    raise AssertionError("unreachable")


__all__ = ["TARGETS", "Report", "cases", "classify", "fuzz", "nth_case", "run_in_process", "worker_main"]
