"""Issue 20's precision bound, over every forward fixture made by real Caffe (or a fork's oracle;
``tests/precision_cases.py`` lists them): for each compared blob, the default graph of
``load_caffe`` (border skipping, calibrated NNPACK convolutions, in-place ReLUs) is at most twice
as far from Caffe's output as the plain graph (``optimize=False``):

    max|default - Caffe| <= 2 * max|plain - Caffe| + FLOOR_ULPS * eps32 * max|Caffe|

The floor: where the plain graph sums exactly as Caffe does (a tiny layer, one channel) it is 0 off,
and any other correct float32 order of the same sum (the border-skipping graph runs a convolution on
a smaller map, where oneDNN may block it otherwise) moves the result by a rounding or two of the
largest partial sums; a few units in the last place of the blob's largest value covers that and
nothing more (eps32 = 2^-23 ~ 1.2e-7, so the floor is ~1e-6 of the blob's scale, a hundred times
below the parity tests' 1e-4). Not a timing test.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests import precision_cases
from tests.conftest import need_shared

FLOOR_ULPS = 8
EPS32 = float(np.finfo(np.float32).eps)

CASES = {case.name: case for case in precision_cases.cases()}


def _params() -> list:
    return [pytest.param(name, marks=[pytest.mark.slow] if case.heavy else [], id=name)
            for name, case in CASES.items()]  # fmt: skip


def test_every_caffe_forward_fixture_is_a_case() -> None:
    groups = {name.split("/")[0] for name in CASES}
    assert {"layers", "forks", "tiny_fcn", "fcn", "real_nets", "forks_real", "real_models", "zoo"} <= groups
    assert "fcn/voc-fcn8s-full" in CASES and len([n for n in CASES if n.startswith("layers/")]) >= 30


@pytest.mark.parametrize("name", _params())
def test_default_graph_keeps_caffes_precision(name: str) -> None:
    case = CASES[name]
    if case.needs:
        need_shared(*case.needs)
    default, plain = case.run(None), case.run(False)
    errors = precision_cases.compare(default, plain)
    assert errors, f"{name}: nothing compared"
    for e in errors:
        bound = 2 * e.plain + FLOOR_ULPS * EPS32 * e.scale
        assert e.default <= bound, (
            f"{name} {e.blob}: default graph {e.default:.3g} off Caffe, plain {e.plain:.3g} "
            f"(bound {bound:.3g}, scale {e.scale:.3g})"
        )
