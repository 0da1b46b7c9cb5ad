"""The loss a training config names, and the σ schedule (``swclip.method.losses`` does the maths)."""

from __future__ import annotations

import functools

from swclip.analysis.variogram import fit_embedding_variogram
from swclip.method import losses
from swclip.training.config import LOSSES, LossConfig

# --------------------------------------------------------------------------- losses


def build_loss(cfg: LossConfig, world_size: int = 1, rank: int = 0, fit_fn=None):
    """The loss module named by ``cfg.name``; ``fit_fn`` defaults to swclip.analysis.variogram's."""

    if cfg.name == "clip":
        return losses.ClipLoss(world_size=world_size, rank=rank)
    if cfg.name in ("swclip", "swclip+nc"):
        sigma = cfg.sigma_start_m if cfg.sigma_start_m is not None else cfg.sigma_m
        return losses.SoftClipLoss(float(sigma), cfg.kernel, nc_weight=cfg.nc_weight if cfg.name == "swclip+nc" else 0.0,
                                   nc_temperature=cfg.nc_temperature, world_size=world_size, rank=rank)
    if cfg.name == "semivariogram":
        if fit_fn is None:
            fit_fn = variogram_fit_fn(cfg)
        return losses.SemivariogramWeightedLoss(beta=cfg.beta, bank_size=cfg.bank_size, refit_every=cfg.refit_every,
                                                min_fit_samples=cfg.min_fit_samples, fit_fn=fit_fn,
                                                world_size=world_size, rank=rank)
    raise ValueError(f"loss.name {cfg.name!r} unknown; choose one of {LOSSES}")


def variogram_fit_fn(cfg: LossConfig):
    """swclip.analysis.variogram.fit_embedding_variogram with the config's model and max lag."""


    return functools.partial(fit_embedding_variogram, model=cfg.variogram_model, max_lag_m=cfg.variogram_max_lag_m)


def sigma_at(cfg: LossConfig, step: int, total_steps: int) -> float:
    """σ (metres) at optimiser step ``step``: geometric from sigma_start_m to sigma_m, then flat."""
    if cfg.sigma_start_m is None:
        return float(cfg.sigma_m)
    n = cfg.sigma_schedule_steps or total_steps
    frac = min(max(step / max(n, 1), 0.0), 1.0)
    lo, hi = max(float(cfg.sigma_m), 1e-3), max(float(cfg.sigma_start_m), 1e-3)
    return float(hi * (lo / hi) ** frac) if cfg.sigma_m > 0 else float(cfg.sigma_start_m) * (1 - frac)


