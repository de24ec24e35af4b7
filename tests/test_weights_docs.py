"""The README's Python examples run as written, so that they cannot drift from the API: the
"Use it from Python" block is executed statement by statement in a folder holding a small
voc-fcn8s (1/16 width, seeded random weights) under the file names the README uses. Statements
that need the real 513 MiB weights are named below and left out; every other one runs."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import numpy as np
import torch

import converters
from converters.fcn.nets import net_definition
from converters.fcn.preprocess import caffe_preprocess

REPO = Path(__file__).resolve().parent.parent
#: Statements that need the real weights in the cache or at full width (the only ones not run).
NEEDS_REAL_WEIGHTS = (
    'weights.load("voc-fcn8s")',
    'weights.load_model(["voc-fcn8s", "my.caffemodel"])',
    'fcn.create("voc-fcn8s").load_caffe("fcn8s-heavy-pascal.caffemodel")',
)


def _python_block(heading: str) -> str:
    text = (REPO / "README.md").read_text()
    section = text.split(f"\n{heading}\n", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _small_fcn8s(folder: Path) -> None:
    definition = net_definition("voc-fcn8s", width=0.0625)
    torch.manual_seed(0)
    net = converters.load_caffe(definition)
    blobs: dict[str, list[np.ndarray]] = {}
    for name, tensor in net.state_dict().items():
        blobs.setdefault(name.rsplit(".", 1)[0], []).append(tensor.numpy().copy())
    converters.write_prototxt(definition, folder / "deploy.prototxt")
    converters.write_weights(blobs, folder / "fcn8s-heavy-pascal.caffemodel")


def test_the_use_it_from_python_example_runs_as_written(tmp_path, capsys) -> None:
    _small_fcn8s(tmp_path)
    block = _python_block("## Use it from Python")
    statements = ast.parse(block).body
    rgb = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    namespace: dict = {"rgb_uint8_image": rgb, "x": caffe_preprocess(rgb)}
    skipped, lines = [], block.splitlines()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for statement in statements:
            source = ast.get_source_segment(block, statement)
            if any(marker in source for marker in NEEDS_REAL_WEIGHTS):
                skipped.append(source)
                continue
            exec(compile(ast.Module([statement], []), "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    assert len(skipped) == len(NEEDS_REAL_WEIGHTS)  # everything else ran
    assert namespace["out"]["score"].shape == (1, 21, 40, 56)  # net(**record.preprocess(image))
    record = namespace["record"]
    assert record.palette.shape == (21, 3) and record.classes[15] == "person"  # "classes, palette"
    line = next(line for line in lines if "caffe_preprocess(" in line)
    assert "1 x 3 x H x W" in line and tuple(namespace["x"].shape) == (1, 3, 40, 56)
