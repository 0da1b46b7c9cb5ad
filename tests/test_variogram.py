"""swclip.analysis.variogram against scikit-gstat, naive loops and fields of known range."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swclip.analysis.empirical_variogram import _blocks
from swclip.analysis.variogram import (
    MODELS,
    empirical_variogram,
    fit_best,
    fit_embedding_variogram,
    fit_variogram,
    suggest_sigma_m,
)
from swclip.geo import local_metres_to_degrees
from swclip.kernels import kernel_weights

ORIGIN = (48.85, 2.35)
R_SPHERE = 6_371_008.8


def _haversine(a, b):
    """Plain-math great-circle distance of two (lat, lon) rows: the reference."""
    la1, lo1, la2, lo2 = map(math.radians, (a[0], a[1], b[0], b[1]))
    h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
    return 2 * R_SPHERE * math.asin(math.sqrt(min(h, 1.0)))


def _grf(seed, n, range_m, model, side_m=4000.0, dims=None):
    """A seeded Gaussian random field of known effective range, exact (Cholesky), on random points.

    Covariances in scikit-gstat's effective-range convention: 1 − γ(h)/sill.
    Returns latlon (n, 2) and values (n,) or (n, dims).
    """
    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2)) * side_m
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    if model == "exponential":
        cov = np.exp(-3 * d / range_m)
    elif model == "gaussian":
        cov = np.exp(-((2 * d / range_m) ** 2))
    else:  # spherical
        u = np.minimum(d / range_m, 1)
        cov = 1 - (1.5 * u - 0.5 * u**3)
    chol = np.linalg.cholesky(cov + 1e-6 * np.eye(n))
    z = chol @ rng.standard_normal((n, dims or 1))
    return local_metres_to_degrees(xy - side_m / 2, ORIGIN), (z[:, 0] if dims is None else z)


@pytest.fixture(scope="module")
def small_field():
    return _grf(0, 200, 900.0, "spherical")


# --------------------------------------------------------------------------- empirical


def test_empirical_matches_skgstat_variogram_same_bins(small_field):
    skg = pytest.importorskip("skgstat")
    latlon, z = small_field
    edges = np.linspace(0, 2500, 13)
    ours = empirical_variogram(latlon, values=z, bins=edges)
    ref = skg.Variogram(latlon, z, dist_func=_haversine, bin_func=edges[1:], model="spherical", use_nugget=True)
    assert ours.all_pairs and ours.n_pairs_total == 200 * 199 // 2
    np.testing.assert_array_equal(ours.counts, ref.bin_count)
    np.testing.assert_allclose(ours.gamma, ref.experimental, rtol=1e-10)


def test_fit_matches_skgstat_fit_on_same_bins(small_field):
    skg = pytest.importorskip("skgstat")
    latlon, z = small_field
    edges = np.linspace(0, 2500, 13)
    ours = empirical_variogram(latlon, values=z, bins=edges)
    for model in ("spherical", "exponential", "gaussian", "stable"):
        ref = skg.Variogram(latlon, z, dist_func=_haversine, bin_func=edges[1:], model=model, use_nugget=True)
        d = ref.describe()
        fit = fit_variogram(ours, model, nugget=True, lag="upper")  # scikit-gstat fits at the upper edges
        assert fit.ok, fit.reason
        assert fit.range_m == pytest.approx(d["effective_range"], rel=1e-4), model
        assert fit.partial_sill == pytest.approx(d["sill"], rel=1e-4), model
        assert fit.nugget == pytest.approx(d["nugget"], rel=1e-3, abs=1e-6), model
        # our default x, the mean lag of each bin, sits about half a bin left of the upper
        # edge; the fitted range moves left with it, by about a bin width (208 m)
        shift = d["effective_range"] - fit_variogram(ours, model).range_m
        assert 0 < shift < 1.5 * edges[1], model


def test_cosine_variogram_matches_naive_loop():
    rng = np.random.default_rng(3)
    n = 70
    latlon = local_metres_to_degrees(rng.random((n, 2)) * 3000, ORIGIN)
    emb = rng.standard_normal((n, 8)).astype(np.float32)
    edges = np.array([0, 400, 900, 1500, 2200, 3000.0])
    ours = empirical_variogram(latlon, embeddings=emb, bins=edges)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sums, counts = np.zeros(5), np.zeros(5, dtype=int)
    for i in range(n):
        for j in range(i + 1, n):
            d = _haversine(latlon[i], latlon[j])
            k = np.searchsorted(edges, d, side="right") - 1
            if 0 <= k < 5:
                sums[k] += 1 - float(unit[i] @ unit[j])
                counts[k] += 1
    np.testing.assert_array_equal(ours.counts, counts)
    np.testing.assert_allclose(ours.gamma, sums / counts, rtol=1e-5)
    assert ours.dissimilarity == "cosine" and ours.n_pairs_used == counts.sum()


def test_sampled_pairs_bounded_seeded_and_close_to_all_pairs():
    latlon, z = _grf(1, 600, 800.0, "gaussian")
    full = empirical_variogram(latlon, values=z, bins=15, max_lag_m=2500)
    a = empirical_variogram(latlon, values=z, bins=15, max_lag_m=2500, max_pairs=40_000, seed=5)
    b = empirical_variogram(latlon, values=z, bins=15, max_lag_m=2500, max_pairs=40_000, seed=5)
    c = empirical_variogram(latlon, values=z, bins=15, max_lag_m=2500, max_pairs=40_000, seed=6)
    assert full.all_pairs and not a.all_pairs
    assert 20_000 < a.n_pairs_sampled <= 40_000 and a.n_pairs_used <= a.n_pairs_sampled
    np.testing.assert_array_equal(a.gamma, b.gamma)
    assert not np.array_equal(a.gamma, c.gamma)
    np.testing.assert_allclose(a.gamma, full.gamma, rtol=0.2)
    ra, rf = fit_variogram(a, "gaussian").range_m, fit_variogram(full, "gaussian").range_m
    assert ra == pytest.approx(rf, rel=0.1)


def test_block_sampling_gives_every_pair_the_same_chance():
    n, max_pairs, runs = 60, 400, 400
    hits = np.zeros((n, n))
    for seed in range(runs):
        blocks, all_pairs = _blocks(n, max_pairs, np.random.default_rng(seed))
        assert not all_pairs
        for rows, cols, _ in blocks:
            hits[np.minimum.outer(rows, cols), np.maximum.outer(rows, cols)] += 1
    iu = np.triu_indices(n, 1)
    p = hits[iu] / runs  # inclusion frequency of each pair
    expect = p.mean()
    assert hits[np.tril_indices(n)].sum() == 0  # no self pairs, each pair counted once
    # binomial spread around one common probability: no pair class is favoured
    sd = math.sqrt(expect * (1 - expect) / runs)
    assert abs(p.std() - sd) < 0.25 * sd
    assert np.abs(p - expect).max() < 5.5 * sd


def test_equal_count_bins_hold_equal_counts(small_field):
    latlon, z = small_field
    emp = empirical_variogram(latlon, values=z, bins=8, binning="equal_count")
    assert emp.counts.size == 8
    assert emp.counts.max() - emp.counts.min() <= 0.02 * emp.counts.mean()
    fixed = empirical_variogram(latlon, values=z, bins=8)
    np.testing.assert_allclose(np.diff(fixed.bin_edges_m), fixed.bin_edges_m[1])


@settings(max_examples=15)
@given(shift=st.floats(-1e3, 1e3), scale=st.floats(0.01, 100))
def test_half_sq_diff_shift_invariant_and_scales_quadratically(small_field, shift, scale):
    latlon, z = small_field
    base = empirical_variogram(latlon, values=z, bins=6)
    moved = empirical_variogram(latlon, values=scale * z + shift, bins=6)
    np.testing.assert_allclose(moved.gamma, scale**2 * base.gamma, rtol=1e-6)


# --------------------------------------------------------------------------- fits and known ranges


@pytest.mark.parametrize("model", ["spherical", "gaussian"])
def test_fitted_range_recovers_true_range_of_random_field(model):
    # range_m is scikit-gstat's effective range. One field's fit scatters by ±15 % (seeds 0-7: 0.97-1.18
    # of the truth for both models), as much as the effective and practical ranges differ (the practical
    # range is 0.81x the effective one for the spherical model, 0.87x for the Gaussian). The mean over
    # four fields separates them: 1.09 / 1.07 of the truth for range_m, 0.89 / 0.92 for the practical
    # range. The band below admits the first and refuses the second.
    ratios = []
    for seed in range(4):
        latlon, z = _grf(seed, 1500, 600.0, model, side_m=6000.0)
        fit = fit_variogram(empirical_variogram(latlon, values=z, bins=20, max_lag_m=2400), model)
        assert fit.ok
        assert fit.sill == pytest.approx(1.0, rel=0.35)  # unit-variance field
        ratios.append(fit.range_m / 600.0)
    assert 0.97 < np.mean(ratios) < 1.2, ratios


def test_fitted_range_recovers_demo_world_field_range():
    fields = pytest.importorskip("swclip.synth.fields")
    # the demo world's range is where the correlation exp(-3h²/r²) is 5 % (that is also the practical
    # range); scikit-gstat's gaussian model puts its effective range r' where exp(-4h²/r'²) is, so
    # r' = r·2/√3 = 1.155 r. Four fields (seeds 11-14): range_m averages 1.01 r', the practical range
    # 0.88 r'; single fields scatter by ±15 %, hence the mean.
    ratios = []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        xy = rng.random((3000, 2)) * 6000 - 3000
        spec = fields.FieldSpec(name="facade_hue", range_m=600.0, seed=11 + seed)
        z = fields.field_values(spec, xy)
        fit = fit_variogram(
            empirical_variogram(local_metres_to_degrees(xy, ORIGIN), values=z, max_lag_m=2400), "gaussian"
        )
        assert fit.ok
        ratios.append(fit.range_m / (600.0 * 2 / math.sqrt(3)))
    assert 0.93 < np.mean(ratios) < 1.1, ratios


def test_embedding_variogram_recovers_range_of_field_embeddings():
    # each embedding dimension is an independent field of range 800 m, so the
    # expected cosine distance grows like the field's normalised variogram
    latlon, f = _grf(2, 1000, 800.0, "gaussian", dims=16)
    fit = fit_embedding_variogram(torch.from_numpy(f).float(), torch.from_numpy(latlon), model="gaussian")
    # seeds 2-5 gave 1.005-1.051 of the truth; the practical range would be 0.87-0.91 of it
    assert fit is not None and fit.range_m == pytest.approx(800.0, rel=0.08)
    assert 0.8 < fit.sill < 1.2  # unrelated unit vectors sit at cosine distance 1 on average


def test_fit_best_picks_lowest_rmse(small_field):
    emp = empirical_variogram(*small_field, bins=15)
    best = fit_best(emp)
    rmses = {m: fit_variogram(emp, m).rmse for m in MODELS}
    assert best.ok and best.rmse == min(rmses.values()) and rmses[best.model] == best.rmse


def test_white_noise_is_flagged_as_unstructured():
    rng = np.random.default_rng(0)
    latlon = local_metres_to_degrees(rng.random((400, 2)) * 3000, ORIGIN)
    emp = empirical_variogram(latlon, values=rng.standard_normal(400))
    for model in MODELS:
        fit = fit_variogram(emp, model)
        assert not fit.ok or (fit.nugget_ratio > 0.9 and "little spatial structure" in fit.warning), model


def test_fit_fn_declines_unstructured_embeddings():
    rng = np.random.default_rng(1)
    latlon = torch.from_numpy(local_metres_to_degrees(rng.random((400, 2)) * 3000, ORIGIN))
    emb = torch.randn(400, 16, generator=torch.Generator().manual_seed(0)).bfloat16()  # bf16 as AMP hands it over
    assert fit_embedding_variogram(emb, latlon) is None
    fit = fit_embedding_variogram(emb, latlon, max_nugget_ratio=1.01)
    assert fit is not None and fit.nugget_ratio > 0.9


def test_structured_field_has_no_warning(small_field):
    fit = fit_variogram(empirical_variogram(*small_field, bins=15), "spherical")
    assert fit.ok and fit.warning == "" and fit.nugget_ratio < 0.5


def test_nugget_false_fixes_nugget_at_zero(small_field):
    fit = fit_variogram(empirical_variogram(*small_field, bins=15), "exponential", nugget=False)
    assert fit.ok and fit.nugget == 0.0 and fit.sill == fit.partial_sill
    assert 0 <= fit.r2 <= 1 and fit.rmse > 0


@pytest.mark.parametrize("model", MODELS)
def test_gamma_torch_and_gamma_match_skgstat_models(model):
    models = pytest.importorskip("skgstat.models")
    # lag 0, lags from a millimetre up (log-spaced: where a small Matérn smoothness rises steeply) and a linear grid
    h = np.concatenate([[0.0], np.geomspace(1e-3, 50.0, 60), np.linspace(1e-3, 4000, 401)])
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    from swclip.analysis.variogram import VariogramFit, _skgstat_model

    # the array formulas against scikit-gstat's own function, also near the fit's shape bounds (small; 2 / 20)
    for r, c0, shape, b in [(50.0, 2.0, 0.05, 0.5), (3000.0, 0.9, 2.0 if model == "stable" else 20.0, 0.1)]:
        args = (r, c0, shape, b) if model in ("stable", "matern") else (r, c0, b)
        np.testing.assert_allclose(
            _skgstat_model(model)(h, *args), getattr(models, model)(h, *args), rtol=1e-12, atol=1e-12
        )
    # shapes at the fit's bounds too (0.05: nearly a jump at lag 0; 20 for the Matérn, 2 for the stable)
    for r, c0, shape, b in [
        (700.0, 1.3, 0.7, 0.2),
        (1500.0, 0.4, 1.6, 0.0),
        (600.0, 0.9, 0.05, 0.3),
        (900.0, 0.9, 2.0 if model == "stable" else 20.0, 0.1),
    ]:
        fit = VariogramFit(
            ok=True,
            model=model,
            nugget=b,
            partial_sill=c0,
            sill=b + c0,
            range_m=r,
            shape=shape if model in ("stable", "matern") else None,
        )
        args = (r, c0, shape, b) if model in ("stable", "matern") else (r, c0, b)
        ref = getattr(models, model)(h, *args)  # the public (numba) function
        np.testing.assert_allclose(fit.gamma(h), ref, rtol=1e-12, atol=1e-12)
        tol = 1e-4 if model == "matern" else 1e-9  # Matérn: linear interpolation of a fine table in log h
        for device in devices:
            out = fit.gamma_torch(torch.tensor(h, dtype=torch.float64, device=device))
            assert out.device.type == device and out.dtype == torch.float64
            np.testing.assert_allclose(out.cpu().numpy(), ref, rtol=tol, atol=tol * (b + c0))
            out32 = fit.gamma_torch(torch.tensor(h, dtype=torch.float32, device=device).reshape(3, -1)[:, :134])
            assert out32.dtype == torch.float32 and out32.shape == (3, 134)


def test_stable_model_tiny_shape_is_the_sill_without_overflow_warning():
    """A fit may try shapes so small that 3 ** (1 / s) overflows; the model is then the sill beyond lag 0,
    as scikit-gstat's formula gives, and no RuntimeWarning leaks out of the fit."""
    import warnings

    models = pytest.importorskip("skgstat.models")
    from swclip.analysis.variogram import _skgstat_model

    h = np.array([0.0, 1e-3, 10.0, 500.0, 4000.0])
    with np.errstate(all="ignore"):  # the reference's own arithmetic overflows too
        # the formula itself, a lag at a time: the jitted, vectorised models.stable raises ZeroDivisionError here
        ref = np.array([models.stable.py_func(float(x), 700.0, 1.3, 1e-3, 0.2) for x in h])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = _skgstat_model("stable")(h, 700.0, 1.3, 1e-3, 0.2)
    np.testing.assert_allclose(out, ref, rtol=1e-12)
    np.testing.assert_allclose(out[1:], 1.5, rtol=1e-12)  # nugget + partial sill


