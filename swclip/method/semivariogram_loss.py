"""Semivariogram-weighted negatives: two named variants, one memory bank, one fitted γ(h).

A negative pair (i, j) sits at great-circle distance h = D[i, j] (metres) and
cosine distance c = 1 − v_i·v_j between the two *image* embeddings. γ(h) is the
semivariogram of c against h, fitted to a memory bank of recent
(embedding, latlon) pairs; r = γ(h) − c says how much more alike the pair is
than the variogram expects at its distance.

variant "swclip" (ours, the default):
    symmetric InfoNCE, ½ [CE(S, I) + CE(Sᵀ, I)], S = scale · V Lᵀ, with the
    negatives' terms in the denominators multiplied by w_ij (photos of one place, h ≤ PLACE_TOLERANCE_M,
    are positives of each other: never false or hard, w = 1):
        h ≤ R and r > m:   w = exp(−β (r − m))   likely false negative (near and alike)
        h > R and r > m:   w = exp(+β (r − m))   hard negative (far and alike)
        otherwise          w = 1
    R is the fitted range, ``range_kind`` "practical" (where γ reaches 95 % of
    its partial sill, the same for every model; the default) or "effective"
    (scikit-gstat's range parameter). m ≥ 0 is the margin.
    γ: ``variogram_model`` (default exponential) fitted to 20 fixed bins.

variant "chen2025" (as Chen et al., SIGSPATIAL 2025, built it in their public code):
    GeoCLIP's objective, image → GPS only: CE over the (gathered) batch's
    locations plus the GPS queue's, if there is one. Negative logits are
    multiplied by exp(β p) (β = 1 is theirs), positives untouched:
        p = max(0, c − γ(h) − m)  for h ≤ ρ,  p = 0 beyond ρ
    γ: a stable model with nugget fitted to the mean cosine distance per
    0.001-rad bin (``bin_rad``), x = bin centres. ρ: on a grid of step
    ``rho_step_rad`` (0.01 rad), the first t where (γ(t + Δ) − γ(t)) / Δ falls
    below ``rho_slope`` (1e-2 per radian).
    Reported as hard negatives: the penalised pairs (p > 0); as false
    negatives: near pairs (h ≤ ρ) more alike than γ expects (r > m), which
    this variant leaves at weight 1.

Refits run every ``refit_every`` *optimiser* steps (the trainer calls
:meth:`optimizer_step` after each one), from the bank, which every training
forward fills with the gathered batch (the same on every rank). Until a fit
exists the loss equals its base loss (swclip: ClipLoss; chen2025: GeoCLIP's
CE); a fit that cannot be made is logged once and changes nothing.

All (B, M) products are computed in float32 with autocast off. The loss's
state (bank, step counter, the fitted variogram as plain numbers) travels
through ``state_dict()`` / ``load_state_dict()`` (``get_extra_state``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from swclip.analysis.empirical_variogram import empirical_variogram
from swclip.analysis.variogram import NUGGET_WARN, VariogramFit, fit_best, fit_variogram
from swclip.geo import EARTH_RADIUS_M, PLACE_TOLERANCE_M, pairwise_haversine_m
from swclip.method.losses import gather_batch, similarity

log = logging.getLogger("swclip")

VARIANTS = ("swclip", "chen2025")
RANGE_KINDS = ("practical", "effective")
CHEN_BIN_RAD = 1e-3  # their lag bins
CHEN_RHO_STEP_RAD = 1e-2  # their grid for dγ/dh
CHEN_RHO_SLOPE = 1e-2  # per radian
# γ(h) on the CPU in row blocks of at most this many elements (16 MB of float32), see gamma_blocked
CPU_BLOCK_ELEMENTS = 1 << 22


# ------------------------------------------------------------------------------------ the variogram the loss uses


@dataclass
class LossVariogram:
    """The fitted γ(h) a loss uses, and the distance that splits near from far.

    split_m: the range (variant swclip: practical or effective) or ρ (chen2025), metres.
    split_kind: "practical", "effective" or "rho". step: the optimiser step of the fit.
    bank_size: rows the fit was made from. fit: scikit-gstat-model parameters (VariogramFit).
    """

    fit: VariogramFit
    split_m: float
    split_kind: str
    step: int
    bank_size: int

    def gamma_torch(self, h_m: torch.Tensor) -> torch.Tensor:
        return self.fit.gamma_torch(h_m)

    def to_dict(self) -> dict:
        """Plain numbers and strings: JSON (manifest) and torch.load(weights_only=True) both read it."""
        return {
            "model": self.fit.model,
            "params": self.fit.to_dict(),
            "split_m": float(self.split_m),
            "split_kind": self.split_kind,
            "step": int(self.step),
            "bank_size": int(self.bank_size),
        }

    @classmethod
    def from_dict(cls, d: dict) -> LossVariogram:
        params = {k: v for k, v in d["params"].items()}
        for k in ("nugget", "partial_sill", "sill", "range_m", "rmse", "r2", "max_lag_m", "nugget_ratio"):
            if params.get(k) is None:
                params[k] = float("nan")
        return cls(VariogramFit(**params), float(d["split_m"]), d["split_kind"], int(d["step"]), int(d["bank_size"]))


def chen_rho_m(fit: VariogramFit, step_rad: float = CHEN_RHO_STEP_RAD, slope_per_rad: float = CHEN_RHO_SLOPE) -> float:
    """ρ (metres): the first grid point t = kΔ (radians) where (γ(t + Δ) − γ(t)) / Δ < slope; π·R if none."""
    t = np.arange(0.0, math.pi, step_rad)
    g = fit.gamma(t * EARTH_RADIUS_M)
    slope = np.diff(g) / step_rad
    below = np.flatnonzero(slope < slope_per_rad)
    return float(t[below[0]] * EARTH_RADIUS_M) if below.size else math.pi * EARTH_RADIUS_M


def fit_loss_variogram(
    embeddings,
    latlon,
    variant: str = "swclip",
    model: str = "exponential",
    range_kind: str = "practical",
    max_lag_m: float | None = None,
    bin_rad: float = CHEN_BIN_RAD,
    rho_step_rad: float = CHEN_RHO_STEP_RAD,
    rho_slope: float = CHEN_RHO_SLOPE,
    max_pairs: int | None = 1_000_000,
    max_nugget_ratio: float = NUGGET_WARN,
    seed: int = 0,
) -> tuple[LossVariogram | None, str]:
    """Fit γ(h) of cosine distance to (embeddings (N, D), latlon (N, 2)) as ``variant`` does.

    swclip: ``model`` ("best": the lowest RMSE of all) on 20 fixed bins up to ``max_lag_m``.
    chen2025: a stable model with nugget on ``bin_rad`` bins up to π, x = bin centres; ρ by :func:`chen_rho_m`.
    -> (LossVariogram, "") or (None, reason) when no usable fit exists: too few samples, fewer non-empty
    bins than parameters (a city's pairs all in one 6.4-km bin), or no spatial structure (a nugget of at
    least ``max_nugget_ratio`` of the sill, or a partial sill of 0).
    """
    if variant not in VARIANTS:
        raise ValueError(f"semivariogram variant {variant!r} unknown; choose one of {VARIANTS}")
    if variant == "chen2025":
        edges = np.arange(0.0, math.pi + bin_rad, bin_rad) * EARTH_RADIUS_M
        emp = empirical_variogram(
            latlon, embeddings=embeddings, dissimilarity="cosine", bins=edges, max_pairs=max_pairs, seed=seed
        )
        fit = fit_variogram(emp, "stable", nugget=True, lag="centre")
    else:
        emp = empirical_variogram(
            latlon,
            embeddings=embeddings,
            dissimilarity="cosine",
            bins=20,
            max_lag_m=max_lag_m,
            max_pairs=max_pairs,
            seed=seed,
        )
        fit = fit_best(emp, nugget=True) if model == "best" else fit_variogram(emp, model, nugget=True)
    if not fit.ok:
        return None, fit.reason
    if not (fit.partial_sill > 0 and math.isfinite(fit.range_m)) or fit.nugget_ratio >= max_nugget_ratio:
        return None, (
            f"no spatial structure: the nugget is {100 * fit.nugget_ratio:.0f} % of the sill"
            if math.isfinite(fit.nugget_ratio)
            else "no spatial structure: the partial sill is 0"
        )
    if variant == "chen2025":
        split, kind = chen_rho_m(fit, rho_step_rad, rho_slope), "rho"
    else:
        split, kind = (fit.practical_range_m() if range_kind == "practical" else fit.range_m), range_kind
    return LossVariogram(fit, float(split), kind, 0, int(len(latlon))), ""


class LossVariogramFitter:
    """The loss's ``fit_fn``: (embeddings (N, D), latlon (N, 2)) -> LossVariogram or None.

    Keyword arguments as :func:`fit_loss_variogram`; ``last_reason`` says why the last call found no fit.
    """

    def __init__(self, variant: str = "swclip", **kwargs):
        self.variant, self.kwargs, self.last_reason = variant, kwargs, ""

    def __call__(self, embeddings, latlon) -> LossVariogram | None:
        fit, self.last_reason = fit_loss_variogram(embeddings, latlon, self.variant, **self.kwargs)
        return fit


def split_distance_m(variogram) -> float:
    """Near/far split of any variogram object the loss accepts: ``split_m`` (LossVariogram), else ``range_m``."""
    split = getattr(variogram, "split_m", None)
    return float(variogram.range_m if split is None else split)


# ------------------------------------------------------------------------------------ weights (loss and page)


def negative_weights(
    variant: str,
    h_m: torch.Tensor,
    cos_dist: torch.Tensor,
    gamma: torch.Tensor,
    split_m: float,
    beta: float,
    margin: float = 0.0,
    inplace: bool = False,
    same_place_m: float = PLACE_TOLERANCE_M,
):
    """Per-pair re-weighting of negatives. All inputs (B, M) float32 except split_m, beta, margin.

    Pairs at most ``same_place_m`` apart are photos of one place (the headings of one panorama): positives of
    each other, never false or hard negatives, weight 1 (log_w 0).

    -> (log_w (B, M), false (B, M) bool, hard (B, M) bool).
    swclip: log_w = ∓β(r − m) is added to the logits (w multiplies exp(s)).
    chen2025: log_w = β p is the log of the factor exp(β p) that multiplies the logits.
    Positives are not masked here; the caller zeroes their entries.
    ``inplace=True`` writes log_w into ``cos_dist`` and 1.0 / 0.0 (near / far) into ``h_m`` (the loss's
    path: at B = 4096 each (B, M) float temporary is a fresh 64-MB mapping); the values are the same
    either way, bit for bit.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {VARIANTS}")
    same_place = h_m <= same_place_m  # (B, M) bool, before the in-place path overwrites h_m
    log_w = cos_dist if inplace else cos_dist.clone()
    r = torch.sub(gamma, log_w, out=log_w)  # (B, M) r = γ − c: > 0 when the pair is more alike than expected
    near = h_m <= split_m  # (B, M) bool
    near_f = torch.le(h_m, split_m, out=h_m) if inplace else near.float()  # (B, M) 1.0 near, 0.0 far
    if variant == "swclip":
        alike = r > margin  # r − m > 0
        false = alike & near
        hard = alike.logical_xor_(false)  # alike & ~near
        if margin:
            r.sub_(margin)
        # ∓β (r − m)⁺: β (r − m) where alike (0 elsewhere), then times 1 − 2·near (−1 near, +1 far), exactly
        r.clamp_(min=0.0).mul_(beta)
        torch.addcmul(r, r, near_f, value=-2.0, out=r)
    else:
        false = near & (r > margin)
        p = r.neg_()  # c − γ
        if margin:
            p.sub_(margin)
        p.clamp_(min=0.0).mul_(near_f)  # p = max(0, c − γ − m) near, 0 beyond ρ
        hard = p > 0
        p.mul_(beta)
    # a γ that is NaN (or inf) somewhere changes nothing there; one place's photos are never negatives
    false &= ~same_place
    hard &= ~same_place
    return log_w.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0).masked_fill_(same_place, 0.0), false, hard


