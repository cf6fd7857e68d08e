"""Where the PyTorch families compute: the ``PRODCLASS_DEVICE`` setting made a ``torch.device``.

Why one helper: training, evaluation and serving must agree on the rule (``auto`` takes CUDA
when this machine has it), and a GPU asked for on a machine without one must fail with the
reason at the start, not as a cryptic driver error half-way through an epoch. What only pays on
a GPU lives here too: mixed precision (float16 autocast, with a gradient scaler) and pinned host
memory for the copies to the device; on the CPU both are off and nothing changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import torch

DeviceSetting = Literal["auto", "cpu", "cuda"]
CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")


class DeviceUnavailableError(RuntimeError):
    """The configured device cannot be used on this machine."""


def resolve_device(setting: str | None = None) -> torch.device:
    """``cpu``, ``cuda`` or ``auto`` (CUDA when ``torch.cuda.is_available()``, else the CPU);
    ``None`` reads ``PRODCLASS_DEVICE`` from the settings."""
    if setting is None:
        from prodclass.settings import get_settings

        setting = get_settings().device
    name = str(setting).strip().lower()
    if name not in CHOICES:
        raise ValueError(f"unknown device {setting!r}: expected one of {', '.join(CHOICES)}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        build = torch.version.cuda
        why = (
            f"this torch build ({torch.__version__}) has no CUDA support"
            if build is None
            else f"torch (CUDA {build}) finds no usable GPU or driver"
        )
        raise DeviceUnavailableError(
            f"PRODCLASS_DEVICE=cuda but CUDA is not available: {why}; "
            "set PRODCLASS_DEVICE=cpu or auto"
        )
    return torch.device(name)


def is_cuda(device: torch.device) -> bool:
    return device.type == "cuda"


def autocast(device: torch.device) -> AbstractContextManager[Any]:
    """Mixed precision (float16) on CUDA; on the CPU a no-op, so results stay float32."""
    if is_cuda(device):
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for float16 gradients; disabled (a pass-through) off CUDA."""
    return torch.amp.GradScaler("cuda", enabled=is_cuda(device))


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """A batch's tensors on ``device``: pinned then copied asynchronously on CUDA, unchanged
    (no copy at all) on the CPU. Non-tensor values pass through."""
    return {key: tensor_to(value, device) for key, value in batch.items()}


def tensor_to(value: Any, device: torch.device) -> Any:
    if not isinstance(value, torch.Tensor) or value.device == device:
        return value
    if is_cuda(device) and value.device.type == "cpu":
        return value.pin_memory().to(device, non_blocking=True)
    return value.to(device)
