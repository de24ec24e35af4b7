"""weights.load_model, the one model builder: every spec form, the three weight sources, one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import converters
import weights
from weights.models import ModelError, load_model

TINY = """
name: "tiny"
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "score"
        convolution_param { num_output: 2 kernel_size: 3 pad: 1 } }
"""


@pytest.fixture()
def tiny(tmp_path: Path) -> tuple[Path, Path, dict[str, list[np.ndarray]]]:
    prototxt = tmp_path / "tiny.prototxt"
    prototxt.write_text(TINY)
    rng = np.random.default_rng(1)
    blobs = {
        "conv": [rng.normal(size=(2, 3, 3, 3)).astype(np.float32), rng.normal(size=2).astype(np.float32)]
    }
    caffemodel = tmp_path / "tiny.caffemodel"
    converters.write_weights(blobs, caffemodel)
    return prototxt, caffemodel, blobs


def test_prototxt_and_caffemodel_build_with_the_files_weights(tiny) -> None:
    prototxt, caffemodel, blobs = tiny
    model = load_model([prototxt, caffemodel])
    assert model.input_names == ["data"] and model.weights_path == caffemodel and model.record is None
    np.testing.assert_array_equal(model.net.state_dict()["score.weight"].numpy(), blobs["conv"][0])
    assert not model.net.training


def test_a_prototxt_alone_needs_its_caffemodel_unless_random_weights_are_asked_for(tiny) -> None:
    prototxt, _, blobs = tiny
    with pytest.raises(ModelError, match="give its caffemodel too"):
        load_model(prototxt)
    for source in ("random", "cached"):
        model = load_model(prototxt, weights=source)
        assert model.weights_path is None and "random" in model.description
        assert not np.array_equal(model.net.state_dict()["score.weight"].numpy(), blobs["conv"][0])


def test_a_converted_file_loads_with_its_definition(tiny, tmp_path: Path) -> None:
    prototxt, caffemodel, _ = tiny
    net = converters.load_caffe(prototxt, caffemodel)
    converters.save_converted(net, tmp_path / "tiny.safetensors")
    model = load_model(tmp_path / "tiny.safetensors")
    x = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(model.net(data=x)["score"], net(data=x)["score"], rtol=0, atol=0)


def test_a_registry_name_with_other_weights_uses_the_registrys_net(tiny, monkeypatch) -> None:
    _, caffemodel, blobs = tiny
    record = weights.get("voc-fcn8s")
    monkeypatch.setattr(
        type(record), "net_definition", lambda self, split="deploy": converters.parse_text(TINY)
    )
    model = load_model(["voc-fcn8s", caffemodel])
    assert model.registry_name == "voc-fcn8s" and model.record is record and model.weights_path == caffemodel
    np.testing.assert_array_equal(model.net.state_dict()["score.bias"].numpy(), blobs["conv"][1])


def test_registry_models_take_cached_or_random_weights_without_the_network(tmp_path: Path) -> None:
    model = load_model("voc-fcn8s", "meta", weights="cached", cache_dir=tmp_path)  # nothing cached
    assert model.weights_path is None and model.record.name == "voc-fcn8s"
    assert model.net.caffe.outputs == ["score"]
    with pytest.raises(weights.NotReleasedError, match="nyud-fcn32s-color-d has no released weights"):
        load_model("nyud-fcn32s-color-d", "meta", cache_dir=tmp_path)
    assert load_model("nyud-fcn32s-color-d", "meta", weights="random").input_names == ["data"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no-such-model", "unknown model 'no-such-model': not a file, and not in the weights registry"),
        ("missing.safetensors", "model file missing.safetensors does not exist"),
        (["a", "b", "c"], "a registry name, a converted weights file, or PROTOTXT CAFFEMODEL"),
        (["missing.prototxt", "missing.caffemodel"], "model file missing.caffemodel does not exist"),
    ],
)
def test_specs_that_name_nothing_loadable_are_one_line_errors(spec, message: str) -> None:
    with pytest.raises(ModelError) as error:
        load_model(spec)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_a_folder_or_a_path_under_a_file_given_as_a_model_is_named_as_what_it_is(tmp_path) -> None:
    (tmp_path / "adir.safetensors").mkdir()
    (tmp_path / "afile").write_text("")
    with pytest.raises(ModelError, match=r"adir\.safetensors is a folder, not a file"):
        load_model(str(tmp_path / "adir.safetensors"))
    with pytest.raises(ModelError, match=r"does not exist: .*afile is a file, not a folder"):
        load_model([str(tmp_path / "net.prototxt"), str(tmp_path / "afile" / "w.caffemodel")])
