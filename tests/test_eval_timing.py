"""Timing (eval.timing): Table 1's static columns against the paper, timing statistics, variants, CLI."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from converters import parse_text, read_prototxt
from eval import timing
from eval.timing import (
    TimingError,
    Variant,
    argmax_agreement,
    coarse_score_blob,
    definition_parameter_count,
    markdown_report,
    parse_size,
    requested_variants,
    run_variants,
    static_columns,
    summarize,
    time_variant,
)
from tests.conftest import REPO

# A tiny FCN-shaped net: conv(k3,p1) -> pool(k2,s2) -> conv(k3,s2) -> score(k1) -> deconv(k4,s2).
TINY_NET = """
name: "tiny"
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 16 dim: 16 } } }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "r1" type: "ReLU" bottom: "c1" top: "c1" }
layer { name: "p1" type: "Pooling" bottom: "c1" top: "p1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "c2" type: "Convolution" bottom: "p1" top: "c2"
        convolution_param { num_output: 6 kernel_size: 3 stride: 2 group: 2 } }
layer { name: "skip" type: "Convolution" bottom: "p1" top: "skip"
        convolution_param { num_output: 5 kernel_size: 1 } }
layer { name: "score" type: "Convolution" bottom: "c2" top: "score"
        convolution_param { num_output: 5 kernel_size: 1 } }
layer { name: "up" type: "Deconvolution" bottom: "score" top: "up"
        convolution_param { num_output: 5 kernel_size: 4 stride: 2 bias_term: false } }
layer { name: "drop" type: "Dropout" bottom: "up" top: "up" include { phase: TRAIN } }
"""


class TinyModule(torch.nn.Module):
    """A hand-written module with the tiny net's layers: keyword input, dict output like load_caffe."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.c2 = torch.nn.Conv2d(4, 6, 3, stride=2, groups=2)
        self.skip = torch.nn.Conv2d(4, 5, 1)
        self.score = torch.nn.Conv2d(6, 5, 1)
        self.up = torch.nn.ConvTranspose2d(5, 5, 4, stride=2, bias=False)

    def forward(self, data: torch.Tensor) -> dict[str, torch.Tensor]:
        p1 = torch.nn.functional.max_pool2d(torch.relu(self.c1(data)), 2)
        return {"up": self.up(self.score(self.c2(p1))), "skip": self.skip(p1)}


def test_tiny_net_static_columns_by_hand() -> None:
    net = parse_text(TINY_NET)
    cols = static_columns(net)
    assert cols.coarse_blob == "score"
    # Conv layers on the path data -> score: c1, c2, score (the skip scorer is on another path).
    assert cols.conv_layers == 3
    # RF: c1 3; pool 3 + 1*1 = 4 (stride 2); c2 4 + 2*2 = 8 (stride 4); score k1 keeps 8.
    assert cols.receptive_field == 8 and cols.max_stride == 4
    by_hand = (4 * 3 * 9 + 4) + (6 * 2 * 9 + 6) + (5 * 4 + 5) + (5 * 6 + 5)
    assert cols.parameters == by_hand
    assert cols.all_parameters == by_hand + 5 * 5 * 16
    assert definition_parameter_count(net) == by_hand + 5 * 5 * 16


def test_module_parameter_count_matches_definition() -> None:
    net = parse_text(TINY_NET)
    module = TinyModule()
    assert sum(p.numel() for p in module.parameters()) == definition_parameter_count(net)
    cols = static_columns(net, module)
    assert cols.all_parameters == definition_parameter_count(net)
    assert cols.parameters == definition_parameter_count(net, upsampling=False)


def _millions(n: int) -> int:
    return round(n / 1e6)


