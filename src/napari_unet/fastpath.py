"""The network as prepared for inference on one device: the fast path.

Training keeps BatchNorm layers and fp32 weights; prediction does not need either.
A copy of the network gets each BatchNorm folded into the convolution before it, its
weights cast once to the device's fast dtype (bf16 on CPUs with AVX-512-BF16/AMX and on
CUDA, fp16 on MPS; autocast would re-cast every weight on every call) and the
``channels_last`` layout, and optionally goes through ``torch.compile`` (a one-off cost of
seconds per tile shape, worth it for long batches). The caller's model is never changed.
"""

from __future__ import annotations

import copy
from typing import Optional

import torch
from torch import nn
from torch.nn.utils import fuse_conv_bn_eval

from .device import fast_dtype, memory_format


def fold_batchnorm(network: nn.Module) -> nn.Module:
    """A copy of ``network`` in eval mode with every Conv2d -> BatchNorm2d pair inside an
    ``nn.Sequential`` replaced by one Conv2d giving the same output."""
    folded = copy.deepcopy(network).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        layers = list(module)
        for i in range(len(layers) - 1):
            conv, bn = layers[i], layers[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                layers[i], layers[i + 1] = fuse_conv_bn_eval(conv, bn), nn.Identity()
        for i, layer in enumerate(layers):
            module[i] = layer
    return folded


def inference_network(network: nn.Module, device: torch.device, fast: bool = True,
                      compile: bool = False) -> nn.Module:  # noqa: A002 (torch.compile)
    """``network`` ready to predict on ``device``: folded, cast and laid out for speed
    when ``fast`` (else an fp32 eval copy on the device, for exact results); compiled
    with inductor when ``compile``."""
    if not fast:
        return copy.deepcopy(network).eval().to(device)
    # torch's stubs do not list Module.to's memory_format, which it takes
    net = fold_batchnorm(network).to(device, dtype=fast_dtype(device),  # type: ignore[call-overload]
                                     memory_format=memory_format(device))
    if compile:
        net = torch.compile(net, dynamic=False)
    return net


def input_dtype(network: nn.Module) -> Optional[torch.dtype]:
    """The dtype a network's weights expect its input in (None for a weightless stand-in)."""
    for parameter in network.parameters():
        return parameter.dtype
    return None
