"""SRGAN's two training stages as algorithms for the one training loop.

Stage 1, `srresnet`: the generator alone, pixel MSE on [-1, 1] HR crops (the paper's SRResNet).
Stage 2, `srgan`: the generator starts from a stage-1 run (`--init-from`), a discriminator is added, and
G minimises content + 1e-3 x (-log D(G(LR))), content = MSE or VGG54; D minimises the usual BCE. One D
update then one G update per step, Adam (beta1 0.9) for both, and a step-wise learning-rate drop
(paper: 1e5 updates at 1e-4, then 1e5 at 1e-5).

Nothing in a step is random (the crops come from the data set, keyed on images seen), so the state a
resume needs is the networks, the optimizers and the update count. Under data parallelism BatchNorm
uses the global batch's statistics and gradients are averaged before each step, so N processes train
as one does with the same global batch. The stage-1 weights are read at the
first update rather than when the algorithm is built: a resumed stage-2 run takes its generator from its
own checkpoint and no longer needs the stage-1 file.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.architecture import Architecture
from trainer.data.super_resolution import bicubic_upscale, hr_tensor
from trainer.evaluation.super_resolution import evaluate_upscaler, torch_upscaler
from trainer.hashing import sha256_file
from trainer.losses import NonSaturatingBCE, build_content_loss
from trainer.models import srgan
from trainer.training.algorithm import GANAlgorithm, TrainingContext
from trainer.training.checkpoint import INITIALISED_FROM, initialised_from, load_checkpoint

PREVIEW_CROPS = 3  # rows of (bicubic | SR | HR) in the sample grid, which save_grid lays out 3 to a row
INIT_ARCHITECTURES = ("srresnet", "srgan")
GENERATOR_SHAPE = ("scale", "blocks", "channels")


class SRResNetTraining(GANAlgorithm):
    """Stage 1: G(LR) against HR with pixel MSE."""

    def __init__(self, generator: srgan.SRResNet, config: srgan.SRResNetConfig, context: TrainingContext) -> None:
        super().__init__(context, batch_size=config.batch_size, draws_noise=False)
        self.generator = self.add_network("generator", generator)
        self.scale = generator.scale
        self.base_lr, self.lr_drop_step, self.lr_drop_factor = config.lr, config.lr_drop_step, config.lr_drop_factor
        self.betas = (config.beta1, config.beta2)
        self.opt_g = self.adam("optimizer_g", self.generator, config.lr, self.betas)
        self.updates = 0
        self.preview: dict[str, Tensor] | None = None  # the first batch's first crops, for sample()

    # ------------------------------------------------------------------------------------------- schedule
    def learning_rate(self, update: int | None = None) -> float:
        """The rate for 0-based update `update` (default: the next one)."""
        update = self.updates if update is None else update
        dropped = self.lr_drop_step > 0 and update >= self.lr_drop_step
        return self.base_lr * (self.lr_drop_factor if dropped else 1.0)

    def _apply_learning_rate(self, *optimizers: torch.optim.Optimizer) -> None:
        rate = self.learning_rate()
        for optimizer in optimizers:
            for group in optimizer.param_groups:
                group["lr"] = rate

    # ---------------------------------------------------------------------------------------------- steps
    def _inputs(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        if self.preview is None:  # the global batch's first crops, whatever the number of ranks
            self.preview = {k: self.ranks.gather(batch[k])[:PREVIEW_CROPS].clone() for k in ("lr", "hr")}
        return batch["lr"].to(self.device, non_blocking=True), batch["hr"].to(self.device, non_blocking=True)

    def train_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        low_res, hr = self._inputs(batch)
        self._apply_learning_rate(self.opt_g)
        with self.autocast:
            sr = self.generator(low_res)
        loss = F.mse_loss(sr.float(), hr)
        self.ranks.optimize(loss, self.opt_g, self.generator)
        self.updates += 1
        return {"content": loss.detach()}

    # ------------------------------------------------------------------------------------ what the loop shows
    def progress(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate(max(self.updates - 1, 0))}

    @torch.no_grad()
    def sample(self) -> Tensor:
        """Rows of (bicubic-upscaled LR | SR | HR) for the first training crops, G in eval mode."""
        if self.preview is None:
            return torch.zeros(3, 3, 8, 8)
        upscale = torch_upscaler(self.generator, self.device)
        tiles = []
        for low_res, hr in zip(self.preview["lr"], self.preview["hr"], strict=True):
            low_res_u8 = (low_res * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            tiles += [hr_tensor(bicubic_upscale(low_res_u8, self.scale)), hr_tensor(upscale(low_res_u8)), hr.float()]
        return torch.stack(tiles)

    def evaluate(self, dataset: Any) -> dict[str, Any]:
        """PSNR/SSIM (Y, border = scale) of G and of bicubic on the data set's held-out images."""
        images, names = getattr(dataset, "eval_images", []), getattr(dataset, "eval_names", None)
        return evaluate_upscaler(torch_upscaler(self.generator, self.device), images, self.scale, names)

    # ---------------------------------------------------------------------------------------------- state
    def extra_state(self) -> dict[str, Any]:
        return {"sr_updates": self.updates, "sr_preview": self.preview}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.updates = int(state["sr_updates"])
        self.preview = state["sr_preview"]


