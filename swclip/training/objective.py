"""The loss a training config names, and the σ schedule (``swclip.method.losses`` does the maths)."""

from __future__ import annotations

from swclip.loss_names import CLIP, LOSSES, SHUFFLED, SMOOTH, SOFT_LABEL_LOSSES, SWCLIP_NC
from swclip.method import losses
from swclip.method.gps_queue import GPSQueue, GPSQueueLoss
from swclip.method.semivariogram_loss import LossVariogramFitter, SemivariogramWeightedLoss
from swclip.training.config import LossConfig

# --------------------------------------------------------------------------- losses


def build_loss(cfg: LossConfig, world_size: int = 1, rank: int = 0, fit_fn=None, model=None, seed: int = 0):
    """The loss module named by ``cfg.name``, wrapped in GeoCLIP's GPS queue when ``cfg.gps_queue`` > 0.

    fit_fn: the semivariogram loss's variogram fit (default :func:`variogram_fit_fn`). model: the SWCLIP
    model, whose ``encode_location`` encodes the queue (needed with a queue). seed: the queue's noise seed and the
    shuffled control's permutations.
    """
    base = _base_loss(cfg, world_size, rank, fit_fn, seed)
    if cfg.gps_queue <= 0:
        return base
    if model is None:
        raise ValueError("loss.gps_queue needs the model, to encode the queue's coordinates")
    embed_dim = int(model.embed_dim) if cfg.name == "semivariogram" else 0  # the image queue beside it
    queue = GPSQueue(cfg.gps_queue, embed_dim, cfg.queue_noise_m, cfg.gps_noise_m, seed=seed)
    return GPSQueueLoss(base, queue, lambda ll: model.encode_location(ll, None, check=False), world_size, rank)


def _base_loss(cfg: LossConfig, world_size: int, rank: int, fit_fn, seed: int = 0):

    if cfg.name == CLIP:
        return losses.ClipLoss(world_size=world_size, rank=rank)
    if cfg.name in SOFT_LABEL_LOSSES:
        sigma = cfg.sigma_start_m if cfg.sigma_start_m is not None else cfg.sigma_m
        return losses.SoftClipLoss(
            float(sigma),
            cfg.kernel,
            nc_weight=cfg.nc_weight if cfg.name == SWCLIP_NC else 0.0,
            nc_temperature=cfg.nc_temperature,
            world_size=world_size,
            rank=rank,
            targets={SMOOTH: "uniform", SHUFFLED: "shuffled"}.get(cfg.name, "kernel"),
            seed=seed,
        )
    if cfg.name == "semivariogram":
        if fit_fn is None:
            fit_fn = variogram_fit_fn(cfg)
        return SemivariogramWeightedLoss(
            cfg.variant,
            beta=cfg.beta,
            margin=cfg.margin,
            range_kind=cfg.range_kind,
            bank_size=cfg.bank_size,
            refit_every=cfg.refit_every,
            min_fit_samples=cfg.min_fit_samples,
            fit_fn=fit_fn,
            world_size=world_size,
            rank=rank,
        )
    raise ValueError(f"loss.name {cfg.name!r} unknown; choose one of {LOSSES}")


def variogram_fit_fn(cfg: LossConfig) -> LossVariogramFitter:
    """The semivariogram loss's fit, as ``cfg.variant`` defines it,
    with the config's model, max lag, bins and ρ rule."""
    return LossVariogramFitter(
        cfg.variant,
        model=cfg.variogram_model,
        range_kind=cfg.range_kind,
        max_lag_m=cfg.variogram_max_lag_m,
        bin_rad=cfg.variogram_bin_rad,
        rho_step_rad=cfg.rho_step_rad,
        rho_slope=cfg.rho_slope,
    )


def sigma_at(cfg: LossConfig, step: int, total_steps: int) -> float:
    """σ (metres) at optimiser step ``step``: geometric from sigma_start_m to sigma_m, then flat."""
    if cfg.sigma_start_m is None:
        return float(cfg.sigma_m)
    n = cfg.sigma_schedule_steps or total_steps
    frac = min(max(step / max(n, 1), 0.0), 1.0)
    lo, hi = max(float(cfg.sigma_m), 1e-3), max(float(cfg.sigma_start_m), 1e-3)
    return float(hi * (lo / hi) ** frac) if cfg.sigma_m > 0 else float(cfg.sigma_start_m) * (1 - frac)