@pytest.mark.parametrize(
    "model,conv_layers,params_m,receptive_field,max_stride",
    [("voc-fcn32s", 16, 134, 404, 32), ("voc-fcn-alexnet", 8, 57, 355, 32)],  # CVPR 2015 Table 1
)
def test_static_columns_match_paper_table1(
    fcn_reference, model: str, conv_layers: int, params_m: int, receptive_field: int, max_stride: int
) -> None:
    net = read_prototxt(fcn_reference / model / "val.prototxt")
    cols = static_columns(net)
    assert cols.coarse_blob == "score_fr"
    assert cols.conv_layers == conv_layers
    assert cols.receptive_field == receptive_field
    assert cols.max_stride == max_stride
    assert _millions(cols.parameters) == params_m


def test_static_columns_of_fcn8s_deploy(fcn_reference) -> None:
    cols = static_columns(read_prototxt(fcn_reference / "voc-fcn8s" / "deploy.prototxt"))
    assert (cols.conv_layers, cols.receptive_field, cols.max_stride) == (16, 404, 32)
    assert _millions(cols.parameters) == 134


def test_static_columns_from_fcn_nets_if_present() -> None:
    import converters.fcn.nets as fcn_nets
    for model, conv, params, rf in (("voc-fcn32s", 16, 134, 404), ("voc-fcn-alexnet", 8, 57, 355)):
        cols = static_columns(fcn_nets.net_definition(model, "deploy"))
        assert (cols.conv_layers, _millions(cols.parameters), cols.receptive_field, cols.max_stride) == (
            conv, params, rf, 32,
        )


def test_coarse_blob_without_upsampling() -> None:
    net = parse_text(
        'layer { name: "in" type: "Input" top: "data" }\n'
        'layer { name: "c" type: "Convolution" bottom: "data" top: "out"'
        " convolution_param { num_output: 2 } }"
    )
    assert coarse_score_blob(net) == "out"


def test_summarize_against_numpy() -> None:
    times = [5.0, 1.0, 3.0, 2.0, 4.0, 100.0]
    row = summarize("fp32", times, batch=2, first_call_ms=50.0)
    assert row.median_ms == pytest.approx(float(np.median(times)))
    assert (row.q1_ms, row.q3_ms) == pytest.approx(tuple(np.percentile(times, [25, 75])))
    assert (row.min_ms, row.max_ms) == (1.0, 100.0)
    assert row.images_per_s == pytest.approx(2 * 1000 / 3.5)
    with pytest.raises(ValueError):
        summarize("fp32", [], 1, 0.0)


def test_time_variant_uses_runs_and_warmup_with_a_fake_clock() -> None:
    ticks = itertools.count(0.0, 0.010)  # every clock read advances 10 ms
    calls = []

    class Counting(torch.nn.Module):
        def forward(self, data: torch.Tensor) -> dict[str, torch.Tensor]:
            calls.append(1)
            return {"score": data * 2}

    row, outputs = time_variant(
        Counting(), {"data": torch.ones(1, 2, 3, 3)}, Variant(), runs=20, warmup=4, clock=lambda: next(ticks)
    )
    assert len(calls) == 4 + 20  # the first warm-up pass is the timed first call
    assert len(row.times_ms) == 20 and row.median_ms == pytest.approx(10.0)
    assert row.first_call_ms == pytest.approx(10.0)
    assert torch.equal(outputs["score"], torch.full((1, 2, 3, 3), 2.0))


def test_argmax_agreement_counts_positions() -> None:
    ref = torch.zeros(1, 3, 2, 2)
    ref[0, 1] = 1.0  # argmax 1 everywhere
    other = ref.clone()
    other[0, 2, 0, 0] = 5.0  # one of four positions now argmax 2
    assert argmax_agreement({"score": ref}, {"score": other}) == {"score": 0.75}
    with pytest.raises(ValueError):
        argmax_agreement({"score": ref}, {"other": ref})


