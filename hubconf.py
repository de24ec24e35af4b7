"""torch.hub entry points: one per registry model, plus ``fcn32s``/``fcn16s``/``fcn8s`` for VOC.

    import torch
    import weights   # this repository's package (pip install .), for the records and preprocessing
    net = torch.hub.load("<owner>/fcn-port", "fcn8s", pretrained=True)   # = voc-fcn8s
    net = torch.hub.load("<owner>/fcn-port", "siftflow_fcn16s", pretrained=True)
    out = net(**weights.get("voc-fcn8s").preprocess(image))   # {"score": 1 x 21 x H x W}

Each entry is the registry name with ``_`` for ``-`` (``voc_fcn8s``, ``nyud_fcn32s_color_hha`` ...)
and builds the net with :func:`weights.load_model`: the official caffemodel is fetched once into
the fcn-port weights cache (``pretrained=True`` downloads, as ``torch.hub`` entries do), its
checksum verified, and the Caffe-exact graph returned in eval mode. ``preprocess(image)`` gives the
keyword inputs (``{"data": 1 x 3 x H x W}``) from an RGB picture.
``pretrained=False`` gives the same net with Caffe's random initialisation.
"""

from __future__ import annotations

from collections.abc import Callable as _Callable
from typing import Any as _Any

#: What torch.hub checks before loading: what building a net and downloading its weights import.
dependencies = ["torch", "numpy", "requests", "tqdm"]

#: Short names of the PASCAL VOC models, as torchvision and pytorch-fcn call them.
ALIASES = {"fcn32s": "voc-fcn32s", "fcn16s": "voc-fcn16s", "fcn8s": "voc-fcn8s"}


def _entry(name: str) -> _Callable[..., _Any]:
    def entry(
        pretrained: bool = True,
        *,
        device: _Any = None,
        cache_dir: _Any = None,
        progress: bool = True,
        input_shapes: _Any = None,
    ) -> _Any:
        from weights.models import load_model

        source = "download" if pretrained else "random"
        return load_model(
            name, device, weights=source, cache_dir=cache_dir, progress=progress, input_shapes=input_shapes
        ).net

    from weights import get

    record = get(name)
    entry.__name__ = entry.__qualname__ = name.replace("-", "_")
    entry.__doc__ = (
        f"{record.title} ({name}): {record.notes}.\n\n"
        "pretrained=True fetches the official caffemodel into the fcn-port weights cache (verified) "
        "and loads it; pretrained=False initialises the layers as Caffe's fillers do. "
        "device, cache_dir, progress and input_shapes go to weights.load_model. Returns a torch.fx "
        "GraphModule in eval mode: net(**inputs) -> {output blob: scores}; inputs "
        f"{', '.join(spec.blob for spec in record.inputs)}, outputs "
        f"{', '.join(spec.blob for spec in record.outputs)}; weights.get({name!r}) has the rest."
    )
    entry.registry_name = name  # type: ignore[attr-defined]
    return entry


def _entries() -> dict[str, _Callable[..., _Any]]:
    from weights import names

    entries = {name.replace("-", "_"): _entry(name) for name in names()}
    entries.update({alias: _entry(name) for alias, name in ALIASES.items()})
    return entries


globals().update(_entries())
