"""Soft-label target matrices from geodesic distance (Tobler's first law).

The page that shows target matrices and the SW-CLIP loss call the same
function, :func:`soft_targets`, so what the app draws is what training uses.

    D = pairwise great-circle distance, metres            (B, B)
    K = k_sigma(D)      gaussian:    exp(-D² / 2σ²)
                        exponential: exp(-D / σ)
                        onehot:      1[D == 0]   (the σ → 0 limit of both)
    Q = K / K.sum(1)    rows sum to 1

The diagonal of K is always 1, so no row is ever empty. Samples at the very
same spot (D == 0) get equal mass; for distinct locations σ → 0 gives the
identity and SW-CLIP falls back to CLIP exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from swclip.geo import check_latlon, pairwise_haversine_m
from swclip.kernels import check_kernel, kernel_weights


def soft_targets(latlon: Any, sigma_m: float, kernel: str = "gaussian", latlon_cols: Any = None, check: bool = True):
    """Row-stochastic SW-CLIP targets Q.

    latlon: (B, 2) degrees. Returns (B, B) with rows summing to 1: numpy float64
    for numpy input, torch float32 on the input's device for torch input (the
    distances use float64 unit vectors, see ``pairwise_haversine_m``).

    For distributed training, ``latlon`` holds this rank's rows and
    ``latlon_cols`` the gathered global batch (B_global, 2); the result is then
    (B_local, B_global). Each row's own sample is found by D == 0, so no index
    offset is needed.
    """
    check_kernel(kernel, sigma_m)
    if check:  # the losses pass check=False: a per-step host sync on GPU; the data layer validates
        check_latlon(latlon)
        if latlon_cols is not None:
            check_latlon(latlon_cols, "latlon_cols")
    cols = latlon if latlon_cols is None else latlon_cols
    if type(latlon).__module__.startswith("torch"):
        import torch

        # one (B, M) float32 buffer: the distances, then the kernel and the targets, in place
        k = pairwise_haversine_m(latlon, latlon_cols, dtype=torch.float32, check=False)  # (B, M) metres
        k = kernel_weights(k, sigma_m, kernel, inplace=True)
        return k.div_(k.sum(1, keepdim=True))
    k = kernel_weights(pairwise_haversine_m(latlon, cols, check=False), sigma_m, kernel)  # (B, M) float64
    return k / k.sum(1, keepdims=True)


def effective_positives(targets: Any):
    """Effective number of positives per row, 1 / Σ_j q_ij² (1 for one-hot, B for uniform).

    targets: (B, M) row-stochastic. Returns (B,).
    """
    return 1.0 / (targets * targets).sum(1)


def matched_smoothing_targets(targets: Any, own_cols: Any):
    """Label smoothing with the same per-row off-diagonal mass as ``targets``, spread uniformly.

    targets: (B, M) row-stochastic (SW-CLIP's ``soft_targets``); own_cols: (B,) the column of each row's own
    sample. Row i keeps its own-column entry q_i = targets[i, own_cols[i]] and gives 1 − q_i, the mass SW-CLIP
    puts on other samples, to the other M − 1 columns in equal parts, whatever their distance:

        q'_i,own = q_i        q'_ij = (1 − q_i) / (M − 1)   for j ≠ own

    A control for SW-CLIP: the same amount of soft-label regularisation, none of the spatial structure.
    -> (B, M), the input's type and dtype (rows sum to 1); M = 1 returns a copy.
    """
    b, m = targets.shape
    if type(targets).__module__.startswith("torch"):
        import torch

        rows = torch.arange(b, device=targets.device)
        own = targets[rows, own_cols]  # (B,)
        out = ((1.0 - own) / max(m - 1, 1)).unsqueeze(1).expand(b, m).clone()  # (B, M)
    else:
        rows = np.arange(b)
        own = targets[rows, own_cols]
        out = np.repeat(((1.0 - own) / max(m - 1, 1))[:, None], m, axis=1)
    out[rows, own_cols] = own
    return out


def shuffled_targets(latlon_cols: Any, permutation: Any, sigma_m: float, kernel: str = "gaussian", rows: Any = None):
    """SW-CLIP's targets computed on permuted locations: the kernel's weights, given to the wrong pairs.

    latlon_cols: (M, 2) degrees, the batch's locations (the gathered global batch when distributed);
    permutation: (M,) a permutation of range(M); rows: the slice of columns that are this process's rows
    (default all). Pair (i, j) gets k_σ(d(π(i), π(j))), so the diagonal is still k(0) and each row's mass off
    it has the distribution SW-CLIP's has, but it no longer says which samples are near.
    -> (len(rows), M) row-stochastic, as ``soft_targets``.
    """
    permuted = latlon_cols[permutation]  # (M, 2)
    own = permuted if rows is None else permuted[rows]
    return soft_targets(own, sigma_m, kernel, latlon_cols=permuted, check=False)
