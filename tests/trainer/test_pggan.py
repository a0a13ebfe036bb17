"""PGGAN: the paper's layers against hand-computed values, fade-in, the growth schedule, exact resume."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import TINY_CONFIGS
from tests.trainer.resume_check import assert_same_state
from trainer.models import pggan
from trainer.registry import get_architecture
from trainer.training.checkpoint import load_checkpoint
from trainer.training.loop import Run, TrainOptions
from trainer.training.progressive import GrowthSchedule, Stage, reals_at

TINY = TINY_CONFIGS["pggan"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks on a shared 2-core machine run ~5x faster on one intra-op thread than on two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny_config(**overrides) -> pggan.PGGANConfig:
    return get_architecture("pggan").make_config({**TINY, **overrides})


def tiny_run(out, steps, resume=False, checkpoint_every=0, **overrides) -> Run:
    options = TrainOptions(data="shapes:64", steps=steps, out=str(out), seed=7, log_every=1, sample_every=0,
                           checkpoint_every=checkpoint_every, resume=resume, progress=False)
    return Run("pggan", tiny_config(**overrides), options)


def records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------------------------------
# layers


def test_equalized_layers_scale_unit_weights_by_gain_over_sqrt_fan_in():
    conv = pggan.EqualizedConv2d(4, 2, 3)
    assert conv.scale == pytest.approx(math.sqrt(2) / 6)  # fan_in = 4 * 3 * 3 = 36
    with torch.no_grad():
        conv.weight.fill_(1.0)
    out = conv(torch.ones(1, 4, 3, 3))
    assert out[0, :, 1, 1].tolist() == pytest.approx([6 * math.sqrt(2)] * 2)  # 36 taps * sqrt(2)/6
    assert out[0, 0, 0, 0].item() == pytest.approx(16 * math.sqrt(2) / 6)  # a corner sees 2x2 taps x 4 channels

    dense = pggan.EqualizedLinear(8, 1, gain=1.0)
    with torch.no_grad():
        dense.weight.fill_(1.0)
        dense.bias.fill_(0.5)
    assert dense(torch.ones(1, 8)).item() == pytest.approx(8 / math.sqrt(8) + 0.5)

    # weights are N(0, 1) and biases 0 at init: the scale lives in the forward pass, not the parameter
    big = pggan.EqualizedConv2d(64, 64, 3)
    assert abs(big.weight.std().item() - 1.0) < 0.02 and not big.bias.any()


def test_gains_follow_the_paper_and_reference_code():
    g = pggan.Generator(latent_dim=16, image_size=16, fmap_base=64, fmap_max=16)
    d = pggan.Discriminator(image_size=16, fmap_base=64, fmap_max=16)
    assert g.to_rgb["16"].scale == pytest.approx(1 / math.sqrt(8))  # toRGB: gain 1, fan_in = 8 channels
    assert g.blocks["8"].conv0.scale == pytest.approx(math.sqrt(2) / math.sqrt(16 * 9))
    assert g.blocks["4"].dense.scale == pytest.approx(math.sqrt(2) / 4 / math.sqrt(16))  # TF code's override
    assert d.final.dense1.scale == pytest.approx(1 / math.sqrt(16))  # last dense: gain 1
    assert d.final.dense0.scale == pytest.approx(math.sqrt(2) / math.sqrt(16 * 16))


def test_pixel_norm_by_hand():
    x = torch.tensor([[3.0, 4.0]]).reshape(1, 2, 1, 1)  # mean of squares 12.5
    expected = torch.tensor([3.0, 4.0]) / math.sqrt(12.5 + 1e-8)
    assert torch.allclose(pggan.pixel_norm(x).flatten(), expected)
    assert pggan.pixel_norm(torch.zeros(1, 3, 2, 2)).abs().max() == 0  # eps keeps zeros finite
    z = torch.randn(5, 16) * 7
    assert torch.allclose(pggan.pixel_norm(z).square().mean(1), torch.ones(5), atol=1e-5)


def _group_std(values: list[float]) -> float:
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / len(values) + 1e-8)


def test_minibatch_stddev_by_hand():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(4, 1, 1, 1)
    out = pggan.minibatch_stddev(x)
    assert out.shape == (4, 2, 1, 1) and torch.equal(out[:, :1], x)
    assert out[:, 1].flatten().tolist() == pytest.approx([math.sqrt(1.25)] * 4)

    # batch 8, group 4, TF layout: sample i is in group i % 2; the stat averages over channels and pixels
    x = torch.tensor([0.0, 1.0, 0.0, 3.0, 2.0, 5.0, 6.0, 7.0]).reshape(8, 1, 1, 1).repeat(1, 2, 2, 2)
    x[:, 1] *= 2  # second channel: stddevs doubled
    even, odd = _group_std([0, 0, 2, 6]), _group_std([1, 3, 5, 7])
    even2, odd2 = _group_std([0, 0, 4, 12]), _group_std([2, 6, 10, 14])
    out = pggan.minibatch_stddev(x)
    assert out.shape == (8, 3, 2, 2)
    expected = [(even + even2) / 2, (odd + odd2) / 2] * 4
    assert out[:, 2, 0, 0].tolist() == pytest.approx(expected, rel=1e-5)
    assert torch.equal(out[:, 2], out[:, 2, :1, :1].expand(8, 2, 2))  # replicated over pixels


def test_minibatch_stddev_handles_batches_not_divisible_by_four():
    assert [pggan.mbstd_group_size(n, 4) for n in (16, 14, 6, 3, 2, 1, 5, 7)] == [4, 2, 3, 3, 2, 1, 5, 7]
    x = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0, 32.0]).reshape(6, 1, 1, 1)  # groups of 3: {0,2,4}, {1,3,5}
    out = pggan.minibatch_stddev(x)[:, 1].flatten()
    assert out.tolist() == pytest.approx([_group_std([1, 4, 16]), _group_std([2, 8, 32])] * 3, rel=1e-5)
    x = torch.arange(5.0).reshape(5, 1, 1, 1)  # prime: one group of 5
    assert pggan.minibatch_stddev(x)[:, 1].flatten().tolist() == pytest.approx([_group_std([0, 1, 2, 3, 4])] * 5)
    assert pggan.minibatch_stddev(torch.ones(1, 3, 4, 4))[0, 3].max().item() == pytest.approx(1e-4)


# ----------------------------------------------------------------------------------------------------
# networks


def test_channels_follow_the_paper_table_and_scale_down():
    sizes = [4, 8, 16, 32, 64, 128, 256, 512, 1024]
    assert [pggan.channels(r) for r in sizes] == [512, 512, 512, 512, 256, 128, 64, 32, 16]
    assert [pggan.channels(r, 512, 64) for r in sizes[:5]] == [64, 64, 64, 32, 16]


def test_parameter_counts_at_1024_match_the_papers_23_1m():
    """The paper says about 23.1M each. Exact figures (identical to the reference TF networks):
    G 23,079,115 = 23,071,507 in the 4x4 dense/conv and 16 upsampling convs + 7,659 in the nine toRGB
    layers (3C+3 each); D 23,087,249 = 23,077,073 in the convs / mbstd block / two dense layers + 10,176 in
    the nine fromRGB layers (4C each). Once fully grown only the 1024 toRGB (51) / fromRGB (64) are used:
    G 23,071,507 and D 23,077,137. Every variant rounds to 23.1M."""
    g, d = pggan.Generator(), pggan.Discriminator()
    assert n_params(g) == 23_079_115 and n_params(g.to_rgb) == 7_659
    assert n_params(d) == 23_087_249 and n_params(d.from_rgb) == 10_176
    assert n_params(g.grown(1024, 1.0)) == 23_071_507
    assert n_params(d) - n_params(d.from_rgb) + n_params(d.from_rgb["1024"]) == 23_077_137
    assert round(n_params(g) / 1e6, 1) == round(n_params(d) / 1e6, 1) == 23.1
    assert g(torch.randn(1, 512), 8).shape == (1, 3, 8, 8)  # linear output: no tanh
    assert not any(isinstance(m, torch.nn.Tanh) for m in g.modules())


@pytest.mark.parametrize("bad", [4, 12, 2048])
def test_target_resolution_is_a_power_of_two_in_8_to_1024(bad):
    with pytest.raises(ValueError, match="power of two"):
        pggan.Generator(image_size=bad)


def _tiny_networks():
    torch.manual_seed(0)
    config = tiny_config()
    return pggan.build_generator(config), pggan.build_discriminator(config)


def test_generator_fade_in_is_the_old_path_at_0_and_the_new_path_at_1():
    g, _ = _tiny_networks()
    z = torch.randn(3, TINY["latent_dim"])
    with torch.no_grad():
        old = F.interpolate(g(z, 8), scale_factor=2, mode="nearest")  # 8x8 output, nearest-upsampled
        h8 = g.blocks["8"](g.blocks["4"](z))
        new = g.to_rgb["16"](g.blocks["16"](h8))
        assert torch.equal(g(z, 16, 0.0), old)
        assert torch.equal(g(z, 16, 1.0), new)
        assert torch.allclose(g(z, 16, 0.25), 0.75 * old + 0.25 * new, atol=1e-6)
        assert torch.equal(g(z, 4), g.to_rgb["4"](g.blocks["4"](z)))
        assert torch.equal(g.grown(16, 0.25)(z), g(z, 16, 0.25))


def test_discriminator_fade_in_is_the_old_path_at_0_and_the_new_path_at_1():
    _, d = _tiny_networks()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        old_h = d.from_rgb["8"](F.avg_pool2d(x, 2))
        new_h = d.blocks["16"](d.from_rgb["16"](x))
        assert torch.equal(d(x, 0.0), d(F.avg_pool2d(x, 2), 1.0))
        assert torch.equal(d(x, 0.0), d.final(d.blocks["8"](old_h)))
        assert torch.equal(d(x, 1.0), d.final(d.blocks["8"](new_h)))
        assert torch.allclose(d(x, 0.5), d.final(d.blocks["8"](0.5 * old_h + 0.5 * new_h)), atol=1e-6)
        assert d(x[:, :, :4, :4]).shape == (4,)


def test_real_images_are_blended_between_resolutions_like_the_generator():
    real = torch.randn(2, 3, 16, 16)
    at8 = F.avg_pool2d(real, 2)
    assert torch.allclose(reals_at(real, Stage(8, "stable", 1.0)), at8)
    assert torch.allclose(reals_at(real, Stage(4, "stable", 1.0)), F.avg_pool2d(real, 4), atol=1e-6)
    low = F.interpolate(F.avg_pool2d(at8, 2), scale_factor=2, mode="nearest")
    assert torch.allclose(reals_at(real, Stage(8, "fade", 0.0)), low)
    assert torch.allclose(reals_at(real, Stage(8, "fade", 0.3)), 0.7 * low + 0.3 * at8, atol=1e-6)
    assert torch.equal(reals_at(real, Stage(16, "stable", 1.0)), real)


# ----------------------------------------------------------------------------------------------------
# schedule and algorithm


def test_growth_schedule_phases_alpha_and_paper_minibatches():
    s = GrowthSchedule(16, fade_images=10, stable_images=20)
    assert s.stage_at(0) == s.stage_at(19) == Stage(4, "stable", 1.0)  # 4x4: stabilise only
    assert s.stage_at(20) == Stage(8, "fade", 0.0)
    assert s.stage_at(25) == Stage(8, "fade", 0.5)
    assert s.stage_at(30) == Stage(8, "stable", 1.0)
    assert s.stage_at(50) == Stage(16, "fade", 0.0)
    assert s.stage_at(80) == s.stage_at(10**9) == Stage(16, "stable", 1.0)
    assert s.start_of(16) == 50 and s.images_to_grow() == 80

    paper = GrowthSchedule(1024, 800_000, 800_000)
    assert paper.start_of(1024) == 800_000 + 7 * 1_600_000
    assert [paper.batch_size_for(paper.start_of(r)) for r in (4, 8, 128, 256, 512, 1024)] == [16, 16, 16, 14, 6, 3]
    assert GrowthSchedule(1024, 800_000, 800_000, batch_size=8).batch_size_for(paper.start_of(1024)) == 8
    with pytest.raises(ValueError):
        GrowthSchedule(16, -1, 10)


def test_paper_defaults():
    config = pggan.PGGANConfig()
    assert (config.latent_dim, config.fade_images, config.stable_images) == (512, 800_000, 800_000)
    assert (config.lr, config.beta1, config.beta2, config.gp_lambda, config.drift) == (1e-3, 0.0, 0.99, 10.0, 0.001)
    assert (config.ema_beta, config.mbstd_group, config.batch_size) == (0.999, 4, 0)


def test_optimisers_reset_at_each_new_resolution_and_ema_tracks_g():
    algo = get_architecture("pggan").build_algorithm(tiny_config(), torch.device("cpu"), 0, False)
    group = algo.opt_g.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"]) == (1e-3, (0.0, 0.99), 1e-8)
    real = torch.rand(8, 3, 16, 16) * 2 - 1
    before = [p.clone() for p in algo.generator.parameters()]
    algo.train_step(real)
    assert algo.opt_g.state and algo.opt_d.state
    for ema, start, live in zip(algo.generator_ema.parameters(), before, algo.generator.parameters(), strict=True):
        assert torch.allclose(ema, start + 0.001 * (live - start), atol=1e-7)
    algo.train_step(real)  # ends at 16 images: the next step is the 8x8 fade, so Adam starts afresh
    assert algo.images_seen == 16 and algo.progress() == {"resolution": 4, "phase": "stable", "alpha": 1.0}
    assert not algo.opt_g.state and not algo.opt_d.state
    algo.train_step(real)
    assert algo.progress() == {"resolution": 8, "phase": "fade", "alpha": 0.0}
    algo.train_step(real)
    assert algo.progress() == {"resolution": 8, "phase": "fade", "alpha": 0.5}
    assert algo.opt_g.state and algo.sample().shape == (64, 3, 16, 16)  # shown upscaled to the target size


def test_tiny_run_grows_4_8_16_with_finite_losses(tmp_path):
    run = tiny_run(tmp_path, steps=10)
    run.options.sample_every = 3
    last = run.train()
    logged = records(tmp_path)
    stages = [(r["resolution"], r["phase"], r["alpha"]) for r in logged]
    assert stages == [
        (4, "stable", 1.0), (4, "stable", 1.0),
        (8, "fade", 0.0), (8, "fade", 0.5), (8, "stable", 1.0), (8, "stable", 1.0),
        (16, "fade", 0.0), (16, "fade", 0.5), (16, "stable", 1.0), (16, "stable", 1.0),
    ]
    for r in logged:
        assert all(math.isfinite(r[k]) for k in ("loss_d", "loss_g", "gp", "d_real", "d_fake"))
    assert last["resolution"] == 16
    from PIL import Image

    grid = Image.open(tmp_path / "samples" / "step_00000003.png")  # 8x8 fade, shown at 16x16 + a caption
    assert grid.size == (8 * 18 + 2, 8 * 18 + 2 + 12)
    checkpoint = load_checkpoint(tmp_path)
    assert {"generator", "generator_ema", "discriminator", "optimizer_g", "optimizer_d", "noise_rng"} <= set(checkpoint)
    assert checkpoint["progressive"] == {"resolution": 16, "phase": "stable", "alpha": 1.0, "images_seen": 80}
    assert int(checkpoint["generator_ema"]["grown_resolution"]) == 16




def test_resume_mid_fade_continues_bit_for_bit(tmp_path):
    # 3 steps end mid-way through the 8x8 fade (alpha 0.5 next); resuming then crosses the rest of the
    # fade, the optimiser reset at 16x16 and half of its fade
    tiny_run(tmp_path / "straight", steps=8).train()
    tiny_run(tmp_path / "split", steps=3).train()
    middle = load_checkpoint(tmp_path / "split")
    assert middle["images_seen"] == 24 and middle["progressive"]["phase"] == "fade"
    assert middle["progressive"]["alpha"] == 0.0  # the stage of the last step taken; the next one is at 0.5
    tiny_run(tmp_path / "split", steps=8, resume=True).train()
    assert_same_state(load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "split"))
    strip = [{k: v for k, v in r.items() if k not in ("time", "images_per_s")} for r in records(tmp_path / "straight")]
    resumed = [{k: v for k, v in r.items() if k not in ("time", "images_per_s")} for r in records(tmp_path / "split")]
    assert strip == resumed
    assert (strip[3]["resolution"], strip[3]["alpha"]) == (8, 0.5)
    assert (strip[6]["resolution"], strip[6]["phase"]) == (16, "fade")


def test_cli_exposes_the_schedule_options(capsys):
    from trainer import cli

    with pytest.raises(SystemExit):
        cli.main(["pggan", "--help"])
    text = capsys.readouterr().out
    for flag in ("--fade-images", "--stable-images", "--batch-size", "--fmap-base", "--fmap-max", "--ema-beta"):
        assert flag in text
