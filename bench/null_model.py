"""Build a "null model" from an exported generate model: same inputs and outputs, no compute.

The graph broadcasts one stored image (the model's own output for one latent) to the batch:

    latent [N, D] -> Shape -> N -> Expand(stored image [1, H, W, C] uint8, [N, H, W, C]) -> image

To the server this is what a model on a fast GPU looks like: every request still goes through HTTP,
validation, latent sampling, batching, the ONNX Runtime call, PNG, base64 and JSON, but the model
costs nothing, so the benchmark measures the serving path alone (its ceiling in images/s, and the
CPU it spends per image). The manifest is the source model's, so gan-serve and LitServe load it
unchanged.

    python bench/null_model.py --model bench/.work/models/dcgan --out bench/.work/models-null
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent


def stored_image(model_dir: Path, manifest: dict) -> np.ndarray:
    """One [1, H, W, C] uint8 image: the model's output for a fixed latent (mapped to 8 bits if float)."""
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    latent = np.random.default_rng(0).standard_normal((1, manifest["latent_dim"])).astype(np.float32)
    latent = latent.reshape(latent.shape + (1,) * (len(spec.shape) - 2))
    out = session.run(None, {spec.name: latent})[0]
    if out.dtype == np.uint8:
        return out
    low, high = manifest["output_range"]
    scaled = np.clip((out.astype(np.float32) - low) * (255.0 / (high - low)), 0, 255)
    return np.rint(scaled).astype(np.uint8).transpose(0, 2, 3, 1)


def null_graph(manifest: dict, image: np.ndarray) -> onnx.ModelProto:
    latent = manifest["inputs"][0]
    output = manifest["outputs"][0]
    h, w, c = image.shape[1:]
    nodes = [
        helper.make_node("Shape", [latent["name"]], ["batch"], start=0, end=1),
        helper.make_node("Concat", ["batch", "hwc"], ["target"], axis=0),
        helper.make_node("Expand", ["stored", "target"], [output["name"]]),
    ]
    graph = helper.make_graph(
        nodes,
        "null_generator",
        [helper.make_tensor_value_info(latent["name"], TensorProto.FLOAT, ["N", *latent["shape"][1:]])],
        [helper.make_tensor_value_info(output["name"], TensorProto.UINT8, ["N", h, w, c])],
        initializer=[numpy_helper.from_array(image, "stored"),
                     numpy_helper.from_array(np.array([h, w, c], dtype=np.int64), "hwc")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def build(model_dir: Path, out_repo: Path) -> Path:
    """Write OUT_REPO/<same folder name>/{model.onnx, manifest.json} and return the folder."""
    manifest = json.loads((model_dir / "manifest.json").read_text())
    if manifest["task"] != "generate":
        raise SystemExit(f"{model_dir}: a {manifest['task']} model; the null model replaces a generate model")
    image = stored_image(model_dir, manifest)
    target = out_repo / model_dir.name
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    onnx.save(null_graph(manifest, image), str(target / "model.onnx"))
    h, w, c = image.shape[1:]
    manifest["outputs"] = [{"name": manifest["outputs"][0]["name"], "shape": [None, h, w, c], "dtype": "uint8",
                            "layout": "NHWC"}]
    manifest.setdefault("extra", {})["null_model_of"] = str(model_dir)
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "bench" / ".work" / "models" / "dcgan",
                        help="an exported generate model folder")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / ".work" / "models-null", help="repository")
    args = parser.parse_args(argv)
    print(f"null model of {args.model}: {build(args.model, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
