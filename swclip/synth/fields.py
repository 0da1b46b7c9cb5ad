"""Latent Gaussian random fields over a city, sampled by random Fourier features.

Each field is a stationary, isotropic GRF with Gaussian covariance

    C(h) = exp(-3 h² / range_m²)

so ``range_m`` is the *practical range*: the correlation has fallen to
e⁻³ ≈ 5 % at ``h = range_m`` (the convention of scikit-gstat's exponential and
Gaussian models, up to their own scaling of ``r``). The equivalent length scale is
``range_m / sqrt(6)``.

The spectral method (Rahimi & Recht 2007): with ω ~ N(0, I/ℓ²) and
b ~ U(0, 2π), ``f(x) = sqrt(2/M) Σ_m cos(ω_m·x + b_m)`` has exactly the covariance
C in expectation, and is close to Gaussian for M in the hundreds. We only need
the field at the sample points, so this costs O(N·M) instead of a grid FFT, and
the app can re-evaluate the same field anywhere from (seed, range_m,
n_features) alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import ndtr

N_FEATURES = 512


@dataclass(frozen=True)
class FieldSpec:
    """One latent field of one city: everything needed to re-evaluate it."""

    name: str
    range_m: float  # practical range: correlation e^-3 ≈ 0.05 at this distance
    seed: int  # numpy default_rng seed of the Fourier features
    n_features: int = N_FEATURES
    covariance: str = "gaussian: exp(-3 h^2 / range_m^2)"

    @property
    def length_scale_m(self) -> float:
        return self.range_m / np.sqrt(6.0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["length_scale_m"] = self.length_scale_m
        return d


def field_values(spec: FieldSpec, xy_m: np.ndarray) -> np.ndarray:
    """Standard-normal field values at local (east, north) metres.

    xy_m: (N, 2) metres in the city's local frame (see ``swclip.geo.degrees_to_local_metres``
    about the city centre). Returns (N,) float64 with mean ≈ 0 and variance ≈ 1.
    """
    xy = np.asarray(xy_m, dtype=np.float64)
    rng = np.random.default_rng(spec.seed)
    omega = rng.normal(0.0, 1.0 / spec.length_scale_m, size=(spec.n_features, 2))  # (M, 2) rad/m
    phase = rng.uniform(0.0, 2.0 * np.pi, size=spec.n_features)  # (M,)
    return np.sqrt(2.0 / spec.n_features) * np.cos(xy @ omega.T + phase).sum(1)  # (N,)


def field_uniform(spec: FieldSpec, xy_m: np.ndarray) -> np.ndarray:
    """Field values pushed through the normal CDF: (N,) in (0, 1), evenly spread.

    Rendering maps each field to a visual parameter linearly from this scale, so every
    field uses its whole visible range.
    """
    return ndtr(field_values(spec, xy_m))


def correlation(h_m: np.ndarray, range_m: float) -> np.ndarray:
    """The true correlation of a field at separation ``h_m`` metres: exp(-3 h²/range²)."""
    h = np.asarray(h_m, dtype=np.float64)
    return np.exp(-3.0 * (h / range_m) ** 2)
