"""The release models' quality targets (issue 16), measured on the exported ONNX files that are served.

Measuring the ONNX files rather than the checkpoints means the figures are those of what `make demo`
serves, and that a fresh clone (which has no checkpoints) can re-measure them: tests/test_release_models.py
does, against release-models/quality.json, which scripts/quality_report.py writes with these functions.

Targets:
- dcgan, lsgan, pggan (shapes, 32x32): FID on shapes-classifier-v4 <= 1.0; >= 90% of samples classified
  as a shape with probability >= 0.9; every shape >= 20% of the samples;
- stargan: target-colour accuracy >= 95%, shape kept in >= 90% of translations, reconstruction L1 <= 0.05;
- srresnet: PSNR on Y >= bicubic + 0.5 dB and colour kept (PSNR on RGB >= bicubic's);
- srgan: colour kept as above, and sharper than the srresnet (sr_metrics.sharpness_ratio, higher).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from trainer.data import build_dataset
from trainer.data.super_resolution import PHOTOS_EVAL, photo_paths
from trainer.evaluation import shapes_features
from trainer.evaluation.generator_quality import GeneratorEvaluator
from trainer.evaluation.super_resolution import evaluate_upscaler
from trainer.evaluation.translation import fit_classifier, load_images, shape_judge, translation_metrics
from trainer.registry import get_architecture

GENERATORS = ("dcgan", "lsgan", "pggan")
NUM_SAMPLES = 2000
IMAGE_SIZE = 32
STARGAN_DATA = "shapes:2000"
STARGAN_IMAGES = 200


@dataclass(frozen=True)
class Target:
    """One quality target: `value` compared with `threshold` ('>=', '>' or '<=')."""

    model: str
    metric: str
    op: str
    threshold: float
    label: str

    def met(self, value: float) -> bool:
        if self.op == ">":
            return value > self.threshold
        return value >= self.threshold if self.op == ">=" else value <= self.threshold


def targets(results: dict[str, Any]) -> list[tuple[Target, float]]:
    """Every target with its measured value; SR targets are relative to bicubic and to the srresnet."""
    out: list[tuple[Target, float]] = []
    for name in GENERATORS:
        if name in results:
            r = results[name]
            out += [(Target(name, "fid", "<=", 1.0, f"FID ({shapes_features.NAME})"), r["fid"]),
                    (Target(name, "shape_confident", ">=", 0.9, "samples that are a shape (p >= 0.9)"),
                     r["shape_confident"]),
                    (Target(name, "shape_share_min", ">=", 0.2, "rarest shape's share"), r["shape_share_min"])]
    if "stargan" in results:
        r = results["stargan"]
        out += [(Target("stargan", "target_accuracy", ">=", 0.95, "target-colour accuracy"), r["target_accuracy"]),
                (Target("stargan", "shape_kept", ">=", 0.9, "shape kept"), r["shape_kept"]),
                (Target("stargan", "reconstruction_l1", "<=", 0.05, "reconstruction L1"), r["reconstruction_l1"])]
    for name in ("srresnet", "srgan"):
        if name in results:
            r = results[name]
            if name == "srresnet":
                out.append((Target(name, "psnr_y_gain", ">=", 0.5, "PSNR on Y minus bicubic's (dB)"),
                            r["psnr_y"] - r["bicubic_psnr_y"]))
            out.append((Target(name, "psnr_rgb_gain", ">=", 0.0, "PSNR on RGB minus bicubic's (dB)"),
                        r["psnr_rgb"] - r["bicubic_psnr_rgb"]))
    if "srgan" in results and "srresnet" in results:
        out.append((Target("srgan", "sharpness_gain", ">", 0.0, "sharpness ratio minus srresnet's"),
                    results["srgan"]["sharpness"] - results["srresnet"]["sharpness"]))
    return out


# -------------------------------------------------------------------------------------------- measurements
def measure_generator(model_dir: Path, num_samples: int = NUM_SAMPLES, image_size: int = IMAGE_SIZE,
                      seed: int = 0) -> dict[str, Any]:
    """FID/KID and the shape verdicts of an exported generate model against the shapes data at the release
    size (a PGGAN that stopped growing early is scored upscaled, as its checkpoint would be). `seed` draws
    the latents and the real sample: the targets are judged at 0, other seeds show the figures' spread."""
    from trainer.evaluation.generator_eval import onnx_source

    source = onnx_source(model_dir, torch.device("cpu"))
    dataset = build_dataset("shapes", image_size, 0)
    evaluator = GeneratorEvaluator(dataset, "shapes", num_samples, seed=seed)
    scores = evaluator(source.generate)
    fid, kid, _ = evaluator.keys
    return {"step": source.info["step"], "samples": num_samples, "fid": scores[fid], "kid": scores[kid],
            **{k: v for k, v in scores.items() if k.startswith(("shape_", "share_", "confident_"))},
            "real_shape_confident": evaluator.real_verdicts["shape_confident"]}


