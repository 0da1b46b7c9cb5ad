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

import math
from typing import Any

import numpy as np

from swclip.geo import check_latlon, pairwise_haversine_m

KERNELS = ("gaussian", "exponential", "onehot")

# Bandwidths below a micrometre are the one-hot limit: float32 distances cannot
# resolve them, and 1/σ² would overflow to inf and turn D = 0 into NaN.
MIN_SIGMA_M = 1e-6


def check_kernel(kernel: str, sigma_m: float) -> None:
    """Raise ValueError for an unknown kernel or a negative / non-finite σ."""
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {KERNELS}")
    if not (isinstance(sigma_m, (int, float, np.floating, np.integer)) and math.isfinite(sigma_m)) or sigma_m < 0:
        raise ValueError(f"sigma_m must be a finite number of metres >= 0, got {sigma_m!r}")


def kernel_weights(distance_m: Any, sigma_m: float, kernel: str = "gaussian", inplace: bool = False):
    """Kernel k_σ(D) applied elementwise; numpy or torch, dtype preserved.

    distance_m: any shape, metres. σ = 0 (below ``MIN_SIGMA_M``), or kernel
    ``onehot``, gives 1[D == 0]. ``inplace=True`` (torch only) overwrites ``distance_m``, which saves the
    B×B temporaries on the loss path.
    """
    check_kernel(kernel, sigma_m)
    is_torch = type(distance_m).__module__.startswith("torch")
    if kernel == "onehot" or sigma_m < MIN_SIGMA_M:
        same = distance_m == 0
        return same.to(distance_m.dtype) if is_torch else same.astype(np.float64)
    if is_torch:
        import torch

        d = distance_m if inplace else distance_m.clone()
        exponent = d.mul_(1.0 / (math.sqrt(2.0) * sigma_m)).square_().neg_() if kernel == "gaussian" else d.mul_(-1.0 / sigma_m)
        # exp() of exponents below the float's normal range takes a slow path on CPU (~10x for a
        # city batch at σ = 150 m) and gives denormals at best: clamp first, then set what fell
        # below the normal range to exactly 0 (far pairs stay exact zeros, as before)
        floor = math.log(torch.finfo(d.dtype).tiny) + 1.0
        return torch.nn.functional.threshold_(exponent.clamp_(min=floor).exp_(), math.exp(floor) * 1.001, 0.0)
    d = np.asarray(distance_m, dtype=np.float64)
    if kernel == "gaussian":
        return np.exp(-(d * d) * (0.5 / (sigma_m * sigma_m)))
    return np.exp(-d / sigma_m)


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
