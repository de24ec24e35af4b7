"""The values a parameter field may take, declared once per field and checked in one pass where a
message is read (a net's layers by the graph builder, a solver by ``load_solver``), so no layer or
update rule meets a value Caffe would choke on.

Every ``float``/``double`` field of every parameter message is refused when NaN, and when infinite
unless :data:`INFINITE_OK` names it; :data:`RANGES` adds the bounds a field needs to mean something
(an Adam ``momentum2`` below 1, a positive PriorBox aspect ratio). Blob
values (``BlobProto``) are data, not parameters: they are not checked here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

from .message import Message


@dataclasses.dataclass(frozen=True)
class Range:
    """``low <= value <= high`` (``<`` where ``open``), either bound optional; ``why`` ends the error."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    why: str = ""

    def refuses(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (self.low_open and value == self.low)):
            return True
        return self.high is not None and (value > self.high or (self.high_open and value == self.high))

    def text(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        return f"{'<' if self.high_open else '<='} {self.high:g}"


NON_NEGATIVE = Range(low=0)
POSITIVE = Range(low=0, low_open=True)
FRACTION = Range(low=0, high=1)

#: (message, field) -> the range its values must lie in. Sources: Caffe's CHECKs where it has them
#: (prior_box_layer.cpp), else what the field's formula needs in a solver or a fork's layer. BVLC's
#: own layers take every finite value Caffe's release build takes, as it computes them (a dropout
#: ratio of 1 or -1, a negative LRN ``k``, BatchNorm ``eps`` or contrastive margin, a moving-average
#: fraction of 2: its only checks of these are ``DCHECK``s, compiled out); Dropout refuses to train
#: with a ratio outside [0, 1) (``converters.layers.structure``).
RANGES: dict[tuple[str, str], Range] = {
    ("SolverParameter", "base_lr"): NON_NEGATIVE,
    ("SolverParameter", "weight_decay"): NON_NEGATIVE,
    ("SolverParameter", "momentum"): FRACTION,
    ("SolverParameter", "momentum2"): Range(0, 1, high_open=True, why="Adam takes sqrt(1 - momentum2^t)"),
    ("SolverParameter", "rms_decay"): FRACTION,
    ("SolverParameter", "delta"): NON_NEGATIVE,
    ("BNParameter", "eps"): NON_NEGATIVE,
    ("BNParameter", "momentum"): FRACTION,
    ("NormalizeParameter", "eps"): NON_NEGATIVE,
    ("PriorBoxParameter", "min_size"): POSITIVE,
    ("PriorBoxParameter", "max_size"): POSITIVE,
    ("PriorBoxParameter", "aspect_ratio"): POSITIVE,
    ("PriorBoxParameter", "step"): NON_NEGATIVE,
    ("PriorBoxParameter", "step_h"): NON_NEGATIVE,
    ("PriorBoxParameter", "step_w"): NON_NEGATIVE,
    ("PriorBoxParameter", "variance"): NON_NEGATIVE,
    ("PriorBoxParameter", "img_size"): POSITIVE,
    ("PriorBoxParameter", "img_h"): POSITIVE,
    ("PriorBoxParameter", "img_w"): POSITIVE,
    ("ResampleParameter", "factor"): POSITIVE,
}

#: Fields whose infinite values mean something: Clip's bounds (no bound), a Threshold, a gradient
#: clip (Caffe's ``clip_gradients`` < 0 is off, +inf the same), a constant filler's value.
INFINITE_OK = frozenset(
    {
        ("ClipParameter", "min"),
        ("ClipParameter", "max"),
        ("ThresholdParameter", "threshold"),
        ("SolverParameter", "clip_gradients"),
    }
)

_FLOATS = ("float", "double")


def _values(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def invalid_values(msg: Message, prefix: str = "") -> Iterator[tuple[str, Any, str, tuple[int, int] | None]]:
    """``(dotted field, value, what is wrong, (line, column) or None)`` for every value of ``msg``
    (at any depth, blobs excepted) that its field does not allow."""
    spec = msg.spec
    if spec is None or msg.type == "BlobProto":
        return
    for name, value in msg.fields():
        field = spec.by_name.get(name)
        if field is None:
            continue
        where = msg.positions.get(name)
        if field.is_message:
            for item in _values(value):
                if isinstance(item, Message):
                    yield from invalid_values(item, f"{prefix}{name}.")
            continue
        rule = RANGES.get((msg.type or "", name))
        if field.type not in _FLOATS and rule is None:
            continue
        for item in _values(value):
            if not isinstance(item, (int, float)) or isinstance(item, bool):
                continue
            number = float(item)
            if math.isnan(number):
                yield f"{prefix}{name}", item, "is NaN", where
            elif math.isinf(number) and (msg.type or "", name) not in INFINITE_OK:
                yield f"{prefix}{name}", item, "is infinite", where
            elif rule is not None and rule.refuses(number):
                why = f" ({rule.why})" if rule.why else ""
                yield f"{prefix}{name}", item, f"must be {rule.text()}{why}", where


def first_invalid(msg: Message) -> str | None:
    """A one-line description of the first value of ``msg`` its field does not allow, or ``None``."""
    for path, value, problem, where in invalid_values(msg):
        place = f" (line {where[0]})" if where else ""
        return f"field '{path}: {value:g}'{place} {problem}"
    return None
