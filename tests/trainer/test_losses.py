import math

import pytest
import torch

from trainer.losses import (
    LeastSquares,
    NonSaturatingBCE,
    Wasserstein,
    build_loss,
    drift_penalty,
    gradient_penalty,
)


def test_bce_on_known_logits():
    loss = NonSaturatingBCE()
    real, fake = torch.tensor([0.0, 0.0]), torch.tensor([0.0])
    # sigmoid(0) = 0.5 everywhere: each term is log 2
    assert loss.discriminator(real, fake).item() == pytest.approx(2 * math.log(2))
    assert loss.generator(torch.tensor([math.log(3.0)])).item() == pytest.approx(-math.log(0.75))


def test_least_squares_both_codings():
    real, fake = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    pearson = build_loss("lsgan")
    assert (pearson.a, pearson.b, pearson.c) == (-1, 1, 0)
    # D: 0.5*mean((1-1)^2,(0-1)^2) + 0.5*mean((-1+1)^2,(1+1)^2) = 0.25 + 1.0
    assert pearson.discriminator(real, fake).item() == pytest.approx(1.25)
    # G: 0.5*mean(1, 1) = 0.5
    assert pearson.generator(fake).item() == pytest.approx(0.5)
    zero_one = build_loss("lsgan-01")
    assert (zero_one.a, zero_one.b, zero_one.c) == (0, 1, 1)
    # D: 0.5*mean(0, 1) + 0.5*mean(1, 1) = 0.75;  G: 0.5*mean(4, 0) = 1.0
    assert zero_one.discriminator(real, fake).item() == pytest.approx(0.75)
    assert zero_one.generator(fake).item() == pytest.approx(1.0)


def test_least_squares_minimum_at_the_targets():
    loss = LeastSquares(a=0.0, b=1.0, c=1.0)
    assert loss.discriminator(torch.ones(4), torch.zeros(4)).item() == 0.0
    assert loss.generator(torch.ones(4)).item() == 0.0


def test_wasserstein_and_drift():
    loss = Wasserstein()
    assert loss.discriminator(torch.tensor([2.0, 4.0]), torch.tensor([1.0])).item() == pytest.approx(-2.0)
    assert loss.generator(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)
    assert drift_penalty(torch.tensor([1.0, 3.0])).item() == pytest.approx(5.0)


def test_gradient_penalty_of_a_linear_critic():
    # critic(x) = sum(w * x): gradient w everywhere, so the penalty is (||w|| - 1)^2 exactly
    w = torch.tensor([3.0, 4.0])

    def critic(x):
        return (x * w).sum(dim=1)

    real, fake = torch.randn(8, 2), torch.randn(8, 2)
    assert gradient_penalty(critic, real, fake).item() == pytest.approx((5.0 - 1.0) ** 2)


def test_gradient_penalty_reaches_the_critic_weights():
    critic = torch.nn.Linear(4, 1)
    penalty = gradient_penalty(lambda x: critic(x).flatten(), torch.randn(5, 4), torch.randn(5, 4))
    penalty.backward()
    assert critic.weight.grad is not None and critic.weight.grad.abs().sum() > 0


def test_unknown_loss_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("hinge2")
