"""Batches as a pure function of (seed, images seen), which is what makes resume exact.

A DataLoader's own shuffling depends on how many batches were drawn before, so a resumed run would
see different data. Here the index stream is the concatenation of one seeded permutation per epoch,
and a batch of B images taken after I images is the slice [I, I+B): resuming with the same I recomputes
exactly the same batches. The batch size may change along the run (PGGAN's per-resolution minibatches):
`batch_size_for(images_seen)` says which. Under data parallelism every rank takes its share of the same
global batch, strided (rank r: samples r, r+W, ...; see trainer/training/distributed.py for why).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Sampler


class StepBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        dataset_size: int,
        batch_size: int | Callable[[int], int],
        seed: int,
        start_images: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if dataset_size < 1:
            raise ValueError("cannot sample from an empty data set")
        self.n, self.seed = dataset_size, seed
        self.batch_size_for = batch_size if callable(batch_size) else (lambda _seen, b=batch_size: b)
        self.start_images, self.rank, self.world_size = start_images, rank, world_size

    def _permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=generator)

    def global_batch(self, images_seen: int, batch_size: int) -> list[int]:
        epoch, offset = divmod(images_seen, self.n)
        indices: list[int] = []
        while len(indices) < batch_size:
            take = self._permutation(epoch)[offset : offset + batch_size - len(indices)]
            indices.extend(take.tolist())
            epoch, offset = epoch + 1, 0
        return indices

    def __iter__(self) -> Iterator[list[int]]:
        seen = self.start_images
        while True:
            batch_size = self.batch_size_for(seen)
            if batch_size % self.world_size:
                raise ValueError(f"global batch {batch_size} is not divisible by {self.world_size} processes")
            yield self.global_batch(seen, batch_size)[self.rank :: self.world_size]
            seen += batch_size

    def __len__(self) -> int:  # an endless stream; DataLoader only needs this for len(loader)
        return 2**62
