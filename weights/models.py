"""The one model builder: a registry name, a converted file, or a prototxt (+ caffemodel) becomes a
PyTorch module in eval mode. ``weights.load``, the evaluators, ``eval.timing``, ``caffe2torch`` and
``reproduce`` all build their nets here."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .api import NotReleasedError, cached_path, obtain
from .registry import UnknownWeightsError, WeightsRecord, find_by_filename, get

CONVERTED_SUFFIXES = (".safetensors", ".pt", ".pth")
PROTOTXT_SUFFIXES = (".prototxt", ".pbtxt")
CAFFEMODEL_SUFFIXES = (".caffemodel", ".caffemodel.h5")
WeightsSource = Literal["download", "cached", "random"]


class ModelError(ValueError):
    """A model spec names nothing loadable, or the net does not fit its use (one clear line)."""


@dataclass
class LoadedModel:
    """A net ready to run: ``net(**inputs)`` returns ``{blob name: tensor}``."""

    net: Callable[..., Mapping[str, Any]]
    description: str
    registry_name: str | None = None
    input_names: list[str] = field(default_factory=lambda: ["data"])
    record: WeightsRecord | None = None
    weights_path: Path | None = None
    """The caffemodel or converted file the parameters came from (``None``: random)."""
    precision: str = "fp32"
    """What the net computes in: ``fp32``, or ``bf16`` (:mod:`converters.graph.precision`)."""

    def segment(self, image: Any, **options: Any) -> Any:
        """Segment one picture: ``reproduce.segment.segment(self, image, **options)`` (labels,
        scores, colour label map, overlay, classes present)."""
        from reproduce.segment import segment

        return segment(self, image, **options)


def _spec(spec: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    if isinstance(spec, (str, os.PathLike)):
        return [os.fspath(spec)]
    return [os.fspath(s) for s in spec]


def load_model(
    spec: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    device: Any = None,
    *,
    weights: WeightsSource = "download",
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    optimize: bool | None = None,
    variants: Mapping[str, str] | None = None,
    download: bool | None = True,
    precision: str = "fp32",
) -> LoadedModel:
    """Build ``spec``: ``NAME`` (the weights registry), ``FILE`` (a ``.safetensors``/``.pt`` written
    by ``caffe2torch``), ``[PROTOTXT, CAFFEMODEL]``, ``[NAME, CAFFEMODEL]`` (the registry's net with
    other weights), or ``PROTOTXT`` alone (random weights).

    A registry model's weights (``weights="download"``) come from the cache, verified, and when
    missing follow the download rule (:func:`weights.api.obtain`): fetched with ``download=True``
    (the default here, as ``torch.hub`` does), asked for on a terminal with ``None`` (what the
    commands pass without ``--download``), refused in one line with ``False``. ``"cached"`` takes
    them from the cache if there else leaves them random (a prototxt alone is then allowed too);
    ``"random"`` never reads them. ``input_shapes`` sizes inputs the prototxt leaves undeclared.
    ``optimize``: the fast CPU graph (default: on the CPU; ``False`` keeps the plain graph).
    ``variants``: a fork's semantics for a type that forks compute differently
    (``{"Proposal": "brocolli-caffe"}``). ``precision``: ``"bf16"`` casts the built net's weights
    to bfloat16 (outputs stay float32), refused in one line on a device without bf16
    (:func:`converters.graph.precision.check_precision`: checked before anything loads). Raises
    :class:`ModelError` for a spec that names nothing loadable; file errors propagate as
    ``CaffeFormatError``, download errors as ``DownloadError``."""
    from converters.graph.precision import check_precision, reduced

    check_precision(precision, device if device is not None else "cpu", option="precision")
    model = _build(spec, device, weights, input_shapes, cache_dir, progress, optimize, variants, download)
    if precision != "fp32":
        model.net = reduced(model.net, precision, device, in_place=True)  # type: ignore[arg-type]
        model.precision = precision
    return model


def _build(
    spec: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    device: Any,
    weights: WeightsSource,
    input_shapes: Mapping[str, Sequence[int]] | None,
    cache_dir: str | os.PathLike[str] | None,
    progress: bool,
    optimize: bool | None,
    variants: Mapping[str, str] | None,
    download: bool | None,
) -> LoadedModel:
    from converters import load_caffe, load_converted, read_prototxt

    parts = _spec(spec)
    if not parts or len(parts) > 2:
        raise ModelError("a model is a registry name, a converted weights file, or PROTOTXT CAFFEMODEL")
    options: dict[str, Any] = {
        "device": device,
        "input_shapes": dict(input_shapes or {}),
        "optimize": optimize,
    }
    if variants:
        options["variants"] = dict(variants)
    if len(parts) == 2:
        prototxt, caffemodel = (Path(p) for p in parts)
        if not caffemodel.is_file():
            _need_file(caffemodel)
        if not prototxt.is_file() and prototxt.suffix.lower() not in PROTOTXT_SUFFIXES:
            record = _record(parts[0])  # a registry name: its net definition with these weights
            net = load_caffe(record.net_definition("deploy"), caffemodel, **options)
            return _loaded(net, f"{record.name} + {caffemodel}", record.name, record, caffemodel)
        if not prototxt.is_file():
            _need_file(prototxt)
        net = load_caffe(prototxt, caffemodel, **options)
        record = find_by_filename(caffemodel.name)
        return _loaded(net, f"{prototxt} + {caffemodel}", None, record, caffemodel)
    path = Path(parts[0])
    if path.suffix.lower() in PROTOTXT_SUFFIXES:
        if weights == "download":
            raise ModelError(
                f"{path} is a net definition; give its caffemodel too: {path} WEIGHTS.caffemodel"
            )
        if not path.is_file():
            _need_file(path)
        return _loaded(load_caffe(read_prototxt(path), None, **options), f"{path} (random weights)")
    if path.name.lower().endswith(CAFFEMODEL_SUFFIXES):
        raise ModelError(
            f"{path} holds weights only; give the net with it: PROTOTXT {path}, or NAME {path} for a "
            "registry net (e.g. voc-fcn8s)"
        )
    if path.suffix.lower() in CONVERTED_SUFFIXES or path.is_file():
        if not path.is_file():
            _need_file(path)
        return _loaded(load_converted(path, device=device, optimize=optimize), str(path), weights_path=path)
    return _registry_model(parts[0], options, weights, cache_dir, progress, download)


def _need_file(path: Path) -> None:
    """ModelError saying why ``path`` is not a model file: missing, a folder, or under a file."""
    from converters.cli import input_file
    from converters.errors import UsageError

    try:
        input_file(path, f"model file {path}")
    except UsageError as error:
        raise ModelError(str(error)) from None
    raise ModelError(f"model file {path} is not a regular file")  # a FIFO, a device, a socket


def _registry_model(
    name: str, options: dict[str, Any], source: WeightsSource, cache_dir: Any, progress: bool,
    download: bool | None,
) -> LoadedModel:
    from converters import load_caffe

    record = _record(name)
    definition = record.net_definition("deploy")
    path = None
    if record.released and source != "random":
        if source == "download":  # a cached file is checked as found; a missing one: the download rule
            path = obtain(record, download=download, cache_dir=cache_dir, progress=progress)
        elif cached_path(record.name, cache_dir).is_file():
            path = cached_path(record.name, cache_dir)
    if path is None and source == "download":  # not released (fetch raised otherwise)
        raise NotReleasedError(f"{record.name} has no released weights ({record.notes})")
    net = load_caffe(definition, path, **options)
    return _loaded(net, record.name if path else f"{record.name} (random weights)", record.name, record, path)


def _record(name: str) -> WeightsRecord:
    try:
        return get(name)
    except UnknownWeightsError:
        raise ModelError(
            f"unknown model {name!r}: not a file, and not in the weights registry (python -m weights list)"
        ) from None


def _loaded(
    net: Any,
    description: str,
    registry_name: str | None = None,
    record: WeightsRecord | None = None,
    weights_path: Path | None = None,
) -> LoadedModel:
    net.eval()
    return LoadedModel(net, description, registry_name, list(net.caffe.inputs), record, weights_path)
