"""Mixed precision for every training algorithm, decided in one place."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch


def training_autocast(device: torch.device, amp: bool) -> AbstractContextManager[object]:
    """bfloat16 autocast on CUDA when asked for; plain float32 elsewhere.

    bfloat16 has float32's exponent range, so it needs no loss scaling: AMP adds no GradScaler state
    that a checkpoint would have to carry for an exact resume.
    """
    if amp and device.type == "cuda":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()
