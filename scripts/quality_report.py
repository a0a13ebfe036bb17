"""Quality figures of trained runs next to random-weights baselines, for docs/quality.md.

    python scripts/quality_report.py --runs demo-out/runs --sr-runs runs-quality [--write docs/quality.md]

- dcgan, lsgan, pggan: FID/KID on the shapes-classifier-v4 features against the run's own data set,
  for the trained generator, a freshly initialised one of the same config, and fresh real images (the
  floor that sampling noise alone gives with this many images); and, for scale, fresh real shapes
  changed in known ways (black background, contrast, one shape only, no shape);
- stargan: target-attribute accuracy and reconstruction L1 on held-out images, trained vs random;
- srresnet, srgan: PSNR/SSIM on Y (border 4) of the held-out photographs, trained vs random vs bicubic.

It prints the results as JSON and, with --write, replaces the block between the `quality:` markers of
the given Markdown file with a table, and copies each run's latest sample image to docs/images/quality/.

    python scripts/quality_report.py --release release-models [--write docs/quality.md]

measures the committed release models (their ONNX files, as served) against the issue-16 targets
(trainer.evaluation.release), writes RELEASE/quality.json (which tests/e2e/test_release_models.py
re-measures), the README's sample images in docs/images/, and with --write the `release:` block.

    python scripts/quality_report.py --release release-models --seeds 1,2,3

only prints the shape generators' figures at other latent seeds: how far the seed-0 figures would move.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from trainer.data import build_dataset
from trainer.data.shapes import ShapesDataset
from trainer.evaluation import release
from trainer.evaluation.generator_eval import checkpoint_source
from trainer.evaluation.generator_quality import GeneratorEvaluator
from trainer.evaluation.shapes_features import NAME as SHAPES_FEATURES
from trainer.evaluation.sr_eval import load_images as load_photos
from trainer.evaluation.stargan_eval import cached_classifier, write_example
from trainer.evaluation.super_resolution import evaluate_upscaler, side_by_side, torch_upscaler
from trainer.evaluation.translation import load_images, translation_metrics
from trainer.registry import get_architecture
from trainer.served import load_served_generator

GENERATORS = ("dcgan", "lsgan", "pggan")
FRESH_REAL_SEED = 999_331  # a shapes seed no run trains on
BEGIN, END = "<!-- quality:begin -->", "<!-- quality:end -->"
RELEASE_BEGIN, RELEASE_END = "<!-- release:begin -->", "<!-- release:end -->"
IMAGES = Path("docs/images/quality")
README_IMAGES = Path("docs/images")


def fid_rows(run: Path, num_samples: int) -> dict[str, Any]:
    device = torch.device("cpu")
    trained = checkpoint_source(run, device, random_weights=False, seed=0)
    random = checkpoint_source(run, device, random_weights=True, seed=0)
    dataset = build_dataset(trained.data or "shapes", trained.image_size, trained.data_seed)
    evaluator = GeneratorEvaluator(dataset, "shapes", num_samples, seed=0, device=device)
    fresh = ShapesDataset(trained.image_size, num_samples, seed=FRESH_REAL_SEED)
    position = iter(range(len(fresh)))

    def real_images(n: int) -> torch.Tensor:
        return torch.stack([fresh[next(position)] for _ in range(n)])

    fid, kid, _ = evaluator.keys
    rows = {}
    for name, generate in (("trained", trained.generate), ("random weights", random.generate),
                           ("real images (floor)", real_images)):
        scores = evaluator(generate)
        rows[name] = {"fid": round(scores[fid], 2), "kid": round(scores[kid], 4)}
    return {"step": trained.info["step"], "samples": num_samples, "features": evaluator.name,
            "image_size": trained.image_size, "rows": rows}


def feature_checks(image_size: int, num_samples: int) -> dict[str, float]:
    """FID of fresh real shapes changed in known ways: what the feature space makes of a black background
    or a contrast change (nuisances) next to a collapse to one shape or no shape at all (content)."""
    evaluator = GeneratorEvaluator(build_dataset("shapes", image_size, 0), "shapes", num_samples, seed=0)
    fresh = ShapesDataset(image_size, num_samples, seed=FRESH_REAL_SEED)
    images = torch.stack([fresh[i] for i in range(len(fresh))])
    background = images[:, :, :1, :1]  # every render's corner pixel is the plain background
    is_background = (images - background).abs().sum(dim=1, keepdim=True) < 0.05
    squares = images[fresh.shape_labels[: len(fresh)] == 1]
    variants = {
        "real, black background": torch.where(is_background, torch.full_like(images, -1.0), images),
        "real, contrast x1.3": (images * 1.3).clamp(-1.0, 1.0),
        "squares only": squares.repeat(-(-len(fresh) // len(squares)), 1, 1, 1)[: len(fresh)],
        "background only": background.expand_as(images),
    }
    fid = evaluator.keys[0]
    return {name: round(evaluator(_in_order(variant))[fid], 2) for name, variant in variants.items()}


def _in_order(images: torch.Tensor):
    start = 0

    def generate(n: int) -> torch.Tensor:
        nonlocal start
        start += n
        return images[start - n : start]

    return generate


def stargan_rows(run: Path) -> dict[str, Any]:
    served = load_served_generator(run, task="translate")
    state, config, trained = served.checkpoint, served.config, served.network
    random = load_served_generator(state, task="translate", random_weights=True).network
    dataset = served.architecture.dataset(state["train"]["data"], config, state["train"]["seed"])
    classifier = cached_classifier(run, dataset, config.classifier_steps, use_cache=True)
    held_out = dataset.held_out(config.eval_images)
    images, labels = load_images(held_out, len(held_out))
    rows = {}
    for name, generator in (("trained", trained), ("random weights", random)):
        m = translation_metrics(generator.eval(), classifier, images, labels, dataset.attributes,
                                dataset.exclusive_groups, torch.device("cpu"))
        rows[name] = {"target_accuracy": m["target_accuracy"], "reconstruction_l1": round(m["reconstruction_l1"], 3),
                      "classifier_on_real": m["real_accuracy"]}
    write_example(trained, dataset, images[:2], labels[:2], IMAGES / "stargan.png", scale=4)
    return {"step": int(state["step"]), "held_out_images": len(held_out), "rows": rows}


def sr_rows(run: Path, arch_name: str) -> dict[str, Any]:
    served = load_served_generator(run, task="super_resolve")
    state, config, trained = served.checkpoint, served.config, served.network
    random = load_served_generator(state, task="super_resolve", random_weights=True).network
    photos, names = load_photos("photos")
    rows: dict[str, Any] = {}
    for name, generator in (("trained", trained), ("random weights", random)):
        scores = evaluate_upscaler(torch_upscaler(generator.eval()), photos, config.scale, names)
        rows[name] = {"psnr_y": round(scores["psnr_y"], 2), "ssim_y": round(scores["ssim_y"], 3)}
    rows["bicubic"] = {"psnr_y": round(scores["bicubic_psnr_y"], 2), "ssim_y": round(scores["bicubic_ssim_y"], 3)}
    side_by_side(photos, torch_upscaler(trained.eval()), config.scale, panel=160).save(IMAGES / f"{arch_name}.png")
    return {"step": int(state["step"]), "images": names, "rows": rows}


def latest_sample(run: Path, name: str) -> None:
    shutil.copyfile(sorted((run / "samples").glob("step_*.png"))[-1], IMAGES / f"{name}.png")


def markdown(results: dict[str, Any]) -> str:
    out = [f"FID/KID on the `{SHAPES_FEATURES}` features (not Inception: see above), "
           f"{results['dcgan']['samples']} generated vs {results['dcgan']['samples']} real images, seed 0.", "",
           "| model | steps | FID trained | FID random weights | FID real images (floor) | KID trained | "
           "KID random weights | sample |", "|---|---|---|---|---|---|---|---|"]
    for arch in GENERATORS:
        r = results[arch]
        rows = r["rows"]
        out.append(f"| {arch} | {r['step']} | {rows['trained']['fid']} | {rows['random weights']['fid']} | "
                   f"{rows['real images (floor)']['fid']} | {rows['trained']['kid']} | {rows['random weights']['kid']}"
                   f" | ![{arch}](images/quality/{arch}.png) |")
    checks = results["feature_checks"]
    out += ["", f"What the `{SHAPES_FEATURES}` FID makes of real shapes changed in known ways (same sample sizes):",
            "", "| images | FID |", "|---|---|"]
    out += [f"| {name} | {value} |" for name, value in checks.items()]
    s = results["stargan"]
    out += ["", f"StarGAN, {s['held_out_images']} held-out images, every colour as a target "
            f"(the judge classifies real held-out images {s['rows']['trained']['classifier_on_real']:.1%} right):", "",
            "| model | steps | target accuracy | reconstruction L1 |", "|---|---|---|---|"]
    for name, row in s["rows"].items():
        out.append(f"| stargan, {name} | {s['step'] if name == 'trained' else 0} | {row['target_accuracy']:.1%} | "
                   f"{row['reconstruction_l1']} |")
    out += ["", "Super-resolution x4 on the held-out photographs (" + ", ".join(results["srresnet"]["images"]) +
            "), Y channel, border 4:", "", "| model | steps | PSNR (dB) | SSIM |", "|---|---|---|---|"]
    for arch in ("srresnet", "srgan"):
        if arch not in results:
            continue
        r = results[arch]
        for name in ("trained", "random weights"):
            row = r["rows"][name]
            out.append(f"| {arch}, {name} | {r['step'] if name == 'trained' else 0} | {row['psnr_y']} | "
                       f"{row['ssim_y']} |")
    bicubic = results["srresnet"]["rows"]["bicubic"]
    out.append(f"| bicubic | - | {bicubic['psnr_y']} | {bicubic['ssim_y']} |")
    return "\n".join(out)


def write_block(path: Path, block: str, begin: str = BEGIN, end_marker: str = END) -> None:
    text = path.read_text()
    start, end = text.index(begin) + len(begin), text.index(end_marker)
    path.write_text(text[:start] + "\n" + block + "\n" + text[end:])


# ------------------------------------------------------------------------------------------- release models
def release_images(repository: Path) -> None:
    """The README's images from the release models as served: sample grids (64 latents, seed 0), StarGAN
    translations of four held-out shapes, and bicubic | SR | original for both SR models."""
    from trainer.evaluation.generator_eval import onnx_source
    from trainer.evaluation.sr_eval import onnx_upscaler
    from trainer.training.images import save_grid
    from trainer.training.translation import translation_grid

    for name in release.GENERATORS:
        source = onnx_source(repository / name, torch.device("cpu"))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            images = source.generate(64)
        save_grid(images, README_IMAGES / f"{name}_shapes_32.png", nrow=8)
    translator = release.OnnxTranslator(repository / "stargan")
    arch = get_architecture("stargan")
    config = arch.make_config({"image_size": translator.manifest.image_size})
    held_out = arch.dataset(release.STARGAN_DATA, config, 0).held_out(4)
    images, labels = load_images(held_out, 4)
    grid = translation_grid(translator, images, labels, held_out.attributes, held_out.exclusive_groups)  # type: ignore[arg-type]
    save_grid(torch.nn.functional.interpolate(grid, scale_factor=4, mode="nearest"),
              README_IMAGES / "stargan_shapes_32.png", caption="input | " + " | ".join(held_out.attributes))
    photos, _ = load_photos("photos")
    for name in ("srresnet", "srgan"):
        upscale, scale = onnx_upscaler(repository / name)
        side_by_side(photos, upscale, int(scale or 4), panel=200).save(README_IMAGES / f"{name}_side_by_side.png")


def release_markdown(results: dict[str, Any], repository: Path) -> str:
    """The targets table and the SR colour table of docs/quality.md's release block."""
    out = [f"Measured on the ONNX files in `{repository}/` by `python scripts/quality_report.py --release "
           f"{repository}` (re-measured by tests/e2e/test_release_models.py).", "",
           "| model | steps | measure | value | target | met |", "|---|---|---|---|---|---|"]
    for row in release.summary(results):
        value = row["value"]
        shown = f"{value:.1%}" if row["metric"] in ("shape_confident", "shape_share_min", "target_accuracy",
                                                     "shape_kept") else f"{value:.3g}"
        threshold = row["threshold"]
        target = f"{threshold:.0%}" if row["metric"] in ("shape_confident", "shape_share_min", "target_accuracy",
                                                          "shape_kept") else f"{threshold:g}"
        out.append(f"| {row['model']} | {results[row['model']]['step']} | {row['label']} | {shown} | "
                   f"{row['op']} {target} | {'yes' if row['met'] else '**no**'} |")
    out += ["", "What each model is (from its manifest's provenance):", "", "| model | step | gan-train command |",
            "|---|---|---|"]
    for name in results:
        provenance = json.loads((repository / name / "manifest.json").read_text())["provenance"]
        out.append(f"| {name} | {provenance['training_step']} | `{provenance.get('training_command', '')}` |")
    if "dcgan" in results:
        out += ["", "Real shapes score {:.1%} on \"samples that are a shape (p >= 0.9)\" with the same classifier "
                "and sample size: what the data itself scores, the most a generator can be expected to "
                "reach.".format(results["dcgan"]["real_shape_confident"])]
    out += shape_table(results)
    out += ["", "Super-resolution x4 on the held-out photographs (chelsea, coffee, flower), border 4; CbCr error "
            "in 8-bit levels; sharpness = Y gradient energy / the original's:", "",
            "| model | steps | PSNR Y (dB) | SSIM Y | PSNR RGB (dB) | CbCr error | sharpness |",
            "|---|---|---|---|---|---|---|"]
    for name in ("srresnet", "srgan"):
        if name in results:
            r = results[name]
            out.append(f"| {name} | {r['step']} | {r['psnr_y']:.2f} | {r['ssim_y']:.3f} | {r['psnr_rgb']:.2f} | "
                       f"{r['chroma_error']:.2f} | {r['sharpness']:.3f} |")
    if "srresnet" in results:
        r = results["srresnet"]
        out.append(f"| bicubic | - | {r['bicubic_psnr_y']:.2f} | {r['bicubic_ssim_y']:.3f} | "
                   f"{r['bicubic_psnr_rgb']:.2f} | {r['bicubic_chroma_error']:.2f} | {r['bicubic_sharpness']:.3f} |")
    return "\n".join(out)


