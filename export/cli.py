"""`gan-export CHECKPOINT --out REPO [--name NAME] [--opset N] [--precision fp32|fp16] [--triton-repo DIR]`.

`gan-export --triton-from MODEL_DIR --triton-repo DIR` writes the Triton Inference Server model of a
model that was exported before, without re-exporting it (no checkpoint, no PyTorch run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export.onnx_export import DEFAULT_OPSET, PRECISIONS, TOLERANCE, ExportError, export_checkpoint
from export.triton import (
    DEFAULT_MAX_BATCH_DELAY_MS,
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_QUEUE_SIZE,
    DEFAULT_REQUEST_TIMEOUT_S,
    TritonOptions,
    write_triton_model,
)
from trainer.training.checkpoint import CheckpointError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gan-export",
        description="Export a trained generator to ONNX, verify it against PyTorch, and add it to a model "
        "repository (REPO/NAME/model.onnx + manifest.json) that gan-serve loads. With --triton-repo, also "
        "write a Triton Inference Server model (DIR/NAME/config.pbtxt + 1/model.onnx) of the same file.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("checkpoint", type=Path, nargs="?",
                        help="checkpoint file, checkpoints folder or run folder (omit with --triton-from)")
    parser.add_argument("--out", type=Path, default=Path("models"), help="model repository folder")
    parser.add_argument("--name", default=None,
                        help="model name in the repository (default: the architecture; with --triton-from: "
                        "the Triton model name, default the manifest's)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (>= 17)")
    versions = parser.add_argument_group(
        "versions",
        "REPO/NAME/<N>/ folders beside serving.json, which a running gan-serve follows (docs/deploy.md, "
        "Updating models). A model folder that already holds versions always gets a new one.",
    )
    versions.add_argument("--new-version", action="store_true",
                          help="add the export as the next version REPO/NAME/<N>/, keeping the older ones (a flat "
                          "REPO/NAME/ becomes version 1), instead of replacing REPO/NAME/")
    versions.add_argument("--stage", action="store_true",
                          help="add a new version (as --new-version) but keep serving the current one "
                          "(serve it later with gan-models serve REPO/NAME N)")
    parser.add_argument("--precision", choices=PRECISIONS, default=None,
                        help="weights and compute: fp32, or fp16 (float32 inputs, uint8 images out; parity "
                        f"tolerance {TOLERANCE['fp16']:g} instead of {TOLERANCE['fp32']:g}); default fp32")
    parser.add_argument("--fp16", action="store_true", help="the same as --precision fp16")
    triton = parser.add_argument_group(
        "Triton Inference Server",
        "Batching defaults mirror gan-serve's GAN_MAX_BATCH_SIZE, GAN_MAX_BATCH_DELAY_MS, GAN_MAX_QUEUE_SIZE "
        "and GAN_REQUEST_TIMEOUT_S (docs/triton.md).",
    )
    triton.add_argument("--triton-repo", type=Path, default=None, metavar="DIR",
                        help="also write DIR/NAME/{config.pbtxt, manifest.json, 1/model.onnx}")
    triton.add_argument("--triton-from", type=Path, default=None, metavar="MODEL_DIR",
                        help="write the Triton model of this already-exported model folder instead of exporting")
    triton.add_argument("--triton-max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE,
                        help="max_batch_size and preferred_batch_size")
    triton.add_argument("--triton-max-batch-delay-ms", type=float, default=DEFAULT_MAX_BATCH_DELAY_MS,
                        help="max_queue_delay_microseconds / 1000")
    triton.add_argument("--triton-max-queue-size", type=int, default=DEFAULT_MAX_QUEUE_SIZE,
                        help="default_queue_policy.max_queue_size (requests, not rows)")
    triton.add_argument("--triton-request-timeout-s", type=float, default=DEFAULT_REQUEST_TIMEOUT_S,
                        help="default_queue_policy.default_timeout_microseconds / 1e6 (time in queue)")
    triton.add_argument("--triton-instance-kind", choices=["gpu", "cpu"], default="gpu",
                        help="instance_group kind: KIND_GPU, or KIND_CPU for hosts without a GPU")
    triton.add_argument("--triton-instance-count", type=int, default=1,
                        help="model instances (concurrent executions) per device")
    return parser


def _triton_options(args: argparse.Namespace) -> TritonOptions:
    return TritonOptions(
        max_batch_size=args.triton_max_batch_size,
        max_batch_delay_ms=args.triton_max_batch_delay_ms,
        max_queue_size=args.triton_max_queue_size,
        request_timeout_s=args.triton_request_timeout_s,
        instance_kind=args.triton_instance_kind,
        instance_count=args.triton_instance_count,
    )


def _usage_error(message: str) -> int:
    print(f"gan-export: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.triton_from is not None:
        if args.checkpoint is not None or args.fp16 or args.precision:
            return _usage_error("--triton-from takes an exported model folder, not a checkpoint (or --precision)")
        if args.triton_repo is None:
            return _usage_error("--triton-from needs --triton-repo DIR")
    elif args.checkpoint is None:
        return _usage_error("give a CHECKPOINT to export (or --triton-from MODEL_DIR --triton-repo DIR)")
    if args.fp16 and args.precision not in (None, "fp16"):
        return _usage_error("--fp16 contradicts --precision fp32")
    if args.opset < 17:
        return _usage_error("--opset must be at least 17")
    try:
        options = _triton_options(args) if args.triton_repo is not None else None
    except ValueError as exc:
        return _usage_error(str(exc))

    if args.triton_from is None:
        try:
            precision = "fp16" if args.fp16 else args.precision
            result = export_checkpoint(args.checkpoint, args.out, args.name, args.opset, precision=precision,
                                       new_version=args.new_version or args.stage, serve=not args.stage)
        except (ExportError, CheckpointError, ValueError) as exc:
            print(f"gan-export: error: {exc}", file=sys.stderr)
            return 1
        m = result.manifest
        version = "" if result.version is None else f" as version {result.version}" + (
            " (staged, not served)" if args.stage else " (served)")
        print(f"exported {m.architecture} (step {m.provenance.training_step}, {m.precision}) to "
              f"{result.directory}{version}: max |ONNX - PyTorch| = {m.parity_max_abs_error:.2e} "
              f"(tolerance {m.parity_tolerance:g}), 8-bit images within {m.parity_max_level_error} level(s)")
        model_dir, triton_name = result.directory, None
    else:
        model_dir, triton_name = args.triton_from, args.name

    if options is not None:
        try:
            written = write_triton_model(model_dir, args.triton_repo, triton_name, options)
        except (ValueError, OSError) as exc:  # ManifestError and TritonExportError are ValueErrors
            print(f"gan-export: error: Triton model not written: {exc}", file=sys.stderr)
            return 1
        print(f"wrote Triton model {written} ({written / 'config.pbtxt'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
