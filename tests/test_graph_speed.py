"""The CPU-optimised graph (border skipping, NNPACK convolutions, in-place ReLU) is the default on
the CPU and still gives Caffe's numbers (every parity test in tests/test_fcn_parity.py and
tests/test_layers_parity.py runs it; full-width voc-fcn8s there too)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from converters import build_graph, load_caffe, load_converted, save_converted, write_prototxt
from converters.fcn.nets import net_definition
from converters.graph.border import BorderPlanner
from converters.graph.speed import NNPACKConv2d, kernel_choices, nnpack_available, optimize_for_cpu
from eval import timing
from tests.test_fcn_parity import ROOT, SMALL, arrays, assert_matches_caffe, case, graph, run_inputs, weights

needs_nnpack = pytest.mark.skipif(not nnpack_available(), reason="this PyTorch build or CPU has no NNPACK")


@needs_nnpack
@pytest.mark.parametrize(
    "folder", [f for f in SMALL if f in ("voc-fcn8s", "voc-fcn-alexnet", "siftflow-fcn16s")]
)
def test_optimised_graph_matches_caffe(folder: str) -> None:
    net = optimize_for_cpu(load_caffe(ROOT / folder / "deploy.prototxt", weights(folder), optimize=False))
    assert any(isinstance(m, NNPACKConv2d) for m in net.children())
    for run in range(len(case(folder)["runs"])):
        with torch.no_grad():
            got = net(**run_inputs(folder, run))
        for blob, value in got.items():
            assert_matches_caffe(value, arrays(folder)[f"output:{blob}:{run}"], f"{folder} run {run} {blob}")


def test_state_dict_and_gradients_are_unchanged() -> None:
    net = build_graph(net_definition("voc-fcn16s", "deploy", width=0.0625), seed=2)
    fast = optimize_for_cpu(copy.deepcopy(net))
    assert list(fast.state_dict()) == list(net.state_dict())
    x = torch.randn(2, 3, 19, 27, generator=torch.Generator().manual_seed(3)) * 50
    with torch.no_grad():
        torch.testing.assert_close(fast(data=x)["score"], net(data=x)["score"], rtol=1e-4, atol=1e-4)
    fast(data=x)["score"].sum().backward()  # falls back to PyTorch's kernel under autograd
    net(data=x)["score"].sum().backward()
    torch.testing.assert_close(fast.conv1_1.weight.grad, net.conv1_1.weight.grad, rtol=1e-4, atol=1e-4)
    assert "torch.relu_" in fast.code and "torch.relu_" not in net.code


def test_load_caffe_gives_the_fast_graph_on_the_cpu_and_the_plain_one_on_request() -> None:
    definition = net_definition("voc-fcn32s", "deploy", width=0.0625)
    fast, plain = load_caffe(definition, None), load_caffe(definition, None, optimize=False)
    assert any(isinstance(m, BorderPlanner) for m in fast.modules())
    assert not any(isinstance(m, (BorderPlanner, NNPACKConv2d)) for m in plain.modules())
    assert list(fast.state_dict()) == list(plain.state_dict())
    meta = load_caffe(definition, None, device="meta")
    assert not any(isinstance(m, BorderPlanner) for m in meta.modules())
    assert not any(isinstance(m, BorderPlanner) for m in build_graph(definition).modules())


def test_the_caffe_parity_tests_run_the_default_fast_graph() -> None:
    net = graph("voc-fcn8s")
    assert any(isinstance(m, BorderPlanner) for m in net.modules())
    if nnpack_available():
        assert any(isinstance(m, NNPACKConv2d) for m in net.modules())


def test_optimising_twice_changes_nothing_more() -> None:
    net = load_caffe(net_definition("voc-fcn8s", "deploy", width=0.0625), None)
    code = net.code
    assert optimize_for_cpu(net).code == code


def test_converted_files_load_fast_on_the_cpu_with_the_same_outputs(tmp_path) -> None:
    definition = net_definition("voc-fcn8s", "deploy", width=0.0625)
    plain = load_caffe(definition, None, optimize=False)
    save_converted(plain, tmp_path / "net.safetensors")
    fast = load_converted(tmp_path / "net.safetensors")
    assert any(isinstance(m, BorderPlanner) for m in fast.modules())
    assert not any(
        isinstance(m, BorderPlanner)
        for m in load_converted(tmp_path / "net.safetensors", optimize=False).modules()
    )
    x = torch.randn(1, 3, 23, 31, generator=torch.Generator().manual_seed(1)) * 50
    with torch.no_grad():
        expected, got = plain(data=x)["score"], fast(data=x)["score"]
    assert float((got - expected).abs().max()) <= 1e-5 * float(expected.abs().max())


def test_timing_on_the_cpu_times_the_default_graph_beside_the_plain_one(tmp_path, capsys) -> None:
    definition = net_definition("voc-fcn32s", "deploy", width=0.0625)
    write_prototxt(definition, tmp_path / "deploy.prototxt")
    args = ["--model", str(tmp_path / "deploy.prototxt"), "--size", "8x8", "--device", "cpu", "--runs", "20"]
    assert timing.main([*args, "--warmup", "1", "--json", str(tmp_path / "t.json"), "--no-progress"]) == 0
    rows = json.loads((tmp_path / "t.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["fp32", "cpu_fast"]


def _conv(cin: int, cout: int, k: int, seed: int, scale: float = 1.0) -> NNPACKConv2d:
    conv = NNPACKConv2d(cin, cout, k, padding=k // 2)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * scale / (cin * k * k) ** 0.5)
        conv.bias.copy_(torch.randn(cout, generator=generator) * 0.05)
    return conv.eval()


@needs_nnpack
def test_nnpack_runs_only_where_calibration_finds_it_as_precise_as_the_direct_kernel() -> None:
    """The rule of converters.graph.speed: NNPACK where its error on the probe, RMS and largest, is
    within RMS_RATIO / MAX_RATIO of the direct kernel's; else the layer is the plain convolution,
    bit for bit. Winograd (3x3) on an RGB input is far less precise on every CPU we know."""
    from converters.graph import speed

    first = _conv(3, 64, 3, seed=1)
    choice = first.kernel_choice()
    assert choice.nnpack == "nnpack-winograd" and not choice.kernel.startswith("nnpack")
    assert choice.nnpack_error > speed.RMS_RATIO
    x = torch.randn(2, 3, 31, 29, generator=torch.Generator().manual_seed(4)) * 50
    with torch.no_grad():
        assert torch.equal(first(x), torch.nn.functional.conv2d(x, first.weight, first.bias, padding=1))
    for cin, k in ((3, 3), (64, 3), (64, 5), (256, 7), (16, 2)):
        choice = _conv(cin, 32, k, seed=cin + k).kernel_choice()
        kept = choice.nnpack_error <= speed.RMS_RATIO and choice.nnpack_max_error <= speed.MAX_RATIO
        assert choice.kernel.startswith("nnpack") == kept, choice


@needs_nnpack
def test_calibration_follows_the_weights_and_is_done_at_load(monkeypatch) -> None:
    from converters.graph import speed

    net = load_caffe(net_definition("voc-fcn8s", "deploy", width=0.0625), None)
    convs = [m for m in net.modules() if isinstance(m, NNPACKConv2d)]
    assert convs and all(m.choice is not None for m in convs)  # calibrated by load_caffe
    calls = []
    real = speed.calibrate
    monkeypatch.setattr(speed, "calibrate", lambda conv: calls.append(conv) or real(conv))
    x = torch.randn(1, 3, 20, 20) * 50
    with torch.no_grad():
        net(data=x)
    assert calls == []  # the first forward pays nothing per layer
    with torch.no_grad():
        convs[0].weight.mul_(2)  # new weights: calibrated again, once
        net(data=x)
        net(data=x)
    assert calls == [convs[0]]
    net.load_state_dict(net.state_dict())
    with torch.no_grad():
        net(data=x)
    assert len(calls) == 1 + len(convs)


def test_kernel_choices_name_every_convolutions_kernel() -> None:
    net = load_caffe(net_definition("voc-fcn8s", "deploy", width=0.0625), None)
    choices = kernel_choices(net)
    convs = [n for n, m in net.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert sorted(choices) == sorted(convs)
    assert all(text.split(" ")[0] for text in choices.values())
    if nnpack_available():
        assert "nnpack-winograd refused" in choices["conv1_1"]


def test_kernel_choices_on_the_nets_feeds_name_what_pytorch_picked_for_each_layers_input() -> None:
    from converters.graph.speed import direct_kernel

    net = load_caffe(net_definition("voc-fcn8s", "deploy", width=0.0625), None)
    x = torch.randn(1, 3, 40, 40)
    seen = {}
    hook = net.score_fr.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0].clone()))
    with torch.no_grad():
        net(data=x)
    hook.remove()
    on_feeds, on_probe = kernel_choices(net, {"data": x}), kernel_choices(net)
    assert sorted(on_feeds) == sorted(on_probe)
    conv = net.score_fr
    expected = direct_kernel(seen["x"], conv.weight, conv.stride, conv.padding, conv.dilation, conv.groups)
    assert on_feeds["score_fr"].split(" ")[0] == expected


def test_a_layer_too_wide_to_probe_cheaply_keeps_the_direct_kernel_and_loads_in_bounded_time() -> None:
    """A million input channels (the params fuzz target's case) made the probe hold gigabytes and take
    a minute at load; such a layer is not probed and runs the direct kernel, exact as the plain graph."""
    from converters import parse_text
    from converters.graph import speed

    channels = speed.PROBE_VALUES // (3 * 10 * 10) + 1  # an unpadded 3x3 probe: 10 x 10 pixels a channel
    text = (
        f'layer {{ name: "in" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: {channels} '
        'dim: 4 dim: 4 } } }\n'
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "y" '
        "convolution_param { num_output: 2 kernel_size: 3 } }"
    )
    net = load_caffe(parse_text(text), None)
    (conv,) = [m for m in net.modules() if isinstance(m, NNPACKConv2d)]
    assert conv.choice is not None and conv.choice.kernel == "direct (too wide to probe)"
    assert "not probed" in str(conv.choice)


@pytest.fixture()
def calibration_file(tmp_path, monkeypatch):
    """A fresh calibration file in a cache folder of the test's own (the process's copy forgotten)."""
    from converters.graph import speed

    monkeypatch.setenv("FCN_PORT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(speed, "_CALIBRATION_STATE", {"entries": None, "dirty": False, "path": None})
    return tmp_path / "cache" / speed.CALIBRATION_CACHE


@needs_nnpack
def test_a_calibration_is_kept_per_machine_and_weights_and_read_back_instead_of_probing_again(
    calibration_file, monkeypatch
) -> None:
    from converters.graph import speed

    net = load_caffe(net_definition("voc-fcn8s", "deploy", width=0.0625), None)
    fresh = {name: m.choice for name, m in net.named_modules() if isinstance(m, NNPACKConv2d)}
    assert fresh and not any(c.cached for c in fresh.values())
    assert len(json.loads(calibration_file.read_text())) == len(fresh)
    monkeypatch.setattr(speed, "_CALIBRATION_STATE", {"entries": None, "dirty": False, "path": None})
    probes = []
    monkeypatch.setattr(speed, "_calibrate", lambda conv, started: probes.append(conv))
    again = load_caffe(net_definition("voc-fcn8s", "deploy", width=0.0625), None)
    kept = {name: m.choice for name, m in again.named_modules() if isinstance(m, NNPACKConv2d)}
    assert probes == [] and all(c.cached for c in kept.values())
    assert {n: c.kernel for n, c in kept.items()} == {n: c.kernel for n, c in fresh.items()}
    with torch.no_grad():
        again.conv1_1.weight.mul_(3)  # other weights: another key, probed
        probe = lambda conv, started: probes.append(conv) or fresh["conv1_1"]  # noqa: E731
        monkeypatch.setattr(speed, "_calibrate", probe)
        again.conv1_1.kernel_choice()
    assert probes == [again.conv1_1]


@needs_nnpack
@pytest.mark.parametrize(
    "damage",
    ["not json", "[1, 2]", '{"k": ["onednn", "", 1, 2]}', "fifo", "folder", "huge"],
)
def test_a_damaged_calibration_file_is_read_as_empty_and_replaced(calibration_file, damage) -> None:
    import os

    from converters.graph import speed

    calibration_file.parent.mkdir(parents=True)
    if damage == "fifo":
        os.mkfifo(calibration_file)
    elif damage == "folder":
        calibration_file.mkdir()
    elif damage == "huge":
        calibration_file.write_text("{" + " " * (speed._CALIBRATION_BYTES + 1) + "}")
    else:
        calibration_file.write_text(damage)
    net = load_caffe(net_definition("voc-fcn8s", "deploy", width=0.0625), None)  # neither hangs nor fails
    choices = [m.choice for m in net.modules() if isinstance(m, NNPACKConv2d)]
    assert choices and not any(c.cached for c in choices)
    if damage not in ("fifo", "folder"):
        assert len(json.loads(calibration_file.read_text())) == len(choices)


def test_a_cache_folder_that_cannot_be_written_keeps_no_calibration_and_says_nothing(
    calibration_file, capsys
) -> None:
    calibration_file.parent.parent.mkdir(exist_ok=True)
    calibration_file.parent.write_text("a file where the cache folder should be")
    net = load_caffe(net_definition("voc-fcn8s", "deploy", width=0.0625), None)
    assert net is not None and capsys.readouterr() == ("", "")


def test_loading_a_net_imports_no_sympy(tmp_path) -> None:
    """torch's Python meta kernels and Module.to_empty import sympy (0.3-0.9 s) on first use; a load
    must not pay that (issue 20: first use as fast as the next)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from converters import load_caffe\n"
        "from converters.fcn.nets import net_definition\n"
        "net = load_caffe(net_definition('voc-fcn8s', 'deploy', width=0.0625), None)\n"
        "print('sympy' in sys.modules)\n"
    )
    env = {**__import__("os").environ, "FCN_PORT_CACHE": str(tmp_path)}
    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=repo, check=True
    )
    assert out.stdout.strip() == "False", out.stderr
