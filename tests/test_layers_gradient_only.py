"""``gradient_only``: the layers whose Caffe backward is not their forward's derivative carry that
gradient on zeros, which must stay zeros (and the value unchanged) where the input is not finite."""

from __future__ import annotations

import math

import torch

from converters.layers.gradients import gradient_only

VALUES = [1.5, -2.0, math.inf, -math.inf, math.nan, 0.0]


def test_a_value_plus_gradient_only_of_infinities_and_nan_is_the_value_exactly() -> None:
    x = torch.tensor(VALUES, requires_grad=True)
    value = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    y = value + gradient_only(x) * 2.0
    assert torch.equal(y.detach(), value)
    # the old form gave NaN at both infinities and at the NaN
    assert torch.isnan(value + (x - x.detach()) * 2.0).sum() == 3


def test_gradient_only_passes_the_gradient_on_times_its_factor() -> None:
    x = torch.tensor(VALUES, requires_grad=True)
    factor = torch.tensor([1.0, 0.0, 3.0, 0.5, 1.0, -1.0])
    (torch.ones(6) + gradient_only(x) * factor).backward(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    assert torch.equal(x.grad, torch.tensor([1.0, 0.0, 9.0, 2.0, 5.0, -6.0]))


def test_gradient_only_records_nothing_outside_autograd() -> None:
    x = torch.tensor(VALUES, requires_grad=True)
    with torch.no_grad():
        zeros = gradient_only(x)
    assert zeros.grad_fn is None and torch.equal(zeros, torch.zeros(6))
