"""Batches as a pure function of (seed, step), which is what makes resume exact.

A DataLoader's own shuffling depends on how many batches were drawn before, so a resumed run would
see different data. Here the index stream is the concatenation of one seeded permutation per epoch,
and step s takes the slice [s*B, (s+1)*B): resuming at step s recomputes exactly the same batches.
Under data parallelism every rank takes its share of the same global batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class StepBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if dataset_size < 1:
            raise ValueError("cannot sample from an empty data set")
        if batch_size % world_size:
            raise ValueError(f"global batch {batch_size} is not divisible by {world_size} processes")
        self.n, self.batch_size, self.seed = dataset_size, batch_size, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size

    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=generator)

    def global_batch(self, step: int) -> list[int]:
        start = step * self.batch_size
        epoch, offset = divmod(start, self.n)
        indices: list[int] = []
        while len(indices) < self.batch_size:
            perm = self._permutation(epoch)
            take = perm[offset : offset + self.batch_size - len(indices)]
            indices.extend(take.tolist())
            epoch, offset = epoch + 1, 0
        return indices

    def __iter__(self) -> Iterator[list[int]]:
        share = self.batch_size // self.world_size
        step = self.start_step
        while True:
            batch = self.global_batch(step)
            yield batch[self.rank * share : (self.rank + 1) * share]
            step += 1

    def __len__(self) -> int:  # an endless stream; DataLoader only needs this for len(loader)
        return 2**62
