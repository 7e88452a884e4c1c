"""Tests for napari_unet.losses: the per-pixel weight is honoured by every term."""

from __future__ import annotations

import torch

from napari_unet.losses import distill_loss, instance_loss, semantic_loss


def _data(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 3, 16, 16, generator=g, requires_grad=True)
    target = torch.randint(0, 3, (2, 16, 16), generator=g)
    weight = torch.zeros(2, 16, 16)
    weight[:, :8] = 1.0
    return logits, target, weight


def test_instance_loss_ignores_zero_weight_pixels() -> None:
    logits, target, weight = _data()
    loss = instance_loss(logits, target, weight)
    other = target.clone()
    other[:, 8:] = (other[:, 8:] + 1) % 3  # change every unweighted label
    assert torch.equal(loss, instance_loss(logits, other, weight))
    loss.backward()
    assert (logits.grad[:, :, 8:] == 0).all() and (logits.grad[:, :, :8] != 0).any()
    assert not torch.equal(loss, instance_loss(logits, other, torch.ones_like(weight)))


def test_instance_loss_is_lower_for_the_right_answer() -> None:
    _, target, weight = _data()
    right = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 10
    assert instance_loss(right, target, weight) < 0.1 < instance_loss(-right, target, weight)


def test_boundary_weight_raises_the_cost_of_boundary_mistakes() -> None:
    _, target, weight = _data()
    right = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 10
    # Right everywhere except on the boundary class (2), where the logits are wrong.
    on_boundary = (target == 2).unsqueeze(1)
    assert (on_boundary.squeeze(1) & (weight > 0)).any()
    logits = torch.where(on_boundary, -right, right)
    losses = [instance_loss(logits, target, weight, boundary_weight=w).item()
              for w in (0.5, 1.0, 2.0, 5.0)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses == sorted(losses) and len(set(losses)) == len(losses)  # strictly increasing


def test_semantic_loss_ignores_zero_weight_pixels() -> None:
    logits, _, weight = _data()
    target = (torch.rand(2, 3, 16, 16) > 0.5).float()
    loss = semantic_loss(logits, target, weight)
    other = target.clone()
    other[:, :, 8:] = 1 - other[:, :, 8:]
    assert torch.equal(loss, semantic_loss(logits, other, weight))
    assert semantic_loss(target * 20 - 10, target, weight) < 0.1


def test_no_weight_at_all_gives_a_finite_loss() -> None:
    logits, target, weight = _data()
    assert torch.isfinite(instance_loss(logits, target, torch.zeros_like(weight)))


def test_distillation_is_zero_while_the_model_agrees_and_grows_as_it_drifts() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8)
    soft = torch.softmax(logits, 1)
    where = torch.ones(2, 8, 8, dtype=torch.bool)
    assert distill_loss(logits, soft, where, "instance").item() < 1e-5
    drifted = logits + torch.tensor([2.0, -2.0, 0.0]).reshape(1, 3, 1, 1)
    assert distill_loss(drifted, soft, where, "instance").item() > 0.1
    # only the pixels in ``where`` count
    assert distill_loss(drifted, soft, torch.zeros_like(where), "instance").item() == 0.0
    sig = torch.sigmoid(logits[:, :1])
    assert distill_loss(logits[:, :1], sig, where, "semantic").item() < 1e-5
    assert distill_loss(logits[:, :1] + 3, sig, where, "semantic").item() > 0.1
