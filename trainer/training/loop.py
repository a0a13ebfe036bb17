"""The one training loop: data, steps, logging, sample grids, checkpoints and exact resume.

Architectures plug in an algorithm (a trainer.training.algorithm.GANAlgorithm); the loop owns
everything that is the same for all of them, so that a resumed run of any GAN continues bit for bit.
Under `torchrun` every rank runs this loop on its share of each global batch; rank 0 alone writes the
log, the sample grids, the evaluations and the (single-file) checkpoints.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from trainer.data import StepBatchSampler
from trainer.registry import get_architecture
from trainer.training.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from trainer.training.distributed import Ranks, from_environment
from trainer.training.images import save_grid


@dataclass
class TrainOptions:
    data: str = "shapes"
    steps: int = 1000
    out: str = "runs/gan"
    seed: int = 0
    log_every: int = 20
    sample_every: int = 200
    checkpoint_every: int = 500
    eval_every: int = 0
    eval_samples: int = 5000  # generated images per FID/KID evaluation (generators only)
    eval_features: str = "auto"  # FID/KID feature space: auto | shapes | inception
    keep_checkpoints: int = 3
    device: str = "auto"
    amp: str = "auto"
    num_workers: int = -1
    resume: bool = False
    progress: bool = True


def select_device(name: str, ranks: Ranks | None = None) -> torch.device:
    """The device to train on; under torchrun, each rank's own GPU (cuda:LOCAL_RANK)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but PyTorch sees no CUDA device")
    if name == "cuda" and ranks is not None and ranks.active:
        return torch.device("cuda", ranks.local_rank)
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def batch_length(batch: Any) -> int:
    """Images in a batch, whether it is a tensor or (images, labels, ...) or a dict of tensors."""
    if isinstance(batch, dict):
        batch = next(iter(batch.values()))
    if isinstance(batch, (list, tuple)):
        batch = batch[0]
    return int(batch.shape[0])


def refuse_changed_config(given: Any, saved: Any, out: Path) -> None:
    """A resumed run keeps the config it started with (that is what makes it exact), so a setting given on
    the command line that differs from both its default and the checkpoint's would be silently ignored:
    refuse it instead, naming each one. Settings left at their default are not read as a request."""
    if given is None:
        return
    changed = []
    for f in fields(given):
        default = f.default if f.default is not MISSING else None
        value, kept = getattr(given, f.name), getattr(saved, f.name, None)
        if value != default and value != kept:
            flag = "--" + f.name.replace("_", "-")
            changed.append(f"{flag} {value} (the run's: {kept})")
    if changed:
        raise ValueError(f"{out}: --resume continues a run with the settings it started with, and these differ: "
                         + ", ".join(changed) + ". Leave them out to resume, or start a new run (--out) to change "
                         "them.")