def shape_table(results: dict[str, Any]) -> list[str]:
    """Each shape's share of a generator's samples and the part of it drawn confidently: which shape is
    rare and which is drawn badly (a circle that comes out as a rounded square is not confidently either)."""
    generators = [name for name in release.GENERATORS if name in results]
    if not generators:
        return []
    shapes = [key[len("share_"):] for key in results[generators[0]] if key.startswith("share_")]
    out = ["", "Each shape's share of the samples, and in brackets the share that are confidently that shape "
           "(the brackets sum to the confident share above; the data: a third each, all confident):", "",
           "| model | " + " | ".join(shapes) + " |", "|---" * (len(shapes) + 1) + "|"]
    for name in generators:
        r = results[name]
        # rounded as quality.json's targets are, so one figure reads the same in both tables
        cells = [f"{round(r[f'share_{s}'], 4):.1%} ({round(r.get(f'confident_{s}', float('nan')), 4):.1%})"
                 for s in shapes]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


def release_report(repository: Path, write: Path | None, images: bool) -> None:
    results = release.measure_all(repository)
    release.write_json(repository / "quality.json", results)
    print(json.dumps(release.summary(results), indent=1))
    if images:
        release_images(repository)
    if write:
        write_block(write, release_markdown(results, repository), RELEASE_BEGIN, RELEASE_END)


