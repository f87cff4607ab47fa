"""EDM's DDPM++ / NCSN++ as ``network.architecture``: validation, parameter counts, EDM names, checkpoints."""

from __future__ import annotations

import pytest
import torch

from rsd_engine.io import config as cfg
from rsd_engine.models.networks import EDMPrecond, SongUNetPrecond, build_network, count_parameters, network_differences
from rsd_engine.train.checkpoints import load_network, save_checkpoint

TINY_DDPMPP = (
    '[data]\nresolution = 16\n[network]\narchitecture = "ddpmpp"\nmodel_channels = 8\nchannel_mult = [1, 2]\nnum_blocks = '
    "1\nattn_resolutions = [8]\n"
)


def test_cifar10_preset_is_edms_ddpmpp_with_its_parameter_count():
    preset = cfg.load("presets/cifar10-denoise-0.2.toml", ["data.path=/tmp"])
    assert preset.network.architecture == "ddpmpp"
    net = build_network(preset)
    assert isinstance(net, SongUNetPrecond)
    # EDM's CIFAR-10 DDPM++ (model_channels 128, channel_mult [2, 2, 2], 4 blocks, attention at 16×16), without
    # its 9-input augmentation layer: 55,732,739; EDM's own SongUNet of these settings counts the same.
    assert count_parameters(net) == 55_732_739
    names = set(net.state_dict())
    assert {
        "model.enc.32x32_conv.weight",
        "model.map_layer0.weight",
        "model.enc.16x16_down.conv0.resample_filter",
        "model.dec.16x16_block4.qkv.weight",
        "model.dec.32x32_aux_conv.weight",
    } <= names


def test_ddpmpp_takes_mask_channels_and_ncsnpp_its_own_parts():
    p = cfg.loads(TINY_DDPMPP)
    net = build_network(p, cond_channels=1)
    assert net.model.enc["16x16_conv"].weight.shape[1] == 2
    x, m = torch.randn(2, 1, 16, 16), (torch.rand(2, 1, 16, 16) > 0.5).float()
    assert net(x * m, torch.tensor([0.5, 2.0]), m).shape == (2, 1, 16, 16)
    ncsn = build_network(cfg.loads(TINY_DDPMPP.replace('"ddpmpp"', '"ncsnpp"')))
    assert "model.map_noise.freqs" in ncsn.state_dict() and "model.enc.8x8_aux_residual.weight" in ncsn.state_dict()
    assert ncsn.config.resample_filter == [1, 3, 3, 1]


def test_ddpmpp_denoiser_keeps_edm_preconditioning():
    net = build_network(cfg.loads(TINY_DDPMPP)).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():  # D(x; σ → 0) → x (c_skip → 1, c_out → 0)
        assert torch.allclose(net(x, torch.full((2,), 1e-4)), x, atol=1e-3)


@pytest.mark.parametrize(
    "override, field",
    [
        ("network.attn_resolutions=[12]", "network.attn_resolutions"),
        ("network.model_channels=6", "network.model_channels"),
        ("data.resolution=17", "data.resolution"),
        ("network.architecture='resnet'", "network.architecture"),
    ],
)
def test_ddpmpp_sizes_are_validated(override, field):
    with pytest.raises(cfg.PresetError) as e:
        cfg.loads(TINY_DDPMPP, [override])
    assert field in [f for f, _ in e.value.problems]


def test_checkpoint_rebuilds_the_ddpmpp_class_and_refuses_another_architecture(tmp_path):
    p = cfg.loads(TINY_DDPMPP)
    net = build_network(p)
    save_checkpoint(tmp_path / "ck", {"ema": net}, {"images_seen": 0}, cfg.dumps(p))
    back = load_network(tmp_path / "ck", "ema")
    assert isinstance(back, SongUNetPrecond) and network_differences(back, p) == {}
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), net.state_dict().values()))
    unet = cfg.loads("[data]\nresolution = 16\n[network]\nblock_out_channels = [8, 16]\nnorm_groups = 4\n")
    assert network_differences(back, unet) == {"network": ("SongUNetPrecond", "EDMPrecond")}
    assert isinstance(build_network(unet), EDMPrecond)
    assert network_differences(back, cfg.loads(TINY_DDPMPP, ["network.num_blocks=2"])) == {"num_blocks": (1, 2)}
