"""Which torch devices this machine has, and one clear error for a device it does not have."""

from __future__ import annotations

import torch

from clipseg_lab.errors import DeviceError


def available_devices() -> list[str]:
    """The device names usable here, e.g. ['cpu'] or ['cpu', 'cuda', 'cuda:0', 'cuda:1']."""
    names = ["cpu"]
    if torch.cuda.is_available():
        names += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    return names


def check_device(device: str | torch.device | None) -> str | None:
    """`device` unchanged when this machine has it (None means "the default" and passes); else `DeviceError`
    naming the device and what is available, e.g. for 'cuda' on a machine without CUDA or a misspelling."""
    if device is None:
        return None
    text = str(device).strip()
    available = ", ".join(available_devices())
    try:
        parsed = torch.device(text)
    except (RuntimeError, ValueError, TypeError):
        raise DeviceError(f"unknown device {text!r}; available here: {available}") from None
    if parsed.type == "cpu":
        return text
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise DeviceError(f"device {text!r} is not available ({why}); available here: {available}")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise DeviceError(f"device {text!r}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                              f"available here: {available}")
        return text
    backend = getattr(torch.backends, parsed.type, None) or getattr(torch, parsed.type, None)
    is_available = getattr(backend, "is_available", None)
    if callable(is_available) and is_available():
        return text
    raise DeviceError(f"device {text!r} is not available on this machine; available here: {available}")
