"""Resolve ``--model`` (a registry name, a converted weights file, or a prototxt + caffemodel) to a net,
and decide which dataset input feeds each net input and which net output scores each label head."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

import weights
from converters import load_caffe, load_converted

CONVERTED_SUFFIXES = (".safetensors", ".pt", ".pth")
PROTOTXT_SUFFIXES = (".prototxt", ".pbtxt")

#: Output blob scoring each label head, by preference (the official test nets' names).
KNOWN_OUTPUTS: dict[str, tuple[str, ...]] = {
    "semantic": ("score", "score_sem", "upscore", "prob"),
    "geometric": ("score_geo",),
}


class ModelError(ValueError):
    """``--model`` names nothing loadable, or the net does not fit the dataset (one clear line)."""


@dataclass
class LoadedModel:
    """A net ready for evaluation: ``net(**inputs)`` returns ``{blob name: N x C x H x W tensor}``."""

    net: Callable[..., Mapping[str, torch.Tensor]]
    description: str
    registry_name: str | None = None
    input_names: list[str] = field(default_factory=lambda: ["data"])
    record: object | None = None


def _input_names(net: torch.nn.Module) -> list[str]:
    """The net's input blob names, in the order the graph declares them."""
    return list(net.caffe.inputs)


def _prepare(net: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    random = list(getattr(getattr(net, "caffe", None), "randomly_initialised", None) or ())
    if random:
        raise ModelError(
            f"the weights lack layer(s) {', '.join(random[:4])}{' ...' if len(random) > 4 else ''}: "
            "evaluating random parameters would mean nothing"
        )
    net = net.to(device)
    net.eval()
    return net


def resolve_model(spec: Sequence[str], device: torch.device) -> LoadedModel:
    """Load ``spec``: ``[NAME]`` from the weights registry (downloading if not cached), ``[FILE]`` a
    ``.safetensors``/``.pt`` written by ``python -m converters.caffe2torch``, or ``[PROTOTXT, CAFFEMODEL]``.

    Raises :class:`ModelError` when nothing matches; file errors propagate as ``CaffeFormatError``.
    """
    if not spec or len(spec) > 2:
        raise ModelError("--model takes a registry name, a converted weights file, or PROTOTXT CAFFEMODEL")
    if len(spec) == 2:
        prototxt, caffemodel = (Path(p) for p in spec)
        for path in (prototxt, caffemodel):
            if not path.is_file():
                raise ModelError(f"model file {path} does not exist")
        net = load_caffe(prototxt, caffemodel, device=device)
        return LoadedModel(_prepare(net, device), f"{prototxt} + {caffemodel}", None, _input_names(net))
    (text,) = spec
    path = Path(text)
    if path.suffix.lower() in PROTOTXT_SUFFIXES:
        raise ModelError(
            f"{path} is a net definition; give its caffemodel too: --model {path} WEIGHTS.caffemodel"
        )
    if path.suffix.lower() in CONVERTED_SUFFIXES or path.is_file():
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist")
        net = load_converted(path, device=device)
        return LoadedModel(_prepare(net, device), str(path), None, _input_names(net))
    return _registry_model(text, device)


def _registry_model(name: str, device: torch.device) -> LoadedModel:
    try:
        record = weights.get(name)
    except (KeyError, ValueError):
        raise ModelError(f"unknown model {name!r}: not a file, and not in the weights registry") from None
    net = weights.load(name, device=device)
    return LoadedModel(_prepare(net, device), name, name, _input_names(net), record)


def parse_assignments(items: Sequence[str] | None, option: str) -> dict[str, str]:
    """``["a=b", ...]`` as a dict; raises :class:`ModelError` for an item without ``=``."""
    result: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise ModelError(f"{option} expects NAME=VALUE, got {item!r}")
        result[key] = value
    return result


def input_modalities(
    model: LoadedModel, available: Sequence[str], overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """For each net input, the dataset modality that feeds it.

    Order of precedence: ``overrides`` (``--input NAME=MODALITY``), the registry record's input
    sources, an input named after a modality, then ``data`` -> the dataset's first modality (the
    colour image).
    """
    overrides = dict(overrides or {})
    known = {spec.blob: spec.source for spec in getattr(model.record, "inputs", ())}
    mapping: dict[str, str] = {}
    for name in model.input_names:
        if name in overrides:
            modality = overrides.pop(name)
        elif name in known:
            modality = known[name]
        elif name in available:
            modality = name
        elif name == "data":
            modality = available[0]
        else:
            raise ModelError(
                f"the net's input {name!r} matches none of this dataset's inputs ({', '.join(available)}); "
                f"say which with --input {name}=MODALITY"
            )
        if modality not in available:
            raise ModelError(f"--input {name}={modality}: this dataset provides {', '.join(available)}")
        mapping[name] = modality
    if overrides:
        raise ModelError(f"--input {next(iter(overrides))}=...: the net has no such input")
    return mapping


def output_blobs(
    outputs: Sequence[str], heads: Sequence[str], overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    """For each label head, the net output that scores it (``--output HEAD=BLOB`` first, then the
    official names, then the only output of a one-output net)."""
    overrides = dict(overrides or {})
    unknown = [h for h in overrides if h not in heads]
    if unknown:
        raise ModelError(f"--output {unknown[0]}=...: the dataset's label heads are {', '.join(heads)}")
    mapping: dict[str, str] = {}
    for head in heads:
        if head in overrides:
            blob = overrides[head]
            if blob not in outputs:
                raise ModelError(f"--output {head}={blob}: the net's outputs are {', '.join(outputs)}")
        else:
            preferred = [b for b in KNOWN_OUTPUTS.get(head, ()) if b in outputs]
            if preferred:
                blob = preferred[0]
            elif len(outputs) == 1 and len(heads) == 1:
                blob = outputs[0]
            else:
                raise ModelError(
                    f"cannot tell which of the net's outputs ({', '.join(outputs)}) scores the {head} "
                    f"labels; say it with --output {head}=BLOB"
                )
        mapping[head] = blob
    return mapping


def device_from_text(text: str | None) -> torch.device:
    """``--device`` as a torch device (default: CUDA when available, else CPU)."""
    if not text:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ModelError(f"--device {text!r} is not a device (try cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"--device {text}: CUDA is not available here")
    return device


def is_model_file(text: str) -> bool:
    """Whether ``text`` looks like a file rather than a registry name."""
    return os.sep in text or Path(text).suffix.lower() in CONVERTED_SUFFIXES + PROTOTXT_SUFFIXES