def gamma_blocked(variogram, h_m: torch.Tensor) -> torch.Tensor:
    """γ(h_m) as float32, h_m (B, K) metres -> (B, K); on the CPU in blocks of rows.

    Each temporary of γ's formula (six for the exponential model) is a fresh (B, K) tensor, and glibc
    maps every block over 32 MB anew and unmaps it when freed: at B = 4096 (64 MB) the page faults
    took ~45 % of γ's time. Blocks of at most ``CPU_BLOCK_ELEMENTS`` come from the heap and are reused.
    Elementwise, so the same numbers as one call.
    """
    if h_m.device.type != "cpu" or h_m.ndim != 2 or h_m.numel() <= CPU_BLOCK_ELEMENTS:
        return variogram.gamma_torch(h_m).float()
    out = torch.empty(h_m.shape, dtype=torch.float32)
    step = max(1, CPU_BLOCK_ELEMENTS // h_m.shape[1])
    for r0 in range(0, h_m.shape[0], step):
        out[r0 : r0 + step] = variogram.gamma_torch(h_m[r0 : r0 + step])
    return out


class _SymmetricCrossEntropy(torch.autograd.Function):
    """½ [CE(X, I) + CE(Xᵀ, I)] of a square X (B, B), the diagonal the positives -> scalar.

    What ``(F.cross_entropy(X, I) + F.cross_entropy(X.T, I)) / 2`` computes, with three (B, B)
    temporaries instead of about nine: row and column log-sum-exp in one reused buffer, and the
    gradient (softmax over rows + softmax over columns − 2I) / 2B built in place.
    """

    @staticmethod
    def forward(ctx, x):
        buf = torch.empty_like(x)
        m_r, m_c = x.amax(1, keepdim=True), x.amax(0, keepdim=True)  # (B, 1), (1, B)
        lse_r = torch.sub(x, m_r, out=buf).exp_().sum(1).log_().add_(m_r.squeeze(1))  # (B,)
        lse_c = torch.sub(x, m_c, out=buf).exp_().sum(0).log_().add_(m_c.squeeze(0))  # (B,)
        ctx.save_for_backward(x, lse_r, lse_c)
        return (lse_r.mean() + lse_c.mean()) / 2 - x.diagonal().mean()

    @staticmethod
    def backward(ctx, grad_out):
        x, lse_r, lse_c = ctx.saved_tensors
        b = x.shape[0]
        grad = torch.sub(x, lse_r[:, None]).exp_()  # (B, B) softmax over each row
        grad.add_(torch.sub(x, lse_c[None, :]).exp_()).mul_(grad_out / (2 * b))  # + softmax over each column
        grad.diagonal().sub_(grad_out / b)
        return grad


def symmetric_cross_entropy(logits):
    """½ [CE(X, I) + CE(Xᵀ, I)] for square logits X (B, B) (see _SymmetricCrossEntropy) -> scalar."""
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"symmetric_cross_entropy needs square (B, B) logits, got {tuple(logits.shape)}")
    return _SymmetricCrossEntropy.apply(logits)