# --------------------------------------------------------------------------- bandwidth


@pytest.mark.parametrize("kernel", ["gaussian", "exponential"])
@pytest.mark.parametrize("level", [0.05, 0.2])
def test_suggest_sigma_m_kernel_reaches_level_at_range(kernel, level):
    for range_m in (120.0, 850.0, 4000.0):
        sigma = suggest_sigma_m(range_m, kernel, level=level)
        assert float(kernel_weights(np.array([range_m]), sigma, kernel)[0]) == pytest.approx(level, rel=1e-9)
        assert float(kernel_weights(np.array([0.5 * range_m]), sigma, kernel)[0]) > level


def test_suggest_sigma_m_rejects_bad_input():
    with pytest.raises(ValueError, match="onehot"):
        suggest_sigma_m(500.0, "onehot")
    with pytest.raises(ValueError, match="range_m"):
        suggest_sigma_m(float("nan"))
    with pytest.raises(ValueError, match="level"):
        suggest_sigma_m(500.0, level=1.5)


# --------------------------------------------------------------------------- bad input


def test_bad_data_gives_reasoned_no_fit(small_field):
    latlon, z = small_field
    cases = {
        "only 10 samples": empirical_variogram(latlon[:10], values=z[:10]),
        "zero variance": empirical_variogram(latlon, values=np.full(200, 3.0)),
        "NaN": empirical_variogram(latlon, values=np.where(np.arange(200) == 7, np.nan, z)),
        "same location": empirical_variogram(np.tile(latlon[:1], (200, 1)), values=z),
        "all zeros": empirical_variogram(latlon, embeddings=np.zeros((200, 4))),
    }
    for needle, emp in cases.items():
        assert not emp.ok and needle in emp.reason, (needle, emp.reason)
        fit = fit_variogram(emp, "spherical")
        assert not fit.ok and fit.reason == emp.reason and math.isnan(fit.range_m)
        with pytest.raises(ValueError, match="no variogram fit"):
            fit.gamma([1.0])
        assert not fit_best(emp).ok
    assert "row 7" in cases["NaN"].reason
    assert fit_embedding_variogram(torch.ones(200, 4), torch.from_numpy(latlon)) is None


