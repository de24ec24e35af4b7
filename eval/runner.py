"""The evaluation loop shared by every dataset, and the CLI plumbing of ``python -m eval.<dataset>``.

Decoding runs in DataLoader worker processes and overlaps inference; on CUDA, batches come in pinned
memory and are copied asynchronously; the argmax and the confusion matrix stay on the device, so the
loop never waits for the GPU unless predictions are saved.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import os
import sys
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from converters import cli
from converters.atomic import atomic_write
from converters.fcn.datasets import palette
from converters.fcn.preprocess import colorize
from converters.graph.precision import add_precision_option, check_precision
from weights.api import add_download_option
from weights.models import load_model

from .datasets import DatasetError, SegmentationDataset
from .metrics import METRIC_NAMES, ConfusionMatrix, Scores, compare, format_table, scores
from .models import (
    LoadedModel,
    ModelError,
    input_modalities,
    output_blobs,
    parse_assignments,
)

EXIT_OK, EXIT_CHECK_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def load_trained_model(
    spec: Sequence[str], device: torch.device, download: bool | None = None, precision: str = "fp32"
) -> LoadedModel:
    """``--model`` built by :func:`weights.load_model` (registry weights by the download rule,
    :func:`weights.obtain`; ``precision`` as there), refused if any layer lacks its weights
    (evaluating random parameters would mean nothing)."""
    model = load_model(spec, device, download=download, precision=precision)
    random = list(model.net.caffe.randomly_initialised)
    if random:
        more = " ..." if len(random) > 4 else ""
        raise ModelError(
            f"the weights lack layer(s) {', '.join(random[:4])}{more}: "
            "evaluating random parameters would mean nothing"
        )
    return model


@dataclass
class EvaluationResult:
    """Confusion matrices and scores per label head, with the image count and wall time."""

    scores: dict[str, Scores]
    matrices: dict[str, np.ndarray]
    images: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else math.nan


def _collate(samples: list[dict]) -> dict:
    first = samples[0]
    for sample in samples[1:]:
        for group in ("inputs", "labels"):
            for key, tensor in sample[group].items():
                if tensor.shape != first[group][key].shape:
                    raise DatasetError(
                        f"images of different sizes in one batch ({first['id']}, {sample['id']}): "
                        "their file headers gave one size, their decoded pixels another"
                    )
    return {
        "index": [s["index"] for s in samples],
        "id": [s["id"] for s in samples],
        "inputs": {k: torch.stack([s["inputs"][k] for s in samples]) for k in first["inputs"]},
        "labels": {k: torch.stack([s["labels"][k] for s in samples]) for k in first["labels"]},
        "predictions": {
            k: torch.stack([s["predictions"][k] for s in samples]) for k in first.get("predictions", {})
        },
    }


def image_size_keys(dataset: torch.utils.data.Dataset) -> list[Hashable]:
    """One key per sample that is equal for two samples exactly when they can share a batch.

    For a :class:`SegmentationDataset` the key is the (width, height) of every image file of the
    sample, read from the file headers by PIL without decoding the pixels (``.mat`` label files
    are skipped: their size is the image's). Samples whose files cannot be sized that way (and
    datasets of other types) are loaded once and keyed by their tensors' shapes.
    """
    files = getattr(dataset, "files", None)
    ids = getattr(dataset, "ids", None)
    keys: list[Hashable] = []
    for index in range(len(dataset)):  # type: ignore[arg-type]
        key: Hashable | None = None
        if files is not None and ids is not None:
            try:
                key = tuple(_header_size(path) for path in files(ids[index]) if path.suffix.lower() != ".mat")
            except (NotImplementedError, OSError):
                key = None
        if not key:
            sample = dataset[index]
            key = tuple(
                (group, name, tuple(tensor.shape))
                for group in ("inputs", "labels")
                for name, tensor in sorted(sample[group].items())
            )
        keys.append(key)
    return keys


def _header_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:  # reads the header only
        return image.size


class SizeGroupedBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of indices whose ``keys`` are equal (images of one size), in dataset order.

    Walking the indices in order, each goes to the pending group of its key; a group is yielded as
    soon as it holds ``batch_size`` indices. At the end the unfilled groups are yielded (smaller
    batches), in the order their first index came. Every index is yielded exactly once.
    """

    def __init__(self, keys: Sequence[Hashable], batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.keys = list(keys)
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[list[int]]:
        pending: dict[Hashable, list[int]] = {}
        for index, key in enumerate(self.keys):
            group = pending.setdefault(key, [])
            group.append(index)
            if len(group) == self.batch_size:
                yield group
                del pending[key]
        yield from pending.values()

    def __len__(self) -> int:
        counts: dict[Hashable, int] = {}
        for key in self.keys:
            counts[key] = counts.get(key, 0) + 1
        return sum(-(-n // self.batch_size) for n in counts.values())


def make_loader(
    dataset: torch.utils.data.Dataset,
    *,
    batch_size: int,
    workers: int,
    pin_memory: bool,
    group_sizes: bool = False,
) -> torch.utils.data.DataLoader:
    """An ordered DataLoader: ``workers`` decoding processes (0 decodes in this process).

    ``group_sizes`` (with ``batch_size > 1``): batches hold images of one size only
    (:class:`SizeGroupedBatchSampler` over :func:`image_size_keys`), so datasets of mixed sizes
    batch exactly; without it, a batch of mixed sizes is a :class:`DatasetError`.
    """
    common: dict[str, Any] = {
        "num_workers": workers,
        "pin_memory": pin_memory,
        "collate_fn": _collate,
        "persistent_workers": False,
        "prefetch_factor": 4 if workers > 0 else None,
    }
    if group_sizes and batch_size > 1:
        sampler = SizeGroupedBatchSampler(image_size_keys(dataset), batch_size)
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, **common)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, **common)


class _PredictionWriter:
    """Writes palette PNGs in a background thread; every file goes through ``atomic_write``."""

    def __init__(self, root: Path | None, heads: Sequence[str], num_classes: Mapping[str, int]) -> None:
        self.root = root
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=2) if root else None
        self.futures: list[concurrent.futures.Future] = []
        self.dirs = {h: (root / h if len(heads) > 1 else root) for h in heads} if root else {}
        self.palettes = {h: palette(num_classes[h]) for h in heads}
        for directory in self.dirs.values():
            directory.mkdir(parents=True, exist_ok=True)

    def submit(self, head: str, image_ids: Sequence[str], predictions: torch.Tensor) -> None:
        if self.pool is None:
            return
        labels = predictions.to("cpu", torch.uint8).numpy()
        for image_id, label in zip(image_ids, labels, strict=True):
            self.futures.append(
                self.pool.submit(self._write, self.dirs[head] / f"{image_id}.png", label, head)
            )

    def _write(self, path: Path, label: np.ndarray, head: str) -> None:
        image = colorize(label, self.palettes[head])
        with atomic_write(path) as handle:
            image.save(handle, format="PNG")

    def close(self) -> None:
        if self.pool is None:
            return
        for future in self.futures:
            future.result()
        self.pool.shutdown()


