"""`gan-eval MODEL` for `generate` models: FID and KID of an unconditional generator (dcgan, lsgan, pggan)
against a data set. (`gan-eval` picks this evaluation by the model's task: trainer/eval_cli.py.)

MODEL is a training checkpoint (file, checkpoints folder or run folder; the served weights, so PGGAN's
G_ema at the resolution and alpha it reached) or an exported model (its folder with model.onnx and
manifest.json, or the model.onnx), run with ONNX Runtime. Both draw their latents the same way from the
same seed, so a checkpoint and its export score alike (an exported PGGAN records only the resolution it
reached, not its target: pass --image-size to compare at the target, as its checkpoint is compared).
`--random-weights` scores a freshly initialised generator of the checkpoint's config instead: the
baseline that says what a score's scale means. Features: `auto` is shapes-classifier-v4 for the shapes
data set and Inception-v3 (pytorch-fid's weights, from --inception-weights or $GAN_INCEPTION_WEIGHTS)
otherwise; every score's key names its features.

`gan-eval --plot RUN [--out PNG]` draws FID/KID over training from RUN/metrics.jsonl instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from trainer.data import DatasetError, build_dataset
from trainer.evaluation.generator_quality import (
    DEFAULT_NUM_SAMPLES,
    FEATURE_CHOICES,
    Generate,
    GeneratorEvaluator,
    latent_generate,
)
from trainer.evaluation.inception import WEIGHTS_ENV
from trainer.evaluation.quality_plot import plot_run
from trainer.evaluation.shapes_features import CACHE_ENV
from trainer.models.common import sample_latents
from trainer.served import load_served_generator
from trainer.training.checkpoint import CheckpointError


@dataclass
class Source:
    """A generator to score and what is known about it."""

    generate: Generate
    image_size: int
    data: str | None = None  # the data set it trained on, when known
    data_seed: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def checkpoint_source(path: Path, device: torch.device, random_weights: bool, seed: int) -> Source:
    served = load_served_generator(path, device, random_weights=random_weights, seed=seed)
    arch = served.architecture
    if arch.task != "generate":
        raise ValueError(f"{path}: a {arch.name} ({arch.task}) checkpoint; FID/KID scores unconditional generators "
                         "(dcgan, lsgan, pggan): `gan-eval` picks its task's evaluation (or gan-eval-stargan, "
                         "gan-eval-sr)")
    spec = served.export_spec()  # the module and latents the exported model would have
    latent = spec.manifest_fields
    state = served.checkpoint
    train = state.get("train", {})
    return Source(
        generate=latent_generate(spec.module, latent["latent_dim"], latent["latent_distribution"], device),
        image_size=int(served.config.image_size),
        data=train.get("data"),
        data_seed=int(train.get("seed", 0)),
        info={"model": state["path"], "source": "random-weights" if random_weights else "checkpoint",
              "architecture": arch.name, "step": int(state["step"]),
              "images_seen": state.get("images_seen")},
    )


def onnx_source(path: Path, device: torch.device) -> Source:
    import onnxruntime as ort

    from service.manifest import MODEL_FILENAME, Manifest

    folder = path if path.is_dir() else path.parent
    manifest = Manifest.read(folder)
    if manifest.task != "generate":
        raise ValueError(f"{folder}: a {manifest.task} model; gan-eval scores generate models")
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(str(folder / MODEL_FILENAME), providers=providers)
    input_name, output_name = manifest.inputs[0].name, manifest.outputs[0].name
    low, high = manifest.output_range
    latent_dim, distribution = int(manifest.latent_dim or 0), str(manifest.latent_distribution)

    def generate(n: int) -> Tensor:
        latents = sample_latents(latent_dim, distribution, n).numpy()
        (images,) = session.run([output_name], {input_name: latents})
        if images.dtype == np.uint8:  # current exports: 8-bit NHWC images straight from the graph
            return torch.from_numpy(images).permute(0, 3, 1, 2).float().mul_(2.0 / 255.0).sub_(1.0)
        return torch.from_numpy(images).float().sub_(low).mul_(2.0 / (high - low)).sub_(1.0)

    return Source(
        generate=generate,
        image_size=int(manifest.image_size or 0),
        info={"model": str(folder), "source": "onnx", "architecture": manifest.architecture,
              "step": manifest.provenance.training_step, "images_seen": manifest.provenance.images_seen},
    )


def is_exported(path: Path) -> bool:
    return path.suffix == ".onnx" or (path.is_dir() and (path / "manifest.json").is_file())


def build_parser(prog: str = "gan-eval") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path, nargs="?",
                        help="checkpoint file / checkpoints folder / run folder, or exported model folder / model.onnx")
    parser.add_argument("--data", default=None,
                        help="real images: shapes | shapes:N | folder:PATH (default: the checkpoint's own data set; "
                        "required for an exported model)")
    parser.add_argument("--data-seed", type=int, default=None,
                        help="seed of the data set (shapes: which images; default: the checkpoint's run seed, else 0)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="side of the real images (default: the config's, or the exported model's output)")
    parser.add_argument("--num-samples", type=int, default=DEFAULT_NUM_SAMPLES,
                        help="generated images, and at most as many real ones (default: %(default)s)")
    parser.add_argument("--features", default="auto", choices=FEATURE_CHOICES,
                        help="auto (default): shapes-classifier-v4 for the shapes data set, inception otherwise")
    parser.add_argument("--inception-weights", type=Path, default=None,
                        help=f"pytorch-fid's pt_inception-2015-12-05-6726825d.pth (default: ${WEIGHTS_ENV})")
    parser.add_argument("--seed", type=int, default=0,
                        help="latents, real subset and KID subsets (default: %(default)s)")
    parser.add_argument("--random-weights", action="store_true",
                        help="score a freshly initialised generator of the checkpoint's config (the baseline)")
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (default: %(default)s)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help=f"where the shapes feature extractor is cached for an image size whose weights "
                        f"are not shipped (default: ${CACHE_ENV}, else ~/.cache/gan-forge)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--plot", type=Path, default=None, metavar="RUN",
                        help="instead of scoring: plot FID/KID over training from RUN/metrics.jsonl")
    parser.add_argument("--out", type=Path, default=None, help="the --plot PNG (default: RUN/fid_kid.png)")
    return parser


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    if is_exported(args.model):
        if args.random_weights:
            raise ValueError("--random-weights needs a checkpoint (an exported model carries no config)")
        source = onnx_source(args.model, device)
    else:
        source = checkpoint_source(args.model, device, args.random_weights, args.seed)
    data = args.data or source.data
    if data is None:
        raise ValueError("an exported model does not record its data set: pass --data (e.g. --data shapes)")
    data_seed = args.data_seed if args.data_seed is not None else source.data_seed
    image_size = args.image_size or source.image_size
    dataset = build_dataset(data, image_size, data_seed)
    start = time.perf_counter()
    evaluator = GeneratorEvaluator(dataset, args.features, args.num_samples, args.seed, device,
                                   inception_weights=args.inception_weights, cache_dir=args.cache_dir)
    scores = evaluator(source.generate)
    return {**source.info, "data": data, "data_seed": data_seed, "image_size": image_size, **evaluator.describe(),
            **scores, "seconds": round(time.perf_counter() - start, 2)}


def format_text(report: dict[str, Any]) -> str:
    name = report["features"]
    lines = [
        f"{report['architecture']} step {report['step']} ({report['source']}: {report['model']})",
        f"against {report['data']} (seed {report['data_seed']}, {report['image_size']}px): "
        f"{report['num_samples']} generated / {report['real_samples']} real images, features {name}",
        f"fid_{name}  {report[f'fid_{name}']:.4f}",
        f"kid_{name}  {report[f'kid_{name}']:.5f} ± {report[f'kid_std_{name}']:.5f}",
    ]
    if "shape_confident" in report:
        shares = ", ".join(f"{k[6:]} {v:.1%} ({report.get(f'confident_{k[6:]}', float('nan')):.1%} confident)"
                           for k, v in report.items() if k.startswith("share_"))
        lines.append(f"shape_confident  {report['shape_confident']:.1%} (real images "
                     f"{report.get('real_shape_confident', float('nan')):.1%}); shapes: {shares}")
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "gan-eval") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if (args.plot is None) == (args.model is None):
        parser.error("give either MODEL to score or --plot RUN")
    try:
        if args.plot is not None:
            out = plot_run(args.plot, args.out)
            print(json.dumps({"plot": str(out)}) if args.json else f"wrote {out}")
            return 0
        report = evaluate(args)
    except (DatasetError, CheckpointError, ValueError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report) if args.json else format_text(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