def seed_spread(repository: Path, seeds: list[int]) -> None:
    """FID, confident share and rarest shape of each release generator at other latent seeds (printed only)."""
    for name in release.GENERATORS:
        if not (repository / name / "manifest.json").is_file():
            continue
        for seed in seeds:
            r = release.measure_generator(repository / name, seed=seed)
            print(json.dumps({"model": name, "seed": seed, "fid": round(r["fid"], 3),
                              "shape_confident": round(r["shape_confident"], 3),
                              "shape_share_min": round(r["shape_share_min"], 3)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("demo-out/runs"), help="the demo's run folders")
    parser.add_argument("--sr-runs", type=Path, default=None,
                        help="folder with srresnet/ and srgan/ runs (default: --runs; srgan is skipped if absent)")
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--write", type=Path, default=None, help="Markdown file whose quality block to replace")
    parser.add_argument("--release", type=Path, default=None,
                        help="measure the release models in this model repository instead (see above)")
    parser.add_argument("--no-images", dest="images", action="store_false",
                        help="with --release: do not rewrite the README's images")
    parser.add_argument("--seeds", default=None,
                        help="with --release: only print the shape generators' figures at these latent seeds "
                             "(e.g. 1,2,3: the spread around the seed-0 figures the targets are judged at)")
    args = parser.parse_args()
    if args.release is not None and args.seeds:
        seed_spread(args.release, [int(s) for s in args.seeds.split(",")])
        return
    if args.release is not None:
        release_report(args.release, args.write, args.images)
        return
    IMAGES.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for arch in GENERATORS:
        results[arch] = fid_rows(args.runs / arch, args.num_samples)
        latest_sample(args.runs / arch, arch)
    results["feature_checks"] = feature_checks(results["dcgan"]["image_size"], args.num_samples)
    results["stargan"] = stargan_rows(args.runs / "stargan")
    sr_root = args.sr_runs or args.runs
    for arch in ("srresnet", "srgan"):
        if (sr_root / arch / "checkpoints").is_dir():
            results[arch] = sr_rows(sr_root / arch, arch)
    print(json.dumps(results, indent=1))
    if args.write:
        write_block(args.write, markdown(results))


if __name__ == "__main__":
    main()
