"""Losses for partially supervised segmentation: every term honours a per-pixel weight.

Weight 0 marks pixels nobody annotated (padding, untouched pixels during fine-tuning);
they contribute nothing, so a model is never taught its own mistakes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _soft_dice(probs: torch.Tensor, onehot: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """1 - mean soft Dice over channels, counting only weighted pixels."""
    w = weight.unsqueeze(1)
    inter = (probs * onehot * w).sum((0, 2, 3))
    total = ((probs + onehot) * w).sum((0, 2, 3))
    return 1.0 - ((2 * inter + 1.0) / (total + 1.0)).mean()


def instance_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                  boundary_weight: float = 1.0) -> torch.Tensor:
    """Weighted cross-entropy + soft Dice on interior and boundary classes."""
    logits = logits.float()
    pixel_w = weight * torch.where(target == 2, boundary_weight, 1.0)
    ce = F.cross_entropy(logits, target, reduction="none")
    ce = (ce * pixel_w).sum() / pixel_w.sum().clamp_min(1.0)
    probs = torch.softmax(logits, 1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    return ce + _soft_dice(probs, onehot, weight)


def semantic_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                  boundary_weight: float = 1.0) -> torch.Tensor:
    """Weighted binary cross-entropy + soft Dice, one sigmoid per class channel."""
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    w = weight.unsqueeze(1)
    bce = (bce * w).sum() / (w.sum() * logits.shape[1]).clamp_min(1.0)
    return bce + _soft_dice(torch.sigmoid(logits), target, weight)


def distill_loss(logits: torch.Tensor, soft: torch.Tensor, where: torch.Tensor,
                 task: str) -> torch.Tensor:
    """Mean KL divergence from ``soft`` (the previous model's probabilities) to the new
    model's, over the pixels in ``where``: 0 while the new model still agrees, so it only
    pulls back what drifts."""
    logits = logits.float()
    soft = soft.float()
    if task == "instance":
        kl = (soft * (torch.log(soft.clamp_min(1e-6)) - torch.log_softmax(logits, 1))).sum(1)
    else:
        q = soft.clamp(1e-6, 1 - 1e-6)
        kl = (F.binary_cross_entropy_with_logits(logits, soft, reduction="none")
              + q * torch.log(q) + (1 - q) * torch.log(1 - q)).sum(1)
    w = where.float()
    return (kl * w).sum() / w.sum().clamp_min(1.0)
