"""`gan-export CHECKPOINT --out REPO [--name NAME] [--opset N] [--fp16]`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export.onnx_export import DEFAULT_OPSET, ExportError, export_checkpoint
from trainer.training.checkpoint import CheckpointError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gan-export",
        description="Export a trained generator to ONNX, verify it against PyTorch, and add it to a model "
        "repository (REPO/NAME/model.onnx + manifest.json) that gan-serve loads.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("checkpoint", type=Path, help="checkpoint file, checkpoints folder or run folder")
    parser.add_argument("--out", type=Path, default=Path("models"), help="model repository folder")
    parser.add_argument("--name", default=None, help="model name in the repository (default: the architecture)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (>= 17)")
    parser.add_argument("--fp16", action="store_true",
                        help="half-precision weights and compute (float32 inputs/outputs); parity tolerance 2e-2")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.opset < 17:
        print("gan-export: error: --opset must be at least 17", file=sys.stderr)
        return 2
    try:
        result = export_checkpoint(args.checkpoint, args.out, args.name, args.opset, args.fp16)
    except (ExportError, CheckpointError, ValueError) as exc:
        print(f"gan-export: error: {exc}", file=sys.stderr)
        return 1
    m = result.manifest
    print(f"exported {m.architecture} (step {m.provenance.training_step}) to {result.directory}: "
          f"max |ONNX - PyTorch| = {m.parity_max_abs_error:.2e} (tolerance {m.parity_tolerance:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