def test_too_few_bins_is_a_no_fit(small_field):
    fit = fit_variogram(empirical_variogram(*small_field, bins=3), "stable")
    assert not fit.ok and "lag bins" in fit.reason


def test_malformed_arguments_raise(small_field):
    latlon, z = small_field
    with pytest.raises(ValueError, match="exactly one"):
        empirical_variogram(latlon, values=z, embeddings=np.ones((200, 2)))
    with pytest.raises(ValueError, match="shape"):
        empirical_variogram(latlon, values=z[:-1])
    with pytest.raises(ValueError, match="dissimilarity"):
        empirical_variogram(latlon, values=z, dissimilarity="cosine")
    with pytest.raises(ValueError, match="binning"):
        empirical_variogram(latlon, values=z, binning="log")
    with pytest.raises(ValueError, match="latitude"):
        empirical_variogram(latlon[:, ::-1] * [40, 1], values=z)
    with pytest.raises(ValueError, match="unknown variogram model"):
        fit_variogram(empirical_variogram(latlon, values=z), "cubic-ish")


# --------------------------------------------------------------------------- the loss's fit_fn


def test_fit_fn_drives_semivariogram_weighted_loss():
    """The loss fits γ from its bank with fit_fn, and that γ sets its negatives' weights (naive loop)."""
    from swclip.method.losses import ClipLoss
    from swclip.method.semivariogram_loss import SemivariogramWeightedLoss

    latlon, f = _grf(4, 300, 800.0, "gaussian", dims=16)
    feats = torch.nn.functional.normalize(torch.from_numpy(f).float(), dim=1)
    loc = torch.nn.functional.normalize(
        feats + 0.5 * torch.randn(300, 16, generator=torch.Generator().manual_seed(0)), dim=1
    )
    ll = torch.from_numpy(latlon)
    loss = SemivariogramWeightedLoss(
        beta=2.0, bank_size=512, refit_every=1, min_fit_samples=64, fit_fn=fit_embedding_variogram
    )
    scale = torch.tensor(10.0)
    loss(image_features=feats, location_features=loc, logit_scale=scale, latlon=ll)  # fills the bank
    loss.optimizer_step()  # refit_every=1: one optimiser step refits
    loss.eval()  # the bank keeps what it was fitted from
    out = loss(image_features=feats, location_features=loc, logit_scale=scale, latlon=ll)
    fit = loss.variogram
    assert fit is not None and fit.ok
    assert 0 < fit.range_m < 6000
    # the reference: the InfoNCE of both directions with each negative's logit shifted by
    # -βr inside the range and +βr beyond it where r = γ(h) − cos_dist > 0, by plain loops
    v, w, b = feats.double().numpy(), loc.double().numpy(), 300
    log_w = np.zeros((b, b))
    for i in range(b):
        for j in range(b):
            if i == j:
                continue
            h = _haversine(latlon[i], latlon[j])
            r = float(fit.gamma([h])[0]) - (1.0 - float(v[i] @ v[j]))
            if r > 0:
                log_w[i, j] = -2.0 * r if h <= fit.range_m else 2.0 * r

    def ce(logits):
        return float(np.mean([np.log(np.exp(row).sum()) - row[k] for k, row in enumerate(logits)]))

    s_iv = 10.0 * v @ w.T + log_w
    s_vi = 10.0 * w @ v.T + log_w
    expected = (ce(s_iv) + ce(s_vi)) / 2
    assert float(out["contrastive_loss"]) == pytest.approx(expected, rel=1e-4)
    plain = float(ClipLoss()(feats, loc, scale)["contrastive_loss"])
    assert abs(plain - expected) > 1e-2  # the weights changed the loss


