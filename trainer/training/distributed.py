"""Data-parallel training under `torchrun`, built so that N processes compute what one process would
with the same global batch.

The design follows NVlabs' stylegan2-ada-pytorch rather than wrapping modules in
DistributedDataParallel: a GAN step runs D several times before one backward (reals, fakes, the
gradient penalty's interpolates with a double backward) and sends G's gradients through a frozen D,
patterns DDP's reducer handles only with flags and care. Here each algorithm averages the gradients of
the network it is about to step, in one flat all-reduce, right before `optimizer.step()`.

What makes the result equal to the one-process run (which the tests check):
- Rank r takes the global batch's samples r, r+W, r+2W, ... (strided). PGGAN's minibatch stddev
  groups sample i with i % M, so the strided shard of a group is a group of the shard.
- Every random draw (latents, flips, target labels, gradient-penalty mixes) is made for the whole
  global batch from a generator that all ranks seed alike, then sharded the same way. Each rank's
  generator state therefore stays identical, so any rank's checkpoint is the run's checkpoint.
- BatchNorm normalises by the global batch's statistics (SyncBatchNorm on CUDA; on CPU, where torch's
  SyncBatchNorm refuses to run, an all-reduce of per-channel sums), and other running statistics
  (StarGAN's InstanceNorm) are averaged, which for equal shards is the global update.
- Losses are means over the local batch, so the mean of the ranks' gradients is the global gradient.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm


@dataclass(frozen=True)
class Ranks:
    """This process's place among the run's torchrun ranks, and the collectives that make N ranks train
    as one. Named for what it is: neither torch's DataParallel nor DDP wraps anything here. `Ranks()` is
    the single-process case, for which every method below is the identity or a no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------------------------------ samples
    def shard(self, global_tensor: Tensor) -> Tensor:
        """This rank's rows of a tensor laid out over the global batch."""
        return global_tensor[self.rank :: self.world_size] if self.active else global_tensor

    def gather(self, local: Tensor) -> Tensor:
        """The global batch from every rank's shard, in global order (the inverse of `shard`)."""
        if not self.active:
            return local
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(parts, local.contiguous())
        return torch.stack(parts, dim=1).flatten(0, 1)

    def global_size(self, local_size: int) -> int:
        return local_size * self.world_size

    # ------------------------------------------------------------------------------------------ weights
    def average_gradients(self, *modules: nn.Module) -> None:
        """Mean of every rank's gradients, in place, as one flat all-reduce (one message, not one per
        tensor). Parameters without a gradient this step take part as zeros, so the message has the
        same layout on every rank."""
        if not self.active:
            return
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        if not params:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    def optimize(self, loss: Tensor, optimizer: torch.optim.Optimizer, module: nn.Module) -> None:
        """One update of `module` on `loss`: fresh gradients, averaged over the ranks, then the step.
        Every algorithm updates each of its networks through this, so none can forget the average."""
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.average_gradients(module)
        optimizer.step()

    def average_buffers(self, *modules: nn.Module) -> None:
        """Mean of floating-point buffers (running statistics) across ranks."""
        if not self.active:
            return
        buffers = [b for m in modules for b in m.buffers() if b.is_floating_point()]
        if not buffers:
            return
        flat = torch.cat([b.flatten() for b in buffers])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for b in buffers:
            b.copy_(flat[offset : offset + b.numel()].view_as(b))
            offset += b.numel()

    def broadcast_state(self, *modules: nn.Module) -> None:
        """Rank 0's parameters and buffers everywhere: a guard against ranks whose seeded initialisation
        differs (another torch build, a non-deterministic kernel), which would otherwise go unnoticed."""
        if not self.active:
            return
        for module in modules:
            for tensor in list(module.parameters()) + list(module.buffers()):
                dist.broadcast(tensor.data, src=0)

    def average(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        """Logged scalars as means over ranks, so the log shows the global batch's losses."""
        if not self.active or not values:
            return values
        keys = list(values)  # every rank builds the same dict in the same order
        stacked = torch.stack([torch.as_tensor(values[k], dtype=torch.float32).detach().float().reshape(())
                               for k in keys])
        device = torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")
        stacked = stacked.to(device)
        dist.all_reduce(stacked)
        stacked /= self.world_size
        return dict(zip(keys, stacked.cpu().unbind(), strict=True))

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    # ------------------------------------------------------------------------------------------ modules
    def synchronise_batchnorm(self, module: nn.Module, device: torch.device) -> nn.Module:
        """BatchNorm layers normalising by global-batch statistics. Same parameters and buffers (so the
        state dict and the exported model are unchanged); call before building optimizers."""
        if not self.active:
            return module
        if device.type == "cuda":
            return nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return _convert(module)


def from_environment() -> Ranks:
    """The process group torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK), joined once; a plain
    `gan-train` (no WORLD_SIZE, or 1) is the single-process case."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Ranks()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return Ranks(rank=rank, world_size=world_size, local_rank=local_rank)


def shutdown(ranks: Ranks) -> None:
    if ranks.active and dist.is_initialized():
        dist.destroy_process_group()


class _SumAcrossRanks(torch.autograd.Function):
    """all_reduce(SUM) with a gradient: every rank's output is the sum of all inputs, so the gradient of
    a rank's input is the sum of every rank's output gradient."""

    @staticmethod
    def forward(ctx: object, local: Tensor) -> Tensor:
        total = local.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: object, grad: Tensor) -> Tensor:
        # through apply, not a bare all_reduce, so that a double backward (the R1 penalty through D's
        # BatchNorm) differentiates the reduction too
        return _SumAcrossRanks.apply(grad)


class AllReduceBatchNorm(_BatchNorm):
    """BatchNorm over the global batch for backends where torch's SyncBatchNorm does not run (gloo on
    CPU): per-channel count, sum and sum of squares are summed across ranks by an autograd-aware
    all-reduce, so gradients flow through the shared statistics exactly as through one big batch."""

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        count = torch.full((1,), x.numel() / x.shape[1], dtype=x.dtype, device=x.device)
        stats = torch.cat([count, x.sum(dims), x.square().sum(dims)])
        total = _SumAcrossRanks.apply(stats)
        n, channels = total[0], x.shape[1]
        mean = total[1 : 1 + channels] / n
        var = (total[1 + channels :] / n - mean.square()).clamp_min(0)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                if self.num_batches_tracked is not None:
                    self.num_batches_tracked.add_(1)
                # momentum None is BatchNorm's cumulative average
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * n / (n - 1), momentum)
        shape = [1, channels] + [1] * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


def _convert(module: nn.Module) -> nn.Module:
    """Swap every BatchNorm1d/2d/3d for AllReduceBatchNorm with the very same tensors."""
    if isinstance(module, _BatchNorm) and not isinstance(module, AllReduceBatchNorm):
        replacement = AllReduceBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                         module.track_running_stats)
        if module.affine:
            replacement.weight, replacement.bias = module.weight, module.bias
        replacement.running_mean, replacement.running_var = module.running_mean, module.running_var
        replacement.num_batches_tracked = module.num_batches_tracked
        replacement.train(module.training)
        return replacement
    for name, child in module.named_children():
        module.add_module(name, _convert(child))
    return module
