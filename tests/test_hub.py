"""``hubconf.py``: ``torch.hub.load(repo, "fcn8s", pretrained=True)`` and one entry per registry model,
through the verified cache of ``weights.load_model``. Real weights cannot be downloaded here: the
cache is filled with random voc-fcn-alexnet weights under the official file name (as in
tests/test_weights_load.py), and the test checks that the hub's net carries exactly those."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

import converters
import weights
from converters.fcn.nets import net_definition
from reproduce.segment import segment
from weights.cache import read_checksums

REPO = Path(__file__).resolve().parent.parent
MODEL = "voc-fcn-alexnet"


def _hubconf():
    spec = importlib.util.spec_from_file_location("fcn_port_hubconf", REPO / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _entries(module) -> dict:
    """What torch.hub.list shows: the public callables of hubconf."""
    names = [n for n in dir(module) if not n.startswith("_")]
    return {n: getattr(module, n) for n in names if callable(getattr(module, n))}


def test_every_registry_model_has_an_entry_and_the_voc_models_short_names() -> None:
    entries = _entries(_hubconf())
    expected = {name.replace("-", "_"): name for name in weights.names()}
    expected.update({"fcn32s": "voc-fcn32s", "fcn16s": "voc-fcn16s", "fcn8s": "voc-fcn8s"})
    assert {n: e.registry_name for n, e in entries.items()} == expected
    assert all(name.isidentifier() for name in entries)
    assert "FCN-8s PASCAL" in entries["fcn8s"].__doc__ and "pretrained" in entries["fcn8s"].__doc__


def test_the_declared_dependencies_are_importable() -> None:
    module = _hubconf()
    assert "torch" in module.dependencies
    for name in module.dependencies:
        importlib.import_module(name)


@pytest.fixture(scope="module")
def cached(tmp_path_factory) -> tuple[Path, dict[str, list[np.ndarray]]]:
    """A weights cache holding random voc-fcn-alexnet weights under the official file name (noise
    added, so that they differ from any initialisation)."""
    cache = tmp_path_factory.mktemp("cache")
    reference = converters.load_caffe(net_definition(weights.get(MODEL).net, "deploy"))
    rng = np.random.default_rng(1)
    blobs: dict[str, list[np.ndarray]] = {}
    for name, tensor in reference.state_dict().items():
        noise = rng.standard_normal(tensor.shape, dtype=np.float32) * np.float32(0.01)
        blobs.setdefault(name.rsplit(".", 1)[0], []).append(tensor.numpy() + noise)
    converters.write_weights(blobs, weights.cached_path(MODEL, cache))
    return cache, blobs


def _same(net: torch.nn.Module, blobs: dict[str, list[np.ndarray]]) -> bool:
    """Whether every parameter of ``net`` equals its blob."""
    state = net.state_dict()
    return all(
        np.array_equal(state[f"{layer}.{suffix}"].numpy(), array)
        for layer, arrays in blobs.items()
        for suffix, array in zip(("weight", "bias"), arrays, strict=False)
    )


@pytest.mark.slow
def test_pretrained_loads_the_verified_cached_weights(cached) -> None:
    cache, blobs = cached
    net = torch.hub.load(str(REPO), "voc_fcn_alexnet", source="local", pretrained=True,
                         cache_dir=cache, progress=False)
    assert isinstance(net, torch.nn.Module) and not net.training
    assert _same(net, blobs)
    assert read_checksums(cache)[weights.get(MODEL).filename]["sha256"]  # went through fetch's check
    with torch.no_grad():
        out = net(data=torch.zeros(1, 3, 40, 56))
    assert tuple(out["score"].shape) == (1, 21, 40, 56)


@pytest.mark.slow
def test_pretrained_false_gives_random_weights_without_touching_the_cache(cached, tmp_path) -> None:
    _, blobs = cached
    empty = tmp_path / "cache"
    empty.mkdir()
    net = torch.hub.load(str(REPO), "voc_fcn_alexnet", source="local", pretrained=False, cache_dir=empty)
    assert sorted(net.state_dict()) == sorted(f"{layer}.{s}" for layer, a in blobs.items()
                                               for s in ("weight", "bias")[: len(a)])
    state = net.state_dict()
    assert not any(
        np.array_equal(state[f"{layer}.{suffix}"].numpy(), array)
        for layer, arrays in blobs.items()
        for suffix, array in zip(("weight", "bias"), arrays, strict=False)
    )
    assert not any(empty.iterdir())
    result = segment(net, np.zeros((40, 56, 3), dtype=np.uint8))  # the hub's net is recognised
    assert result.classes == weights.get(MODEL).classes and result.labels.shape == (40, 56)


@pytest.mark.slow
def test_the_docstring_example_runs_as_written(cached, monkeypatch) -> None:
    """hubconf's example, with this checkout for the GitHub repository and the cached model for
    voc-fcn8s (whose real weights cannot be downloaded here): the inputs come from
    ``preprocess(image)`` as a dict, so the net is called as ``net(**...)``."""
    cache, _ = cached
    monkeypatch.setenv("FCN_PORT_CACHE", str(cache))
    wanted = ('net = torch.hub.load("<owner>/fcn-port", "fcn8s", pretrained=True)', "out = net(")
    example = [line.split("#")[0].strip() for line in _hubconf().__doc__.splitlines()
               if line.strip().startswith(wanted)]
    assert len(example) == 2, example
    code = "\n".join(example).replace('"<owner>/fcn-port", "fcn8s"', f'{str(REPO)!r}, "voc_fcn_alexnet", '
                                      'source="local"').replace('"voc-fcn8s"', repr(MODEL))
    namespace = {"torch": torch, "weights": weights, "image": np.zeros((40, 56, 3), dtype=np.uint8)}
    exec(code, namespace)
    assert tuple(namespace["out"]["score"].shape) == (1, 21, 40, 56)