class SRGANTraining(SRResNetTraining):
    """Stage 2: perceptual loss = content + adversarial_weight x (-log D(G(LR))) for G; BCE for D."""

    def __init__(
        self,
        generator: srgan.SRResNet,
        discriminator: srgan.Discriminator,
        content: nn.Module,
        config: srgan.SRGANConfig,
        context: TrainingContext,
    ) -> None:
        super().__init__(generator, config, context)
        self.discriminator = self.add_network("discriminator", discriminator)
        self.content = content.to(self.device)
        self.adversarial = NonSaturatingBCE()
        self.adversarial_weight = config.adversarial_weight
        self.opt_d = self.adam("optimizer_d", self.discriminator, config.lr, self.betas)
        self.init_from = config.init_from
        self.generator_shape = {k: getattr(config, k) for k in GENERATOR_SHAPE}
        self.initialised_from: dict[str, Any] | None = None
        self._init_pending = bool(self.init_from)
        if not self.init_from:
            warnings.warn("srgan: no --init-from; G starts from random weights (the paper starts SRGAN from a "
                          "trained SRResNet: gan-train srresnet first)", stacklevel=2)

    def initialise(self) -> None:
        """Load the stage-1 generator named by `init_from`, once, before the first update."""
        if not self._init_pending:
            return
        state = load_checkpoint(self.init_from)
        if state["arch"] not in INIT_ARCHITECTURES:
            raise ValueError(f"--init-from {self.init_from}: a {state['arch']} checkpoint, not an srresnet/srgan one")
        theirs = {k: state["config"].get(k) for k in GENERATOR_SHAPE}
        if theirs != self.generator_shape:
            raise ValueError(f"--init-from {self.init_from}: its generator has {theirs}, this run "
                             f"{self.generator_shape}; pass the same --scale/--blocks/--channels as the stage-1 run")
        self.generator.load_state_dict(state["generator"])
        # the file's hash, so an exported model names the stage-1 weights it grew from even after that run
        # folder is gone or retrained (the stage-1 model's own manifest holds the same checkpoint_sha256)
        self.initialised_from = {"path": state["path"], "arch": state["arch"], "step": int(state["step"]),
                                 "checkpoint_sha256": sha256_file(Path(state["path"]))}
        self._init_pending = False

    def train_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        self.initialise()
        low_res, hr = self._inputs(batch)
        self._apply_learning_rate(self.opt_g, self.opt_d)

        with self.autocast:
            sr = self.generator(low_res)
            real_out = self.discriminator(hr)
            fake_out = self.discriminator(sr.detach())
            loss_d = self.adversarial.discriminator(real_out.float(), fake_out.float())
        self.ranks.optimize(loss_d, self.opt_d, self.discriminator)

        with self.autocast:
            adversarial = self.adversarial.generator(self.discriminator(sr).float())
            content = self.content(sr.float(), hr)
            loss_g = content + self.adversarial_weight * adversarial
        self.ranks.optimize(loss_g, self.opt_g, self.generator)
        self.updates += 1
        return {
            "loss_g": loss_g.detach(),
            "content": content.detach(),
            "adversarial": adversarial.detach(),
            "loss_d": loss_d.detach(),
            "d_real": torch.sigmoid(real_out.detach().float()).mean(),
            "d_fake": torch.sigmoid(fake_out.detach().float()).mean(),
        }

    def sample(self) -> Tensor:
        self.initialise()
        return super().sample()

    def evaluate(self, dataset: Any) -> dict[str, Any]:
        self.initialise()
        return super().evaluate(dataset)

    def state_dict(self) -> dict[str, Any]:
        self.initialise()  # the saved generator is the stage-1 one from the first save on
        return super().state_dict()

    def extra_state(self) -> dict[str, Any]:
        return {
            **super().extra_state(),
            INITIALISED_FROM: self.initialised_from,
            "content_loss": {"name": self.content.name, "vgg19_sha256": getattr(self.content, "weights_sha256", "")},
        }

    def load_extra_state(self, state: dict[str, Any]) -> None:
        super().load_extra_state(state)
        self.initialised_from = initialised_from(state)
        self._init_pending = False  # the checkpoint's generator already descends from the stage-1 weights
        saved = state.get("content_loss", {}).get("vgg19_sha256", "")
        current = getattr(self.content, "weights_sha256", "")
        if saved and current and saved != current:
            warnings.warn("resuming with a different VGG19 weights file than the run started with "
                          f"(sha256 {current[:12]} vs {saved[:12]}): the content loss changes", stacklevel=2)


def build_srresnet(arch: Architecture, config: srgan.SRResNetConfig, context: TrainingContext) -> SRResNetTraining:
    return SRResNetTraining(arch.build_generator(config), config, context)


def build_srgan(arch: Architecture, config: srgan.SRGANConfig, context: TrainingContext) -> SRGANTraining:
    # refuses VGG54 without weights; built aside from the global RNG, which has just seeded the weights
    with torch.random.fork_rng(devices=[]):
        content = build_content_loss(config.content_loss, config.vgg19_weights)
    return SRGANTraining(arch.build_generator(config), arch.build_discriminator(config), content, config, context)
