"""Distance kernels k_σ(D): the names, their checks and their values.

    gaussian:    exp(-D² / 2σ²)
    exponential: exp(-D / σ)
    onehot:      1[D == 0]   (the σ → 0 limit of both)

One module below everything that uses a kernel: the soft labels (``swclip.method.soft_labels``),
the variogram fit that suggests σ (``swclip.analysis.variogram``), the training config's checks and
the app's figures all read the same names and the same formula.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

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
        exponent = (
            d.mul_(1.0 / (math.sqrt(2.0) * sigma_m)).square_().neg_()
            if kernel == "gaussian"
            else d.mul_(-1.0 / sigma_m)
        )
        # exp() of exponents below the float's normal range takes a slow path on CPU (~10x for a
        # city batch at σ = 150 m) and gives denormals at best: clamp first, then set what fell
        # below the normal range to exactly 0 (far pairs stay exact zeros, as before)
        floor = math.log(torch.finfo(d.dtype).tiny) + 1.0
        return torch.nn.functional.threshold_(exponent.clamp_(min=floor).exp_(), math.exp(floor) * 1.001, 0.0)
    d = np.asarray(distance_m, dtype=np.float64)
    if kernel == "gaussian":
        return np.exp(-(d * d) * (0.5 / (sigma_m * sigma_m)))
    return np.exp(-d / sigma_m)
