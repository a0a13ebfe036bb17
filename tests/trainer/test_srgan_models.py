import pytest
import torch

from trainer.models import srgan


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_default_parameter_counts():
    # SRResNet, B=16, C=64, x4: head 15,617 + blocks 16 x 73,985 + trunk conv/BN 36,992 + 2 x upsampling 147,713
    # + tail 15,555 = 1,547,350 (no conv bias before BN, one PReLU slope per layer).
    # D at 96x96: convs/BN 4,687,232 + dense 18,432 -> 1024 (18,875,392) + 1024 -> 1 (1,025) = 23,563,649.
    assert n_params(srgan.build_generator(srgan.SRResNetConfig())) == 1_547_350
    assert n_params(srgan.build_discriminator(srgan.SRGANConfig())) == 23_563_649


def test_block_count_and_width_are_configurable():
    small = srgan.build_generator(srgan.SRResNetConfig(blocks=2, channels=16))
    assert sum(isinstance(m, srgan.ResidualBlock) for m in small.modules()) == 2
    assert small.head[0].out_channels == 16
    assert n_params(small) < 60_000


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_generator_upscales_any_size_by_its_scale(scale):
    g = srgan.build_generator(srgan.SRResNetConfig(scale=scale, blocks=1, channels=8, crop_size=8 * scale)).eval()
    out = g(torch.rand(2, 3, 7, 11))
    assert out.shape == (2, 3, 7 * scale, 11 * scale)
    pixel_shuffles = [m for m in g.modules() if isinstance(m, torch.nn.PixelShuffle)]
    assert len(pixel_shuffles) == {2: 1, 4: 2, 8: 3}[scale]
    assert all(isinstance(m, torch.nn.PReLU) for m in g.upsample if not isinstance(m, (torch.nn.Conv2d,
                                                                                          torch.nn.PixelShuffle)))


def test_discriminator_gives_one_logit_per_crop():
    d = srgan.build_discriminator(srgan.SRGANConfig(crop_size=32, ndf=8, d_dense=16))
    assert d(torch.rand(3, 3, 32, 32) * 2 - 1).shape == (3,)
    strides = [m.stride[0] for m in d.features if isinstance(m, torch.nn.Conv2d)]
    assert strides == [1, 2, 1, 2, 1, 2, 1, 2]
    assert not isinstance(d.features[1], torch.nn.BatchNorm2d)  # no BN after the first conv


@pytest.mark.parametrize(("values", "message"), [
    ({"scale": 3}, "power of two"),
    ({"crop_size": 90}, "multiple of scale"),
])
def test_invalid_generator_configs_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        srgan.build_generator(srgan.SRResNetConfig(**values))


def test_discriminator_needs_a_crop_divisible_by_16():
    with pytest.raises(ValueError, match="multiple of 16"):
        srgan.build_discriminator(srgan.SRGANConfig(crop_size=40))


def test_eval_mode_output_does_not_depend_on_the_rest_of_the_batch():
    g = srgan.build_generator(srgan.SRResNetConfig(blocks=2, channels=8))
    g.train()
    g(torch.rand(4, 3, 8, 8))  # move the BatchNorm running statistics off their initial values
    g.eval()
    x = torch.rand(1, 3, 9, 10)
    with torch.no_grad():
        alone = g(x)
        together = g(torch.cat([x, torch.rand(3, 3, 9, 10)]))[:1]
    torch.testing.assert_close(alone, together, rtol=0, atol=1e-6)
