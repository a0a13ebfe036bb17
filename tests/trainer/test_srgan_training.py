import json
import shutil

import pytest
import torch

from tests.conftest import TINY_CONFIGS as TINY
from tests.trainer.resume_check import assert_same_state
from trainer import cli
from trainer.hashing import sha256_file
from trainer.registry import get_architecture
from trainer.training.checkpoint import load_checkpoint, resolve_checkpoint
from trainer.training.loop import Run, TrainOptions
from trainer.training.super_resolution import SRGANTraining

from .test_srgan_vgg import torchvision_layout_state_dict


def sr_run(arch, out, steps, resume=False, data="shapes:16", **config):
    values = {**TINY[arch], **config}
    options = TrainOptions(data=data, steps=steps, out=str(out), seed=11, log_every=2, sample_every=0,
                           checkpoint_every=3, eval_every=3, resume=resume, progress=False)
    return Run(arch, get_architecture(arch).make_config(values), options)


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]






@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1")
    sr_run("srresnet", out, steps=6).train()
    return out


def test_srresnet_trains_evaluates_and_samples(stage1):
    logged = records(stage1)
    losses = [r for r in logged if "content" in r]
    assert [r["step"] for r in losses] == [2, 4, 6] and all(r["learning_rate"] == 1e-4 for r in losses)
    evals = [r for r in logged if "eval" in r]
    assert [r["step"] for r in evals] == [3, 6]
    scores = evals[-1]["eval"]
    assert scores["images"] == 4 and scores["scale"] == 4 and scores["border"] == 4
    for key in ("psnr_y", "ssim_y", "bicubic_psnr_y", "bicubic_ssim_y"):
        assert isinstance(scores[key], float)
    sample = sorted((stage1 / "samples").glob("*.png"))
    assert sample, "no sample grid written"
    checkpoint = load_checkpoint(stage1)
    assert checkpoint["arch"] == "srresnet" and checkpoint["sr_updates"] == 6
    assert checkpoint["dataset"]["kind"] == "shapes" and "discriminator" not in checkpoint


def test_sample_grid_is_bicubic_sr_hr_rows(stage1):
    run = sr_run("srresnet", stage1, steps=6, resume=True)
    grid = run.algorithm.sample()
    assert grid.shape == (9, 3, 32, 32)  # 3 rows of (bicubic | SR | HR), HR-sized
    assert torch.equal(grid[2], run.algorithm.preview["hr"][0])


def test_srgan_starts_from_the_stage1_generator(stage1, tmp_path):
    run = sr_run("srgan", tmp_path / "gan", steps=2, init_from=str(stage1))
    assert isinstance(run.algorithm, SRGANTraining)
    run.algorithm.initialise()
    stage1_generator = load_checkpoint(stage1)["generator"]
    for key, value in run.algorithm.generator.state_dict().items():
        assert torch.equal(value, stage1_generator[key]), key
    run.train()
    checkpoint = load_checkpoint(tmp_path / "gan")
    assert checkpoint["initialised_from"]["arch"] == "srresnet"
    assert checkpoint["initialised_from"]["step"] == 6
    assert checkpoint["initialised_from"]["checkpoint_sha256"] == sha256_file(resolve_checkpoint(stage1))
    assert checkpoint["content_loss"]["name"] == "mse"
    last = [r for r in records(tmp_path / "gan") if "loss_d" in r][-1]
    assert {"loss_g", "content", "adversarial", "loss_d", "d_real", "d_fake"} <= set(last)


def test_init_from_refuses_a_mismatched_generator(stage1, tmp_path):
    run = sr_run("srgan", tmp_path / "gan", steps=1, init_from=str(stage1), blocks=3)
    with pytest.raises(ValueError, match="same --scale/--blocks/--channels"):
        run.algorithm.initialise()
    missing = sr_run("srgan", tmp_path / "gan2", steps=1, init_from=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="no checkpoint"):
        missing.algorithm.initialise()


@pytest.mark.parametrize("arch", ["srresnet", "srgan"])
def test_resume_continues_bit_for_bit(arch, stage1, tmp_path):
    extra = {"init_from": str(tmp_path / "init")} if arch == "srgan" else {}
    if arch == "srgan":
        shutil.copytree(stage1 / "checkpoints", tmp_path / "init", symlinks=True)
    sr_run(arch, tmp_path / "straight", steps=8, **extra).train()
    sr_run(arch, tmp_path / "split", steps=4, **extra).train()
    if arch == "srgan":
        shutil.rmtree(tmp_path / "init")  # a resumed stage 2 takes G from its own checkpoint
    sr_run(arch, tmp_path / "split", steps=8, resume=True, **extra).train()
    straight, split = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "split")
    assert_same_state(straight, split)

    def logged(run_dir):
        return [{k: v for k, v in r.items() if k not in ("time", "images_per_s")} for r in records(run_dir)]

    assert logged(tmp_path / "straight") == logged(tmp_path / "split")


def test_learning_rate_drops_at_the_configured_step(tmp_path):
    run = sr_run("srgan", tmp_path, steps=4, lr_drop_step=2, lr=1e-4, lr_drop_factor=0.1)
    run.train()
    rates = [r["learning_rate"] for r in records(tmp_path) if "loss_d" in r]
    assert rates == [pytest.approx(1e-4), pytest.approx(1e-5)]  # updates 0-1 at 1e-4, 2-3 at 1e-5
    assert run.algorithm.opt_d.param_groups[0]["lr"] == pytest.approx(1e-5)
    assert run.algorithm.opt_g.param_groups[0]["lr"] == pytest.approx(1e-5)


def test_srgan_trains_with_vgg54_from_a_local_weights_file(tmp_path, monkeypatch):
    path = tmp_path / "vgg19.pth"
    torch.save(torchvision_layout_state_dict(), path)
    monkeypatch.setenv("GAN_VGG19_WEIGHTS", str(path))
    run = sr_run("srgan", tmp_path / "run", steps=2, content_loss="vgg54")
    last = run.train()
    assert torch.isfinite(torch.tensor(last["content"]))
    assert load_checkpoint(tmp_path / "run")["content_loss"]["vgg19_sha256"]


def test_cli_refuses_vgg54_without_weights_and_says_how_to_get_them(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GAN_VGG19_WEIGHTS", raising=False)
    code = cli.main(["srgan", "--data", "shapes:8", "--blocks", "1", "--channels", "8", "--crop-size", "32",
                     "--steps", "1", "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err
    assert "no VGG19 weights given" in err and "vgg19-dcbb9e9d.pth" in err and "--content-loss mse" in err


def test_cli_trains_srresnet_with_evaluation(tmp_path, capsys):
    code = cli.main(["srresnet", "--data", "shapes:8", "--blocks", "1", "--channels", "8", "--crop-size", "32",
                     "--batch-size", "4", "--steps", "2", "--eval-every", "2", "--out", str(tmp_path / "run"),
                     "--no-progress"])
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 2
    assert any("eval" in r for r in records(tmp_path / "run"))


def test_a_checkpoint_from_before_the_key_was_renamed_still_names_its_start():
    from trainer.training.checkpoint import initialised_from

    start = {"path": "runs/sr/checkpoints/step_00000006.pt", "arch": "srresnet", "step": 6}
    assert initialised_from({"sr_initialised_from": start}) == start
    assert initialised_from({"generator": {}}) is None
