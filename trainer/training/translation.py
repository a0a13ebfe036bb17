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
from torch import Tensor

from trainer.architecture import Architecture
from trainer.data.attributes import domain_targets
from trainer.losses import discriminator_loss, generator_loss, gradient_penalty
from trainer.models.stargan import Discriminator, Generator, StarGANConfig, attribute_list, exclusive_groups
from trainer.training.algorithm import GANAlgorithm, TrainingContext
from trainer.training.schedule import lr_factor

GRID_IMAGES = 8


class StarGAN(GANAlgorithm):
    def __init__(
        self,
        generator: Generator,
        discriminator: Discriminator,
        config: StarGANConfig,
        attributes: list[str],
        groups: list[list[str]],
        context: TrainingContext,
    ) -> None:
        super().__init__(context, batch_size=config.batch_size)
        self.config = config
        self.attributes, self.groups = attributes, groups
        self.generator = self.add_network("generator", generator)
        self.discriminator = self.add_network("discriminator", discriminator)
        betas = (config.beta1, config.beta2)
        self.opt_g = self.adam("optimizer_g", self.generator, config.g_lr, betas)
        self.opt_d = self.adam("optimizer_d", self.discriminator, config.d_lr, betas)
        self.iteration = 0
        self.fixed: tuple[Tensor, Tensor] | None = None
        self.last_g: dict[str, Tensor] = {}  # G's terms from its latest update (logged from the first one on)
        self.classifier_cache: dict[str, Any] = {}  # evaluation's attribute classifier, per data set

    def _set_lr(self) -> float:
        factor = lr_factor(self.iteration, self.config.num_iters, self.config.num_iters_decay)
        for group in self.opt_g.param_groups:
            group["lr"] = self.config.g_lr * factor
        for group in self.opt_d.param_groups:
            group["lr"] = self.config.d_lr * factor
        return factor

    def _flip(self, real: Tensor) -> Tensor:
        n = self.ranks.global_size(real.shape[0])
        flip = self.ranks.shard(torch.rand(n, generator=self.noise, device=self.device) < 0.5)
        return torch.where(flip[:, None, None, None], real.flip(3), real)

    def _targets(self, label_org: Tensor) -> Tensor:
        """c': the global batch's labels in a random order, this rank's share of them."""
        labels = self.ranks.gather(label_org)
        return self.ranks.shard(labels[torch.randperm(labels.shape[0], generator=self.noise, device=self.device)])

    def train_step(self, batch: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        real, label_org = (t.to(self.device, non_blocking=True) for t in batch)
        if self.fixed is None:
            images, labels = self.ranks.gather(real), self.ranks.gather(label_org)
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
            mix = self.ranks.shard(torch.rand(self.ranks.global_size(real.shape[0]), generator=self.noise,
                                                 device=self.device))
            gp = gradient_penalty(self.discriminator.src, real, fake.float(), eps=mix)
        loss_d, d_terms = discriminator_loss(real_src, fake_src, real_cls, label_org, gp.float(), cfg)
        self.ranks.optimize(loss_d, self.opt_d, self.discriminator)
        d_terms = {k: v.detach() for k, v in d_terms.items()}

        self.iteration += 1
        if self.iteration % cfg.n_critic == 0:
            with self.autocast:
                fake = self.generator(real, label_trg)
                fake_src, fake_cls = self.discriminator(fake)
                reconstructed = self.generator(fake, label_org)
            loss_g, g_terms = generator_loss(fake_src, fake_cls, label_trg, real, reconstructed, cfg)
            self.ranks.optimize(loss_g, self.opt_g, self.generator)
            self.last_g = {k: v.detach().float().cpu() for k, v in g_terms.items()}
        # InstanceNorm's running statistics (used with --norm-stats running) as the global batch's
        self.ranks.average_buffers(self.generator)
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

    def extra_state(self) -> dict[str, Any]:
        return {"translation": {"iteration": self.iteration, "fixed": self.fixed, "last_g": self.last_g}}

    def load_extra_state(self, state: dict[str, Any]) -> None:
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


def build_stargan(arch: Architecture, config: StarGANConfig, context: TrainingContext) -> StarGAN:
    """Networks sized by the (resolved) config's attributes, in the data set's label order."""
    return StarGAN(arch.build_generator(config), arch.build_discriminator(config), config, attribute_list(config),
                   exclusive_groups(config), context)
