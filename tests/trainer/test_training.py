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


def test_r1_penalty_is_the_squared_input_gradient():
    """For D(x) = w . x the input gradient is w at every x, so E||grad D||^2 = ||w||^2."""
    from trainer.training.unconditional import r1_penalty

    linear = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 1, bias=False))
    real = torch.randn(5, 3, 2, 2)
    penalty = r1_penalty(linear, real)
    torch.testing.assert_close(penalty, linear[1].weight.square().sum())
    penalty.backward()  # the graph is kept: the penalty's own gradient, 2w, reaches D's weights
    torch.testing.assert_close(linear[1].weight.grad, 2 * linear[1].weight.detach())


def input_gradient_norm(algorithm, real):
    """E||grad_x D(x)||^2 of the run's D on `real`, in train mode as D always runs."""
    from trainer.training.unconditional import r1_penalty

    return float(r1_penalty(algorithm.discriminator, real).detach())


@pytest.mark.parametrize("arch", ["dcgan", "lsgan"])
def test_r1_penalty_flattens_d_on_the_data(arch, tmp_path):
    """With the penalty on, D's slope at real images ends far lower than the same run's without it
    (same seed, data and noise: only the loss differs), and the measured term is logged."""
    reals = torch.stack([tiny_run(arch, tmp_path / "data", steps=1).dataset[i] for i in range(32)])
    plain = tiny_run(arch, tmp_path / "plain", steps=20)
    plain.train()
    penalised = tiny_run(arch, tmp_path / "r1", steps=20, r1_gamma=10.0)
    last = penalised.train()
    assert "r1" in last and "r1" not in json.loads((tmp_path / "plain" / "metrics.jsonl").read_text().splitlines()[-1])
    without, with_r1 = input_gradient_norm(plain.algorithm, reals), input_gradient_norm(penalised.algorithm, reals)
    assert with_r1 < 0.5 * without, (with_r1, without)


def test_lazy_r1_runs_every_kth_step_scaled_by_k_and_resumes_bit_for_bit(tmp_path, monkeypatch):
    """--r1-every k: the penalty on steps 0, k, 2k, ... (the clock restored from the checkpoint's step),
    weighted gamma/2 * k; a run split between two penalised steps resumes exactly."""
    import trainer.training.unconditional as unconditional

    calls = []
    real_penalty = unconditional.r1_penalty

    def counting(discriminator, real):
        value = real_penalty(discriminator, real)
        calls.append(float(value.detach()))
        return value

    monkeypatch.setattr(unconditional, "r1_penalty", counting)
    straight = tiny_run("dcgan", tmp_path / "straight", steps=6, r1_gamma=1.0, r1_every=3).train()
    assert len(calls) == 2  # steps 0, 3
    calls.clear()
    tiny_run("dcgan", tmp_path / "split", steps=4, r1_gamma=1.0, r1_every=3).train()
    assert len(calls) == 2  # steps 0, 3
    resumed = tiny_run("dcgan", tmp_path / "split", steps=6, resume=True, r1_gamma=1.0, r1_every=3).train()
    assert len(calls) == 2  # none at steps 4 and 5: the clock resumed at 4 (restarted at 0, step 4 would be)
    assert_same_state(load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "split"))
    # the logged value is step 3's measurement in both runs, not 0 after the resume
    assert resumed["r1"] == straight["r1"] == pytest.approx(calls[-1], abs=1e-6) and calls[-1] > 0

    # the weight: on a penalised step D's loss is the adversarial loss plus gamma/2 * k * R1. With R1
    # pinned to 3 (keeping D in the graph), step 0 of a gamma 0.5, k 4 run logs loss_d 3.0 above the
    # same step of an unpenalised run (same seed, batch and noise; the penalty's forward changes no output)
    monkeypatch.setattr(unconditional, "r1_penalty", lambda d, real: real_penalty(d, real) * 0 + 3.0)
    weighted = tiny_run("dcgan", tmp_path / "weighted", steps=1, r1_gamma=0.5, r1_every=4).train()
    unweighted = tiny_run("dcgan", tmp_path / "unweighted", steps=1).train()
    assert weighted["r1"] == 3.0
    assert weighted["loss_d"] - unweighted["loss_d"] == pytest.approx(0.5 / 2 * 4 * 3.0, abs=1e-5)