def test_run_variants_reports_agreement_against_fp32() -> None:
    torch.manual_seed(0)
    module = TinyModule().eval()
    inputs = {"data": torch.randn(1, 3, 16, 16) * 50}
    variants = requested_variants(channels_last=True, tf32=False, autocast="bf16", compile_=False)
    assert [v.label for v in variants] == ["channels_last", "autocast bf16", "channels_last + autocast bf16"]
    rows = run_variants(module, inputs, variants, runs=20, warmup=1)
    assert [r.variant for r in rows] == ["fp32", *(v.label for v in variants)]
    assert rows[0].argmax_agreement == 1.0
    assert rows[1].argmax_agreement == pytest.approx(1.0)  # same arithmetic, other memory layout
    assert set(rows[2].agreement_by_output) == {"up", "skip"}
    assert 0.5 < rows[2].argmax_agreement <= 1.0
    assert all(len(r.times_ms) == 20 and r.median_ms > 0 for r in rows)
    # The module itself is left as it was (channels_last works on a copy).
    assert module.c1.weight.is_contiguous()


def test_tf32_needs_cuda() -> None:
    with pytest.raises(TimingError, match="CUDA"):
        time_variant(TinyModule(), {"data": torch.zeros(1, 3, 8, 8)}, Variant(tf32=True), runs=20)


@pytest.mark.parametrize(
    "text,expected", [("500x500", (500, 500)), ("480X640", (480, 640)), ("256", (256, 256))]
)
def test_parse_size(text: str, expected: tuple[int, int]) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "ax5", "5x0", "1x2x3", "-3x4"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(TimingError):
        parse_size(text)


def test_paper_times() -> None:
    assert [p.ms for p in timing.paper_times("voc-fcn8s")] == [175.0, 210.0]
    assert [p.ms for p in timing.paper_times("voc-fcn32s")] == [210.0]
    assert [p.ms for p in timing.paper_times("voc-fcn-alexnet")] == [50.0]
    assert timing.paper_times("my-own-net") == []


def test_markdown_report_speed_up() -> None:
    row = summarize("fp32", [100.0] * 20, batch=1, first_call_ms=1.0)
    row.argmax_agreement = 1.0
    result = {
        "model": "voc-fcn32s", "size": [500, 500], "device_name": "cpu", "weights": "random", "runs": 20,
        "warmup": 3, "torch": torch.__version__, "threads": 2,
        "static": {"parameters": 134_346_581, "all_parameters": 136_152_917, "conv_layers": 16,
                   "receptive_field": 404, "max_stride": 32, "coarse_blob": "score_fr"},
        "paper": [{"net": "FCN-VGG16", "ms": 210.0, "source": "CVPR 2015 Table 1"}],
        "rows": [row.__dict__],
    }
    text = markdown_report(result)
    assert "| fp32 | 100.0 | 0.0 | 100.0-100.0 | 10.00 | reference | 210 ms | 2.10x |" in text
    assert "| 134.3M | 16 | 404 | 32 | score_fr | 136.2M |" in text


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "eval.timing", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )


def test_cli_help(capsys) -> None:
    assert timing.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--channels-last" in out and "--autocast" in out


@pytest.mark.parametrize(
    "args,message",
    [
        (["--size", "big"], "--size"),
        (["--runs", "5"], "at least 20"),
        (["--model", "missing.prototxt"], "--model missing.prototxt does not exist"),
        (["--device", "cpu", "--tf32"], "CUDA"),
    ],
)
def test_cli_errors_are_one_line(args: list[str], message: str, capsys) -> None:
    assert timing.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert len(err.strip().splitlines()) == 1