@pytest.mark.parametrize("model", MODELS)
def test_practical_range_is_where_gamma_reaches_95_percent(model):
    from swclip.analysis.variogram import VariogramFit

    fit = VariogramFit(
        ok=True,
        model=model,
        nugget=0.1,
        partial_sill=0.8,
        sill=0.9,
        range_m=1000.0,
        shape=1.2 if model in ("stable", "matern") else None,
    )
    pr = fit.practical_range_m()
    assert fit.gamma([pr])[0] == pytest.approx(0.1 + 0.95 * 0.8, rel=1e-4)
    assert fit.gamma([0.98 * pr])[0] < 0.1 + 0.95 * 0.8
    # closed forms of exp(...) = 0.05 in scikit-gstat's parametrisations (its "95 %" is exp(-3) = 4.98 %)
    expected = {
        "exponential": 1000.0 * math.log(20) / 3,
        "stable": 1000.0 * (math.log(20) / 3) ** (1 / 1.2),
        "gaussian": 1000.0 * math.sqrt(math.log(20)) / 2,
    }
    if model in expected:
        assert pr == pytest.approx(expected[model], rel=2e-4)


@pytest.mark.parametrize("what", ["values", "embeddings"])
@pytest.mark.parametrize("binning", ["fixed", "equal_count"])
def test_binning_kept_pairs_again_equals_the_empirical_variogram(monkeypatch, what, binning):
    """variogram_pairs + bin_pairs (the app's Semivariogram reruns: a new bin count rebins the kept pairs)
    give what empirical_variogram gives on the same arguments: same edges and counts, sums to the last bits;
    also when the equal-count edges come from a seeded subsample of the distances (EDGE_SAMPLE made small)."""
    import swclip.analysis.empirical_variogram as ev

    monkeypatch.setattr(ev, "EDGE_SAMPLE", 700)
    rng = np.random.default_rng(11)
    latlon = local_metres_to_degrees(rng.uniform(-3000, 3000, (400, 2)), (51.5, -0.1))
    data = (
        {"values": rng.normal(size=400)}
        if what == "values"
        else {"embeddings": rng.normal(size=(400, 16)).astype(np.float32)}
    )
    for max_pairs in (5_000, 200_000):  # sampled blocks, then all 79,800 pairs
        pairs = ev.variogram_pairs(latlon, max_pairs=max_pairs, seed=3, binning=binning, **data)
        assert pairs.all_pairs == (max_pairs == 200_000)
        for bins, max_lag_m in ((7, None), (15, 2500.0), (np.array([0.0, 100.0, 900.0, 4000.0]), None)):
            ref = ev.empirical_variogram(
                latlon, bins=bins, binning=binning, max_lag_m=max_lag_m, max_pairs=max_pairs, seed=3, **data
            )
            got = ev.bin_pairs(pairs, bins, binning, max_lag_m)
            assert got.ok and ref.ok
            np.testing.assert_array_equal(got.bin_edges_m, ref.bin_edges_m)
            np.testing.assert_array_equal(got.counts, ref.counts)
            np.testing.assert_allclose(got.gamma, ref.gamma, rtol=1e-12)
            np.testing.assert_allclose(got.lag_m, ref.lag_m, rtol=1e-12)
            assert (got.n_pairs_sampled, got.n_pairs_total, got.all_pairs) == (
                ref.n_pairs_sampled,
                ref.n_pairs_total,
                ref.all_pairs,
            )
            assert got.mean_dissimilarity == pytest.approx(ref.mean_dissimilarity, rel=1e-12)


def test_variogram_pairs_bad_input_and_limits():
    from swclip.analysis.empirical_variogram import bin_pairs, variogram_pairs

    latlon = local_metres_to_degrees(np.random.default_rng(0).uniform(-500, 500, (50, 2)), (51.5, -0.1))
    flat = variogram_pairs(latlon, values=np.ones(50))
    assert not flat.ok and "zero variance" in flat.reason
    assert not bin_pairs(flat, 10).ok and "zero variance" in bin_pairs(flat, 10).reason
    with pytest.raises(ValueError, match="max_pairs"):
        variogram_pairs(latlon, values=np.arange(50.0), max_pairs=None)
