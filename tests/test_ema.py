"""EMA by half-life with EDM's ramp-up (docs/method.md §5), in closed form."""

import torch

from rsd_engine.train.ema import ema_beta, update_ema


def test_first_update_with_rampup_has_beta_zero():
    assert ema_beta(64, 0, 500.0, 0.05) == 0.0


def test_half_life_halves_after_that_many_images():
    assert abs(ema_beta(100, 10**9, 0.1, 0.05) - 0.5) < 1e-12
    assert abs(ema_beta(100, 0, 0.1, 0.0) - 0.5) < 1e-12


def test_rampup_limits_half_life_to_ratio_of_images_seen():
    beta = ema_beta(10, 1000, 500.0, 0.05)
    assert abs(beta - 0.5 ** (10 / 50)) < 1e-12


def test_ema_of_a_constant_parameter_is_that_constant():
    net = torch.nn.Linear(3, 2)
    ema = torch.nn.Linear(3, 2)
    torch.nn.init.constant_(ema.weight, -5.0)
    with torch.no_grad():
        net.weight.fill_(0.7)
    update_ema(ema, net, ema_beta(8, 0, 1.0, 0.05))
    for i in range(1, 20):
        update_ema(ema, net, ema_beta(8, 8 * i, 1.0, 0.05))
        assert torch.allclose(ema.weight, torch.full_like(ema.weight, 0.7))


def test_ema_update_is_a_convex_combination():
    net, ema = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(1.0)
        ema.weight.fill_(0.0)
    update_ema(ema, net, 0.75)
    assert torch.allclose(ema.weight, torch.tensor([[0.25]]))
