"""Build the benchmark model: the reference DCGAN 64x64, exported through the real pipeline.

`gan-train dcgan --steps 1` (the default config: 64x64, latent 100, ngf 64) makes a checkpoint, and
`export.onnx_export.export_checkpoint` turns it into `WORK/models/dcgan/` (model.onnx + manifest),
exactly what `gan-serve` loads. One training step is enough: throughput does not depend on the
weights. Skipped when the model already exists (pass --force to rebuild).

    python bench/make_model.py [--work bench/.work] [--force]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("bench/.work"), help="bench work folder")
    parser.add_argument("--force", action="store_true", help="rebuild even if the model exists")
    args = parser.parse_args(argv)
    run_dir = args.work / "run-dcgan"
    repo = args.work / "models"
    model = repo / "dcgan" / "model.onnx"
    if model.is_file() and not args.force:
        outputs = json.loads((model.parent / "manifest.json").read_text())["outputs"]
        if outputs[0]["dtype"] == "uint8":
            print(f"model exists: {model}")
            return 0
        print(f"{model}: exported before the uint8 image output; rebuilding")
    args.work.mkdir(parents=True, exist_ok=True)
    train = [
        sys.executable, "-m", "trainer.cli", "dcgan",
        "--steps", "1", "--out", str(run_dir), "--sample-every", "0", "--checkpoint-every", "0",
        "--device", "cpu", "--no-progress",
    ]  # fmt: skip
    print("+", " ".join(train), flush=True)
    subprocess.run(train, check=True)

    from export.onnx_export import export_checkpoint  # imports torch: only here

    result = export_checkpoint(run_dir, repo, "dcgan")
    m = result.manifest
    print(
        f"exported {m.architecture} {m.image_size}x{m.image_size} (latent {m.latent_dim}) to {result.directory}; "
        f"parity {m.parity_max_abs_error:.2e}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
