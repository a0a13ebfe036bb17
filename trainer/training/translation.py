"""StarGAN training (yunjey/stargan's solver): WGAN-GP with an auxiliary domain classifier and cycle
reconstruction, one D update per step and one G update every `n_critic` steps.

D: -D_src(x) + D_src(G(x,c')) + lambda_cls * BCE(D_cls(x), c) + lambda_gp * GP (on D_src only).
G: -D_src(G(x,c')) + lambda_cls * BCE(D_cls(G(x,c')), c') + lambda_rec * |x - G(G(x,c'), c)|_1.
BCE is summed over attributes and averaged over the batch. Target labels c' are a permutation of the
batch's own labels (reference), so every target is a label that occurs in the data and exclusive groups
are respected without extra work.

Choices worth knowing:
- Learning rate: constant, then linear to exactly 0 at `num_iters` over the last `num_iters_decay` steps,
  as the paper describes. The reference code subtracts lr/num_iters_decay once every 1,000 steps, which
  over 100k steps lowers the lr by only 0.1%; here the factor is recomputed every step.
- All randomness (flips, target permutations, GP interpolation) draws from the algorithm's own
  generator, which is checkpointed, so a resumed run is bit-exact. The sample grid's fixed images are the
  first batch the run sees, kept in the checkpoint too.
- As in the reference, a G step draws G(x,c') anew with the just-updated D, rather than reusing D's fakes.
- Under data parallelism, flips, the target permutation and the penalty's mixes are drawn for the global
  batch (the permutation over the gathered labels) and sharded, so N processes train as one does.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from trainer.data.attributes import domain_targets
from trainer.losses import Wasserstein, gradient_penalty
from trainer.models.stargan import Discriminator, Generator, StarGANConfig
from trainer.training.distributed import DataParallel
from trainer.training.precision import training_autocast

GRID_IMAGES = 8


def classification_loss(logits: Tensor, target: Tensor) -> Tensor:
    """Binary cross-entropy summed over attributes, averaged over the batch (the reference's)."""
    return F.binary_cross_entropy_with_logits(logits, target, reduction="sum") / logits.shape[0]


def reconstruction_loss(real: Tensor, reconstructed: Tensor) -> Tensor:
    """Mean absolute error |x - G(G(x,c'),c)|_1 over all pixels."""
    return (real - reconstructed).abs().mean()


def discriminator_loss(
    real_src: Tensor, fake_src: Tensor, real_cls: Tensor, label_org: Tensor, gp: Tensor, config: StarGANConfig
) -> tuple[Tensor, dict[str, Tensor]]:
    """-D_src(x) + D_src(G(x,c')) + lambda_cls * BCE(D_cls(x), c) + lambda_gp * GP, and its terms."""
    adversarial = Wasserstein().discriminator(real_src.float(), fake_src.float())
    cls = classification_loss(real_cls.float(), label_org)
    total = adversarial + config.lambda_cls * cls + config.lambda_gp * gp
    return total, {"loss_d": total, "d_real": real_src.float().mean(), "d_fake": fake_src.float().mean(),
                   "d_cls": cls, "gp": gp}


def generator_loss(
    fake_src: Tensor, fake_cls: Tensor, label_trg: Tensor, real: Tensor, reconstructed: Tensor, config: StarGANConfig
) -> tuple[Tensor, dict[str, Tensor]]:
    """-D_src(G(x,c')) + lambda_cls * BCE(D_cls(G(x,c')), c') + lambda_rec * |x - G(G(x,c'),c)|_1, and its terms."""
    adversarial = Wasserstein().generator(fake_src.float())
    cls = classification_loss(fake_cls.float(), label_trg)
    rec = reconstruction_loss(real.float(), reconstructed.float())
    total = adversarial + config.lambda_rec * rec + config.lambda_cls * cls
    return total, {"loss_g": total, "g_fake": adversarial, "g_cls": cls, "g_rec": rec}


def lr_factor(iteration: int, num_iters: int, num_iters_decay: int) -> float:
    """1 until `num_iters - num_iters_decay`, then linear to 0, reached at `num_iters` (0 after it)."""
    if num_iters_decay <= 0:
        return 1.0 if iteration < num_iters else 0.0
    return min(1.0, max(0.0, (num_iters - iteration) / num_iters_decay))


class StarGAN:
    def __init__(
        self,
        generator: Generator,
        discriminator: Discriminator,
        config: StarGANConfig,
        attributes: list[str],
        groups: list[list[str]],
        *,
        device: torch.device,
        seed: int,
        amp: bool = False,
        parallel: DataParallel | None = None,
    ) -> None:
        self.device, self.config = device, config
        self.parallel = parallel = parallel or DataParallel()
        self.attributes, self.groups = attributes, groups
        self.generator = generator.to(device)
        self.discriminator = discriminator.to(device)
        parallel.broadcast_state(self.generator, self.discriminator)
        betas = (config.beta1, config.beta2)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.g_lr, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.d_lr, betas=betas)
        self.noise = torch.Generator(device=device).manual_seed(seed + 1)
        self.iteration = 0
        self.fixed: tuple[Tensor, Tensor] | None = None
        self.last_g: dict[str, Tensor] = {}  # G's terms from its latest update (logged from the first one on)
        self.classifier_cache: dict[str, Any] = {}  # evaluation's attribute classifier, per data set
        self.autocast = training_autocast(device, amp)

    def _set_lr(self) -> float:
        factor = lr_factor(self.iteration, self.config.num_iters, self.config.num_iters_decay)
        for group in self.opt_g.param_groups:
            group["lr"] = self.config.g_lr * factor
        for group in self.opt_d.param_groups:
            group["lr"] = self.config.d_lr * factor
        return factor

    def _flip(self, real: Tensor) -> Tensor:
        n = self.parallel.global_size(real.shape[0])
        flip = self.parallel.shard(torch.rand(n, generator=self.noise, device=self.device) < 0.5)
        return torch.where(flip[:, None, None, None], real.flip(3), real)

    def _targets(self, label_org: Tensor) -> Tensor:
        """c': the global batch's labels in a random order, this rank's share of them."""
        labels = self.parallel.gather(label_org)
        return self.parallel.shard(labels[torch.randperm(labels.shape[0], generator=self.noise, device=self.device)])

    def train_step(self, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        real, label_org = (t.to(self.device, non_blocking=True) for t in batch)
        if self.fixed is None:
            images, labels = self.parallel.gather(real), self.parallel.gather(label_org)
            self.fixed = (images[:GRID_IMAGES].clone(), labels[:GRID_IMAGES].clone())
        if self.config.flip:
            real = self._flip(real)
        label_trg = self._targets(label_org)
        self._set_lr()
        cfg = self.config

        with self.autocast:
            real_src, real_cls = self.discriminator(real)
            fake = self.generator(real, label_trg)
            fake_src, _ = self.discriminator(fake.detach())
            mix = self.parallel.shard(torch.rand(self.parallel.global_size(real.shape[0]), generator=self.noise,
                                                 device=self.device))
            gp = gradient_penalty(self.discriminator.src, real, fake.float(), eps=mix)
        loss_d, d_terms = discriminator_loss(real_src, fake_src, real_cls, label_org, gp.float(), cfg)
        self.parallel.optimize(loss_d, self.opt_d, self.discriminator)
        d_terms = {k: v.detach() for k, v in d_terms.items()}

        self.iteration += 1
        if self.iteration % cfg.n_critic == 0:
            with self.autocast:
                fake = self.generator(real, label_trg)
                fake_src, fake_cls = self.discriminator(fake)
                reconstructed = self.generator(fake, label_org)
            loss_g, g_terms = generator_loss(fake_src, fake_cls, label_trg, real, reconstructed, cfg)
            self.parallel.optimize(loss_g, self.opt_g, self.generator)
            self.last_g = {k: v.detach().float().cpu() for k, v in g_terms.items()}
        # InstanceNorm's running statistics (used with --norm-stats running) as the global batch's
        self.parallel.average_buffers(self.generator)
        return {**d_terms, **self.last_g}

    def sample(self) -> Tensor:
        if self.fixed is None:
            side = self.config.image_size
            return torch.zeros(1, 3, side, side)
        return translation_grid(self.generator, *self.fixed, self.attributes, self.groups)

    def evaluate(self, dataset: Any) -> dict[str, Any]:
        from trainer.evaluation.translation import evaluate_generator  # evaluation code loads only when used

        return evaluate_generator(self.generator, dataset, self.config, self.device, self.classifier_cache)

    def progress(self) -> dict[str, Any]:
        factor = lr_factor(self.iteration, self.config.num_iters, self.config.num_iters_decay)
        return {"lr_g": float(f"{self.config.g_lr * factor:.4g}")}

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "optimizer_g": self.opt_g.state_dict(),
            "optimizer_d": self.opt_d.state_dict(),
            "noise_rng": self.noise.get_state(),
            "translation": {"iteration": self.iteration, "fixed": self.fixed, "last_g": self.last_g},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["optimizer_g"])
        self.opt_d.load_state_dict(state["optimizer_d"])
        self.noise.set_state(state["noise_rng"].cpu())
        extra = state["translation"]
        self.iteration, self.last_g = extra["iteration"], extra["last_g"]
        fixed = extra["fixed"]
        self.fixed = None if fixed is None else (fixed[0].to(self.device), fixed[1].to(self.device))


