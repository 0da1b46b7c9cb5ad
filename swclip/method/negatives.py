"""Which negatives the semivariogram-weighted loss treats as false or hard, for one batch.

The Negatives page's library: the same :func:`negative_weights` the loss calls,
on a batch of a run's embeddings, with the γ(h) the run used (its manifest's
``loss_variogram``) or, when it saved none, one fitted from the run's own
embeddings as the loss would fit it.

    h_ij   great-circle distance (metres)       c_ij = 1 − v_i·v_j (image embeddings)
    r_ij = γ(h_ij) − c_ij                        > 0: more alike than the variogram expects
    same place:     h ≤ PLACE_TOLERANCE_M (1 m)   positives of each other, never negatives
    false negative: h ≤ split and r > m          (near and alike)
    hard negative:  swclip: h > split and r > m  (far and alike)
                    chen2025: h ≤ ρ and c − γ > m (near and less alike than expected: penalised)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from swclip.geo import PLACE_TOLERANCE_M, pairwise_haversine_m
from swclip.method.semivariogram_loss import LossVariogram, fit_loss_variogram, negative_weights
from swclip.threads import limit_threads


@dataclass
class BatchNegatives:
    """One batch's negatives. All matrices (B, B), the diagonal and other photos of the same place (positives,
    ``same_place``) excluded from the masks.

    log_w: the log of each negative's weight (swclip: added to its logit; chen2025: the log of the factor
    multiplying its logit). strength: |r − m| for the false and hard pairs, 0 elsewhere.
    """

    h_m: np.ndarray
    cos_dist: np.ndarray
    gamma: np.ndarray
    log_w: np.ndarray
    false: np.ndarray
    hard: np.ndarray
    strength: np.ndarray
    variant: str
    split_m: float
    same_place: np.ndarray  # (B, B) bool: other photos of the row's place (positives), diagonal excluded

    @property
    def n_negatives(self) -> int:
        """Ordered pairs of different places: B(B − 1) less the same-place pairs."""
        return self.h_m.shape[0] * (self.h_m.shape[0] - 1) - int(self.same_place.sum())

    @property
    def n_same_place(self) -> int:
        """Unordered same-place pairs (positives beside the diagonal)."""
        return int(self.same_place.sum()) // 2

    def shares(self) -> tuple[float, float]:
        """(false, hard) as fractions of the B(B − 1) negatives."""
        n = max(self.n_negatives, 1)
        return float(self.false.sum()) / n, float(self.hard.sum()) / n


def batch_negatives(
    embeddings, latlon, variogram: LossVariogram, variant: str = "swclip", beta: float = 1.0, margin: float = 0.0
) -> BatchNegatives:
    """embeddings (B, D) L2-normalised, latlon (B, 2) degrees -> BatchNegatives, via the loss's own functions.

    One thread: a few (B, B) element-wise ops cost microseconds, and waking a thread team on the loaded
    2-core machine cost ~0.3 s per op (measured at B = 256, load 14).
    """
    v = torch.as_tensor(np.asarray(embeddings, np.float32))
    ll = torch.as_tensor(np.asarray(latlon, np.float64))
    with torch.no_grad(), limit_threads(1):
        h = pairwise_haversine_m(ll, dtype=torch.float32, check=False)  # (B, B)
        c = 1.0 - v @ v.T
        g = variogram.gamma_torch(h).float()
        log_w, false, hard = negative_weights(variant, h, c, g, variogram.split_m, beta, margin)
    eye = torch.eye(len(v), dtype=torch.bool)
    log_w[eye], false[eye], hard[eye] = 0.0, False, False
    r = (g - c).numpy()
    strength = np.where(false.numpy() | hard.numpy(), np.abs(r) - margin, 0.0)
    if variant == "chen2025":
        strength = np.where(hard.numpy(), log_w.numpy() / max(beta, 1e-12), strength)
    return BatchNegatives(
        h.numpy(),
        c.numpy(),
        g.numpy(),
        log_w.numpy(),
        false.numpy(),
        hard.numpy(),
        np.clip(strength, 0.0, None),
        variant,
        float(variogram.split_m),
        (h.numpy() <= PLACE_TOLERANCE_M) & ~eye.numpy(),
    )


def share_by_distance(neg: BatchNegatives, bins: int = 15) -> pd.DataFrame:
    """Per distance bin (equal width up to the largest pair distance): pairs, false share, hard share; pairs of
    different places only (same-place pairs are positives)."""
    iu = np.triu_indices(neg.h_m.shape[0], 1)
    iu = (iu[0][~neg.same_place[iu]], iu[1][~neg.same_place[iu]])
    h = neg.h_m[iu]
    both = lambda m: m[iu] | m.T[iu]  # noqa: E731  (a pair counts when either direction is flagged)
    fal, hrd = both(neg.false), both(neg.hard)
    edges = np.linspace(0.0, float(h.max()) if h.size else 1.0, bins + 1)
    k = np.clip(np.searchsorted(edges, h, side="right") - 1, 0, bins - 1)
    n = np.bincount(k, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        return pd.DataFrame(
            {
                "lag_m": (edges[:-1] + edges[1:]) / 2,
                "pairs": n,
                "false_share": np.bincount(k, fal, bins) / n,
                "hard_share": np.bincount(k, hrd, bins) / n,
            }
        )


def strongest_pairs(neg: BatchNegatives, kind: str, k: int = 6) -> pd.DataFrame:
    """The k strongest false (kind="false") or hard ("hard") negative pairs i < j:
    i, j, h_m, cos_dist, gamma, strength."""
    if kind not in ("false", "hard"):
        raise ValueError(f"kind must be 'false' or 'hard', got {kind!r}")
    mask = getattr(neg, kind)
    s = np.where(mask | mask.T, np.maximum(neg.strength, neg.strength.T), 0.0)
    i, j = np.triu_indices(s.shape[0], 1)
    keep = s[i, j] > 0
    i, j = i[keep], j[keep]
    top = np.argsort(-s[i, j], kind="stable")[:k]
    i, j = i[top], j[top]
    return pd.DataFrame(
        {
            "i": i,
            "j": j,
            "h_m": neg.h_m[i, j],
            "cos_dist": neg.cos_dist[i, j],
            "gamma": neg.gamma[i, j],
            "strength": s[i, j],
        }
    )


def run_variogram(
    manifest: dict,
    embeddings,
    latlon,
    variant: str,
    range_kind: str = "practical",
    max_lag_m: float | None = None,
    model: str = "exponential",
) -> tuple[LossVariogram | None, str]:
    """The γ(h) to show: the run's own (manifest "loss_variogram", when it used ``variant``), else one fitted
    from ``embeddings`` (N, D) / ``latlon`` (N, 2) as the loss fits it.
    -> (variogram or None, where it came from / why none)."""
    saved = manifest.get("loss_variogram")
    if saved and saved.get("variant", variant) == variant:
        lv = LossVariogram.from_dict(saved)
        return (
            lv,
            f"the variogram the run's loss used (fitted at optimiser step {lv.step} from {lv.bank_size} bank rows)",
        )
    fit, reason = fit_loss_variogram(
        embeddings, latlon, variant, model=model, range_kind=range_kind, max_lag_m=max_lag_m
    )
    if fit is None:
        return None, f"no variogram could be fitted to this run's embeddings: {reason}"
    return (
        fit,
        f"fitted here from the run's {len(latlon)} evaluation embeddings (the run saved none for variant {variant})",
    )