class OnnxTranslator:
    """An exported translate model as translation_metrics' generator(x, c) -> images in [-1, 1] NCHW (eval
    mode only); a current export's 8-bit NHWC output is mapped back, so the figures are those of the
    images served, 8-bit rounding included."""

    training = False

    def __init__(self, model_dir: Path) -> None:
        import onnxruntime as ort

        from service.manifest import MODEL_FILENAME, Manifest

        self.manifest = Manifest.read(model_dir)
        self.session = ort.InferenceSession(str(model_dir / MODEL_FILENAME), providers=["CPUExecutionProvider"])
        self.names = [t.name for t in self.manifest.inputs], self.manifest.outputs[0].name

    def parameters(self) -> Any:
        """What translation_grid reads the device from: the CPU, where ONNX Runtime returns results."""
        yield torch.zeros(0)

    def eval(self) -> OnnxTranslator:
        return self

    def train(self, mode: bool = True) -> OnnxTranslator:
        return self

    def __call__(self, images: Tensor, labels: Tensor) -> Tensor:
        (image_name, label_name), output = self.names
        feeds = {image_name: images.float().numpy(), label_name: labels.float().numpy()}
        translated = self.session.run([output], feeds)[0]
        if translated.dtype == np.uint8:  # current exports: 8-bit NHWC images straight from the graph
            return torch.from_numpy(translated).permute(0, 3, 1, 2).float().mul_(2.0 / 255.0).sub_(1.0)
        return torch.from_numpy(translated)


def measure_stargan(model_dir: Path, data: str = STARGAN_DATA, images: int = STARGAN_IMAGES) -> dict[str, Any]:
    """Target accuracy, shape kept and reconstruction L1 of an exported StarGAN on held-out shapes."""
    translator = OnnxTranslator(model_dir)
    arch = get_architecture("stargan")
    config = arch.make_config({"image_size": translator.manifest.image_size})
    dataset = arch.dataset(data, config, 0)
    if list(dataset.attributes) != list(translator.manifest.attributes or []):
        raise ValueError(f"{model_dir}: attributes {translator.manifest.attributes} are not {data}'s "
                         f"{dataset.attributes}")
    classifier = fit_classifier(dataset, config.classifier_steps)
    held_out = dataset.held_out(images)
    x, labels = load_images(held_out, len(held_out))
    report = translation_metrics(translator, classifier, x, labels, dataset.attributes,  # type: ignore[arg-type]
                                 dataset.exclusive_groups, torch.device("cpu"), shape_judge(held_out))
    return {"step": translator.manifest.provenance.training_step, **report}


def measure_sr(model_dir: Path) -> dict[str, Any]:
    """PSNR (Y and RGB), CbCr error and sharpness ratio of an exported SR model and of bicubic on the
    held-out photographs."""
    from service.manifest import Manifest
    from trainer.data.image_folder import load_rgb
    from trainer.evaluation.sr_eval import onnx_upscaler

    upscale, scale = onnx_upscaler(model_dir)
    photos = [np.asarray(load_rgb(p)) for p in photo_paths(PHOTOS_EVAL)]
    scores = evaluate_upscaler(upscale, photos, int(scale or 4), [e[2] for e in PHOTOS_EVAL])
    return {"step": Manifest.read(model_dir).provenance.training_step, **scores}


def measure_all(repository: Path, num_samples: int = NUM_SAMPLES) -> dict[str, Any]:
    """Every release model found in `repository` (folders named after the architectures)."""
    results: dict[str, Any] = {}
    for name in GENERATORS:
        if (repository / name / "manifest.json").is_file():
            results[name] = measure_generator(repository / name, num_samples)
    if (repository / "stargan" / "manifest.json").is_file():
        results["stargan"] = measure_stargan(repository / "stargan")
    for name in ("srresnet", "srgan"):
        if (repository / name / "manifest.json").is_file():
            results[name] = measure_sr(repository / name)
    return results


def summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target: model, label, value, op, threshold, met (what quality.json and the docs list)."""
    return [{"model": t.model, "metric": t.metric, "label": t.label, "value": round(float(v), 4), "op": t.op,
             "threshold": t.threshold, "met": t.met(float(v))} for t, v in targets(results)]


def write_json(path: Path, results: dict[str, Any]) -> None:
    slim = {k: {m: v for m, v in r.items() if m != "per_image" and m != "per_attribute"} for k, r in results.items()}
    path.write_text(json.dumps({"results": slim, "targets": summary(results)}, indent=1, sort_keys=True) + "\n")