@torch.no_grad()
def translation_grid(
    generator: torch.nn.Module, images: Tensor, labels: Tensor, attributes: list[str], groups: list[list[str]]
) -> Tensor:
    """Rows: each input, then the same image translated to every attribute's domain (group members
    switched on, free attributes flipped), with G in eval mode as it is exported and served."""
    was_training = generator.training
    generator.eval()
    device = next(generator.parameters()).device
    try:
        rows = []
        for image, label in zip(images, labels, strict=True):
            targets = torch.tensor(domain_targets(label.tolist(), attributes, groups), device=device)
            batch = image[None].expand(len(targets), -1, -1, -1).to(device)
            rows.append(torch.cat([image[None].cpu(), generator(batch, targets).float().cpu()]))
        return tile(torch.stack(rows))
    finally:
        generator.train(was_training)


def tile(grid: Tensor, padding: int = 2) -> Tensor:
    """R,C,3,H,W images -> one 1,3,H',W' image in [-1, 1] with black gaps (the loop's grid writer then
    keeps the rows and columns as they are meant: one input per row, one domain per column)."""
    rows, cols, channels, h, w = grid.shape
    out = torch.full((channels, rows * (h + padding) - padding, cols * (w + padding) - padding), -1.0)
    for r in range(rows):
        for c in range(cols):
            out[:, r * (h + padding) : r * (h + padding) + h, c * (w + padding) : c * (w + padding) + w] = grid[r, c]
    return out[None]


def build_algorithm(
    config: StarGANConfig, device: torch.device, seed: int, amp: bool, parallel: DataParallel | None = None
) -> StarGAN:
    """The registry's builder: weights from `seed`, attributes from the (resolved) config."""
    from trainer.models.stargan import attribute_list, build_discriminator, build_generator, exclusive_groups

    torch.manual_seed(seed)  # weight initialisation is part of the run's reproducibility
    return StarGAN(build_generator(config), build_discriminator(config), config, attribute_list(config),
                   exclusive_groups(config), device=device, seed=seed, amp=amp, parallel=parallel)
