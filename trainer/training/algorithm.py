"""The contract between the training loop and a GAN's algorithm, written down as a base class.

The loop calls only what `GANAlgorithm` declares: `train_step` and `sample` (every algorithm has its own),
and the optional hooks, whose defaults here say what "not applicable" means (no schedule, nothing to
score, nothing to show). So the loop never probes an algorithm for methods, and a new algorithm learns
what it may provide by reading this one class.

The base also owns what every algorithm repeated: placing networks on the device (global-batch
BatchNorm, rank 0's weights on every rank), the noise generator whose state makes resume exact, and
saving/loading networks, optimizers and noise under their checkpoint names. Checkpoint keys are the
names given to `add_network` / `add_optimizer`, so checkpoints written before this class existed load
unchanged.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import torch
from torch import Tensor, nn

from trainer.training.distributed import Ranks
from trainer.training.precision import training_autocast

Network = TypeVar("Network", bound=nn.Module)


@dataclass(frozen=True)
class TrainingContext:
    """Where and how an algorithm trains: what the loop decides, as opposed to what the config says."""

    device: torch.device
    seed: int
    amp: bool = False
    ranks: Ranks = field(default_factory=Ranks)


class LatentGenerator(NamedTuple):
    """A generator the loop can score with FID/KID: the network and how its latents are drawn."""

    network: nn.Module
    latent_dim: int
    distribution: str


class GANAlgorithm:
    """One GAN's training recipe, driven step by step by `trainer.training.loop.Run`."""

    def __init__(self, context: TrainingContext, *, batch_size: int, draws_noise: bool = True) -> None:
        self.context = context
        self.device = context.device
        self.ranks = context.ranks
        self.batch_size = batch_size
        self.autocast = training_autocast(context.device, context.amp)
        # every random draw of a step comes from here (not the global RNG), so resume can restore it exactly
        self.noise = torch.Generator(device=context.device).manual_seed(context.seed + 1) if draws_noise else None
        self._networks: dict[str, nn.Module] = {}
        self._optimizers: dict[str, torch.optim.Optimizer] = {}

    # ------------------------------------------------------------------------------------ networks and state
    def add_network(self, name: str, module: Network) -> Network:
        """`module` on the device, normalising by global-batch statistics, with rank 0's weights; saved as
        `name`. Call before building the network's optimizer (BatchNorm layers may be swapped)."""
        module = self.ranks.synchronise_batchnorm(module, self.device).to(self.device)
        self.ranks.broadcast_state(module)
        self._networks[name] = module
        return module

    def add_copy(self, name: str, module: Network) -> Network:
        """A frozen copy of a network (e.g. an EMA generator), saved as `name`."""
        frozen = copy.deepcopy(module).requires_grad_(False)
        self._networks[name] = frozen
        return frozen

    def add_optimizer(self, name: str, optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
        """Saved as `name`; adding under a name again replaces it (PGGAN's fresh optimizers per resolution)."""
        self._optimizers[name] = optimizer
        return optimizer

    def adam(
        self, name: str, module: nn.Module, lr: float, betas: tuple[float, float], **options: Any
    ) -> torch.optim.Optimizer:
        """Adam over `module`'s parameters, saved as `name`."""
        return self.add_optimizer(name, torch.optim.Adam(module.parameters(), lr=lr, betas=betas, **options))

    def extra_state(self) -> dict[str, Any]:
        """Checkpoint entries beyond networks, optimizers and noise (counters, fixed sample inputs)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what `extra_state` saved; `state` is the whole checkpoint."""

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {name: network.state_dict() for name, network in self._networks.items()}
        state.update({name: optimizer.state_dict() for name, optimizer in self._optimizers.items()})
        if self.noise is not None:
            state["noise_rng"] = self.noise.get_state()
        return {**state, **self.extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, network in self._networks.items():
            network.load_state_dict(state[name])
        for name, optimizer in self._optimizers.items():
            optimizer.load_state_dict(state[name])
        if self.noise is not None:
            self.noise.set_state(state["noise_rng"].cpu())
        self.load_extra_state(state)

    # -------------------------------------------------------------------------------------- what the loop calls
    def train_step(self, batch: Any) -> dict[str, Tensor]:
        """One optimisation step on this rank's share of a global batch; returns the terms to log."""
        raise NotImplementedError

    def sample(self) -> Tensor:
        """The images of the run's sample grid (fixed inputs, so grids of a run compare step to step)."""
        raise NotImplementedError

    def batch_size_for(self, images_seen: int) -> int:
        """The global minibatch after `images_seen` images: constant unless the algorithm schedules it."""
        return self.batch_size

    def progress(self) -> dict[str, Any]:
        """Where training stands besides the step (resolution, learning rate), for the log and grid."""
        return {}

    def served_generator(self) -> LatentGenerator | None:
        """What gan-export would serve, when it is a latent generator the loop can score with FID/KID."""
        return None

    def evaluate(self, dataset: Any) -> dict[str, Any] | None:
        """The algorithm's own quality figures (PSNR/SSIM, attribute accuracy), or None when it has none."""
        return None
