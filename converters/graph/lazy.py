"""Nets whose input shapes are not declared (an ``Input`` layer without ``shape``, a data layer a
guess does not fit): built on their first call, for the shapes of that call's inputs, instead of
being built, or refused, for a guessed size."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, fx, nn

from ..errors import NetError

Shape = tuple[int, ...]
Builder = Callable[[dict[str, Shape], torch.device], fx.GraphModule]


class UnbuiltNetError(NetError, AttributeError):
    """What a net built on its first call cannot tell before that call (its ``caffe`` info, its
    code, its parameters' shapes)."""


class LazyCaffeNet(nn.Module):
    """A Caffe net built by :func:`converters.build_graph` on its first call, for the shapes (and the
    device) of that call's inputs; from then on it *is* that graph (same class, same state dict,
    ``net.caffe``, ``net.code``). Later calls with other shapes run that graph, as any built net
    does. Before the first call it holds no parameters: give ``input_shapes`` to build at once."""

    def __init__(self, build: Builder, unsized: Sequence[str], device: torch.device | None) -> None:
        super().__init__()
        self._build = build
        self._device = device
        self.unsized_inputs: tuple[str, ...] = tuple(unsized)
        """The input blobs whose shapes the net does not declare."""

    def extra_repr(self) -> str:
        return f"unbuilt: the shapes of {', '.join(self.unsized_inputs)} come from the first call"

    def forward(self, **inputs: Any) -> dict[str, Tensor]:
        missing = [blob for blob in self.unsized_inputs if not isinstance(inputs.get(blob), Tensor)]
        if missing:
            raise TypeError(
                f"the net's first call needs a tensor for each of {', '.join(self.unsized_inputs)} "
                f"(missing: {', '.join(missing)}): their shapes are what the net is built for"
            )
        shapes = {blob: tuple(value.shape) for blob, value in inputs.items() if isinstance(value, Tensor)}
        device = self._device or inputs[self.unsized_inputs[0]].device
        graph = self._build(shapes, device)
        graph.train(self.training)
        self.__class__ = graph.__class__  # become the graph: what a built net is, in every respect
        self.__dict__ = graph.__dict__
        return self(**inputs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_") and name != "_caffe":
                raise
            raise UnbuiltNetError(
                f"the net does not declare the shape of {', '.join(self.unsized_inputs)}: it is built on "
                f"its first call (net({self.unsized_inputs[0]}=x)), so '{name}' is not known yet; give "
                "input_shapes (--input-shape) to build it at once"
            ) from None
