"""Fitted semivariograms: scikit-gstat's models on an empirical variogram; range -> suggested σ; the loss's refit.

The theoretical models are scikit-gstat's own functions (``skgstat.models``),
fitted as scikit-gstat fits them (``scipy.optimize.curve_fit``, method "trf",
the same bounds and start values) on our binned values. Parameters follow
scikit-gstat: ``range_m`` is the *effective* range, where the model reaches
95 % of its partial sill (for the spherical model, where it reaches the sill).
The empirical variogram (lag bins, pair blocking) is ``swclip.analysis.empirical_variogram``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from swclip.analysis.empirical_variogram import MIN_SAMPLES, EmpiricalVariogram, empirical_variogram
from swclip.kernels import check_kernel

MODELS = ("spherical", "exponential", "gaussian", "stable", "matern")
SHAPED_MODELS = ("stable", "matern")  # models with a 4th (shape / smoothness) parameter
RANGE_NOT_REACHED = "range not reached"  # a fit whose range sits at the largest lag suggests no σ
NUGGET_WARN = 0.9  # nugget / sill at which a fit's range is flagged as meaningless
MATERN_TABLE = 4097  # grid points of the Matérn lookup table on the torch path
MATERN_TABLE_RANGES = 8.0  # the table spans [1e-9, 8] · range_m, uniform in log h; beyond it γ is held
MATERN_TABLE_MIN = 1e-9  # below 1e-9 · range_m (a micrometre at a 1 km range) γ is held at the first value


# ----------------------------------------------------------------------------- fitting


@dataclass
class VariogramFit:
    """A fitted theoretical variogram, or the reason there is none (ok=False; numbers NaN).

    γ(h) = nugget + partial_sill · f(h; range_m[, shape]), f from ``skgstat.models``.
    sill = nugget + partial_sill is the plateau (scikit-gstat's ``describe()["sill"]``
    is our ``partial_sill``). range_m is the effective range in metres.
    ``range_at_bound`` warns that the fit pushed the range to the largest lag:
    the true range may be larger than the variogram reaches. ``warning`` says
    that, or that the nugget is at least ``NUGGET_WARN`` of the sill (the values
    barely depend on distance, so the range means little), in words.
    """

    ok: bool
    reason: str = ""
    model: str = ""
    nugget: float = float("nan")
    partial_sill: float = float("nan")
    sill: float = float("nan")
    range_m: float = float("nan")
    shape: float | None = None  # stable: shape s; matern: smoothness ν
    rmse: float = float("nan")
    r2: float = float("nan")
    n_bins: int = 0
    max_lag_m: float = float("nan")
    range_at_bound: bool = False
    dissimilarity: str = ""
    nugget_ratio: float = float("nan")  # nugget / sill: near 1 means little spatial structure
    warning: str = ""  # why to trust the range less, for display ("" if nothing stands out)
    _table: Any = field(default=None, repr=False, compare=False)  # Matérn lookup (h grid, γ) for torch
    _table_on: dict = field(default_factory=dict, repr=False, compare=False)  # that table as tensors per device

    @property
    def skgstat_params(self) -> tuple:
        """Arguments after h for ``skgstat.models.<model>``: (r, c0[, s], b)."""
        core = (self.range_m, self.partial_sill)
        return core + ((self.shape,) if self.model in SHAPED_MODELS else ()) + (self.nugget,)

    def _require_ok(self) -> None:
        if not self.ok:
            raise ValueError(f"no variogram fit: {self.reason}")

    def gamma(self, h_m: Any) -> np.ndarray:
        """γ at distances ``h_m`` (any shape, metres), numpy float64, via scikit-gstat's model function."""
        self._require_ok()
        h = np.asarray(h_m, dtype=np.float64)
        fn = _skgstat_model(self.model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.asarray(fn(h.ravel(), *self.skgstat_params), dtype=np.float64).reshape(h.shape)

    def gamma_torch(self, h_m):
        """γ at distances ``h_m`` (tensor, any shape, metres), on the tensor's device and in its float dtype.

        The same formulas as ``skgstat.models`` (tests hold them together on a
        grid); the Matérn model, whose Bessel function torch lacks, is read from
        a table of scikit-gstat's values by linear interpolation.
        """
        import torch

        self._require_ok()
        dtype = h_m.dtype if h_m.is_floating_point() else torch.float32
        h = h_m.to(dtype)
        r, c0, b = self.range_m, self.partial_sill, self.nugget
        if self.model == "spherical":
            u = (h / r).clamp(max=1.0)
            return b + c0 * (1.5 * u - 0.5 * u * u * u)
        if self.model == "exponential":
            return b + c0 * (1.0 - torch.exp(-3.0 * h / r))
        if self.model == "gaussian":
            return b + c0 * (1.0 - torch.exp(-((h / (r / 2.0)) ** 2)))
        if self.model == "stable":
            a = r / 3.0 ** (1.0 / self.shape)
            g = b + c0 * (1.0 - torch.exp(-torch.pow(h / a, self.shape)))
            return torch.where(h == 0, torch.full_like(h, b), g)
        # Matérn: a table uniform in log h. Near lag 0 γ − b grows like h^(2ν), which for a small smoothness
        # ν (the fit allows down to ~0) is nearly a jump: a table uniform in h missed it by up to 0.65 of the
        # sill at ν = 0.05; in log h the curve is smooth at every ν. Lag 0 is b exactly, as scikit-gstat.
        if self._table is None:
            log_h = np.linspace(math.log(MATERN_TABLE_MIN * r), math.log(MATERN_TABLE_RANGES * r), MATERN_TABLE)
            self._table = (float(log_h[0]), float(log_h[1] - log_h[0]), self.gamma(np.exp(log_h)))
        log_h0, step, table = self._table
        # the table on the device once per fit and device: a copy from the host in every step would wait for the GPU
        key = (str(h.device), dtype)
        if key not in self._table_on:
            self._table_on[key] = torch.as_tensor(table, dtype=dtype, device=h.device)  # (T,)
        t = self._table_on[key]
        pos = ((h.clamp_min(MATERN_TABLE_MIN * r).log() - log_h0) / step).clamp(0, t.numel() - 1)
        i0 = pos.floor().long().clamp(max=t.numel() - 2)
        g = torch.lerp(t[i0], t[i0 + 1], pos - i0.to(dtype))
        return torch.where(h == 0, torch.full_like(h, b), g)

    def practical_range_m(self, level: float = 0.05) -> float:
        """Distance (metres) where γ first reaches nugget + (1 − level)·partial_sill.

        One convention across models: scikit-gstat's ``range_m`` is nearly that
        point for the exponential and stable models (they reach 1 − e⁻³ = 95.02 %
        there), but its gaussian model reaches 98.2 % at ``range_m`` and the
        spherical 100 %. With the default level
        this is where the correlation has fallen to 5 %, the distance
        :func:`suggest_sigma_m` expects. Found on a fine grid of the model, to 0.1 %.
        """
        self._require_ok()
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        h = np.linspace(0.0, 4.0 * self.range_m, 4001)
        frac = (self.gamma(h) - self.nugget) / self.partial_sill if self.partial_sill > 0 else np.ones_like(h)
        i = int(np.argmax(frac >= 1.0 - level))
        if frac[i] < 1.0 - level:
            return float(h[-1])
        if i == 0:
            return 0.0
        t = (1.0 - level - frac[i - 1]) / (frac[i] - frac[i - 1])  # linear between the grid points
        return float(h[i - 1] + t * (h[i] - h[i - 1]))

    def to_dict(self) -> dict:
        """JSON-ready dict of the fit (None for NaN)."""
        return {
            k: (None if isinstance(v, float) and math.isnan(v) else v)
            for k, v in self.__dict__.items()
            if not k.startswith("_")
        }


def _spherical(h, r, c0, b=0.0):
    a = r / 1.0
    return np.where(h <= r, b + c0 * ((1.5 * (h / a)) - (0.5 * ((h / a) ** 3.0))), b + c0)


def _exponential(h, r, c0, b=0.0):
    a = r / 3.0
    return b + c0 * (1.0 - np.exp(-(h / a)))


def _gaussian(h, r, c0, b=0.0):
    a = r / 2.0
    return b + c0 * (1.0 - np.exp(-(h**2 / a**2)))


def _stable(h, r, c0, s, b=0.0):
    # a tiny shape s overflows 3 ** (1 / s) to inf during a fit; a = 0 then gives the sill, as the limit does
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        a = r / np.power(3, 1 / s)
        g = b + c0 * (1.0 - np.exp(-np.power(h / a, s)))
    return np.where(h == 0, b, g)  # as scikit-gstat: b at lag 0 (a small s would divide by zero there)


def _matern(h, r, c0, s, b=0.0):
    from scipy import special

    a = r / 2.0
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        g = b + c0 * (
            1.0 - (2 / special.gamma(s)) * np.power((h * np.sqrt(s)) / a, s) * special.kv(s, 2 * ((h * np.sqrt(s)) / a))
        )
    return np.where(h == 0, b, g)


# scikit-gstat's model formulas (skgstat.models, 1.0), written over arrays: its public functions are
# numba-jitted scalar functions mapped over h, whose first calls compile for about a second each, and
# whose plain-Python bodies, called once per lag, made the Semivariogram page's fits and practical
# ranges take seconds. tests/test_variogram.py holds these to scikit-gstat's own functions on a grid.
_MODEL_FUNCTIONS = {
    "spherical": _spherical,
    "exponential": _exponential,
    "gaussian": _gaussian,
    "stable": _stable,
    "matern": _matern,
}


def _skgstat_model(model: str):
    """scikit-gstat's ``model`` function, vectorised over h: (h (M,) metres, *params) -> (M,) float64."""
    if model not in MODELS:
        raise ValueError(f"unknown variogram model {model!r}; choose one of {MODELS}")
    fn = _MODEL_FUNCTIONS[model]

    def vectorised(h, *params):
        return np.asarray(fn(np.ravel(np.asarray(h, dtype=np.float64)), *params), dtype=np.float64)

    return vectorised


def _no_fit(reason: str, model: str = "", dissimilarity: str = "") -> VariogramFit:
    return VariogramFit(ok=False, reason=reason, model=model, dissimilarity=dissimilarity)


def fit_variogram(
    empirical: EmpiricalVariogram, model: str = "spherical", nugget: bool = True, lag: str = "mean"
) -> VariogramFit:
    """Fit scikit-gstat's ``model`` to the empirical variogram's non-empty bins.

    As scikit-gstat fits: least squares (curve_fit, "trf"), unweighted, bounds
    range in [0, largest lag], partial sill in [0, max γ], nugget in
    [0, 0.99 · max γ] (fixed at 0 with ``nugget=False``), shape in (0, 2]
    (stable) or (0, 20] (matern), starting from the upper bounds.
    lag: the x of each bin: "mean" (mean pair distance, the default: the least
    biased), "centre", or "upper" (the upper edge, which scikit-gstat uses).

    Returns ``ok=False`` with a reason (never raises) for bad data: an
    empirical variogram that is not ok, too few non-empty bins, γ all zero, or
    an optimiser that does not converge. Unknown model or lag: ValueError.
    """
    fn = _skgstat_model(model)
    if lag not in ("mean", "centre", "upper"):
        raise ValueError(f"unknown lag {lag!r}; choose 'mean', 'centre' or 'upper'")
    diss = empirical.dissimilarity
    if not empirical.ok:
        return _no_fit(empirical.reason, model, diss)
    x = {"mean": empirical.lag_m, "centre": empirical.bin_centres_m, "upper": empirical.bin_edges_m[1:]}[lag]
    use = (empirical.counts > 0) & np.isfinite(empirical.gamma)
    x, y = np.asarray(x, dtype=np.float64)[use], empirical.gamma[use]
    n_params = 2 + (model in SHAPED_MODELS) + bool(nugget)
    if x.size <= n_params:
        return _no_fit(f"only {x.size} non-empty lag bins; fitting {model} needs more than {n_params}", model, diss)
    ymax, xmax = float(y.max()), float(x.max())
    if ymax <= 0:
        return _no_fit("the semivariance is zero at every lag (zero variance)", model, diss)
    upper = [xmax, ymax] + ([2.0 if model == "stable" else 20.0] if model in SHAPED_MODELS else [])
    lower = [0.0, 0.0] + ([1e-3] if model in SHAPED_MODELS else [])
    if nugget:
        upper, lower = upper + [0.99 * ymax], lower + [0.0]
        wrapped = fn
    else:

        def wrapped(h, *p):
            return fn(h, *p, 0.0)

    from scipy.optimize import OptimizeWarning, curve_fit

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            params, _ = curve_fit(wrapped, x, y, p0=upper, bounds=(lower, upper), method="trf")
    except (RuntimeError, ValueError) as e:
        return _no_fit(f"the {model} model did not converge: {e}", model, diss)
    r, c0 = float(params[0]), float(params[1])
    shape = float(params[2]) if model in SHAPED_MODELS else None
    b = float(params[-1]) if nugget else 0.0
    if not r > 0:
        return _no_fit(f"the {model} fit has range 0: a pure nugget, no spatial structure at these lags", model, diss)
    pred = np.asarray(wrapped(x, *params), dtype=np.float64)
    resid = y - pred
    ss_tot = float(((y - y.mean()) ** 2).sum())
    sill, at_bound = b + c0, r >= 0.999 * xmax
    notes = []
    if sill > 0 and b / sill >= NUGGET_WARN:
        notes.append(
            f"the nugget is {100 * b / sill:.0f} % of the sill: little spatial structure, the range means little"
        )
    if at_bound:
        notes.append(f"{RANGE_NOT_REACHED}: the range hit the largest lag ({xmax:.0f} m); the true one may be longer")
    return VariogramFit(
        ok=True,
        model=model,
        nugget=b,
        partial_sill=c0,
        sill=sill,
        range_m=r,
        shape=shape,
        rmse=float(np.sqrt((resid**2).mean())),
        r2=1.0 - float((resid**2).sum()) / ss_tot if ss_tot > 0 else float("nan"),
        n_bins=int(x.size),
        max_lag_m=xmax,
        range_at_bound=at_bound,
        dissimilarity=diss,
        nugget_ratio=b / sill if sill > 0 else float("nan"),
        warning="; ".join(notes),
    )


def fit_best(
    empirical: EmpiricalVariogram, models: Sequence[str] = MODELS, nugget: bool = True, lag: str = "mean"
) -> VariogramFit:
    """The fit with the lowest RMSE among ``models``; a no-fit listing each model's reason if none fits."""
    fits = [fit_variogram(empirical, m, nugget=nugget, lag=lag) for m in models]
    good = [f for f in fits if f.ok]
    if good:
        return min(good, key=lambda f: f.rmse)
    if not empirical.ok:
        return _no_fit(empirical.reason, "", empirical.dissimilarity)
    return _no_fit("; ".join(f"{f.model}: {f.reason}" for f in fits), "", empirical.dissimilarity)


# The variogram family's behaviour at the origin picks the soft-label kernel: parabolic (Gaussian; stable with
# shape s >= 1.5, Matérn with smoothness ν >= 1.5) -> gaussian; linear (exponential, spherical; stable with
# s < 1.5, Matérn with ν < 1.5) -> exponential. 1.5 is the midpoint of the stable family's exponential (s = 1)
# and Gaussian (s = 2) members, and Matérn's first twice-differentiable smoothness.
SMOOTH_SHAPE = 1.5


def kernel_for_model(model: str, shape: float | None = None) -> str:
    """The soft-label kernel (``swclip.kernels.KERNELS``) that a fitted variogram ``model`` (MODELS) picks."""
    if model not in MODELS:
        raise ValueError(f"unknown variogram model {model!r}; choose one of {MODELS}")
    if model == "gaussian":
        return "gaussian"
    if model in SHAPED_MODELS:
        if shape is None or not math.isfinite(shape):
            raise ValueError(f"a {model} variogram needs its shape to pick a kernel")
        return "gaussian" if shape >= SMOOTH_SHAPE else "exponential"
    return "exponential"


def suggest_sigma_m(range_m: float, kernel: str = "gaussian", level: float = 0.05) -> float:
    """The soft-label bandwidth σ (metres) whose kernel falls to ``level`` at ``range_m``.

    The rule: k_σ(range_m) = level, with k the soft-label kernel
    (``swclip.kernels.kernel_weights``). The default level 0.05 matches
    the distance where the variogram reaches 95 % of its partial sill, i.e.
    where the correlation has fallen to 5 % (pass ``fit.practical_range_m()``,
    which is exactly that for every model; scikit-gstat's ``range_m`` is it for
    the exponential and stable models only). Pairs beyond that distance then
    get less than 5 % of the target mass of a pair at the same spot.

        gaussian:    exp(−r² / 2σ²) = level  →  σ = r / sqrt(2 ln(1/level))   (≈ r / 2.45)
        exponential: exp(−r / σ)    = level  →  σ = r / ln(1/level)           (≈ r / 3.00)
    """
    check_kernel(kernel, 1.0)
    if kernel == "onehot":
        raise ValueError("the onehot kernel has no bandwidth; choose 'gaussian' or 'exponential'")
    if not (isinstance(range_m, (int, float, np.floating, np.integer)) and math.isfinite(range_m) and range_m >= 0):
        raise ValueError(f"range_m must be a finite number of metres >= 0, got {range_m!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    log_inv = math.log(1.0 / level)
    return float(range_m) / (math.sqrt(2.0 * log_inv) if kernel == "gaussian" else log_inv)


def suggested_sigma_from_fit(fit: VariogramFit, kernel: str = "gaussian") -> float | None:
    """The σ (metres) a fit suggests (:func:`suggest_sigma_m` of its practical range), or None when it suggests
    none: no fit, or a range at the largest lag (``range_at_bound``: the variogram has not levelled off by
    then, so the range, and any σ from it, is only a lower bound; widen the lags)."""
    if not fit.ok or fit.range_at_bound:
        return None
    return suggest_sigma_m(fit.practical_range_m(), kernel)


def max_lag_rule_m(extent: float) -> float:
    """The largest lag of a variogram over samples spanning ``extent`` metres: half of it (pairs further
    apart are few and sit at the edges). One rule for every variogram the app draws, so the per-city and the
    global variogram of the same rows bin the same lags."""
    if not (math.isfinite(extent) and extent > 0):
        raise ValueError(f"extent must be a positive number of metres, got {extent!r}")
    return extent / 2.0


def fit_embedding_variogram(
    embeddings,
    latlon,
    model: str = "exponential",
    nugget: bool = True,
    bins: Any = 20,
    binning: str = "fixed",
    max_lag_m: float | None = None,
    max_pairs: int | None = 1_000_000,
    seed: int = 0,
    min_samples: int = MIN_SAMPLES,
    max_nugget_ratio: float = NUGGET_WARN,
) -> VariogramFit | None:
    """``fit_fn`` for ``swclip.method.losses.SemivariogramWeightedLoss``: γ(h) of cosine distance, or None.

    embeddings: (N, D) tensor or array (any device; copied to the CPU, where the
    pair blocks are small GEMMs); latlon: (N, 2) degrees. model may also be
    "best" (lowest RMSE of all models; slower). Returns the fit, whose
    ``gamma_torch(h_m)`` runs on the training device, or None when no fit exists,
    including a fit whose nugget is at least ``max_nugget_ratio`` of its sill:
    an embedding space with no spatial structure yet (early training) has no
    meaningful range, so the loss keeps its previous variogram (or none).
    From a 4096-row bank with 1M pairs this takes tens of milliseconds after
    the first call (which compiles scikit-gstat's numba models).
    """
    emp = empirical_variogram(
        latlon,
        embeddings=embeddings,
        dissimilarity="cosine",
        bins=bins,
        binning=binning,
        max_lag_m=max_lag_m,
        max_pairs=max_pairs,
        seed=seed,
        min_samples=min_samples,
    )
    fit = fit_best(emp, nugget=nugget) if model == "best" else fit_variogram(emp, model, nugget=nugget)
    return fit if fit.ok and not fit.nugget_ratio >= max_nugget_ratio else None
