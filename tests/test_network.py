"""Tests for napari_unet.network: shapes, presets, up-sampling modes, parameter counts."""

from __future__ import annotations

import pytest
import torch

from napari_unet.config import NetworkConfig, preset
from napari_unet.network import UNet


def _n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.fixture(scope="module")
def default_net() -> UNet:
    return UNet(preset("default").network).eval()


def test_default_preset_has_about_1_9m_parameters(default_net: UNet) -> None:
    assert 1.85e6 < _n_params(default_net) < 1.95e6


@pytest.mark.parametrize("height,width", [(48, 80), (16, 16), (112, 48)])
def test_default_output_shape_equals_input_shape(default_net: UNet, height: int, width: int) -> None:
    # odd multiples of 2**depth = 16 (3*16, 5*16, 7*16) catch off-by-one pooling/up-sampling
    x = torch.randn(2, 1, height, width)
    with torch.no_grad():
        y = default_net(x)
    assert y.shape == (2, 3, height, width)
    assert torch.isfinite(y).all()


def test_seed_preset_builds_and_runs() -> None:
    config = preset("seed")
    assert config.task == "semantic" and config.network.out_channels == 1
    net = UNet(config.network).eval()
    assert 30e6 < _n_params(net) < 35e6  # the seed tutorial's 64..1024-filter U-Net
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert any(isinstance(m, torch.nn.Dropout2d) for m in net.modules())
    with torch.no_grad():
        y = net(torch.randn(1, 1, 32, 32))
    assert y.shape == (1, 1, 32, 32)


@pytest.mark.parametrize("mode", ["transpose", "nearest", "bilinear"])
def test_each_upsampling_mode_keeps_shape(mode: str) -> None:
    config = NetworkConfig(in_channels=2, out_channels=4, base=4, depth=3, upsampling=mode)
    net = UNet(config).eval()
    kinds = {type(m) for m in net.modules()}
    assert (torch.nn.ConvTranspose2d in kinds) == (mode == "transpose")
    x = torch.randn(1, 2, 24, 40)  # 3*8 and 5*8
    with torch.no_grad():
        y = net(x)
    assert y.shape == (1, 4, 24, 40)


def test_widths_double_with_depth() -> None:
    small = UNet(NetworkConfig(base=8, depth=3))
    assert [block[0].out_channels for block in small.down] == [8, 16, 32]
    assert small.bottleneck[0].out_channels == 64
    assert small.head.out_channels == 3


def test_output_depends_on_input_everywhere() -> None:
    """A padded U-Net sees the whole image: a change in one corner is felt nearby only,
    and the corner itself changes (no dead borders)."""
    torch.manual_seed(0)
    net = UNet(NetworkConfig(base=4, depth=2)).eval()
    x = torch.randn(1, 1, 32, 32)
    x2 = x.clone()
    x2[..., 0, 0] += 5.0
    with torch.no_grad():
        d = (net(x) - net(x2)).abs().sum(1)[0]
    assert d[0, 0] > 0
    assert d[-1, -1] == 0  # beyond the receptive field of a depth-2 net
