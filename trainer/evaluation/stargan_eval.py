"""`gan-eval-stargan RUN` (or `python -m trainer.evaluation.stargan_eval RUN`): score a StarGAN checkpoint.

Prints one JSON line: target-attribute accuracy of translations judged by an attribute classifier
trained on the data set's real images, the classifier's own accuracy on real held-out images, and the
reconstruction error |x - G(G(x,c'),c)| (see trainer.evaluation.translation). The classifier is cached
in RUN/eval/attribute_classifier.pt, keyed by the data set and its training length, so repeated
evaluations of a run (or of its later checkpoints) score with the same judge. `--png` also writes a
translation example: each input image followed by its translation to every attribute's domain.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from trainer.data import DatasetError
from trainer.evaluation.attribute_classifier import AttributeClassifier
from trainer.evaluation.translation import (
    classifier_key,
    fit_classifier,
    load_images,
    shape_judge,
    translation_metrics,
)
from trainer.served import load_served_generator
from trainer.training.checkpoint import CheckpointError
from trainer.training.images import save_grid
from trainer.training.translation import translation_grid

CLASSIFIER_FILE = "attribute_classifier.pt"


def cached_classifier(run: Path, dataset: object, steps: int, use_cache: bool) -> AttributeClassifier:
    path = run / "eval" / CLASSIFIER_FILE
    key = classifier_key(dataset, steps)
    if use_cache and path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("key") == key:
            model = AttributeClassifier(saved["c_dim"], saved["input_size"], saved["width"])
            model.load_state_dict(saved["state"])
            return model.eval()
    model = fit_classifier(dataset, steps)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"key": key, "c_dim": model.c_dim, "input_size": model.input_size, "width": model.width,
                    "state": model.state_dict()}, tmp)
        tmp.replace(path)
    return model


def build_parser(prog: str = "gan-eval-stargan") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run", type=Path, help="run folder, checkpoints folder or checkpoint file")
    parser.add_argument("--data", default=None, help="data spec (default: the one the run trained on)")
    parser.add_argument("--images", type=int, default=None, help="held-out images (default: the config's eval_images)")
    parser.add_argument("--classifier-steps", type=int, default=None,
                        help="classifier training steps (default: the config's classifier_steps)")
    parser.add_argument("--png", type=Path, default=None, help="also write a translation example PNG here")
    parser.add_argument("--png-images", type=int, default=4, help="input images (rows) in the PNG")
    parser.add_argument("--png-scale", type=int, default=4, help="nearest-neighbour enlargement of the PNG")
    parser.add_argument("--no-cache", dest="cache", action="store_false", help="retrain the classifier, save nothing")
    return parser


def main(argv: list[str] | None = None, prog: str = "gan-eval-stargan") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        served = load_served_generator(args.run, task="translate")
        state, config, generator = served.checkpoint, served.config, served.network
        if args.classifier_steps is not None:
            config.classifier_steps = args.classifier_steps
        dataset = served.architecture.dataset(args.data or state["train"]["data"], config, state["train"]["seed"])
        run_dir = Path(args.run)
        run_dir = run_dir if run_dir.is_dir() and (run_dir / "checkpoints").is_dir() else Path(state["train"]["out"])
        classifier = cached_classifier(run_dir, dataset, config.classifier_steps, args.cache)
        held_out = dataset.held_out(args.images or config.eval_images)
        images, labels = load_images(held_out, len(held_out))
        judge = shape_judge(held_out)
    except (DatasetError, CheckpointError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    report = translation_metrics(generator, classifier, images, labels, dataset.attributes, dataset.exclusive_groups,
                                 torch.device("cpu"), judge)
    report = {"step": int(state["step"]), **report}
    if args.png is not None:
        write_example(generator, dataset, images[: args.png_images], labels[: args.png_images], args.png,
                      args.png_scale)
        report["png"] = str(args.png)
    print(json.dumps(report))
    return 0


def write_example(
    generator: torch.nn.Module, dataset: Any, images: torch.Tensor, labels: torch.Tensor, path: Path, scale: int = 1
) -> Path:
    """Each input, then its translation to every attribute's domain, one row per input."""
    grid = translation_grid(generator, images, labels, dataset.attributes, dataset.exclusive_groups)
    if scale > 1:
        grid = torch.nn.functional.interpolate(grid, scale_factor=scale, mode="nearest")
    caption = "input | " + " | ".join(dataset.attributes)
    return save_grid(grid, path, caption=caption if len(caption) * 6 < grid.shape[-1] else None)


if __name__ == "__main__":
    sys.exit(main())
