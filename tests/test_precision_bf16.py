"""``--precision bf16`` and ``precision=``: where it is allowed, what it computes, where it is refused.

This machine may have no bf16 hardware: the refusals replace the detector, the computations use the
``FCN_PORT_FORCE_BF16`` override (emulated bf16: the numbers are bf16's, the speed is not)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import converters
from converters.errors import UsageError
from converters.fcn.nets import MODELS, net_definition
from converters.graph import precision

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "fixtures" / "tiny_fcn"
PROTOTXT, CAFFEMODEL = TINY / "deploy.prototxt", TINY / "tiny_fcn.caffemodel"
REFUSAL = "error: --precision bf16 needs a CPU with AMX or AVX-512 BF16 (this one has neither): use fp32"


@pytest.fixture
def no_bf16(monkeypatch):
    """A CPU without AMX or AVX-512 BF16, and no override."""
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: ())
    monkeypatch.delenv(precision.FORCE_ENV, raising=False)


@pytest.fixture
def forced(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: ())
    monkeypatch.setenv(precision.FORCE_ENV, "1")


def _agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.argmax(dim=1) == b.argmax(dim=1)).float().mean())


def _smooth_input(height: int = 64, width: int = 80) -> torch.Tensor:
    from eval.timing import synthetic_input

    return synthetic_input(height, width, seed=3)


# --- deciding -----------------------------------------------------------------------------------


def test_the_detector_finds_amx_or_avx512_bf16_in_cpuinfo_or_in_torch(monkeypatch) -> None:
    monkeypatch.setattr(precision, "_proc_cpuinfo_flags", lambda: {"avx2", "amx_tile", "amx_bf16"})
    monkeypatch.setattr(precision, "_torch_cpu_flags", lambda: set())
    assert precision.cpu_bf16_features() == ("amx_bf16",)
    monkeypatch.setattr(precision, "_proc_cpuinfo_flags", lambda: {"avx2"})
    monkeypatch.setattr(precision, "_torch_cpu_flags", lambda: {"avx512_bf16"})
    assert precision.cpu_bf16_features() == ("avx512_bf16",)
    monkeypatch.setattr(precision, "_torch_cpu_flags", lambda: set())
    assert precision.cpu_bf16_features() == ()


def test_cpuinfo_flags_are_read_from_the_first_flags_line(tmp_path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx512_bf16 amx_bf16\n\nflags : x\n")
    assert precision._proc_cpuinfo_flags(str(cpuinfo)) == {"fpu", "avx512_bf16", "amx_bf16"}
    assert precision._proc_cpuinfo_flags(str(tmp_path / "missing")) == set()
    assert precision._proc_cpuinfo_field(("model name",), str(cpuinfo)) == "X"  # cpu_model's source


def test_a_cpu_with_amx_runs_bf16_natively_without_the_override(monkeypatch) -> None:
    monkeypatch.setattr(precision, "cpu_bf16_features", lambda: ("amx_bf16",))
    monkeypatch.delenv(precision.FORCE_ENV, raising=False)
    support = precision.check_precision("bf16", "cpu")
    assert support is not None and support.native and not support.forced
    assert support.label == "bf16 (amx_bf16)"
    assert precision.check_precision("fp32", "cpu") is None


def test_bf16_is_refused_in_one_line_without_amx_or_avx512_bf16(no_bf16) -> None:
    with pytest.raises(UsageError) as caught:
        precision.check_precision("bf16", "cpu")
    assert "error: " + str(caught.value) == REFUSAL
    with pytest.raises(UsageError, match=r"^precision='bf16' needs a CPU with AMX or AVX-512 BF16"):
        precision.reduced(converters.load_caffe(PROTOTXT, CAFFEMODEL), "bf16")


def test_the_override_allows_bf16_and_labels_it_not_representative(forced) -> None:
    support = precision.check_precision("bf16", "cpu")
    assert support is not None and support.forced and not support.native
    assert support.label == "bf16 (forced, emulated: not representative)"


@pytest.mark.parametrize(
    "command",
    [
        ["reproduce.segment", "--model", str(PROTOTXT), str(CAFFEMODEL),
         str(REPO / "reproduce/data/image.jpg"), "-o", "{tmp}/out"],
        ["eval.voc", "--model", str(PROTOTXT), str(CAFFEMODEL), "--voc-root", "{tmp}/voc",
         "--split", "val2011"],
        ["eval.timing", "--model", str(PROTOTXT), "--weights", str(CAFFEMODEL), "--size", "40"],
    ],
    ids=["segment", "eval voc", "timing"],
)
def test_segment_eval_and_timing_refuse_bf16_in_one_line_exit_2_before_loading(
    command, no_bf16, tmp_path, capsys
) -> None:
    import importlib

    from vocgen import write_voc

    write_voc(tmp_path / "voc", ["2008_000001"], size=(40, 30))
    module = importlib.import_module(command[0])
    argv = [a.replace("{tmp}", str(tmp_path)) for a in command[1:]] + ["--precision", "bf16", "--no-progress"]
    assert module.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [REFUSAL]
    assert not (tmp_path / "out").exists()


def test_timing_autocast_bf16_needs_the_same_hardware(no_bf16, capsys) -> None:
    from eval import timing

    argv = ["--model", str(PROTOTXT), "--weights", str(CAFFEMODEL), "--size", "40", "--autocast", "bf16"]
    assert timing.main(argv) == 2
    assert capsys.readouterr().err.strip() == REFUSAL.replace("--precision", "--autocast")


# --- computing ------------------------------------------------------------------------------------


def test_forced_bf16_gives_float32_outputs_agreeing_with_fp32_on_the_tiny_fcn(forced) -> None:
    net = converters.load_caffe(PROTOTXT, CAFFEMODEL)
    bf16 = precision.reduced(net, "bf16")
    case = np.load(TINY / "io.npz")
    inputs = [torch.from_numpy(case["run0/input:data"]), _smooth_input()]
    with torch.inference_mode():
        for x in inputs:
            reference, out = net(data=x), bf16(data=x)
            assert set(out) == set(reference)
            for name in reference:
                assert out[name].dtype == torch.float32 and out[name].shape == reference[name].shape
                assert _agreement(reference[name], out[name]) >= 0.99
                assert not torch.equal(out[name], reference[name])  # it did compute in bf16
    assert all(p.dtype == torch.float32 for p in net.parameters())  # the fp32 net is left as it was
    assert bf16.caffe is net.caffe


def test_on_the_cpu_a_bf16_net_keeps_its_deconvolutions_in_float32_and_its_blobs_channels_last(
    forced,
) -> None:
    net = converters.load_caffe(PROTOTXT, CAFFEMODEL, optimize=False)
    bf16 = precision.reduced(net, "bf16")
    seen: dict[str, tuple] = {}

    def record(module, args, output) -> None:
        seen[names[module]] = (args[0].dtype, args[0].is_contiguous(memory_format=torch.channels_last),
                               output.dtype)  # fmt: skip

    kinds = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)
    names = {m: n for n, m in net.named_modules() if isinstance(m, kinds)}
    hooks = [m.register_forward_hook(record) for m in names]
    try:
        with torch.inference_mode():
            out = bf16(data=_smooth_input())["score"]
    finally:
        for hook in hooks:
            hook.remove()
    # a Deconvolution takes a bf16 blob, computes in float32 (its weights' dtype) and gives bf16 back
    assert seen["upscore2"] == seen["upscore"] == (torch.bfloat16, True, torch.bfloat16)
    upscore = net.upscore2
    x = torch.randn(1, 3, 5, 6).to(torch.bfloat16)
    with torch.inference_mode():
        want = torch.nn.functional.conv_transpose2d(x.float(), upscore.weight, None, 2).to(torch.bfloat16)
        got = torch.func.functional_call(upscore, {"weight": bf16._copies["upscore2.weight"]}, (x,))
    assert bf16._copies["upscore2.weight"].dtype == torch.float32 and torch.equal(got, want)
    # every convolution reads a channels-last bf16 blob (oneDNN's fast bf16 kernels want it)
    convolutions = [n for m, n in names.items() if not isinstance(m, torch.nn.ConvTranspose2d)]
    assert convolutions and all(seen[n][:2] == (torch.bfloat16, True) for n in convolutions)
    assert out.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in net.parameters())  # the fp32 net is left as it was


def test_bf16_on_the_plain_graph_agrees_with_bf16_on_the_fast_graph(forced) -> None:
    fast = converters.load_caffe(PROTOTXT, CAFFEMODEL)
    plain = converters.load_caffe(PROTOTXT, CAFFEMODEL, optimize=False)
    x = _smooth_input()
    with torch.inference_mode():
        a = precision.reduced(fast, "bf16")(data=x)["score"]
        b = precision.reduced(plain, "bf16")(data=x)["score"]
    assert _agreement(a, b) >= 0.99


def test_load_model_precision_casts_the_net_it_builds_once(forced) -> None:
    from weights.models import load_model

    model = load_model([PROTOTXT, CAFFEMODEL], "cpu", precision="bf16")
    assert model.precision == "bf16"
    dtypes = {name.split(".")[-2]: p.dtype for name, p in model.net.named_parameters()}
    assert {layer for layer, dtype in dtypes.items() if dtype != torch.bfloat16} == {"upscore2", "upscore"}
    assert {dtypes["upscore2"], dtypes["upscore"]} == {torch.float32}  # (the Deconvolutions: below)
    assert model.net.caffe.inputs == {"data": model.net.caffe.inputs["data"]}
    with torch.inference_mode():
        out = model.net(data=_smooth_input())
    assert out["score"].dtype == torch.float32


def test_a_model_loaded_in_bf16_segments_in_bf16_without_saying_it_again(forced) -> None:
    from weights.models import load_model

    model = load_model([PROTOTXT, CAFFEMODEL], "cpu", precision="bf16")
    image = np.random.default_rng(1).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    assert model.segment(image).scores.dtype == np.float32
    with pytest.raises(UsageError, match="built in bf16"):
        model.segment(image, precision="fp32")


def test_the_api_precision_reaches_the_forward(forced, monkeypatch) -> None:
    from eval.runner import evaluate_model
    from reproduce.segment import segment

    calls: list[torch.dtype] = []
    original = precision.ReducedPrecision.forward

    def spy(self, *args, **inputs):
        calls.append(self.dtype)
        return original(self, *args, **inputs)

    monkeypatch.setattr(precision.ReducedPrecision, "forward", spy)
    net = converters.load_caffe(PROTOTXT, CAFFEMODEL)
    image = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    fp32 = segment(net, image)
    assert calls == []
    result = segment(net, image, precision="bf16")
    assert calls == [torch.bfloat16]
    assert result.scores.dtype == np.float32
    assert (result.labels == fp32.labels).mean() >= 0.99
    segment([str(PROTOTXT), str(CAFFEMODEL)], image, precision="bf16")  # a spec: built in bf16
    assert calls == [torch.bfloat16] * 2

    class Images(torch.utils.data.Dataset):
        name, modalities, wanted = "tiny", ("color",), ["color"]
        heads = [type("Head", (), {"name": "semantic", "num_classes": 3, "exclude": (), "classes": ()})()]

        def __len__(self) -> int:
            return 2

        def __getitem__(self, index: int) -> dict:
            x = _smooth_input(24, 32)[0]
            label = torch.zeros(24, 32, dtype=torch.int64)
            return {"index": index, "id": str(index), "inputs": {"color": x}, "labels": {"semantic": label}}

    calls.clear()
    evaluate_model(net, Images(), inputs={"data": "color"}, precision="bf16")
    assert calls == [torch.bfloat16] * 2


def test_segment_cli_forced_bf16_writes_float32_scores_close_to_fp32(forced, tmp_path, capsys) -> None:
    from reproduce import segment

    image = str(REPO / "reproduce" / "data" / "image.jpg")
    base = ["--model", str(PROTOTXT), str(CAFFEMODEL), image, "--scores", "--no-progress"]
    assert segment.main([*base, "-o", str(tmp_path / "fp32")]) == 0
    assert segment.main([*base, "-o", str(tmp_path / "bf16"), "--precision", "bf16"]) == 0
    out = capsys.readouterr().out
    assert "note: computing in bf16 (forced, emulated: not representative)" in out
    assert "on cpu in bf16 in" in out
    a = np.load(tmp_path / "fp32" / "image.scores.npy")
    b = np.load(tmp_path / "bf16" / "image.scores.npy")
    assert b.dtype == np.float32 and (a.argmax(0) == b.argmax(0)).mean() >= 0.99


def test_eval_cli_forced_bf16_says_what_it_computed_in(forced, tmp_path, capsys) -> None:
    from test_eval_voc import IDS, write_colour_caffe_model
    from vocgen import write_voc

    from eval import voc

    write_voc(tmp_path / "voc", IDS[:2], seed=7)
    prototxt, caffemodel = write_colour_caffe_model(tmp_path)
    base = ["--model", str(prototxt), str(caffemodel), "--voc-root", str(tmp_path / "voc"),
            "--split", "val2011", "--workers", "0", "--no-progress"]
    assert voc.main([*base, "--json", str(tmp_path / "fp32.json")]) == 0
    assert voc.main([*base, "--precision", "bf16", "--json", str(tmp_path / "bf16.json")]) == 0
    assert "note: computed in bf16 (forced, emulated: not representative)" in capsys.readouterr().out
    fp32, bf16 = (json.loads((tmp_path / f"{p}.json").read_text()) for p in ("fp32", "bf16"))
    assert fp32["precision"] == "fp32" and bf16["precision"].startswith("bf16 (forced")
    assert abs(fp32["heads"]["semantic"]["mean_iu"] - bf16["heads"]["semantic"]["mean_iu"]) < 1.0


def test_timing_precision_bf16_adds_a_bf16_row_with_its_speed_up(forced, capsys) -> None:
    from eval import timing

    argv = ["--model", str(PROTOTXT), "--weights", str(CAFFEMODEL), "--size", "40", "--device", "cpu",
            "--precision", "bf16", "--no-progress", "--warmup", "1"]
    assert timing.main(argv) == 0
    out = capsys.readouterr().out
    assert "| bf16 |" in out and "| cpu_fast + bf16 |" in out
    assert "note: bf16 rows computed in bf16 (forced, emulated: not representative)" in out
    assert "note: bf16: " in out and "x the speed of fp32, argmax agreement" in out


def test_timing_refuses_precision_and_autocast_together(forced, capsys) -> None:
    from eval import timing

    argv = ["--model", str(PROTOTXT), "--size", "40", "--precision", "bf16", "--autocast", "fp16"]
    assert timing.main(argv) == 2
    assert "time one at a time" in capsys.readouterr().err


def test_requested_variants_put_bf16_last_and_in_the_combination() -> None:
    from eval.timing import requested_variants

    labels = [v.label for v in requested_variants(False, False, None, False, cpu_fast=True, precision="bf16")]
    assert labels == ["cpu_fast", "bf16", "cpu_fast + bf16"]
    assert [v.label for v in requested_variants(False, False, None, False, precision="fp32")] == []


# --- the options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module", ["reproduce.segment", "eval.voc", "eval.sbd", "eval.context", "eval.nyud", "eval.siftflow",
               "eval.timing"],
)
def test_help_of_segment_every_evaluator_and_timing_lists_precision_default_fp32(module, capsys) -> None:
    import importlib

    assert importlib.import_module(module).main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--precision {fp32,bf16}" in out
    assert "FCN_PORT_FORCE_BF16=1" in " ".join(out.split())


def test_fp32_stays_the_default_and_builds_no_wrapper() -> None:
    from weights.models import load_model

    model = load_model([PROTOTXT, CAFFEMODEL], "cpu")
    assert model.precision == "fp32" and not isinstance(model.net, precision.ReducedPrecision)
    assert precision.reduced(model.net, "fp32") is model.net



def _benchmark():
    import importlib.util

    spec = importlib.util.spec_from_file_location("bf16_benchmark", REPO / "benchmarks" / "bf16.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_says_bf16_is_not_supported_here_and_measures_nothing(no_bf16, capsys) -> None:
    assert _benchmark().main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("bf16 is not supported here: ") and "neither AMX nor AVX-512 BF16" in out
    assert "|" not in out


def test_the_forced_benchmark_prints_both_times_agreement_and_mean_iu_change(forced, capsys, tmp_path):
    argv = ["--models", "voc-fcn8s", "--width", "0.0625", "--size", "40", "--images", "1",
            "--image-size", "40x30", "--runs", "1", "--json", str(tmp_path / "r.json")]
    assert _benchmark().main(argv) == 0
    out = capsys.readouterr().out
    assert "# bf16 against fp32: bf16 (forced, emulated: not representative)" in out
    row = next(line for line in out.splitlines() if line.startswith("| voc-fcn8s |"))
    assert len(row.split("|")) == 11
    assert "forced, emulated: not representative" in out.splitlines()[-1]
    result = json.loads((tmp_path / "r.json").read_text())["rows"][0]
    assert result["agreement"] >= 0.9 and abs(result["bf16"] - result["fp32"]) < 5


# --- every layer a bf16 net may meet --------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_every_official_fcn_net_runs_in_bf16_and_agrees_with_fp32(model, forced) -> None:
    # (FCN-AlexNet's LRN runs on a kernel PyTorch has no bfloat16 one of: it computes in float32)
    net = converters.load_caffe(net_definition(model, "deploy", width=0.0625), None, strict=False)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            if parameter.dim() > 1 and "upscore" not in name:  # (the upsampling keeps its bilinear weights)
                scale = parameter[0].numel() ** 0.5
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / scale)
    shapes = net.caffe.inputs.items()
    inputs = {name: torch.randn(1, shape[1], 64, 80, generator=generator) for name, shape in shapes}
    bf16 = precision.reduced(net, "bf16")
    with torch.inference_mode():
        want, got = net(**inputs), bf16(**inputs)
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name].dtype == torch.float32 and got[name].shape == value.shape
        assert _agreement(value, got[name]) >= 0.9, name


def test_a_bf16_lrn_is_computed_in_float32_and_given_back_in_bf16() -> None:
    from converters.layers.normalization import LocalResponseNorm

    lrn = LocalResponseNorm(5, 1e-4, 0.75, 1.0)
    x = torch.rand(2, 7, 6, 5).to(torch.bfloat16)
    got = lrn(x)
    assert got.dtype == torch.bfloat16
    want = torch.nn.functional.local_response_norm(x.float(), 5, 1e-4, 0.75, 1.0)
    assert torch.equal(got, want.to(torch.bfloat16))


def test_the_max_pooling_mask_of_a_bf16_blob_indexes_planes_past_256_exactly() -> None:
    from converters.layers.pooling import max_pool_with_mask

    x = torch.randn(1, 2, 30, 40, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    _, mask = max_pool_with_mask(x, (2, 2), (2, 2), (0, 0), (15, 20))
    _, want = max_pool_with_mask(x.float(), (2, 2), (2, 2), (0, 0), (15, 20))
    assert mask.dtype == torch.float32 and torch.equal(mask, want)  # (in bf16, 1199 would read 1200)


def test_a_net_with_shared_parameters_runs_in_bf16(forced) -> None:
    folder = REPO / "tests" / "fixtures" / "layers" / "shared_params"
    net = converters.load_caffe(folder / "net.prototxt", folder / "weights.caffemodel")
    x = torch.randn(1, 3, 4, 5, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        want, got = net(data=x), precision.reduced(net, "bf16")(data=x)
    for name, value in want.items():
        torch.testing.assert_close(got[name], value, rtol=0.05, atol=0.05 * float(value.abs().max()))


def test_a_recurrent_state_carried_from_a_float32_forward_continues_in_bf16(forced) -> None:
    folder = REPO / "tests" / "fixtures" / "layers" / "recurrent_carry"
    info = json.loads((folder / "case.json").read_text())
    npz = np.load(folder / "io.npz")
    run = info["runs"][0]
    inputs = {k.split(":", 1)[1]: torch.from_numpy(npz[k]) for k in npz.files
              if k.startswith(f"{run['prefix']}input:")}  # fmt: skip
    weights = folder / "weights.caffemodel"
    net = converters.load_caffe(
        folder / "net.prototxt", weights if weights.exists() else None,
        input_shapes={b: tuple(v.shape) for b, v in inputs.items()}, **info.get("load_options", {}),
    )  # fmt: skip
    with torch.inference_mode():
        net(**inputs)  # (its state is now carried, in float32)
        out = precision.reduced(net, "bf16")(**inputs)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in out.values())
