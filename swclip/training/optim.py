"""AdamW with weight-decay groups, warmup + cosine schedule, logit-scale clamp, finite-loss check."""

from __future__ import annotations

import math

import torch

from swclip.method.model import MAX_LOGIT_SCALE
from swclip.training.config import OptimConfig

# --------------------------------------------------------------------------- optimiser


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: decay on weight matrices / conv kernels; none on biases, norms, embeddings' scales, logit scale.

    The rule, as in open_clip and nanoGPT: parameters with ndim < 2 (biases,
    LayerNorm / BatchNorm gains) and any name containing ``logit_scale`` get no
    weight decay.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "logit_scale" in name or "bias" in name else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; the fused kernel on CUDA."""
    fused = device.type == "cuda"
    return torch.optim.AdamW(
        param_groups(model, cfg.weight_decay),
        lr=cfg.lr,
        betas=tuple(cfg.betas),
        eps=cfg.eps,
        **({"fused": True} if fused else {}),
    )


# how AdamW computes, which follows the device it runs on, not the one a checkpoint was written on
IMPLEMENTATION_FLAGS = ("fused", "foreach", "capturable")


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict) -> None:
    """``optimizer.load_state_dict(saved)``, keeping this optimiser's implementation flags (fused, foreach, capturable).

    load_state_dict takes every group setting from the checkpoint, so a checkpoint written on the CPU (fused
    unset) and resumed on CUDA would step with the unfused AdamW. With the flags set before loading, torch
    also puts each parameter's step count where the fused kernel expects it (float32 on the parameter's device).
    """
    groups = [
        {**old, **{k: now[k] for k in IMPLEMENTATION_FLAGS if k in now}}
        for old, now in zip(saved["param_groups"], optimizer.param_groups)
    ]
    optimizer.load_state_dict({**saved, "param_groups": groups + saved["param_groups"][len(groups) :]})


def lr_factor(step: int, total_steps: int, warmup_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the base lr at ``step`` (0-based): linear warmup to 1, then cosine to min_lr_ratio."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer, cfg: OptimConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, cfg.warmup_steps, cfg.min_lr_ratio)
    )


def clamp_logit_scale(model: torch.nn.Module, max_scale: float = MAX_LOGIT_SCALE) -> None:
    """Keep exp(t) ≤ max_scale (CLIP's 100) for every parameter named *logit_scale (t is the log scale)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("logit_scale"):
                p.clamp_(0, math.log(max_scale))


class NonFiniteLossError(RuntimeError):
    """A loss term or the gradient norm became NaN or infinite; the message names the step and the term.

    Raised by swclip.training.loop.StepMetrics.collect (every log_every steps and before each checkpoint)."""