class Run:
    """A training run in `options.out`: metrics.jsonl, samples/, checkpoints/."""

    def __init__(
        self, arch_name: str, config: Any, options: TrainOptions, ranks: Ranks | None = None
    ) -> None:
        self.options = options
        self.out = Path(options.out)
        self.ranks = ranks if ranks is not None else from_environment()
        self.device = select_device(options.device, self.ranks)
        amp = options.amp == "on" or (options.amp == "auto" and self.device.type == "cuda")
        checkpoint = None
        if options.resume:
            checkpoint = load_checkpoint(self.out, map_location="cpu")
            if checkpoint["arch"] != arch_name:
                raise ValueError(f"checkpoint in {self.out} is a {checkpoint['arch']}, not a {arch_name}")
            saved = get_architecture(arch_name).make_config(checkpoint["config"])
            refuse_changed_config(config, saved, self.out)
            config = saved
            options.seed = checkpoint["train"]["seed"]
            options.data = checkpoint["train"]["data"]
        self.arch = get_architecture(arch_name)
        self.config = config
        seed_everything(options.seed)
        self.dataset = self.arch.dataset(options.data, config, options.seed)
        self.algorithm = self.arch.build_algorithm(config, self.device, options.seed, amp, self.ranks)
        self.step, self.images_seen = 0, 0
        self.quality = self._quality_evaluator()
        if checkpoint is not None:
            self.algorithm.load_state_dict(checkpoint)
            self.step, self.images_seen = checkpoint["step"], checkpoint["images_seen"]
            restore_rng_state(checkpoint["rng"])

    def batch_size_for(self, images_seen: int) -> int:
        """The algorithm's schedule where it has one (PGGAN), else the configured minibatch."""
        return self.algorithm.batch_size_for(images_seen)

    def _loader(self) -> DataLoader:
        workers = self.options.num_workers
        if workers < 0:  # in-memory data sets are fastest in-process; decoding files wants workers
            processes_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            workers = 0 if hasattr(self.dataset, "images") else min(4, max(1, (os.cpu_count() or 1) // processes_here))
        sampler = StepBatchSampler(len(self.dataset), self.batch_size_for, self.options.seed, self.images_seen,
                                   rank=self.ranks.rank, world_size=self.ranks.world_size)
        return DataLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
        )

    def checkpoint(self) -> Path:
        payload = {
            "arch": self.arch.name,
            "config": asdict(self.config),
            "train": asdict(self.options),
            "step": self.step,
            "images_seen": self.images_seen,
            "dataset": self.dataset.describe(),
            "rng": capture_rng_state(),
            **self.algorithm.state_dict(),
        }
        return save_checkpoint(self.out / "checkpoints", self.step, payload, self.options.keep_checkpoints)

    def sample(self) -> Path:
        path = self.out / "samples" / f"step_{self.step:08d}.png"
        progress = self.algorithm.progress()  # e.g. PGGAN's resolution and alpha, shown above the grid
        caption = "  ".join([f"step {self.step}"] + [f"{k} {v}" for k, v in progress.items()]) if progress else None
        save_grid(self.algorithm.sample(), path, caption=caption)
        return path

    def _quality_evaluator(self) -> Any:
        """FID/KID for a generator's runs with --eval-every, built up front: a missing Inception weights
        file then stops the run before its first step, not at its first evaluation hours later."""
        opts = self.options
        if not (opts.eval_every and self.ranks.is_main and self.algorithm.served_generator() is not None):
            return None
        from trainer.evaluation.generator_quality import GeneratorEvaluator  # loads only when used

        return GeneratorEvaluator(self.dataset, opts.eval_features, opts.eval_samples, device=self.device)

    def _generator_quality(self) -> dict[str, Any]:
        """FID/KID of the served generator in eval mode, with gan-eval's latents (same seed, same draws),
        so the logged figure is what `gan-eval` reports for this step's checkpoint."""
        from trainer.evaluation.generator_quality import latent_generate

        served = self.algorithm.served_generator()
        assert served is not None  # the evaluator exists only for algorithms that serve a latent generator
        network, latent_dim, distribution = served
        was_training = network.training
        network.eval()
        try:
            scores = self.quality(latent_generate(network, latent_dim, distribution, self.device))
        finally:
            network.train(was_training)
        return {**scores, "features": self.quality.name, "eval_samples": self.quality.num_samples}

    def evaluate(self, log: Any) -> dict[str, Any] | None:
        """Quality figures logged to metrics.jsonl as {"step": N, "eval": {...}}: FID/KID for generators,
        the algorithm's own where it has them (PSNR/SSIM, attribute accuracy, ...)."""
        if not self.ranks.is_main:
            return None
        results = self._generator_quality() if self.quality is not None else self.algorithm.evaluate(self.dataset)
        if results is None:
            return None
        record = {"step": self.step, "images_seen": self.images_seen, "eval": results}
        log.write(json.dumps(record) + "\n")
        log.flush()
        return record

    def train(self) -> dict[str, Any]:
        """Run until `options.steps`; returns the last logged record."""
        opts = self.options
        main = self.ranks.is_main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
        last: dict[str, Any] = {"step": self.step}
        if self.step >= opts.steps:
            return last
        batches = iter(self._loader())
        bar = tqdm(total=opts.steps, initial=self.step, disable=not (opts.progress and main), desc=self.arch.name,
                   unit="step")
        window_start, window_images = time.perf_counter(), 0
        with open(self.out / "metrics.jsonl", "a") if main else open(os.devnull, "w") as log:
            while self.step < opts.steps:
                batch = next(batches)
                losses = self.algorithm.train_step(batch)
                self.step += 1
                images = self.ranks.global_size(batch_length(batch))
                self.images_seen += images
                window_images += images
                if self.step % opts.log_every == 0 or self.step == opts.steps:
                    losses = self.ranks.average(losses)
                    elapsed = time.perf_counter() - window_start
                    last = {
                        "step": self.step,
                        "images_seen": self.images_seen,
                        **{k: round(float(v), 6) for k, v in losses.items()},
                        "images_per_s": round(window_images / max(elapsed, 1e-9), 2),
                        **self.algorithm.progress(),
                        "time": round(time.time(), 3),
                    }
                    log.write(json.dumps(last) + "\n")
                    log.flush()
                    bar.set_postfix({k: last[k] for k in losses} | self.algorithm.progress(), refresh=False)
                    window_start, window_images = time.perf_counter(), 0
                if main and opts.sample_every and self.step % opts.sample_every == 0:
                    self.sample()
                if main and opts.checkpoint_every and self.step % opts.checkpoint_every == 0:
                    self.checkpoint()
                if opts.eval_every and self.step % opts.eval_every == 0:
                    self.evaluate(log)
                bar.update(1)
        bar.close()
        if main and not (opts.checkpoint_every and self.step % opts.checkpoint_every == 0):
            self.checkpoint()
        if main and not (opts.sample_every and self.step % opts.sample_every == 0):
            self.sample()
        self.ranks.barrier()  # every rank returns once the run's last checkpoint is on disk
        return last
