"""`gan-train ARCH ...`: one sub-command per architecture, its options generated from its config.

Each option's help text states the paper's (or reference code's) default, and argparse prints the
value in force, so `gan-train dcgan --help` is the reference card for a run.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import MISSING, fields
from typing import Any

from trainer.data import DatasetError
from trainer.evaluation.inception import InceptionWeightsError
from trainer.registry import ARCHITECTURES, get_architecture
from trainer.training.checkpoint import CheckpointError
from trainer.training.distributed import from_environment, shutdown
from trainer.training.loop import Run, TrainOptions


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_common(parser: argparse.ArgumentParser) -> None:
    common = parser.add_argument_group("run")
    defaults = TrainOptions()
    common.add_argument("--data", default=defaults.data,
                        help="data set: 'shapes' (built in), 'shapes:N' (N images), 'folder:PATH'; super-resolution "
                        "also 'photos' (bundled photographs); stargan also 'celeba:ROOT', 'csv:IMAGES_DIR,ATTRS.csv'")
    common.add_argument("--steps", type=int, default=defaults.steps, help="train until this many steps in total")
    common.add_argument("--out", default=None, help="run folder (default: runs/ARCH)")
    common.add_argument("--seed", type=int, default=defaults.seed, help="seed for data order, weights and noise")
    common.add_argument("--log-every", type=int, default=defaults.log_every,
                        help="steps between metrics.jsonl records")
    common.add_argument("--sample-every", type=int, default=defaults.sample_every,
                        help="steps between fixed-noise sample grids (0: only at the end)")
    common.add_argument("--checkpoint-every", type=int, default=defaults.checkpoint_every,
                        help="steps between checkpoints (0: only at the end)")
    common.add_argument("--eval-every", type=int, default=defaults.eval_every,
                        help="steps between evaluations logged to metrics.jsonl (0: never): FID/KID for dcgan, "
                        "lsgan and pggan (plot them with gan-eval --plot RUN), PSNR/SSIM for super-resolution, "
                        "target-attribute accuracy for stargan")
    common.add_argument("--eval-samples", type=int, default=defaults.eval_samples,
                        help="generated images per FID/KID evaluation")
    common.add_argument("--eval-features", default=defaults.eval_features, choices=["auto", "shapes", "inception"],
                        help="FID/KID features: auto = shapes-classifier-v4 for the shapes data, else Inception-v3 "
                        "(its weights from $GAN_INCEPTION_WEIGHTS)")
    common.add_argument("--keep-checkpoints", type=int, default=defaults.keep_checkpoints,
                        help="how many step checkpoints to keep (0: all)")
    common.add_argument("--device", default=defaults.device, help="auto | cpu | cuda | cuda:N")
    common.add_argument("--amp", default=defaults.amp, choices=["auto", "on", "off"],
                        help="bfloat16 autocast on CUDA (auto: on when training on CUDA)")
    common.add_argument("--num-workers", type=int, default=defaults.num_workers,
                        help="DataLoader workers (-1: 0 for in-memory data, up to 4 for folders)")
    common.add_argument("--resume", action="store_true",
                        help="continue the run in --out from checkpoints/latest.pt, exactly")
    common.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")


def _add_config(parser: argparse.ArgumentParser, config_cls: type) -> None:
    group = parser.add_argument_group("architecture (help gives the paper default)")
    for f in fields(config_cls):
        default = f.default if f.default is not MISSING else None
        kind = {"action": argparse.BooleanOptionalAction} if isinstance(default, bool) else {"type": type(default)}
        group.add_argument(_flag(f.name), dest=f"config.{f.name}", default=default, help=f.metadata.get("help", ""),
                           **kind)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gan-train", description="Train one of the project's GANs.")
    sub = parser.add_subparsers(dest="arch", required=True, metavar="ARCH")
    for arch in ARCHITECTURES:
        p = sub.add_parser(arch.name, help=arch.summary, description=arch.summary,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        _add_common(p)
        _add_config(p, arch.config_cls)
    return parser


def parse(argv: list[str] | None = None) -> tuple[str, Any, TrainOptions]:
    args = vars(build_parser().parse_args(argv))
    arch = get_architecture(args.pop("arch"))
    config_values = {k.split(".", 1)[1]: args.pop(k) for k in list(args) if k.startswith("config.")}
    if args["out"] is None:
        args["out"] = f"runs/{arch.name}"
    return arch.name, arch.make_config(config_values), TrainOptions(**args)


def main(argv: list[str] | None = None) -> int:
    arch_name, config, options = parse(argv)
    warnings.simplefilter("default")
    ranks = from_environment()  # under torchrun: join the process group; otherwise one process
    try:
        run = Run(arch_name, config, options, ranks)
        if ranks.is_main:
            processes = f" x {ranks.world_size} processes" if ranks.active else ""
            print(f"{arch_name}: training on {run.device}{processes}, data {options.data} ({len(run.dataset)} images), "
                  f"from step {run.step} to {options.steps}, writing to {options.out}", file=sys.stderr)
        last = run.train()
    except (DatasetError, CheckpointError, InceptionWeightsError, ValueError) as exc:
        print(f"gan-train: error{f' (rank {ranks.rank})' if ranks.active else ''}: {exc}", file=sys.stderr)
        return 2
    finally:
        shutdown(ranks)
    if ranks.is_main:
        print(json.dumps(last))
    return 0


if __name__ == "__main__":
    sys.exit(main())
