import json

import pytest
import torch

from tests.conftest import TINY_CONFIGS as TINY
from tests.trainer.resume_check import assert_same_state
from trainer import cli
from trainer.registry import get_architecture
from trainer.training.checkpoint import load_checkpoint
from trainer.training.loop import Run, TrainOptions


def tiny_run(arch, out, steps, resume=False, **config):
    values = {**TINY[arch], **config}
    options = TrainOptions(data="shapes:64", steps=steps, out=str(out), seed=7, log_every=5,
                           sample_every=0, checkpoint_every=10, resume=resume, progress=False)
    return Run(arch, get_architecture(arch).make_config(values), options)




@pytest.mark.parametrize("arch", ["dcgan", "lsgan"])
def test_training_steps_move_the_networks_and_write_artifacts(arch, tmp_path):
    run = tiny_run(arch, tmp_path, steps=10)
    before = {k: v.clone() for k, v in run.algorithm.generator.state_dict().items()}
    last = run.train()
    assert last["step"] == 10
    changed = [k for k, v in run.algorithm.generator.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "no generator weight changed"
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10]
    for r in records:
        assert all(torch.isfinite(torch.tensor(r[k])) for k in ("loss_d", "loss_g"))
        assert r["images_per_s"] > 0
    assert records[0]["loss_d"] != records[1]["loss_d"]
    assert (tmp_path / "samples" / "step_00000010.png").is_file()
    checkpoint = load_checkpoint(tmp_path)
    assert checkpoint["arch"] == arch and checkpoint["step"] == 10 and checkpoint["images_seen"] == 80
    assert {"config", "generator", "discriminator", "optimizer_g", "optimizer_d", "rng", "dataset"} <= set(checkpoint)
    assert torch.isfinite(run.algorithm.sample()).all()


@pytest.mark.parametrize("arch", ["dcgan", "lsgan"])
def test_resume_continues_bit_for_bit(arch, tmp_path):
    tiny_run(arch, tmp_path / "straight", steps=20).train()
    tiny_run(arch, tmp_path / "split", steps=10).train()
    tiny_run(arch, tmp_path / "split", steps=20, resume=True).train()
    assert_same_state(load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "split"))
    logged = [json.loads(x)["loss_d"] for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    resumed = [json.loads(x)["loss_d"] for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert logged == resumed


@pytest.mark.parametrize("arch", ["dcgan", "lsgan"])
def test_generator_ema_is_served_and_resumes_bit_for_bit(arch, tmp_path):
    """--ema-beta: the checkpoint's "generator" (what export and evaluation load) is the average, which
    differs from the trained weights in "generator_live"; resume restores both exactly."""
    tiny_run(arch, tmp_path / "straight", steps=20, ema_beta=0.9).train()
    tiny_run(arch, tmp_path / "split", steps=10, ema_beta=0.9).train()
    run = tiny_run(arch, tmp_path / "split", steps=20, resume=True, ema_beta=0.9)
    run.train()
    straight, split = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "split")
    assert_same_state(straight, split)
    assert run.algorithm.served_generator()[0] is run.algorithm.generator_ema
    for name, live in straight["generator_live"].items():
        if live.is_floating_point():
            assert not torch.equal(straight["generator"][name], live), name
    plain = tiny_run(arch, tmp_path / "plain", steps=1)  # a checkpoint with an EMA needs a run with one
    with pytest.raises(ValueError, match="EMA"):
        plain.algorithm.load_state_dict(split)


def test_lsgan_zero_one_coding_trains(tmp_path):
    run = tiny_run("lsgan", tmp_path, steps=5, loss="lsgan-01")
    last = run.train()
    assert run.algorithm.loss.a == 0.0 and torch.isfinite(torch.tensor(last["loss_g"]))


def test_checkpoints_are_pruned_and_latest_points_at_the_newest(tmp_path):
    run = tiny_run("dcgan", tmp_path, steps=40)
    run.options.keep_checkpoints = 2
    run.train()
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*.pt"))
    assert names == ["step_00000030.pt", "step_00000040.pt"]
    assert (tmp_path / "checkpoints" / "latest.pt").resolve().name == "step_00000040.pt"
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def test_cli_help_documents_paper_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["dcgan", "--help"])
    text = capsys.readouterr().out
    for flag in ("--latent-dim", "--ngf", "--lr", "--beta1", "--batch-size", "--image-size", "--resume"):
        assert flag in text
    assert "reference: 2e-4" in text and "(default: 0.0002)" in text


def test_cli_trains_and_reports_errors_cleanly(tmp_path, capsys):
    code = cli.main(["dcgan", "--data", "shapes:32", "--image-size", "16", "--ngf", "8", "--ndf", "8",
                     "--batch-size", "8", "--steps", "3", "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    code = cli.main(["dcgan", "--data", f"folder:{empty}", "--steps", "1", "--out", str(tmp_path / "x")])
    assert code == 2
    assert "no images" in capsys.readouterr().err
    code = cli.main(["lsgan", "--steps", "1", "--out", str(tmp_path / "nothing"), "--resume"])
    assert code == 2


def test_amp_is_bfloat16_autocast_on_cuda_only():
    from contextlib import nullcontext

    from trainer.training.precision import training_autocast

    assert isinstance(training_autocast(torch.device("cpu"), amp=True), nullcontext)
    assert isinstance(training_autocast(torch.device("cuda"), amp=False), nullcontext)
    on_cuda = training_autocast(torch.device("cuda"), amp=True)
    assert isinstance(on_cuda, torch.autocast) and on_cuda.fast_dtype == torch.bfloat16
