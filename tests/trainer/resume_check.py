"""The bit-exact resume check every architecture's tests share."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

# everything a resumed run must restore; keys an architecture does not use are skipped
STATE_KEYS = ("generator", "generator_ema", "generator_live", "discriminator", "optimizer_g", "optimizer_d",
              "noise_rng", "translation", "sr_updates", "sr_preview")


def flat_state(checkpoint: dict[str, Any], keys: Iterable[str] = STATE_KEYS) -> dict[str, Any]:
    """Every tensor and scalar under `keys`, addressed by its path."""
    out: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}", v)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(f"{prefix}.{i}", v)
        elif value is not None:
            out[prefix] = value

    for key in keys:
        if key in checkpoint:
            walk(key, checkpoint[key])
    return out


def assert_same_state(a: dict[str, Any], b: dict[str, Any], keys: Iterable[str] = STATE_KEYS) -> None:
    """Two checkpoints hold identical training state, bit for bit."""
    flat_a, flat_b = flat_state(a, keys), flat_state(b, keys)
    assert flat_a, "no training state found in the checkpoint"
    assert flat_a.keys() == flat_b.keys()
    different = [k for k, v in flat_a.items() if not _equal(v, flat_b[k])]
    assert not different, f"resumed run differs in {different[:5]}"


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, np.ndarray):  # the global RNG states
        return np.array_equal(a, b)
    return a == b
