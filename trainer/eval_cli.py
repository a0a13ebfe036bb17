"""`gan-eval MODEL [options]`: the evaluation of MODEL's task, picked from the model itself.

MODEL is a training checkpoint (file, checkpoints folder or run folder) or an exported model (folder with
manifest.json, or its model.onnx). Its task chooses the command, and the options are that command's:

  generate       FID/KID against real images   trainer/evaluation/generator_eval.py (also `--plot RUN`)
  super_resolve  PSNR/SSIM next to bicubic     trainer/evaluation/sr_eval.py       (alias `gan-eval-sr`)
  translate      target-attribute accuracy     trainer/evaluation/stargan_eval.py  (alias `gan-eval-stargan`)

A task's evaluation is `EVALUATIONS[task]`; an architecture gets it by declaring its task.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from trainer.evaluation import generator_eval, sr_eval, stargan_eval

EVALUATIONS: dict[str, ModuleType] = {
    "generate": generator_eval,
    "super_resolve": sr_eval,
    "translate": stargan_eval,
}


def _options_with_values() -> set[str]:
    """Every option of the three commands that takes a value, so the value is not mistaken for MODEL."""
    options: set[str] = set()
    for command in EVALUATIONS.values():
        for action in command.build_parser()._actions:
            if action.option_strings and action.nargs != 0:
                options.update(action.option_strings)
    return options


def model_argument(argv: list[str]) -> str | None:
    """The MODEL positional of a command line, or None (e.g. `--plot RUN`, `--help`)."""
    takes_value = _options_with_values()
    tokens: Iterator[str] = iter(argv)
    for token in tokens:
        if token == "--":
            return next(tokens, None)
        if token.startswith("-"):
            if "=" not in token and token in takes_value:
                next(tokens, None)
            continue
        return token
    return None


def model_task(model: Path) -> str | None:
    """The task of an exported model (its manifest) or a checkpoint (its architecture's); None when the
    path is neither, so that the command reports the problem in its own words."""
    import torch

    from trainer.registry import get_architecture
    from trainer.training.checkpoint import CheckpointError, resolve_checkpoint

    folder = model.parent if model.suffix == ".onnx" else model
    if (folder / "manifest.json").is_file():
        return json.loads((folder / "manifest.json").read_text()).get("task")
    try:
        # mmap: only the architecture's name is read here, not gigabytes of weights
        state = torch.load(resolve_checkpoint(model), map_location="cpu", mmap=True, weights_only=False)
        return get_architecture(state["arch"]).task
    except (CheckpointError, ValueError, KeyError, TypeError, RuntimeError, OSError):
        return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    model = model_argument(argv)
    task = model_task(Path(model)) if model is not None else None
    command = EVALUATIONS.get(task or "generate", generator_eval)
    return command.main(argv, prog="gan-eval")


if __name__ == "__main__":
    sys.exit(main())
