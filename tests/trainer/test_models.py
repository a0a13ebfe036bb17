import pytest
import torch

from trainer.models import dcgan, lsgan


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_dcgan_reference_parameter_counts_at_64():
    config = dcgan.DCGANConfig()
    assert n_params(dcgan.build_generator(config)) == 3_576_704
    assert n_params(dcgan.build_discriminator(config)) == 2_765_568


@pytest.mark.parametrize("size", [16, 32, 64, 128])
def test_dcgan_depth_follows_image_size(size):
    config = dcgan.DCGANConfig(image_size=size, ngf=8, ndf=8)
    g, d = dcgan.build_generator(config), dcgan.build_discriminator(config)
    images = g(torch.randn(3, config.latent_dim))
    assert images.shape == (3, 3, size, size)
    assert images.abs().max() <= 1.0
    assert d(images).shape == (3,)


def test_dcgan_accepts_reference_latent_shape():
    g = dcgan.build_generator(dcgan.DCGANConfig(image_size=16, ngf=8)).eval()
    z = torch.randn(2, 100)
    assert torch.equal(g(z), g(z.view(2, 100, 1, 1)))


def test_dcgan_initialisation_follows_the_paper():
    g = dcgan.build_generator(dcgan.DCGANConfig())
    convs = [m for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    weights = torch.cat([c.weight.flatten() for c in convs])
    assert abs(weights.std().item() - 0.02) < 0.001
    bn = [m for m in g.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(torch.equal(b.bias, torch.zeros_like(b.bias)) for b in bn)
    assert abs(torch.cat([b.weight for b in bn]).mean().item() - 1.0) < 0.01


@pytest.mark.parametrize("bad", [8, 48, 100])
def test_dcgan_rejects_sizes_it_cannot_build(bad):
    with pytest.raises(ValueError, match="power of two"):
        dcgan.Generator(image_size=bad)


def test_lsgan_paper_layout_at_112():
    assert lsgan.base_and_doublings(112) == (7, 4)
    # the paper's LSUN generator: 256 s2, 256 s1, 256 s2, 256 s1, 128 s2, 64 s2, then 3 s1 + tanh
    assert lsgan.generator_layout(4) == [(256, 2), (256, 1), (256, 2), (256, 1), (128, 2), (64, 2)]
    g = lsgan.Generator(latent_dim=1024, image_size=112)
    deconvs = [m for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert all(m.kernel_size == (3, 3) for m in deconvs)
    assert [m.out_channels for m in deconvs] == [256, 256, 256, 256, 128, 64, 3]
    assert g.project[0].out_features == 7 * 7 * 256
    d = lsgan.Discriminator(image_size=112)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [m.out_channels for m in convs] == [64, 128, 256, 512]
    assert all(m.kernel_size == (5, 5) and m.stride == (2, 2) for m in convs)
    assert d.score.in_features == 7 * 7 * 512
    # BatchNorm from the second layer only, LeakyReLU(0.2), linear output (no sigmoid)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules()) == 3
    assert all(m.negative_slope == 0.2 for m in d.modules() if isinstance(m, torch.nn.LeakyReLU))
    assert not any(isinstance(m, torch.nn.Sigmoid) for m in d.modules())


@pytest.mark.parametrize("size", [32, 64, 112])
def test_lsgan_shapes(size):
    config = lsgan.LSGANConfig(image_size=size, latent_dim=16)
    g, d = lsgan.build_generator(config), lsgan.build_discriminator(config)
    images = g(torch.rand(2, 16) * 2 - 1)
    assert images.shape == (2, 3, size, size)
    out = d(images)
    assert out.shape == (2,)
    assert torch.isfinite(out).all()


def test_lsgan_rejects_sizes_without_a_small_base():
    with pytest.raises(ValueError, match="base"):
        lsgan.base_and_doublings(100)  # 100 = 25 * 4
