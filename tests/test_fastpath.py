"""Tests for napari_unet.fastpath: the inference copy predicts what the trained network
predicts, and the caller's model is never changed."""

from __future__ import annotations

import numpy as np
import torch
from _data import DSB_TRAIN, dsb_pair, small_model
from torch import nn

from napari_unet.device import cpu_has_fast_bf16, fast_dtype
from napari_unet.fastpath import fold_batchnorm, inference_network
from napari_unet.registry import load_model
from napari_unet.segment import Predictor, prepare_image, segment

CPU = torch.device("cpu")


def _with_batch_statistics(seed: int = 0):
    """A small model whose BatchNorm layers hold non-trivial running statistics."""
    model = small_model(seed)
    g = torch.Generator().manual_seed(seed)
    for m in model.network.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return model


def test_folding_batchnorm_keeps_the_output_and_removes_every_batchnorm():
    model = _with_batch_statistics()
    folded = fold_batchnorm(model.network)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model.network(x), rtol=1e-4, atol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.network.modules())


def test_the_callers_network_is_left_as_it_was():
    model = _with_batch_statistics()
    before = {k: v.clone() for k, v in model.network.state_dict().items()}
    model.network.train()
    inference_network(model.network, CPU, fast=True)
    assert model.network.training
    after = model.network.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


def test_the_exact_path_is_fp32_and_the_fast_path_uses_the_devices_fast_dtype():
    model = small_model()
    exact = inference_network(model.network, CPU, fast=False)
    fast = inference_network(model.network, CPU, fast=True)
    assert next(exact.parameters()).dtype == torch.float32
    assert next(fast.parameters()).dtype == fast_dtype(CPU)
    assert fast_dtype(CPU) == (torch.bfloat16 if cpu_has_fast_bf16() else torch.float32)


def test_fast_probabilities_stay_close_to_fp32_on_a_real_image(real_data):
    model = load_model("nuclei")
    image = dsb_pair(real_data, DSB_TRAIN[1])[0]
    plane = prepare_image(image, model, "YX").plane(())
    exact = Predictor(model, "cpu", fast=False).probabilities(plane)
    fast = Predictor(model, "cpu", fast=True).probabilities(plane)
    assert np.abs(exact - fast).mean() < 0.01
    assert ((exact.argmax(0) == fast.argmax(0)).mean()) > 0.99


def test_the_compiled_network_gives_the_eager_fast_labels(real_data):
    model = load_model("nuclei")
    image = dsb_pair(real_data, DSB_TRAIN[2])[0][:128, :128]
    eager = segment(image, model, device="cpu", tile_size=128)
    compiled = segment(image, model, device="cpu", tile_size=128, compile=True)
    assert eager.max() > 5
    assert ((eager > 0) == (compiled > 0)).mean() > 0.99

