import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from swclip.kernels import kernel_weights
from swclip.method.soft_labels import effective_positives, soft_targets
from tests.reference import soft_targets_loop


def city_batch(n, seed=0, centre=(51.5, -0.12), extent_deg=0.04):
    rng = np.random.default_rng(seed)
    return np.stack([centre[0] + rng.uniform(0, extent_deg, n), centre[1] + rng.uniform(0, extent_deg, n)], 1)


@pytest.mark.parametrize("kernel", ["gaussian", "exponential", "onehot"])
@pytest.mark.parametrize("sigma_m", [0.0, 30.0, 250.0, 5000.0])
def test_matches_double_loop_reference(kernel, sigma_m):
    ll = city_batch(12, seed=1)
    ll[5] = ll[2]  # a duplicate location
    ref = np.array(soft_targets_loop(ll.tolist(), sigma_m, kernel))
    np.testing.assert_allclose(soft_targets(ll, sigma_m, kernel), ref, atol=1e-12)
    np.testing.assert_allclose(soft_targets(torch.tensor(ll), sigma_m, kernel).numpy(), ref, atol=2e-6)


@given(
    st.integers(2, 40),
    st.integers(0, 10_000),
    st.floats(0.0, 1e5),
    st.sampled_from(["gaussian", "exponential", "onehot"]),
)
def test_rows_sum_to_one(n, seed, sigma_m, kernel):
    ll = city_batch(n, seed)
    for q in (soft_targets(ll, sigma_m, kernel), soft_targets(torch.tensor(ll), sigma_m, kernel).double().numpy()):
        np.testing.assert_allclose(q.sum(1), 1.0, atol=1e-5)
        assert (q >= 0).all()


@given(st.integers(2, 40), st.integers(0, 10_000), st.sampled_from(["gaussian", "exponential"]))
def test_sigma_zero_is_exactly_one_hot(n, seed, kernel):
    ll = city_batch(n, seed)
    assert np.array_equal(soft_targets(ll, 0.0, kernel), np.eye(n))
    assert torch.equal(soft_targets(torch.tensor(ll), 0.0, kernel), torch.eye(n))
    # and the limit: a bandwidth far below the smallest spacing is one-hot to float precision
    assert torch.equal(soft_targets(torch.tensor(ll), 1e-3, kernel), torch.eye(n))


def test_duplicates_share_mass_equally():
    ll = np.array([[51.5, -0.1], [51.5, -0.1], [51.5, -0.1], [51.6, -0.1]])
    q = soft_targets(torch.tensor(ll), 0.0)
    np.testing.assert_allclose(q[:3, :3].numpy(), 1 / 3)
    assert q[3, 3] == 1 and q[:3, 3].sum() == 0


def test_distributed_rows_equal_rows_of_the_global_matrix():
    ll = torch.tensor(city_batch(16, 4))
    full = soft_targets(ll, 200.0)
    part = soft_targets(ll[8:], 200.0, latlon_cols=ll)
    torch.testing.assert_close(part, full[8:])


def test_float32_kernel_is_exact_zero_below_the_normal_range_and_exact_above():
    """exp() of a far pair's exponent would be a denormal (and slow on CPU); it is 0, the rest is untouched."""
    sigma = 150.0
    d = np.array([0.0, 100.0, 1500.0, 1980.0, 2000.0, 5000.0])  # exponents 0 ... -50, -87.1, -88.9, -555
    got = kernel_weights(torch.tensor(d, dtype=torch.float32), sigma, "gaussian").double().numpy()
    want = np.exp(-(d**2) / (2 * sigma**2))
    normal = want > 2 * np.finfo(np.float32).tiny
    np.testing.assert_allclose(got[normal], want[normal], rtol=1e-5)
    assert (got[~normal] == 0).all() and (~normal).sum() == 3
    assert (got[normal] > 0).all()
    got_exp = kernel_weights(torch.tensor(d, dtype=torch.float32), 20.0, "exponential").double().numpy()
    want_exp = np.exp(-d / 20.0)
    ok = want_exp > 2 * np.finfo(np.float32).tiny
    np.testing.assert_allclose(got_exp[ok], want_exp[ok], rtol=1e-5)
    assert (got_exp[~ok] == 0).all()


def test_kernels_decay_with_distance_and_match_their_formulas():
    d = np.array([0.0, 50.0, 100.0, 400.0])
    np.testing.assert_allclose(kernel_weights(d, 100.0, "gaussian"), np.exp(-(d**2) / (2 * 100.0**2)))
    np.testing.assert_allclose(kernel_weights(d, 100.0, "exponential"), np.exp(-d / 100.0))
    np.testing.assert_array_equal(kernel_weights(d, 100.0, "onehot"), [1, 0, 0, 0])
    dt = torch.tensor(d, dtype=torch.float32)
    np.testing.assert_allclose(kernel_weights(dt, 100.0, "gaussian").numpy(), np.exp(-(d**2) / 2e4), rtol=1e-6)
    assert torch.equal(dt, torch.tensor(d, dtype=torch.float32))  # not in place unless asked


def test_effective_positives():
    ll = city_batch(10, 6)
    np.testing.assert_allclose(effective_positives(soft_targets(ll, 0.0)), 1.0)
    np.testing.assert_allclose(effective_positives(soft_targets(ll, 1e9)), 10.0, rtol=1e-6)  # uniform rows
    q = soft_targets(ll, 300.0)
    ref = [1.0 / sum(v * v for v in row) for row in q.tolist()]
    np.testing.assert_allclose(effective_positives(q), ref)
    # wider kernels spread mass over more neighbours
    assert (effective_positives(soft_targets(ll, 600.0)) > effective_positives(q)).all()


@pytest.mark.parametrize(
    "sigma_m, kernel, match",
    [(-1.0, "gaussian", "sigma_m"), (float("nan"), "gaussian", "sigma_m"), (10.0, "cauchy", "kernel")],
)
def test_bad_bandwidth_or_kernel_is_refused(sigma_m, kernel, match):
    with pytest.raises(ValueError, match=match):
        soft_targets(city_batch(3), sigma_m, kernel)


def test_bad_coordinates_are_refused():
    ll = city_batch(4)
    ll[2] = [np.nan, 0.0]
    with pytest.raises(ValueError, match="NaN"):
        soft_targets(ll, 10.0)