def test_cli_times_a_prototxt_end_to_end(tmp_path) -> None:
    proto = tmp_path / "tiny.prototxt"
    proto.write_text(TINY_NET)
    out = tmp_path / "t.json"
    result = _cli(
        "--model", str(proto), "--size", "16x16", "--device", "cpu", "--channels-last", "--cpu-fast",
        "--json", str(out),
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    variants = [r["variant"] for r in data["rows"]]
    assert variants == ["fp32", "cpu_fast", "channels_last", "channels_last + cpu_fast"]
    assert all(row["argmax_agreement"] == pytest.approx(1.0) for row in data["rows"][1:])
    assert data["static"]["conv_layers"] == 3 and data["static"]["receptive_field"] == 8
    assert data["static"]["all_parameters"] == definition_parameter_count(parse_text(TINY_NET))
    assert "| fp32 |" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_cuda_without_a_gpu_is_one_line_error(capsys) -> None:
    assert timing.main(["--device", "cuda", "--model", "voc-fcn8s"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_variant_labels_and_freeze_option(capsys) -> None:
    variants = requested_variants(channels_last=False, tf32=False, autocast=None, compile_=True, freeze=True)
    assert [v.label for v in variants] == ["compile (frozen)"]
    both = requested_variants(channels_last=True, tf32=False, autocast="fp16", compile_=True)
    assert [v.label for v in both][-1] == "channels_last + autocast fp16 + compile"
    assert requested_variants(False, False, None, False) == []
    assert timing.main(["--freeze"]) == 2
    assert "--freeze applies to --compile" in capsys.readouterr().err


CLASSIFIER = """
name: "classifier"
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 40 dim: 40 } } }
layer { name: "c1" type: "Convolution" bottom: "data" top: "c1"
        convolution_param { num_output: 4 kernel_size: 3 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "c1" top: "fc" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


def test_a_net_that_is_not_fully_convolutional_is_timed_at_its_declared_size(tmp_path, capsys) -> None:
    proto = tmp_path / "classifier.prototxt"
    proto.write_text(CLASSIFIER)
    out = tmp_path / "t.json"
    args = ["--model", str(proto), "--device", "cpu", "--no-progress", "--json", str(out)]
    assert timing.main(args) == 0
    captured = capsys.readouterr()
    data = json.loads(out.read_text())
    assert data["size"] == [40, 40] and data["static"]["receptive_field"] is None
    assert "declared input size 40x40" in captured.err and "| - | - | prob |" in captured.out
    assert timing.main([*args, "--size", "40x40"]) == 0
    capsys.readouterr()
    assert timing.main([*args, "--size", "500x500"]) == 2
    err = capsys.readouterr().err
    assert "not fully convolutional" in err and "leave out --size" in err and len(err.splitlines()) == 1


def test_a_size_far_from_the_papers_is_said_before_the_comparison() -> None:
    papers = timing.paper_times("voc-fcn8s")
    assert timing.size_notes((500, 500), papers) == [] and timing.size_notes((480, 520), papers) == []
    (note,) = timing.size_notes((224, 224), papers)
    assert "timed at 224x224, the paper at 500x500" in note
    assert timing.size_notes((224, 224), []) == []  # nothing of the paper's to compare with


def test_the_note_comes_before_the_paper_columns() -> None:
    row = dict(variant="fp32", median_ms=10.0, q1_ms=9.0, q3_ms=11.0, min_ms=8.0, max_ms=12.0,
               images_per_s=100.0, argmax_agreement=1.0)
    static = dict(parameters=1, conv_layers=1, receptive_field=3, max_stride=1, coarse_blob="s",
                  all_parameters=1)
    result = dict(model="m", size=[64, 64], device_name="cpu", weights="random", runs=20, warmup=1, torch="x",
                  threads=1, static=static, paper=[dict(net="FCN-8s", ms=175.0, source="paper")],
                  notes=["timed at 64x64, the paper at 500x500"], rows=[row])
    text = markdown_report(result)
    assert text.index("note: timed at 64x64") < text.index("paper FCN-8s (K40c)")


def test_timing_shows_progress_on_stderr(capsys) -> None:
    inputs = {"data": torch.zeros(1, 3, 8, 8)}
    time_variant(TinyModule(), inputs, Variant(), runs=20, warmup=1, progress=True)
    assert "timing fp32" in capsys.readouterr().err
    time_variant(TinyModule(), inputs, Variant(), runs=20, warmup=1)
    assert capsys.readouterr().err == ""


def test_cuda_graphs_variant_label_and_its_place_among_the_requested_variants() -> None:
    variants = requested_variants(
        channels_last=True, tf32=False, autocast="bf16", compile_=False, cuda_graphs=True
    )
    assert [v.label for v in variants] == [
        "channels_last",
        "autocast bf16",
        "cuda_graphs",
        "channels_last + autocast bf16 + cuda_graphs",
    ]
    assert requested_variants(False, False, None, False, cuda_graphs=True) == [Variant(cuda_graphs=True)]
    assert Variant(tf32=True, cuda_graphs=True).label == "tf32 + cuda_graphs"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without CUDA")
@pytest.mark.parametrize("args", [["--cuda-graphs"], ["--device", "cpu", "--cuda-graphs", "--channels-last"]])
def test_cuda_graphs_without_cuda_is_refused_in_one_line_before_any_model_loads(
    args: list[str], monkeypatch, capsys
) -> None:
    def no_loading(*a, **k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(timing, "load_model", no_loading)
    assert timing.main(args) == 2
    err = capsys.readouterr().err
    assert err == "error: --cuda-graphs applies to CUDA devices only\n"
    with pytest.raises(TimingError, match="CUDA devices only"):
        time_variant(TinyModule(), {"data": torch.zeros(1, 3, 8, 8)}, Variant(cuda_graphs=True), runs=20)


def test_cuda_graphs_and_compile_are_refused_together(monkeypatch, capsys) -> None:
    monkeypatch.setattr(timing, "cuda_graphs_supported", lambda device: True)
    with pytest.raises(TimingError, match="does not combine with --compile"):
        time_variant(
            TinyModule(), {"data": torch.zeros(1, 3, 8, 8)}, Variant(compile=True, cuda_graphs=True), runs=20
        )


def test_cuda_graphs_replay_copies_each_input_into_the_static_buffers_and_agrees_with_fp32(
    monkeypatch,
) -> None:
    """The CUDA calls (capture_cuda_graph) are replaced by a CPU stand-in: capture runs the forward
    once and then spoils the static input buffer, as stale data would; replay reruns the forward and
    writes into the captured outputs. Only the variant's copy of the input before each replay makes
    the replayed outputs right."""
    torch.manual_seed(0)
    module = TinyModule().eval()
    seen: list[torch.Tensor] = []
    original_forward = module.forward

    def recording_forward(data: torch.Tensor) -> dict[str, torch.Tensor]:
        seen.append(data)
        return original_forward(data)

    module.forward = recording_forward  # type: ignore[method-assign]
    replays = []

    def fake_capture(forward, device):
        static = forward()
        seen[-1].fill_(1e6)  # stale contents: a replay without the copy computes on these

        def replay() -> None:
            replays.append(1)
            for name, tensor in forward().items():
                static[name].copy_(tensor)

        return replay, static

    monkeypatch.setattr(timing, "cuda_graphs_supported", lambda device: True)
    monkeypatch.setattr(timing, "capture_cuda_graph", fake_capture)
    inputs = {"data": torch.randn(1, 3, 16, 16) * 50}
    source = inputs["data"].clone()
    variants = requested_variants(True, False, None, False, cuda_graphs=True)
    rows = run_variants(module, inputs, variants, runs=20, warmup=2)
    labels = ["fp32", "channels_last", "cuda_graphs", "channels_last + cuda_graphs"]
    assert [r.variant for r in rows] == labels
    assert len(replays) == 2 * 20  # every timed run of the two graph rows is a replay
    assert all(r.argmax_agreement == pytest.approx(1.0) for r in rows)
    assert all(len(r.times_ms) == 20 for r in rows)
    assert torch.equal(inputs["data"], source)  # the caller's input is never the static buffer
    row, outputs = time_variant(module, inputs, Variant(cuda_graphs=True), runs=20, warmup=1)
    assert len(replays) == 3 * 20 and row.variant == "cuda_graphs"
    with torch.inference_mode():
        eager = original_forward(source)
    assert all(torch.equal(outputs[name], eager[name]) for name in eager)
