"""BVLC's recurrent layers, LSTM and RNN, as Caffe unrolls them (``recurrent_layer.cpp``,
``lstm_layer.cpp``, ``rnn_layer.cpp``, ``lstm_unit_layer.cpp``).

Layout as in Caffe: ``x`` is sequence-major ``(T, N, ...)``, ``cont`` is ``(T, N)`` (0 where a
sequence starts: the state is cut there), an optional static input ``(N, ...)`` joins every step,
and with ``expose_hidden`` the initial state comes in as bottoms and the final state goes out as
tops; Caffe shares their values but not their gradients (none reaches the initial state, none
flows back from the final one), and neither do these modules. Without ``expose_hidden``, Caffe
carries the final state of one forward pass into the next as its initial state (the first pass
starts from zeros); so do these modules (``reset()`` forgets it, as Caffe's ``Reset``), except
in a graph traced for export, which starts every call from zeros (give the state as bottoms with
``expose_hidden`` to carry it there). The
parameter blobs are Caffe's, in its order: LSTM ``W_xc (4H x C)``, ``b_c``, [``W_xc_static``],
``W_hc (4H x H)``, gates ordered i, f, o, g; RNN ``W_xh``, ``b_h``, [``W_xh_static``], ``W_hh``,
``W_ho``, ``b_o``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import NetError
from .fillers import CONSTANT_ZERO, filler_or
from .gradients import gradient_only
from .registry import Converted, LayerContext, register_layer
from .tracing import tracing


def _meta_parameter(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(shape, device="meta"))


class _Recurrent(nn.Module):
    """What LSTM and RNN share: the checks on the bottoms, the initial state, the carried state."""

    state_names: tuple[str, ...] = ()

    def __init__(self, hidden: int, static: bool, expose_hidden: bool) -> None:
        super().__init__()
        self.hidden = hidden
        self.static = static
        self.expose_hidden = expose_hidden
        self._carried: tuple[Tensor, ...] | None = None

    def reset(self) -> None:
        """Forget the state carried from the last forward pass (Caffe's ``RecurrentLayer::Reset``)."""
        self._carried = None

    def _split(self, bottoms: tuple[Tensor, ...]) -> tuple[Tensor, Tensor, Tensor | None, tuple[Tensor, ...]]:
        x, cont, rest = bottoms[0], bottoms[1], list(bottoms[2:])
        x_static = rest.pop(0) if self.static else None
        if x.dim() < 2:
            raise NetError(
                f"{type(self).__name__}: x must have at least 2 axes (T, N, ...), got {list(x.shape)}"
            )
        if tuple(cont.shape) != tuple(x.shape[:2]):
            raise NetError(
                f"{type(self).__name__}: cont must be (T, N) = {list(x.shape[:2])}, got {list(cont.shape)}"
            )
        if x_static is not None and (x_static.dim() < 1 or x_static.shape[0] != x.shape[1]):
            raise NetError(
                f"{type(self).__name__}: the static input must be (N, ...) with N = {x.shape[1]}, "
                f"got {list(x_static.shape)}"
            )
        shape = (1, x.shape[1], self.hidden)
        if self.expose_hidden:
            for name, value in zip(self.state_names, rest, strict=True):
                if tuple(value.shape) != shape:
                    raise NetError(
                        f"{type(self).__name__}: {name} must be {list(shape)}, got {list(value.shape)}"
                    )
            state = tuple(value.detach() for value in rest)  # Caffe shares their data, not their diffs
        elif self._carried is not None and not tracing() and tuple(self._carried[0].shape) == shape:
            state = tuple(s.to(x.dtype) for s in self._carried)  # (carried from a float32 run into bf16)
        else:
            state = tuple(x.new_zeros(shape) for _ in self.state_names)
        return x, cont.detach().to(x.dtype), x_static, state

    def _carry(self, state: tuple[Tensor, ...]) -> None:
        if not self.expose_hidden and not tracing():  # an exported graph starts from zeros
            self._carried = tuple(s.detach() for s in state)


def _lstm_forget_gate(pre: Tensor, cont: Tensor) -> Tensor:
    """LSTMUnit's forget gate ``cont * sigmoid(pre)`` with Caffe's gradient ``f (1 - f)`` (the
    sigmoid's form applied to the gated value, which equals the true one when cont is 0 or 1)."""
    f = cont * torch.sigmoid(pre)
    slope = (f * (1 - f)).detach()
    return f.detach() + gradient_only(pre) * slope


def lstm_unit(c_prev: Tensor, gates: Tensor, cont: Tensor) -> tuple[Tensor, Tensor]:
    """Caffe's LSTMUnit: from the gate inputs ``(i, f, o, g)`` (last axis, 4H), ``c = cont f c_prev
    + i g`` and ``h = o tanh(c)``; ``cont`` broadcasts over the hidden axis and gets no gradient."""
    hidden = gates.shape[-1] // 4
    i = torch.sigmoid(gates[..., :hidden])
    f = _lstm_forget_gate(gates[..., hidden : 2 * hidden], cont.detach())
    o = torch.sigmoid(gates[..., 2 * hidden : 3 * hidden])
    g = torch.tanh(gates[..., 3 * hidden :])
    c = f * c_prev + i * g
    return c, o * torch.tanh(c)


def lstm_unit_layer_op(c_prev: Tensor, gates: Tensor, cont: Tensor) -> tuple[Tensor, Tensor]:
    """The LSTMUnit layer: bottoms ``c_prev (1, N, H)``, ``gates (1, N, 4H)``, ``cont (1, N)``;
    tops ``c`` and ``h``."""
    return lstm_unit(c_prev, gates, cont.to(gates.dtype).unsqueeze(-1))


class LSTM(_Recurrent):
    """Caffe's LSTM: ``i, f, o, g`` gates from ``W_hc (cont * h) + W_xc x + b_c (+ W_xc_static s)``,
    ``c = cont f c + i g``, ``h = o tanh(c)``; returns ``h`` (T, N, H), and with ``expose_hidden``
    also the last ``h`` and ``c`` (1, N, H)."""

    state_names = ("h_0", "c_0")

    def __init__(
        self, input_features: int, hidden: int, static_features: int | None, expose_hidden: bool
    ) -> None:
        super().__init__(hidden, static_features is not None, expose_hidden)
        self.W_xc = _meta_parameter(4 * hidden, input_features)
        self.b_c = _meta_parameter(4 * hidden)
        self.W_xc_static = (
            _meta_parameter(4 * hidden, static_features) if static_features is not None else None
        )
        self.W_hc = _meta_parameter(4 * hidden, hidden)

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, static={self.static}, expose_hidden={self.expose_hidden}"

    def forward(self, *bottoms: Tensor) -> Tensor | tuple[Tensor, Tensor, Tensor]:
        x, cont, x_static, (h, c) = self._split(bottoms)
        gates_x = F.linear(x.flatten(2), self.W_xc, self.b_c)
        gates_static = (
            F.linear(x_static.flatten(1), self.W_xc_static).unsqueeze(0) if x_static is not None else None
        )
        outputs = []
        for t in range(x.shape[0]):
            keep = cont[t].reshape(1, -1, 1)
            gates = F.linear(h * keep, self.W_hc) + gates_x[t : t + 1]
            if gates_static is not None:
                gates = gates + gates_static
            c, h = lstm_unit(c, gates, keep)
            outputs.append(h)
        self._carry((h, c))
        out = torch.cat(outputs, dim=0)
        return (out, h.detach(), c.detach()) if self.expose_hidden else out


class RNN(_Recurrent):
    """Caffe's RNN: ``h = tanh(W_hh (cont * h) + W_xh x + b_h (+ W_xh_static s))`` and the output
    ``o = tanh(W_ho h + b_o)``; returns ``o`` (T, N, H), and with ``expose_hidden`` the last ``h``."""

    state_names = ("h_0",)

    def __init__(
        self, input_features: int, hidden: int, static_features: int | None, expose_hidden: bool
    ) -> None:
        super().__init__(hidden, static_features is not None, expose_hidden)
        self.W_xh = _meta_parameter(hidden, input_features)
        self.b_h = _meta_parameter(hidden)
        self.W_xh_static = _meta_parameter(hidden, static_features) if static_features is not None else None
        self.W_hh = _meta_parameter(hidden, hidden)
        self.W_ho = _meta_parameter(hidden, hidden)
        self.b_o = _meta_parameter(hidden)

    def extra_repr(self) -> str:
        return f"hidden={self.hidden}, static={self.static}, expose_hidden={self.expose_hidden}"

    def forward(self, *bottoms: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        x, cont, x_static, (h,) = self._split(bottoms)
        pre_x = F.linear(x.flatten(2), self.W_xh, self.b_h)
        pre_static = (
            F.linear(x_static.flatten(1), self.W_xh_static).unsqueeze(0) if x_static is not None else None
        )
        outputs = []
        for t in range(x.shape[0]):
            pre = F.linear(h * cont[t].reshape(1, -1, 1), self.W_hh) + pre_x[t : t + 1]
            if pre_static is not None:
                pre = pre + pre_static
            h = torch.tanh(pre)
            outputs.append(torch.tanh(F.linear(h, self.W_ho, self.b_o)))
        self._carry((h,))
        out = torch.cat(outputs, dim=0)
        return (out, h.detach()) if self.expose_hidden else out


def _recurrent(ctx: LayerContext, module_type: type[LSTM] | type[RNN]) -> Converted:
    p = ctx.param("recurrent_param")
    hidden = int(p.get("num_output"))
    if hidden < 1:
        raise NetError(f"{ctx.where}: recurrent_param needs num_output of at least 1")
    expose = bool(p.get("expose_hidden"))
    states = len(module_type.state_names)
    exposed = states if expose else 0
    static = len(ctx.bottoms) > 2 + exposed
    want_bottoms = 2 + static + exposed
    want_tops = 1 + exposed
    if len(ctx.bottoms) != want_bottoms or len(ctx.tops) != want_tops:
        names = " and ".join(module_type.state_names)
        raise NetError(
            f"{ctx.where} takes bottoms x, cont, optionally a static input"
            f"{', then ' + names if expose else ''} (expose_hidden {str(expose).lower()}) and makes "
            f"{want_tops} top(s); it has {len(ctx.bottoms)} bottoms and {len(ctx.tops)} tops"
        )
    x_shape = ctx.bottom_shapes[0]
    if x_shape is not None:
        if len(x_shape) < 2:
            raise NetError(f"{ctx.where}: x must have at least 2 axes (T, N, ...), got {list(x_shape)}")
        features = math.prod(x_shape[2:])
    elif ctx.blob_shapes:
        features = ctx.blob_shapes[0][-1]
    else:
        ctx.bottom_shape(0)
        raise AssertionError
    cont_shape = ctx.bottom_shapes[1]
    if (
        x_shape is not None
        and cont_shape is not None
        and tuple(cont_shape) != tuple(x_shape[:2])
        and not ctx.guessed
    ):
        raise NetError(
            f"{ctx.where}: cont '{ctx.bottoms[1]}' must be (T, N) = {list(x_shape[:2])}, "
            f"got {list(cont_shape)}"
        )
    static_features = None
    if static:
        s_shape = ctx.bottom_shapes[2]
        if s_shape is not None:
            static_features = math.prod(s_shape[1:])
        elif ctx.blob_shapes and len(ctx.blob_shapes) > 2:
            static_features = ctx.blob_shapes[2][-1]
        else:
            ctx.bottom_shape(2)
    if expose and x_shape is not None and not ctx.guessed:
        state = [1, x_shape[1], hidden]
        for k, name in enumerate(module_type.state_names):
            got = ctx.bottom_shapes[2 + static + k]
            if got is not None and list(got) != state:
                bottom = ctx.bottoms[2 + static + k]
                raise NetError(f"{ctx.where}: {name} '{bottom}' must be {state}, got {list(got)}")
    module = module_type(features, hidden, static_features, expose)
    weight = filler_or(p, "weight_filler", None)
    bias = filler_or(p, "bias_filler", CONSTANT_ZERO)
    blobs: list[tuple[str, tuple[int, ...]]] = []
    fillers = []
    for name, parameter in module.named_parameters(recurse=False):
        blobs.append((name, tuple(parameter.shape)))
        fillers.append(bias if name.startswith("b_") else weight)

    def shapes(bottoms: list[tuple[int, ...]]) -> list[tuple[int, ...]] | tuple[int, ...]:
        out = (bottoms[0][0], bottoms[0][1], hidden)
        state = (1, bottoms[0][1], hidden)
        return [out] + [state] * exposed if expose else out

    return Converted(module=module, blobs=blobs, fillers=fillers, outputs=want_tops, output_shape=shapes)


@register_layer("LSTM", bottoms=(2, 5), tops=(1, 3))
def lstm(ctx: LayerContext) -> Converted:
    return _recurrent(ctx, LSTM)


@register_layer("RNN", bottoms=(2, 4), tops=(1, 2))
def rnn(ctx: LayerContext) -> Converted:
    return _recurrent(ctx, RNN)


@register_layer("LSTMUnit", bottoms=3, tops=2)
def lstm_unit_layer(ctx: LayerContext) -> Converted:
    c_prev, gates, cont = (ctx.bottom_shape(i) for i in range(3))
    n = c_prev[1] if len(c_prev) == 3 else None
    if (
        len(c_prev) != 3
        or len(gates) != 3
        or len(cont) != 2
        or {c_prev[0], gates[0], cont[0]} != {1}
        or {gates[1], cont[1]} != {n}
        or gates[2] != 4 * c_prev[2]
    ):
        raise NetError(
            f"{ctx.where}: the bottoms must be c_prev (1, N, H), gates (1, N, 4H) and cont (1, N); got "
            f"{list(c_prev)}, {list(gates)} and {list(cont)}"
        )
    return Converted(function=lstm_unit_layer_op, outputs=2, output_shape=lambda s: [s[0], s[0]])
