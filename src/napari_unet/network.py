"""The U-Net itself (Ronneberger, Fischer & Brox 2015) as a plain ``torch.nn.Module``, built
from a checked :class:`~napari_unet.config.NetworkConfig` (the layers are in
:mod:`napari_unet.architecture`, which a bioimage.io export carries as its source)."""

from __future__ import annotations

from dataclasses import asdict

from .architecture import UNetArchitecture
from .config import NetworkConfig, check_network


class UNet(UNetArchitecture):
    """The U-Net ``config`` describes; the config is checked before anything is allocated
    (it may have been changed since it was made)."""

    def __init__(self, config: NetworkConfig) -> None:
        check_network(config)
        super().__init__(**asdict(config))
        self.config = config