# ------------------------------------------------------------------------------------ memory bank


class EmbeddingMemoryBank:
    """Ring buffer of the most recent (embedding, latlon) pairs: embeddings (N, D) float32, latlon (N, 2) float64."""

    def __init__(self, size: int):
        if size < 2:
            raise ValueError(f"memory bank size must be >= 2, got {size}")
        self.size, self.embeddings, self.latlon, self.next, self.count = int(size), None, None, 0, 0

    def push(self, embeddings: torch.Tensor, latlon: torch.Tensor) -> None:
        embeddings, latlon = embeddings.detach().float(), latlon.detach().to(torch.float64)
        if self.embeddings is None:
            self.embeddings = embeddings.new_zeros(self.size, embeddings.shape[1])
            self.latlon = latlon.new_zeros(self.size, 2)
        elif self.embeddings.device != embeddings.device:  # restored on the CPU, training on a GPU
            self.embeddings, self.latlon = self.embeddings.to(embeddings.device), self.latlon.to(embeddings.device)
        n = min(embeddings.shape[0], self.size)
        idx = (self.next + torch.arange(n, device=embeddings.device)) % self.size
        self.embeddings[idx], self.latlon[idx] = embeddings[-n:], latlon[-n:]
        self.next, self.count = (self.next + n) % self.size, min(self.count + n, self.size)

    def contents(self):
        """(embeddings (N, D), latlon (N, 2)) of the filled rows."""
        return self.embeddings[: self.count], self.latlon[: self.count]

    def state(self) -> dict:
        out = {"size": self.size, "next": self.next, "count": self.count}
        if self.embeddings is not None:
            out["embeddings"], out["latlon"] = self.embeddings.cpu().clone(), self.latlon.cpu().clone()
        return out

    def load(self, state: dict) -> None:
        if int(state["size"]) != self.size:
            raise ValueError(f"checkpoint's memory bank holds {state['size']} rows; this loss has {self.size}")
        self.next, self.count = int(state["next"]), int(state["count"])
        self.embeddings, self.latlon = state.get("embeddings"), state.get("latlon")


