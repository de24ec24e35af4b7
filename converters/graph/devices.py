"""Which device a net goes to: a name checked against this machine before anything is built."""

from __future__ import annotations

import torch

from ..errors import UsageError


def checked_device(
    name: str | torch.device, *, what: str = "device", allow_meta: bool = True
) -> torch.device:
    """``name`` as a ``torch.device`` this machine has; :class:`UsageError` (one line, naming
    ``what``) for a malformed name, CUDA or MPS where there is none, a CUDA index past the last."""
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise UsageError(f"{what} {str(name)!r} is not a device (try cpu, cuda, cuda:1)") from None
    text = str(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"{what} {text}: CUDA is not available here (use cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"{what} {text}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise UsageError(f"{what} {text}: MPS is not available here (use cpu)")
    elif device.type not in ("cpu", "cuda", "mps", "meta"):
        if not getattr(getattr(torch, device.type, None), "is_available", lambda: False)():
            raise UsageError(f"{what} {text}: no {device.type} device is available here")
    if device.type == "meta" and not allow_meta:
        raise UsageError(f"{what} meta computes nothing: use cpu or cuda")
    return device