@pytest.mark.parametrize("arch", ["dcgan", "lsgan"])
def test_lr_decay_anneals_both_rates_to_zero_and_resumes_bit_for_bit(arch, tmp_path):
    """--lr-decay-start 2 --lr-decay-end 6: factors 1, 1, 1, 3/4, 1/2, 1/4 at steps 0-5 on G's and D's
    own base rates; the schedule is by step, so a run split inside the window resumes exactly."""
    decay = {"lr": 2e-4, "lr_d": 4e-4, "lr_decay_start": 2, "lr_decay_end": 6}
    seen = []
    straight = tiny_run(arch, tmp_path / "straight", steps=6, **decay)
    step = straight.algorithm.train_step

    def recording(real):
        result = step(real)
        seen.append((straight.algorithm.opt_g.param_groups[0]["lr"], straight.algorithm.opt_d.param_groups[0]["lr"]))
        return result

    straight.algorithm.train_step = recording
    last = straight.train()
    factors = [1, 1, 1, 0.75, 0.5, 0.25]
    assert [g for g, _ in seen] == pytest.approx([2e-4 * f for f in factors])
    assert [d for _, d in seen] == pytest.approx([4e-4 * f for f in factors])
    assert last["lr_factor"] == 0.25

    tiny_run(arch, tmp_path / "split", steps=4, **decay).train()
    tiny_run(arch, tmp_path / "split", steps=6, resume=True, **decay).train()
    assert_same_state(load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "split"))
    # without the options the rate stays the paper's constant one and no factor is logged
    assert "lr_factor" not in tiny_run(arch, tmp_path / "constant", steps=1).train()
    with pytest.raises(ValueError, match="lr_decay_start < lr_decay_end"):
        tiny_run(arch, tmp_path / "bad", steps=1, lr_decay_start=6, lr_decay_end=6)
    with pytest.raises(ValueError, match="lr_decay_start < lr_decay_end"):  # a start without an end
        tiny_run(arch, tmp_path / "bad", steps=1, lr_decay_start=6)


def test_resume_refuses_settings_that_differ_from_the_run_s(tmp_path):
    """A resumed run keeps its checkpoint's config; a changed setting would be ignored, so it is refused,
    by name. The same settings, or none (defaults), resume."""
    tiny_run("dcgan", tmp_path, steps=2, lr=3e-4).train()
    changed = r"--lr 0.0001 \(the run's: 0.0003\), --lr-decay-start 2 \(the run's: 0\), --lr-decay-end 8"
    with pytest.raises(ValueError, match=changed):
        tiny_run("dcgan", tmp_path, steps=4, resume=True, lr=1e-4, lr_decay_start=2, lr_decay_end=8)
    assert tiny_run("dcgan", tmp_path, steps=3, resume=True, lr=3e-4).train()["step"] == 3
    resumed = tiny_run("dcgan", tmp_path, steps=4, resume=True)
    assert resumed.config.lr == 3e-4


def test_lr_d_gives_d_its_own_learning_rate(tmp_path):
    run = tiny_run("dcgan", tmp_path, steps=1, lr=2e-4, lr_d=4e-4)
    assert run.algorithm.opt_d.param_groups[0]["lr"] == 4e-4 and run.algorithm.opt_g.param_groups[0]["lr"] == 2e-4
    default = tiny_run("dcgan", tmp_path / "same", steps=1, lr=3e-4)
    assert default.algorithm.opt_d.param_groups[0]["lr"] == 3e-4
    with pytest.raises(ValueError, match="r1_gamma"):
        tiny_run("dcgan", tmp_path / "bad", steps=1, r1_gamma=-1.0)
