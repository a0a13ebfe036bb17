"""`gan-eval-sr MODEL [--data photos|folder:PATH]`: PSNR/SSIM of a super-resolution model next to bicubic.

MODEL is a training checkpoint (file, checkpoints folder or run folder, any `super_resolve` architecture)
or an exported ONNX model (a `model.onnx`, or its model-repository folder holding manifest.json). Both
go through the same protocol as the in-training evaluation (trainer.evaluation.super_resolution): Y
channel of BT.601, a `scale`-pixel border removed, SR rounded to uint8, bicubic LR made from the HR
image. `--data photos` scores the built-in held-out photographs; `folder:PATH` every image in PATH
(full size, modcropped). Prints one JSON object: means and per-image scores.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from trainer.data.image_folder import DatasetError, find_images, load_rgb
from trainer.data.super_resolution import PHOTOS_EVAL, lr_tensor, photo_paths
from trainer.evaluation.super_resolution import Upscaler, evaluate_upscaler, side_by_side, torch_upscaler
from trainer.served import load_served_generator
from trainer.training.checkpoint import CheckpointError


def load_images(spec: str) -> tuple[list[np.ndarray], list[str]]:
    kind, _, arg = spec.partition(":")
    if kind == "photos" and not arg:
        paths, names = photo_paths(PHOTOS_EVAL), [e[2] for e in PHOTOS_EVAL]
    elif kind == "folder" and arg:
        root = Path(arg).expanduser()
        paths = find_images(root)
        if not paths:
            raise DatasetError(f"no images in {root}")
        names = [str(p.relative_to(root)) for p in paths]
    else:
        raise DatasetError(f"--data must be 'photos' (the built-in held-out photographs) or 'folder:PATH', "
                           f"got {spec!r}")
    return [np.asarray(load_rgb(p)) for p in paths], names


def onnx_upscaler(path: Path) -> tuple[Upscaler, int | None]:
    """An ONNX Runtime session as an upscaler; the scale comes from the manifest next to it when present."""
    import onnxruntime as ort

    model = path / "model.onnx" if path.is_dir() else path
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name
    scale, low, high = None, -1.0, 1.0
    manifest = model.parent / "manifest.json"
    if manifest.is_file():
        fields = json.loads(manifest.read_text())
        if fields.get("task") != "super_resolve":
            raise ValueError(f"{model}: a {fields.get('task')} model, not super_resolve")
        scale = fields.get("scale")
        low, high = fields.get("output_range", (low, high))

    def upscale(lr: np.ndarray) -> np.ndarray:
        (out,) = session.run([output_name], {input_name: lr_tensor(lr).unsqueeze(0).numpy()})
        if out.dtype == np.uint8:  # current exports end with the 8-bit mapping (NHWC)
            return out[0]
        scaled = np.clip((out[0].astype(np.float64) - low) * (255.0 / (high - low)), 0, 255)
        return np.rint(scaled).astype(np.uint8).transpose(1, 2, 0)

    return upscale, scale


def checkpoint_upscaler(path: Path, device: str) -> tuple[Upscaler, int]:
    served = load_served_generator(path, device, task="super_resolve")
    return torch_upscaler(served.network, device), int(served.config.scale)


def build_parser(prog: str = "gan-eval-sr") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("model", type=Path, help="checkpoint / run folder, or model.onnx / exported model folder")
    parser.add_argument("--data", default="photos", help="'photos' (built-in held-out photographs) or 'folder:PATH'")
    parser.add_argument("--scale", type=int, default=None, help="for an ONNX file without a manifest")
    parser.add_argument("--border", type=int, default=None, help="pixels removed on each side (default: the scale)")
    parser.add_argument("--device", default="cpu", help="for checkpoints: cpu | cuda")
    parser.add_argument("--side-by-side", type=Path, default=None,
                        help="also write a PNG with rows of bicubic | SR | HR (centre crops) here")
    parser.add_argument("--panel", type=int, default=256, help="side of each crop in --side-by-side")
    return parser


def main(argv: list[str] | None = None, prog: str = "gan-eval-sr") -> int:
    args = build_parser(prog).parse_args(argv)
    try:
        is_onnx = args.model.suffix == ".onnx" or (args.model / "manifest.json").is_file()
        if is_onnx:
            upscale, scale = onnx_upscaler(args.model)
            scale = scale or args.scale
            if scale is None:
                raise ValueError("no manifest.json next to the ONNX file: pass --scale")
        else:
            upscale, scale = checkpoint_upscaler(args.model, args.device)
        images, names = load_images(args.data)
        result: dict[str, Any] = {"model": str(args.model), "data": args.data,
                                  **evaluate_upscaler(upscale, images, scale, names, args.border)}
        if args.side_by_side:
            args.side_by_side.parent.mkdir(parents=True, exist_ok=True)
            side_by_side(images, upscale, scale, args.panel).save(args.side_by_side)
            result["side_by_side"] = str(args.side_by_side)
    except (DatasetError, CheckpointError, ValueError, FileNotFoundError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
