"""`gan-eval`: checkpoints and their ONNX exports score alike, the random-weights baseline, errors, plots."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.evaluation import inception
from trainer.evaluation.generator_eval import checkpoint_source, main
from trainer.evaluation.quality_plot import read_curves
from trainer.evaluation.shapes_features import NAME

FID, KID, KID_STD = f"fid_{NAME}", f"kid_{NAME}", f"kid_std_{NAME}"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def exported_dcgan(tiny_checkpoints, tmp_path_factory):
    from export.onnx_export import export_checkpoint

    return export_checkpoint(tiny_checkpoints["dcgan"], tmp_path_factory.mktemp("repo"), name="tiny-dcgan").directory


def run_json(capsys, *argv) -> dict:
    assert main([*map(str, argv), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def run_error(capsys, *argv) -> str:
    assert main(list(map(str, argv))) == 2
    return capsys.readouterr().err


def test_checkpoint_and_its_onnx_export_score_alike(tiny_checkpoints, exported_dcgan, cache_dir, capsys):
    common = ["--num-samples", 150, "--cache-dir", cache_dir]
    checkpoint = run_json(capsys, tiny_checkpoints["dcgan"], *common)
    # the checkpoint knows its data set (the fixture's shapes:32, seed 3); the export must be told
    assert (checkpoint["data"], checkpoint["data_seed"], checkpoint["image_size"]) == ("shapes:32", 3, 16)
    exported = run_json(capsys, exported_dcgan, *common, "--data", "shapes:32", "--data-seed", 3)
    assert (checkpoint["source"], exported["source"]) == ("checkpoint", "onnx")
    assert checkpoint["features"] == exported["features"] == NAME
    assert (checkpoint["num_samples"], checkpoint["real_samples"]) == (150, 32)
    assert checkpoint[FID] > 0
    for key in (FID, KID, KID_STD):
        assert exported[key] == pytest.approx(checkpoint[key], rel=1e-4, abs=1e-6), key


def test_random_weights_baseline_scores_a_fresh_generator(tiny_checkpoints, cache_dir, capsys):
    common = [tiny_checkpoints["lsgan"], "--num-samples", 100, "--cache-dir", cache_dir]
    trained = run_json(capsys, *common)
    baseline = run_json(capsys, *common, "--random-weights")
    assert baseline["source"] == "random-weights" and baseline["architecture"] == "lsgan"
    assert baseline[FID] != trained[FID]
    assert run_json(capsys, *common, "--random-weights")[FID] == baseline[FID]  # seeded initialisation


def test_pggan_is_scored_at_the_stage_it_reached_even_with_random_weights(tiny_checkpoints):
    for random_weights in (False, True):
        source = checkpoint_source(tiny_checkpoints["pggan"], torch.device("cpu"), random_weights, seed=0)
        with torch.no_grad():
            images = source.generate(2)
        assert images.shape == (2, 3, 8, 8)  # 4 steps of 8 images: fading in 8x8
        assert source.image_size == 16  # the real images stay at the target size


def test_text_output_names_the_features(tiny_checkpoints, cache_dir, capsys):
    assert main([str(tiny_checkpoints["dcgan"]), "--num-samples", "20", "--cache-dir", str(cache_dir)]) == 0
    out = capsys.readouterr().out
    assert f"fid_{NAME}" in out and f"kid_{NAME}" in out and "dcgan step 4" in out
    assert re.search(r"shapes: circle [\d.]+% \([\d.]+% confident\), square", out), out


def test_errors_are_reported_plainly(tiny_checkpoints, exported_dcgan, tmp_path, monkeypatch, capsys):
    assert "gan-eval-stargan" in run_error(capsys, tiny_checkpoints["stargan"])
    assert "pass --data" in run_error(capsys, exported_dcgan)
    assert "needs a checkpoint" in run_error(capsys, exported_dcgan, "--random-weights", "--data", "shapes")
    assert "no checkpoint at" in run_error(capsys, tmp_path / "missing")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(tmp_path / "b.png")
    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
    message = run_error(capsys, tiny_checkpoints["dcgan"], "--data", f"folder:{tmp_path}")
    assert inception.WEIGHTS_FILE in message and "--inception-weights" in message
    with pytest.raises(SystemExit):
        main([])


def _write_metrics(run):
    run.mkdir()
    records = [
        {"step": 10, "images_seen": 640, "loss_d": 1.2},
        {"step": 10, "images_seen": 640, "eval": {FID: 80.0, KID: 5.0, KID_STD: 0.5}},
        {"step": 20, "images_seen": 1280, "eval": {FID: 40.0, KID: 2.0, KID_STD: 0.2, "fid_inception-v3": 90.0}},
        {"step": 30, "images_seen": 1920, "eval": {FID: 20.0, KID: 1.0, KID_STD: 0.1, "psnr": 30.0}},
    ]
    lines = [json.dumps(r) for r in records] + ['{"step": 40, "ev']  # a run killed mid-write
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_plot_draws_every_feature_space_to_a_png(tmp_path, capsys):
    run = tmp_path / "run"
    _write_metrics(run)
    curves = read_curves(run)
    assert set(curves) == {NAME, "inception-v3"}
    assert curves[NAME].images == [640, 1280, 1920] and curves[NAME].fid == [80.0, 40.0, 20.0]
    assert curves[NAME].kid_std == [0.5, 0.2, 0.1]
    assert curves["inception-v3"].kid == [None]
    out = tmp_path / "plots" / "fid.png"
    assert run_json(capsys, "--plot", run, "--out", out) == {"plot": str(out)}
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size == (1100, 400)
        assert len(image.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 10  # not a blank canvas
    assert main(["--plot", str(run)]) == 0
    assert (run / "fid_kid.png").is_file()


def test_plot_without_evaluations_is_an_error(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss_d": 1.0}) + "\n")
    assert "no FID/KID records" in run_error(capsys, "--plot", run)
    assert "no metrics.jsonl" in run_error(capsys, "--plot", tmp_path / "nowhere")
