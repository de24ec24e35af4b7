"""Fit a model to a dataset: which dataset input feeds each net input, which net output scores each
label head. Models themselves are built by :func:`weights.load_model`; ``--device`` is read by
:func:`converters.cli.device`, as in every command."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from weights.models import LoadedModel, ModelError

#: Output blob scoring each label head, by preference (the official test nets' names).
KNOWN_OUTPUTS: dict[str, tuple[str, ...]] = {
    "semantic": ("score", "score_sem", "upscore", "prob"),
    "geometric": ("score_geo",),
}


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