# ------------------------------------------------------------------------------------ the loss


class SemivariogramWeightedLoss(nn.Module):
    """Semivariogram-weighted negatives, variant "swclip" or "chen2025" (see the module docstring).

    forward(image_features (B, D), location_features (B, D), logit_scale, latlon (B, 2),
            queue_location_features (Q, D) | None, queue_latlon (Q, 2) | None,
            queue_image_features (Q, D) | None)
      -> {"contrastive_loss", "false_negative_frac", "hard_negative_frac", "variogram_range_m"}
    The last three are statistics without gradient (the trainer logs every term; only
    "contrastive_loss" carries a gradient, the others are detached 0-d tensors ... see ``LOSS_TERMS``).
    """

    def __init__(
        self,
        variant: str = "swclip",
        beta: float = 1.0,
        margin: float = 0.0,
        range_kind: str = "practical",
        bank_size: int = 4096,
        refit_every: int = 100,
        min_fit_samples: int = 256,
        fit_fn: Callable | None = None,
        world_size: int = 1,
        rank: int = 0,
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"semivariogram variant {variant!r} unknown; choose one of {VARIANTS}")
        if range_kind not in RANGE_KINDS:
            raise ValueError(f"range_kind {range_kind!r} unknown; choose one of {RANGE_KINDS}")
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0, got {margin}")
        if refit_every < 0:
            raise ValueError(f"refit_every must be >= 0 optimiser steps, got {refit_every}")
        self.variant, self.beta, self.margin, self.range_kind = variant, float(beta), float(margin), range_kind
        self.refit_every, self.min_fit_samples = int(refit_every), int(min_fit_samples)
        self.bank = EmbeddingMemoryBank(bank_size)
        self.fit_fn = fit_fn  # (embeddings, latlon) -> variogram (gamma_torch + split_m or range_m) or None
        self.world_size, self.rank = world_size, rank
        self.variogram: LossVariogram | None = None
        self.steps = 0  # optimiser steps seen (optimizer_step calls)
        self.warned = False

    # -- variogram state ----------------------------------------------------------------------------------------
    def set_variogram(self, variogram) -> None:
        """Use ``variogram`` (``gamma_torch(h_m)`` and ``split_m`` or ``range_m``); None turns weighting off."""
        self.variogram = variogram

    def optimizer_step(self) -> None:
        """Count one optimiser step; refit every ``refit_every`` of them. The trainer calls this after each step."""
        self.steps += 1
        if self.refit_every > 0 and self.steps % self.refit_every == 0:
            self.refit()

    def refit(self) -> None:
        """Fit γ(h) from the bank now. No fit (too few rows, no structure): keep the last one, warn once."""
        if self.fit_fn is None:
            return
        if self.bank.count < self.min_fit_samples:
            reason = f"the memory bank holds {self.bank.count} rows, fewer than min_fit_samples={self.min_fit_samples}"
            fit = None
        else:
            fit = self.fit_fn(*self.bank.contents())
            reason = getattr(self.fit_fn, "last_reason", "") or "the fit function returned none"
        if fit is not None:
            if isinstance(fit, LossVariogram):
                fit.step, fit.bank_size = self.steps, self.bank.count
            self.variogram = fit
        elif not self.warned:
            self.warned = True
            log.warning(
                "semivariogram loss (%s) at optimiser step %d: no usable variogram fit (%s); %s",
                self.variant,
                self.steps,
                reason,
                "the loss stays its base loss" if self.variogram is None else "keeping the previous fit",
            )

    def record(self) -> dict | None:
        """What the run's manifest keeps: the variogram this loss used, its variant, β and margin (None: no fit)."""
        if not isinstance(self.variogram, LossVariogram):
            return None
        return {
            **self.variogram.to_dict(),
            "variant": self.variant,
            "beta": self.beta,
            "margin": self.margin,
            "range_kind": self.range_kind if self.variant == "swclip" else "rho",
            "refit_every": self.refit_every,
        }

    def get_extra_state(self) -> dict:
        return {
            "bank": self.bank.state(),
            "steps": self.steps,
            "warned": self.warned,
            "variogram": self.variogram.to_dict() if isinstance(self.variogram, LossVariogram) else None,
        }

    def set_extra_state(self, state: dict) -> None:
        self.bank.load(state["bank"])
        self.steps, self.warned = int(state["steps"]), bool(state["warned"])
        self.variogram = None if state["variogram"] is None else LossVariogram.from_dict(state["variogram"])

    # -- forward ------------------------------------------------------------------------------------------------
    def forward(
        self,
        image_features,
        location_features,
        logit_scale,
        latlon,
        queue_location_features=None,
        queue_latlon=None,
        queue_image_features=None,
        **_,
    ):
        if image_features.ndim != 2 or image_features.shape != location_features.shape:
            raise ValueError(
                "image_features and location_features must both be (B, D); got "
                f"{tuple(image_features.shape)} and {tuple(location_features.shape)}"
            )
        if tuple(latlon.shape) != (image_features.shape[0], 2):
            raise ValueError(f"latlon must be (B, 2) = ({image_features.shape[0]}, 2), got {tuple(latlon.shape)}")
        all_image, all_location, all_latlon = gather_batch(image_features, location_features, latlon, self.world_size)
        if self.training:
            self.bank.push(all_image, all_latlon)
        b = image_features.shape[0]
        labels = torch.arange(b, device=image_features.device) + self.rank * b
        cols_location, cols_latlon, cols_image = all_location, all_latlon, all_image
        if queue_location_features is not None:
            cols_location = torch.cat([all_location, queue_location_features], 0)
            cols_latlon = torch.cat([all_latlon, queue_latlon.to(all_latlon.dtype)], 0)
            if queue_image_features is not None:  # the image queue, aligned with the GPS queue (Chen et al.)
                cols_image = torch.cat([all_image, queue_image_features], 0)
        logits_per_image = similarity(image_features, cols_location, logit_scale)  # (B, W·B [+ Q]) float32
        log_w, stats = self._log_weights(image_features, cols_image, latlon, cols_latlon, labels)
        # in place on the product's output: mm's backward needs its inputs, not its result
        if self.variant == "swclip":
            if log_w is not None:
                logits_per_image.add_(log_w)
            n = all_image.shape[0]
            if self.world_size == 1:
                # one process: the location -> image logits are the transpose (the weights are symmetric,
                # w_ij = w_ji), so one B×B product forward and two backward instead of two and four; the
                # transpose's cross-entropy read down the columns (a CE of Xᵀ copies X and adds a transposed
                # gradient, ~25 % slower at B = 4096)
                if logits_per_image.shape[1] == n:  # no queue columns: both directions in one fused pass
                    return {"contrastive_loss": symmetric_cross_entropy(logits_per_image), **stats}
                square = logits_per_image[:, :n]  # (B, B)
                loss_per_location = (torch.logsumexp(square, 0) - square.diagonal()).mean()
            else:  # this rank's locations against the gathered images: not a transpose of the above
                logits_per_location = similarity(location_features, all_image, logit_scale)  # (B, W·B)
                if log_w is not None:
                    logits_per_location.add_(log_w[:, :n])
                loss_per_location = F.cross_entropy(logits_per_location, labels)
            loss = (F.cross_entropy(logits_per_image, labels) + loss_per_location) / 2
        else:
            if log_w is not None:
                logits_per_image.mul_(log_w.exp_())  # positives have log_w = 0, factor 1
            loss = F.cross_entropy(logits_per_image, labels)
        return {"contrastive_loss": loss, **stats}

    def _log_weights(self, image_features, cols_image, latlon, cols_latlon, labels):
        """-> (log_w (B, M) or None, stats dict of detached 0-d tensors).

        cols_image (K, D), K ≤ M: the images behind the first K columns; columns past K (queue entries
        without an image embedding) keep weight 1.
        """
        zero = image_features.new_zeros(()).float()
        if self.variogram is None:
            return None, {"false_negative_frac": zero, "hard_negative_frac": zero, "variogram_range_m": zero}
        with torch.no_grad():
            b, k, m_all = len(labels), cols_image.shape[0], cols_latlon.shape[0]
            h_m = pairwise_haversine_m(latlon, cols_latlon[:k], dtype=torch.float32, check=False)  # (B, K)
            gamma = gamma_blocked(self.variogram, h_m)  # (B, K)
            cos_dist = similarity(image_features, cols_image, 1.0).neg_().add_(1.0)  # (B, K) 1 − v_i·v_j
            split_m = split_distance_m(self.variogram)
            log_w, false, hard = negative_weights(
                self.variant, h_m, cos_dist, gamma, split_m, self.beta, self.margin, inplace=True
            )
            del h_m, gamma
            rows = torch.arange(b, device=labels.device)
            log_w[rows, labels] = 0.0
            if k < m_all:  # queue columns with no image: weight 1
                log_w = F.pad(log_w, (0, m_all - k))
            # fractions of the negatives with an image to compare: all (B, K) pairs but each row's positive;
            # count_nonzero: a bool (B, K) .sum() converts to int64 first, ~15x slower at B = 4096
            n_neg = max(b * k - b, 1)
            n_false = torch.count_nonzero(false) - torch.count_nonzero(false[rows, labels])
            n_hard = torch.count_nonzero(hard) - torch.count_nonzero(hard[rows, labels])
            stats = {
                "false_negative_frac": n_false / n_neg,
                "hard_negative_frac": n_hard / n_neg,
                "variogram_range_m": log_w.new_full((), split_m),  # a fill: torch.tensor would copy from the host
            }
        return log_w, stats
