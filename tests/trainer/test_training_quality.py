"""gan-train --eval-every on generators: FID/KID on the shapes features, logged with the losses and
equal to what gan-eval reports for the same checkpoint, without touching the run's random stream."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from tests.conftest import TINY_CONFIGS
from trainer.evaluation import shapes_features
from trainer.evaluation.generator_quality import GeneratorEvaluator, latent_generate
from trainer.evaluation.inception import InceptionWeightsError
from trainer.registry import get_architecture
from trainer.served import load_served_generator
from trainer.training.loop import Run, TrainOptions

FID = f"fid_{shapes_features.NAME}"


@pytest.fixture(autouse=True)
def shared_cache(cache_dir, monkeypatch):
    """No shipped weights here, so the training loop's evaluation takes the fallback end to end: the
    extractor trained on this machine, found in the session's cache through the environment."""
    monkeypatch.setattr(shapes_features, "SHIPPED_DIR", cache_dir / "no-shipped-weights")
    monkeypatch.setenv(shapes_features.CACHE_ENV, str(cache_dir))


def run(arch, out, eval_every, data="shapes:64", steps=4):
    config = get_architecture(arch).make_config(dict(TINY_CONFIGS[arch]))
    options = TrainOptions(data=data, steps=steps, out=str(out), seed=3, log_every=2, sample_every=0,
                           checkpoint_every=2, keep_checkpoints=0, eval_every=eval_every, eval_samples=48,
                           progress=False)
    return Run(arch, config, options)


def lines(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("arch", ["dcgan", "pggan"])
def test_fid_and_kid_are_logged_with_the_losses_and_leave_training_alone(arch, tmp_path):
    run(arch, tmp_path / "plain", eval_every=0).train()
    run(arch, tmp_path / "scored", eval_every=2).train()
    plain, scored = lines(tmp_path / "plain"), lines(tmp_path / "scored")

    evals = [r for r in scored if "eval" in r]
    assert [r["step"] for r in evals] == [2, 4]
    for record in evals:
        assert record["eval"]["features"] == shapes_features.NAME and record["eval"]["eval_samples"] == 48
        assert record["eval"][FID] > 0 and f"kid_{shapes_features.NAME}" in record["eval"]
    # the losses are those of the run without evaluation: its random stream was not touched
    def losses(records):
        return [{k: v for k, v in r.items() if k not in ("time", "images_per_s")} for r in records if "eval" not in r]

    assert losses(scored) == losses(plain)

    # the logged score is what an evaluator built like gan-eval's gives for the step-2 checkpoint
    served = load_served_generator(tmp_path / "scored" / "checkpoints" / "step_00000002.pt")
    generator, config = served.network, served.config
    dataset = served.architecture.dataset("shapes:64", config, 3)
    latent = "normal" if arch == "pggan" else config.latent_distribution
    with torch.no_grad():
        again = GeneratorEvaluator(dataset, num_samples=48)(latent_generate(generator, config.latent_dim, latent))
    assert again[FID] == pytest.approx(evals[0]["eval"][FID], rel=1e-5)


def test_inception_features_without_weights_stop_the_run_before_it_starts(tmp_path, monkeypatch):
    monkeypatch.delenv("GAN_INCEPTION_WEIGHTS", raising=False)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        Image.new("RGB", (20, 20), (60 * i, 30, 90)).save(images / f"{i}.png")
    with pytest.raises(InceptionWeightsError, match="GAN_INCEPTION_WEIGHTS"):
        run("dcgan", tmp_path / "run", eval_every=2, data=f"folder:{images}")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
