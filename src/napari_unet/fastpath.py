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

from .device import cpu_has_fast_bf16, memory_format


def fast_dtype(device: torch.device) -> torch.dtype:
    """The weight dtype that runs fastest on ``device`` without hurting accuracy."""
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


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
                layers[i], layers[i + 1] = _fused(conv, bn), nn.Identity()
        for i, layer in enumerate(layers):
            module[i] = layer
    return folded


@torch.no_grad()
def _fused(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias=True)
    fused.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias)
    return fused


def inference_network(network: nn.Module, device: torch.device, fast: bool = True,
                      compile: bool = False) -> nn.Module:
    """``network`` ready to predict on ``device``: folded, cast and laid out for speed
    when ``fast`` (else an fp32 eval copy on the device, for exact results); compiled
    with inductor when ``compile``."""
    if not fast:
        return copy.deepcopy(network).eval().to(device)
    net = fold_batchnorm(network).to(device, dtype=fast_dtype(device),
                                     memory_format=memory_format(device))
    if compile:
        net = torch.compile(net, dynamic=False)
    return net


def input_dtype(network: nn.Module) -> Optional[torch.dtype]:
    """The dtype a network's weights expect its input in (None for a weightless stand-in)."""
    for parameter in network.parameters():
        return parameter.dtype
    return None
