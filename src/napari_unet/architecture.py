"""The U-Net's layers (Ronneberger, Fischer & Brox 2015) built from plain keyword arguments.

This module imports nothing but torch, on purpose: a bioimage.io package
(``napari-unet export-bioimageio``) carries it verbatim as the architecture source of its
``pytorch_state_dict`` weights, so the network can be rebuilt where napari-unet is not
installed. napari-unet itself builds :class:`napari_unet.network.UNet`, which checks its
config before calling this.
"""

from __future__ import annotations

import torch
from torch import nn


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


class UNetArchitecture(nn.Module):
    """Encoder of double convolutions and max-pooling, decoder with skip connections.

    Returns logits; the activation (softmax for instances, sigmoid for semantic masks)
    belongs to the caller so training can use numerically stable losses. Input sides must
    be multiples of ``2**depth``.
    """

    def __init__(self, in_channels: int = 1, out_channels: int = 3, base: int = 16,
                 depth: int = 4, norm: str = "batch", upsampling: str = "transpose",
                 dropout: float = 0.0) -> None:
        super().__init__()
        widths = [base * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths[:-1]:
            self.down.append(_double_conv(cin, w, norm))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = _double_conv(widths[-2], widths[-1], norm)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.up = nn.ModuleList(
            _Up(widths[i + 1], widths[i], upsampling, norm) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], out_channels, 1)
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
