"""Shared test fixtures: where the third-party reference material lives, and skipping without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def shared_root() -> Path | None:
    """``../shared`` beside the checkout (or ``$FCN_PORT_SHARED``), if it exists."""
    env = os.environ.get("FCN_PORT_SHARED")
    path = Path(env) if env else REPO.parent / "shared"
    return path if path.is_dir() else None


def need_shared(*parts: str) -> Path:
    """The path ``shared/<parts>``, or skip the test saying the reference material is absent."""
    root = shared_root()
    if root is None:
        pytest.skip("needs ../shared (third-party reference files; not shipped with the repository)")
    path = root.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path}, which this copy of ../shared lacks")
    return path


@pytest.fixture
def shared() -> Path:
    """The ``../shared`` folder, or skip."""
    return need_shared()


@pytest.fixture
def real_models() -> Path:
    """``../shared/real-caffe-models``, or skip."""
    return need_shared("real-caffe-models")


@pytest.fixture
def fcn_reference() -> Path:
    """``../shared/fcn-reference``, or skip."""
    return need_shared("fcn-reference")


@pytest.fixture
def one_thread():
    """One torch thread for the duration of a test (tiny nets gain nothing from a second thread and
    lose a lot on a busy machine; one count everywhere keeps sums bit-identical); restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def caffemodel_bytes(seed: int, size: int) -> bytes:
    """A valid binary caffemodel of about ``size`` bytes (one layer, one blob of seeded values): what
    the download tests serve, since a file without a published checksum is recorded only when it
    reads as weights."""
    import numpy as np

    from converters.caffe.binary import encode_message
    from converters.caffe.formats import weights_to_net

    values = np.random.default_rng(seed).standard_normal(max(1, (size - 64) // 4)).astype(np.float32)
    return encode_message(weights_to_net({"w": [values]}))


def seeded_total(net, run: dict, npz, out: dict):
    """The scalar whose gradient is what Caffe's recorded backward pass started from: a loss top
    times its loss weight (a loss layer's other tops weigh 0; any layer's top may carry one), and
    each other output times its seeded diff (``top_diff:<blob>``, where one was seeded), except the
    blobs a layer consumes (Caffe overwrites their diff; a Crop's reference it never writes, so its
    seeded diff stays)."""
    import torch

    layers = list(net.caffe.definition.getall("layer"))
    consumed = {
        bottom
        for layer in layers
        for index, bottom in enumerate(layer.getall("bottom"))
        if bottom not in layer.getall("top") and not (str(layer.get("type")) == "Crop" and index == 1)
    }
    weights = {}
    for layer in layers:
        given = [float(w) for w in layer.getall("loss_weight")]
        if str(layer.get("type")).endswith("Loss") or given:  # (any top may carry a loss weight)
            weights.update(zip(layer.getall("top"), given or [1.0], strict=False))
    total = torch.zeros(())
    for blob in run["outputs"]:
        if blob in weights:
            total = total + weights[blob] * out[blob].sum()
        elif blob not in consumed and f"{run['prefix']}top_diff:{blob}" in npz.files:
            total = total + (out[blob] * torch.from_numpy(npz[f"{run['prefix']}top_diff:{blob}"])).sum()
    return total


def assert_gradients_match_caffe(name: str, prefix: str, npz, net, inputs: dict) -> None:
    """Every recorded diff of a fixture run (``grad:<input>``, ``param_grad:<layer>/<j>``) equals the
    ``.grad`` our backward pass left, within 1e-4 of the diff's largest value (a missing ``.grad``
    counts as zeros, which is what Caffe records for a blob it does not reach)."""
    import numpy as np

    state = {**dict(net.named_buffers()), **dict(net.named_parameters(remove_duplicate=False))}
    pairs = [(f"grad:{b}", inputs[b]) for b in inputs if f"{prefix}grad:{b}" in npz.files]
    pairs += [(f"param_grad:{layer}/{j}", state[key]) for layer, keys in net.caffe.parameter_blobs.items()
              for j, key in enumerate(keys)]  # fmt: skip
    assert pairs, f"{name}: nothing to compare"
    for key, tensor in pairs:
        want = npz[f"{prefix}{key}"]
        grad = tensor.grad
        got = np.zeros(want.shape, np.float32) if grad is None else grad.numpy().reshape(want.shape)
        # (Caffe's NaN and infinities, as a division by a zero scale leaves them, exactly where it has them)
        finite = np.isfinite(want)
        where = f"{name} {prefix}{key}"
        assert np.array_equal(np.isnan(got), np.isnan(want)), f"{where}: NaN elsewhere than Caffe's"
        assert np.array_equal(got[np.isinf(want)], want[np.isinf(want)]), f"{where}: infinities"
        scale = max(float(np.abs(want[finite]).max(initial=0.0)), 1e-6)
        error = float(np.abs(got[finite] - want[finite]).max(initial=0.0))
        assert error <= 1e-4 * scale, f"{name} {prefix}{key}: max error {error:g} (scale {scale:g})"
