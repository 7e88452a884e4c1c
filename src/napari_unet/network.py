"""The U-Net itself (Ronneberger, Fischer & Brox 2015) as a plain ``torch.nn.Module``."""

from __future__ import annotations

import torch
from torch import nn

from .config import NetworkConfig, check_network


def _double_conv(cin: int, cout: int, norm: str) -> nn.Sequential:
    """Two 3x3 convolutions with ReLU, the U-Net's building block (padded: output = input size)."""
    layers: list[nn.Module] = []
    for i in range(2):
        layers.append(nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=norm == "none"))
        if norm == "batch":
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class _Up(nn.Module):
    """Up-sample, concatenate the skip connection, then a double convolution."""

    def __init__(self, cin: int, cout: int, mode: str, norm: str) -> None:
        super().__init__()
        if mode == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(cin, cout, 2, stride=2)
        else:
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode=mode),
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.ReLU(inplace=True),
            )
        self.conv = _double_conv(2 * cout, cout, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class UNet(nn.Module):
    """Encoder of double convolutions and max-pooling, decoder with skip connections.

    Returns logits; the activation (softmax for instances, sigmoid for semantic masks)
    belongs to the caller so training can use numerically stable losses.
    """

    def __init__(self, config: NetworkConfig) -> None:
        check_network(config)  # before anything is allocated: a config may have been changed
        super().__init__()
        self.config = config
        widths = [config.base * 2**i for i in range(config.depth + 1)]
        self.down = nn.ModuleList()
        cin = config.in_channels
        for w in widths[:-1]:
            self.down.append(_double_conv(cin, w, config.norm))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _double_conv(widths[-2], widths[-1], config.norm)
        self.dropout = nn.Dropout2d(config.dropout) if config.dropout > 0 else nn.Identity()
        self.up = nn.ModuleList(
            _Up(widths[i + 1], widths[i], config.upsampling, config.norm)
            for i in reversed(range(config.depth))
        )
        self.head = nn.Conv2d(widths[0], config.out_channels, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        """He initialisation, as in the U-Net paper, for every ReLU-fed convolution."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.dropout(self.bottleneck(x))
        for block, skip in zip(self.up, reversed(skips)):
            x = block(x, skip)
        return self.head(x)
