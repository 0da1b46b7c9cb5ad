"""Latent Gaussian random fields over a city, sampled by random Fourier features.

Each field is a stationary, isotropic GRF with one of two covariances:

    gaussian     C(h) = exp(-3 h² / range_m²)     smooth; the shape of SW-CLIP's default kernel
    exponential  C(h) = exp(-3 h / range_m)       rough (linear at the origin); a world that does
                                                  not share the soft-label kernel's shape

so ``range_m`` is the *practical range* in both: the correlation has fallen to
e⁻³ ≈ 5 % at ``h = range_m`` (scikit-gstat's convention for its exponential and
Gaussian models). The length scale ℓ is ``range_m / sqrt(6)`` (gaussian, as
exp(-h²/2ℓ²)) or ``range_m / 3`` (exponential, as exp(-h/ℓ)).

The spectral method (Rahimi & Recht 2007): with ω drawn from the covariance's
spectral density and b ~ U(0, 2π), ``f(x) = sqrt(2/M) Σ_m cos(ω_m·x + b_m)`` has
exactly the covariance C in expectation (Bochner), and is close to Gaussian for M
in the hundreds. The Gaussian covariance's spectral density is N(0, I/ℓ²); the
exponential one's, in 2-D, is ∝ (1 + ℓ²|ω|²)^(-3/2): a bivariate Cauchy
(Student t with one degree of freedom), drawn as g / (ℓ·|z|) with g ~ N(0, I), z ~ N(0, 1). We only need
the field at the sample points, so this costs O(N·M) instead of a grid FFT, and
the app can re-evaluate the same field anywhere from (seed, range_m,
n_features) alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import ndtr

N_FEATURES = 512
COVARIANCES = {
    "gaussian": "gaussian: exp(-3 h^2 / range_m^2)",
    "exponential": "exponential: exp(-3 h / range_m)",
}


@dataclass(frozen=True)
class FieldSpec:
    """One latent field of one city: everything needed to re-evaluate it."""

    name: str
    range_m: float  # practical range: correlation e^-3 ≈ 0.05 at this distance
    seed: int  # numpy default_rng seed of the Fourier features
    n_features: int = N_FEATURES
    covariance: str = "gaussian"  # a key of COVARIANCES

    def __post_init__(self):
        # world.json of version 1 stored the formula ("gaussian: exp(...)"); its first word is the kind
        kind = str(self.covariance).split(":")[0].strip()
        if kind not in COVARIANCES:
            raise ValueError(f"covariance must be one of {list(COVARIANCES)}, got {self.covariance!r}")
        object.__setattr__(self, "covariance", kind)
        if not (np.isfinite(self.range_m) and self.range_m > 0):
            raise ValueError(f"range_m must be a positive number of metres, got {self.range_m!r}")

    @property
    def length_scale_m(self) -> float:
        return self.range_m / (np.sqrt(6.0) if self.covariance == "gaussian" else 3.0)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["length_scale_m"] = self.length_scale_m
        d["covariance_formula"] = COVARIANCES[self.covariance]
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
    if spec.covariance == "exponential":
        # bivariate Cauchy: the Gaussian draw divided by |z|, z ~ N(0, 1) (drawn after, so the
        # Gaussian world's draws stay as they were)
        omega = omega / np.abs(rng.normal(size=(spec.n_features, 1)))
    return np.sqrt(2.0 / spec.n_features) * np.cos(xy @ omega.T + phase).sum(1)  # (N,)


def field_uniform(spec: FieldSpec, xy_m: np.ndarray) -> np.ndarray:
    """Field values pushed through the normal CDF: (N,) in (0, 1), evenly spread.

    Rendering maps each field to a visual parameter linearly from this scale, so every
    field uses its whole visible range.
    """
    return ndtr(field_values(spec, xy_m))


def correlation(h_m: np.ndarray, range_m: float, covariance: str = "gaussian") -> np.ndarray:
    """The true correlation of a field at separation ``h_m`` metres: exp(-3 h²/range²) or exp(-3 h/range)."""
    if covariance not in COVARIANCES:
        raise ValueError(f"covariance must be one of {list(COVARIANCES)}, got {covariance!r}")
    h = np.asarray(h_m, dtype=np.float64)
    return np.exp(-3.0 * (h / range_m) ** 2) if covariance == "gaussian" else np.exp(-3.0 * h / range_m)
