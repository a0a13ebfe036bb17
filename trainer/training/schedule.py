"""Learning-rate schedules by absolute step, so that a resumed run follows the same one as an unbroken run."""

from __future__ import annotations


def lr_factor(iteration: int, num_iters: int, num_iters_decay: int) -> float:
    """1 until `num_iters - num_iters_decay`, then linear to 0, reached at `num_iters` (0 after it)."""
    if num_iters_decay <= 0:
        return 1.0 if iteration < num_iters else 0.0
    return min(1.0, max(0.0, (num_iters - iteration) / num_iters_decay))
