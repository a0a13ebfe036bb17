import math

import pytest
import torch

from trainer.losses import (
    classification_loss,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    reconstruction_loss,
)
from trainer.models import stargan
from trainer.training.schedule import lr_factor

PAPER_ATTRIBUTES = "Black_Hair,Blond_Hair,Brown_Hair,Male,Young"


def count(module):
    return sum(p.numel() for p in module.parameters())


def test_paper_parameter_counts_at_128_with_five_attributes():
    config = stargan.StarGANConfig(attributes=PAPER_ATTRIBUTES)
    assert count(stargan.build_generator(config)) == 8_430_528
    assert count(stargan.build_discriminator(config)) == 44_762_048


def test_paper_networks_shapes_and_heads():
    config = stargan.StarGANConfig(attributes=PAPER_ATTRIBUTES)
    g, d = stargan.build_generator(config), stargan.build_discriminator(config)
    assert d.depth == 6 and d.cls_kernel == 2 and d.conv_cls.kernel_size == (2, 2)
    norms = [m for m in g.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert norms and all(m.affine and m.track_running_stats for m in norms)
    convs = [m for m in g.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert not any(m.bias is not None for m in convs)
    x, c = torch.rand(2, 3, 128, 128) * 2 - 1, torch.tensor([[1.0, 0, 0, 1, 0], [0, 1, 0, 0, 1]])
    with torch.no_grad():
        y = g(x, c)
        src, cls = d(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    assert src.shape == (2, 1, 2, 2) and cls.shape == (2, 5)


@pytest.mark.parametrize(("size", "depth", "kernel", "patches"), [(16, 3, 2, 2), (32, 4, 2, 2), (64, 5, 2, 2),
                                                                   (256, 6, 4, 4)])
def test_discriminator_depth_generalises_to_other_sizes(size, depth, kernel, patches):
    config = stargan.StarGANConfig(image_size=size, attributes="a,b,c", g_conv_dim=8, d_conv_dim=4, g_repeat_num=1)
    d = stargan.build_discriminator(config)
    assert (d.depth, d.cls_kernel) == (depth, kernel)
    x = torch.zeros(3, 3, size, size)
    src, cls = d(x)
    assert src.shape == (3, 1, patches, patches) and cls.shape == (3, 3)
    assert torch.equal(d.src(x), src)
    assert stargan.build_generator(config)(x, torch.zeros(3, 3)).shape == x.shape


def test_bad_sizes_and_missing_attributes_are_refused():
    with pytest.raises(ValueError, match="power of two"):
        stargan.build_generator(stargan.StarGANConfig(image_size=48, attributes="a"))
    with pytest.raises(ValueError, match="attributes is empty"):
        stargan.build_generator(stargan.StarGANConfig())


def test_label_is_tiled_over_the_image():
    g = stargan.Generator(conv_dim=4, c_dim=2, repeat_num=1).eval()
    x = torch.zeros(1, 3, 16, 16)
    with torch.no_grad():
        assert not torch.allclose(g(x, torch.tensor([[1.0, 0.0]])), g(x, torch.tensor([[0.0, 1.0]])))
    first = g.main[0]
    assert first.in_channels == 5


def test_classification_loss_sums_attributes_and_averages_the_batch():
    logits = torch.zeros(4, 5)
    target = torch.randint(0, 2, (4, 5)).float()
    assert classification_loss(logits, target).item() == pytest.approx(5 * math.log(2))
    logits, target = torch.tensor([[2.0, -1.0], [0.0, 0.0]]), torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    expected = (math.log1p(math.exp(2)) + math.log1p(math.exp(1)) + 2 * math.log(2)) / 2
    assert classification_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_reconstruction_loss_is_mean_absolute_error():
    x = torch.zeros(2, 3, 4, 4)
    assert reconstruction_loss(x, x + 0.5).item() == pytest.approx(0.5)


def test_loss_terms_combine_with_the_paper_weights():
    config = stargan.StarGANConfig(attributes="a,b")
    real_src, fake_src = torch.full((2, 1, 2, 2), 3.0), torch.full((2, 1, 2, 2), 1.0)
    cls_logits, labels = torch.zeros(2, 2), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    gp = torch.tensor(0.25)
    total, terms = discriminator_loss(real_src, fake_src, cls_logits, labels, gp, config)
    assert terms["d_cls"].item() == pytest.approx(2 * math.log(2))
    assert total.item() == pytest.approx(-3.0 + 1.0 + 1 * 2 * math.log(2) + 10 * 0.25)
    real, rec = torch.zeros(2, 3, 4, 4), torch.full((2, 3, 4, 4), 0.1)
    total, terms = generator_loss(fake_src, cls_logits, labels, real, rec, config)
    assert terms["g_fake"].item() == -1.0 and terms["g_rec"].item() == pytest.approx(0.1)
    assert total.item() == pytest.approx(-1.0 + 10 * 0.1 + 1 * 2 * math.log(2))


def test_gradient_penalty_on_the_src_head_of_a_linear_critic():
    weight = torch.full((1, 3, 2, 2), 0.5)  # ||grad|| = sqrt(12 * 0.25) = sqrt(3)

    def critic(x):
        return (x * weight).sum(dim=(1, 2, 3))

    gp = gradient_penalty(critic, torch.zeros(4, 3, 2, 2), torch.ones(4, 3, 2, 2), torch.Generator().manual_seed(0))
    assert gp.item() == pytest.approx((math.sqrt(3) - 1) ** 2, rel=1e-5)


def test_learning_rate_decays_linearly_to_exactly_zero():
    assert lr_factor(0, 200_000, 100_000) == 1.0
    assert lr_factor(100_000, 200_000, 100_000) == 1.0
    assert lr_factor(150_000, 200_000, 100_000) == 0.5
    assert lr_factor(199_999, 200_000, 100_000) == pytest.approx(1e-5)
    assert lr_factor(200_000, 200_000, 100_000) == 0.0
    assert lr_factor(250_000, 200_000, 100_000) == 0.0
    assert lr_factor(5, 10, 0) == 1.0 and lr_factor(10, 10, 0) == 0.0