def _progress(total: int, enabled: bool, description: str):
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="img",
        desc=description,
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
        smoothing=0.1,
    )


def evaluate_model(
    model: LoadedModel | Callable[..., Mapping[str, torch.Tensor]],
    dataset: SegmentationDataset,
    *,
    inputs: Mapping[str, str] | None = None,
    outputs: Mapping[str, str] | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 1,
    workers: int = 0,
    save_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    allow_tf32: bool = False,
    precision: str | None = None,
) -> EvaluationResult:
    """Run the net over ``dataset`` and score every label head.

    On CUDA, TensorFloat-32 convolutions and matmuls are switched off for the run (Caffe computes in
    full float32) unless ``allow_tf32``; the previous settings are restored afterwards.
    ``precision="bf16"`` runs the net on a bfloat16 copy of its weights (``None``: as the model was
    built; a model loaded with ``precision="bf16"`` already is bf16), refused in one line on a device
    without bf16 (:mod:`converters.graph.precision`); the scores reach the metrics as float32.

    ``inputs`` maps net input names to dataset modalities (default ``{"data": first modality}``) and
    ``outputs`` maps heads to output blobs (default: see :func:`eval.models.output_blobs`). With
    ``batch_size > 1`` images of the same size share a forward pass (:class:`SizeGroupedBatchSampler`:
    never padded, since an FCN's crops and pad-100 border depend on the size), so the confusion
    matrices are those of one image at a time. The first batch of more than one image is also run
    one image at a time; if any predicted pixel differs, the rest is evaluated one image at a time
    (a note says so).
    """
    from converters.graph.precision import reduced

    device = torch.device(device)
    net = model.net if isinstance(model, LoadedModel) else model
    if precision is None:
        pass
    elif isinstance(net, torch.nn.Module):
        net = reduced(net, precision, device)
    elif precision != "fp32":
        raise ValueError(f"precision={precision!r} needs the net as a torch module")
    inputs = dict(inputs or {"data": dataset.modalities[0]})
    wanted = sorted(set(inputs.values()))
    if sorted(dataset.wanted) != wanted:
        raise ValueError(f"dataset loads {dataset.wanted}, the net needs {wanted}")
    heads = {h.name: h for h in dataset.heads}
    matrices = {name: ConfusionMatrix(h.num_classes, device) for name, h in heads.items()}
    writer = _PredictionWriter(
        Path(save_dir) if save_dir else None, list(heads), {n: h.num_classes for n, h in heads.items()}
    )
    loader = make_loader(
        dataset, batch_size=batch_size, workers=workers, pin_memory=device.type == "cuda", group_sizes=True
    )
    blobs: dict[str, str] | None = None
    one_at_a_time = False
    checked = False
    notes: list[str] = []

    def forward(batch_inputs: dict[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
        return net(**{name: batch_inputs[modality] for name, modality in inputs.items()})

    bar = _progress(len(dataset), progress, dataset.name)
    batches = iter(loader)
    start = time.perf_counter()
    tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    try:
        with torch.inference_mode():
            for batch in batches:
                batch_inputs = {k: v.to(device, non_blocking=True) for k, v in batch["inputs"].items()}
                size = len(batch["id"])
                if one_at_a_time and size > 1:
                    results = [
                        forward({k: v[i : i + 1] for k, v in batch_inputs.items()}) for i in range(size)
                    ]
                    out = {k: torch.cat([r[k] for r in results]) for k in results[0]}
                else:
                    out = forward(batch_inputs)
                if blobs is None:
                    blobs = output_blobs(list(out), list(heads), outputs)
                    _check_shapes(out, blobs, batch["labels"], heads)
                predictions = {head: out[blob].argmax(dim=1) for head, blob in blobs.items()}
                if not checked and size > 1:
                    checked = True
                    singles = [
                        forward({k: v[i : i + 1] for k, v in batch_inputs.items()}) for i in range(size)
                    ]
                    same = all(
                        torch.equal(predictions[h][i], singles[i][b][0].argmax(dim=0))
                        for h, b in blobs.items()
                        for i in range(size)
                    )
                    if not same:
                        one_at_a_time = True
                        notes.append(
                            "batched predictions differed from one-at-a-time ones: ran one at a time"
                        )
                        predictions = {
                            h: torch.stack([s[b][0].argmax(dim=0) for s in singles]) for h, b in blobs.items()
                        }
                for head, prediction in predictions.items():
                    matrices[head].update(batch["labels"][head], prediction)
                    writer.submit(head, batch["id"], prediction)
                bar.update(size)
        finished = {name: m.numpy() for name, m in matrices.items()}
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        _stop(batches)
        bar.close()
        writer.close()
    seconds = time.perf_counter() - start
    return EvaluationResult(
        scores={name: scores(finished[name], heads[name].exclude) for name in heads},
        matrices=finished,
        images=len(dataset),
        seconds=seconds,
        notes=notes,
    )


def _stop(batches) -> None:
    """Stop the DataLoader's workers now, also after an error (else they linger until collected)."""
    shutdown = getattr(batches, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()


def _check_shapes(out, blobs, labels, heads) -> None:
    for head, blob in blobs.items():
        tensor = out[blob]
        if tensor.dim() != 4:
            raise ModelError(f"output {blob!r} has shape {tuple(tensor.shape)}; expected N x C x H x W")
        if tensor.shape[1] != heads[head].num_classes:
            raise ModelError(
                f"output {blob!r} scores {tensor.shape[1]} classes, but the {head} labels have "
                f"{heads[head].num_classes}: is this a model for this dataset?"
            )
        if tuple(tensor.shape[2:]) != tuple(labels[head].shape[1:]):
            raise ModelError(
                f"output {blob!r} is {tuple(tensor.shape[2:])} pixels but the labels are "
                f"{tuple(labels[head].shape[1:])}"
            )


def read_prediction(path: Path, num_classes: int) -> np.ndarray:
    """A prediction PNG as an HxW uint8 array of class indices: palette or greyscale PNGs hold them
    directly; an RGB PNG is read through the VOC colour map of ``num_classes`` classes (any other
    colour is an error)."""
    with Image.open(path) as image:
        if image.mode in ("P", "L"):
            return np.array(image, dtype=np.uint8)
        if image.mode not in ("RGB", "RGBA"):
            raise DatasetError(f"{path}: expected a palette, greyscale or RGB PNG, not mode {image.mode}")
        rgb = np.asarray(image.convert("RGB")).astype(np.int64)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    colours = palette(num_classes).astype(np.int64)
    known = (colours[:, 0] << 16) | (colours[:, 1] << 8) | colours[:, 2]
    order = np.argsort(known)
    position = np.clip(np.searchsorted(known[order], codes), 0, len(known) - 1)
    found = known[order][position] == codes
    if not found.all():
        y, x = np.argwhere(~found)[0]
        raise DatasetError(
            f"{path}: colour {tuple(int(v) for v in rgb[y, x])} at ({x}, {y}) is not one of the "
            f"{num_classes} classes' colours"
        )
    return order[position].astype(np.uint8)


class PredictionFiles(torch.utils.data.Dataset):
    """A dataset's labels paired with saved prediction PNGs (``DIR/<id>.png``, or ``DIR/<head>/<id>.png``
    for a dataset with several heads): class indices (palette or greyscale) or VOC colours (RGB)."""

    def __init__(self, dataset: SegmentationDataset, directory: str | os.PathLike[str]) -> None:
        self.dataset = dataset
        self.root = Path(directory)
        if self.root.exists() and not self.root.is_dir():
            raise DatasetError(f"predictions folder {self.root} is a file, not a folder")
        if not self.root.is_dir():
            raise DatasetError(f"predictions folder {self.root} does not exist")
        heads = [h.name for h in dataset.heads]
        self.dirs = {h: (self.root / h if len(heads) > 1 else self.root) for h in heads}
        missing = [
            d / f"{i}.png" for i in dataset.ids for d in self.dirs.values() if not (d / f"{i}.png").is_file()
        ]
        if missing:
            raise DatasetError(
                f"{len(missing)} prediction file(s) missing, first {missing[0]} (expected <id>.png "
                + ("in one folder per head: " + ", ".join(heads) if len(heads) > 1 else "files")
                + f" in {self.root})"
            )
        self.name = dataset.name
        self.ids = dataset.ids
        self.heads = dataset.heads

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = self.dataset[index]
        predictions = {}
        for head in self.dataset.heads:
            path = self.dirs[head.name] / f"{sample['id']}.png"
            label = read_prediction(path, head.num_classes)
            if label.shape != tuple(sample["labels"][head.name].shape):
                raise DatasetError(
                    f"{path} is {label.shape[::-1]} pixels, the labels are "
                    f"{tuple(sample['labels'][head.name].shape)[::-1]}"
                )
            if label.max(initial=0) >= head.num_classes:
                raise DatasetError(
                    f"{path} holds class {label.max()}, beyond this dataset's {head.num_classes}"
                )
            predictions[head.name] = torch.from_numpy(label)
        sample["predictions"] = predictions
        return sample


def evaluate_predictions(
    dataset: SegmentationDataset,
    directory: str | os.PathLike[str],
    *,
    workers: int = 0,
    progress: bool = False,
) -> EvaluationResult:
    """Score saved prediction PNGs against the dataset's labels (no model involved)."""
    files = PredictionFiles(dataset, directory)
    heads = {h.name: h for h in dataset.heads}
    matrices = {name: ConfusionMatrix(h.num_classes) for name, h in heads.items()}
    loader = make_loader(files, batch_size=1, workers=workers, pin_memory=False)
    bar = _progress(len(files), progress, dataset.name)
    batches = iter(loader)
    start = time.perf_counter()
    try:
        for batch in batches:
            for head in heads:
                matrices[head].update(batch["labels"][head], batch["predictions"][head])
            bar.update(len(batch["id"]))
    finally:
        _stop(batches)
        bar.close()
    finished = {name: m.numpy() for name, m in matrices.items()}
    return EvaluationResult(
        scores={name: scores(finished[name], heads[name].exclude) for name in heads},
        matrices=finished,
        images=len(files),
        seconds=time.perf_counter() - start,
    )


# --- published figures -------------------------------------------------------------------------


def published_figures(model: str | None, dataset_key: str, split: str, head: str) -> tuple[dict, str]:
    """The published metrics (percent) for ``model`` on ``dataset_key``/``split``/``head`` and a line
    naming their source, from ``weights.published``; ``({}, "")`` when none are known.

    The released weights' figures are preferred; where only the paper's model has figures, the source
    line says that those weights differ from the released ones."""
    if not model:
        return {}, ""
    from weights import published

    key = dataset_key if head == "semantic" else f"{dataset_key}-{head}"
    entry = published.lookup(model, key, split)
    if entry is None:
        return {}, ""
    figures = {name: float(value) for name, value in entry.metrics().items() if name in METRIC_NAMES}
    source = str(entry.source)
    if entry.weights != "released":
        source += f" [figures of the {entry.weights}'s model, not the released weights]"
    if entry.note:
        source += f"; {entry.note}"
    return figures, source


# --- command line ---------------------------------------------------------------------------------


def command_prog(prog: str, dataset: str) -> str:
    """The usage name of ``eval.<dataset>``: ``prog`` as given (``python -m eval.voc``), with the
    dataset added where a dispatcher gave only its own words (``fcn-port eval`` -> ``fcn-port eval
    voc``)."""
    return f"{prog} {dataset}" if prog.split()[-1:] == ["eval"] else prog


def build_parser(
    prog: str, description: str, splits: Sequence[str], default_split: str
) -> argparse.ArgumentParser:
    """The options every ``python -m eval.<dataset>`` shares; the caller adds its dataset roots."""
    parser = cli.Parser(prog=prog, description=description)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model",
        nargs="+",
        metavar="MODEL",
        help="registry name (voc-fcn8s ...), converted .safetensors/.pt file, or PROTOTXT CAFFEMODEL",
    )
    source.add_argument(
        "--predictions",
        metavar="DIR",
        help="evaluate saved label PNGs (<id>.png, pixel = class index) instead of a model",
    )
    parser.add_argument(
        "--split", default=default_split, help=f"one of {', '.join(splits)} (default {default_split})"
    )
    parser.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    add_download_option(parser)
    parser.add_argument("--save-predictions", metavar="DIR", help="write each prediction as a palette PNG")
    parser.add_argument("--json", metavar="FILE", help="write all results as JSON")
    parser.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N images")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a metric is farther than --tolerance from the published figure",
    )
    parser.add_argument(
        "--tolerance", type=float, default=0.1, help="--check tolerance in points (default 0.1)"
    )
    parser.add_argument(
        "--published",
        metavar="MODEL",
        help="compare with the published figures of this registry model (default: --model)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="decoding worker processes (default: min(8, CPUs))",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="images per forward pass; only images of the same size share one (default 1)",
    )
    parser.add_argument(
        "--input",
        action="append",
        metavar="NAME=MODALITY",
        help="feed the net input NAME from this dataset input (e.g. data=hha)",
    )
    parser.add_argument(
        "--output",
        action="append",
        metavar="HEAD=BLOB",
        help="score the label HEAD with the net output BLOB (e.g. semantic=score)",
    )
    parser.add_argument(
        "--allow-tf32",
        action="store_true",
        help="let CUDA use TensorFloat-32 (faster; Caffe used full float32)",
    )
    add_precision_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def run_cli(
    args: argparse.Namespace,
    *,
    dataset_key: str,
    splits: Sequence[str],
    make_dataset: Callable[[str, Sequence[str] | None, int | None], SegmentationDataset],
    modalities: Sequence[str],
) -> int:
    """Evaluate as ``args`` ask, print the report, write --json, and return the exit code
    (:func:`converters.cli.run`: one ``error:`` line and 2 on bad input, 130 on Ctrl-C)."""
    return cli.run(
        lambda: _run(
            args, dataset_key=dataset_key, splits=splits, make_dataset=make_dataset, modalities=modalities
        )
    )


def _check_has_figures(reference_model: str | None, dataset_key: str, split: str, heads: Sequence) -> None:
    """``--check`` needs published figures: fail before the (long) evaluation when there are none."""
    if any(published_figures(reference_model, dataset_key, split, head.name)[0] for head in heads):
        return
    if reference_model:
        raise DatasetError(f"--check: no published figures for {reference_model} on {dataset_key} {split}")
    raise DatasetError(
        "--check: no published figures to compare with (name a registry model with --published)"
    )


def _run(args, *, dataset_key, splits, make_dataset, modalities) -> int:
    if args.split not in splits:
        raise DatasetError(f"unknown split {args.split!r}; choose from {', '.join(splits)}")
    if args.limit is not None and args.limit < 1:
        raise DatasetError("--limit must be at least 1")
    if args.batch_size < 1 or args.workers < 0:
        raise DatasetError("--batch-size must be >= 1 and --workers >= 0")
    if args.predictions and (args.save_predictions or args.input or args.output):
        raise DatasetError(
            "--predictions evaluates saved files; --save-predictions/--input/--output need --model"
        )
    if args.json:
        cli.output_file(args.json, "--json", f"{dataset_key}.json")  # before the (long) evaluation
    if args.save_predictions:
        cli.output_folder(args.save_predictions, "--save-predictions")
    if args.model and len(args.model) <= 2:
        for part in args.model:
            if os.path.isdir(part):
                what = "a registry name, a converted file, or PROTOTXT CAFFEMODEL"
                raise DatasetError(f"--model {part} is a folder: give {what}")
    progress = not args.no_progress
    device = None if args.predictions else cli.device(args.device)
    if args.predictions and args.precision != "fp32":
        raise DatasetError("--predictions evaluates saved files; --precision needs --model")
    support = check_precision(args.precision, device) if device is not None else None
    make_dataset(args.split, (), args.limit)  # a bad dataset root fails before a model loads
    if args.predictions:
        dataset = make_dataset(args.split, (), args.limit)
        if args.check:
            _check_has_figures(args.published, dataset_key, args.split, dataset.heads)
        result = evaluate_predictions(dataset, args.predictions, workers=args.workers, progress=progress)
        model_label, registry_name = f"predictions in {args.predictions}", None
    else:
        assert device is not None
        fetch: dict[str, Any] = {"download": True} if args.download else {}  # else the rule: ask, or one line
        if args.precision != "fp32":
            fetch["precision"] = args.precision  # cast once as built (evaluate_model would copy)
        model = load_trained_model(args.model, device, **fetch)
        inputs = input_modalities(model, modalities, parse_assignments(args.input, "--input"))
        dataset = make_dataset(args.split, sorted(set(inputs.values())), args.limit)
        if args.check:
            _check_has_figures(args.published or model.registry_name, dataset_key, args.split, dataset.heads)
        result = evaluate_model(
            model,
            dataset,
            inputs=inputs,
            outputs=parse_assignments(args.output, "--output"),
            device=device,
            batch_size=args.batch_size,
            workers=args.workers,
            save_dir=args.save_predictions,
            progress=progress,
            allow_tf32=args.allow_tf32,
            precision=args.precision,
        )
        model_label, registry_name = model.description, model.registry_name
    reference_model = args.published or registry_name
    report: dict = {
        "dataset": dataset_key,
        "split": args.split,
        "model": model_label,
        "images": result.images,
        "seconds": round(result.seconds, 3),
        "images_per_second": result.images_per_second,
        "limited": args.limit is not None,
        "precision": support.label if support is not None else "fp32",
        "heads": {},
        "notes": result.notes,
    }
    failed = False
    compared = False
    for head in dataset.heads:
        measured = result.scores[head.name]
        figures, source = published_figures(reference_model, dataset_key, args.split, head.name)
        comparison = compare(measured, figures, args.tolerance)
        title = f"{dataset.name} {args.split} ({head.name}), {result.images} images, {model_label}"
        print(format_table(measured, head.classes, figures, title=title))
        if source:
            print(f"published: {source}")
        elif reference_model:
            print(
                f"published: nothing known for {reference_model} on {dataset_key} {args.split} ({head.name})"
            )
        if head.exclude:
            print("left out of class averages: " + ", ".join(head.classes[c] for c in head.exclude))
        if figures:
            compared = True
            failed |= any(c["ok"] is False for c in comparison.values())
        report["heads"][head.name] = {
            "classes": list(head.classes),
            **measured.to_json(),
            "published": figures or None,
            "published_source": source or None,
            "comparison": comparison,
            "confusion": result.matrices[head.name].tolist(),
        }
        print()
    if support is not None:
        print(f"note: computed in {support.label}, not in Caffe's float32")
    for note in result.notes:
        print(f"note: {note}")
    print(f"{result.images} images in {result.seconds:.1f} s ({result.images_per_second:.2f} images/s)")
    if args.json:
        with atomic_write(args.json, "w") as handle:
            json.dump(_json_safe(report), handle, indent=1)
    if args.check:
        if not compared:
            raise DatasetError(
                f"--check: no published figures for {reference_model} on {dataset_key} {args.split}"
                if reference_model
                else "--check: no published figures to compare with (name a registry model with --published)"
            )
        if failed:
            print(
                f"check failed: a metric is more than {args.tolerance} points from the published figure",
                file=sys.stderr,
            )
            return EXIT_CHECK_FAILED
        print(f"check passed: all published metrics within {args.tolerance} points")
    return EXIT_OK


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value
