"""The Negatives page: its library against plain loops, its figures, and the page under AppTest."""

from pathlib import Path

import numpy as np
import pytest

from swclip.method.negatives import batch_negatives, run_variogram, share_by_distance, strongest_pairs
from swclip.method.semivariogram_loss import LossVariogram
from swclip.viz import negatives as figs
from tests.test_semivariogram_loss import haversine_loop, make_fit, stable_gamma


def city_batch(b=20, seed=0):
    rng = np.random.default_rng(seed)
    ll = np.stack([53.48 + 0.02 * rng.random(b), -2.24 + 0.02 * rng.random(b)], 1)
    emb = np.concatenate([(ll - ll.mean(0)) * 40, 0.3 * rng.normal(size=(b, 6))], 1).astype(np.float32)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True), ll


@pytest.mark.parametrize(
    "variant,beta,margin",
    [("swclip", 1.5, 0.0), ("swclip", 1.0, 0.05), ("chen2025", 1.0, 0.0), ("chen2025", 2.0, 0.03)],
)
def test_batch_negatives_equal_a_plain_loop(variant, beta, margin):
    emb, ll = city_batch()
    fit = make_fit(range_m=900.0, nugget=0.2, psill=0.5)
    split = 1100.0
    neg = batch_negatives(
        emb, ll, LossVariogram(fit, split, "rho" if variant == "chen2025" else "practical", 0, 0), variant, beta, margin
    )
    n = len(ll)
    for i in range(n):
        for j in range(n):
            h = haversine_loop(ll[i], ll[j])
            c = 1.0 - float(np.dot(emb[i].astype(np.float64), emb[j]))
            r = stable_gamma(h, fit) - c
            near = h <= split
            if i == j:
                want_false = want_hard = False
                log_w = 0.0
            elif variant == "swclip":
                want_false, want_hard = near and r > margin, (not near) and r > margin
                log_w = -beta * (r - margin) if want_false else beta * (r - margin) if want_hard else 0.0
            else:
                p = max(0.0, c - stable_gamma(h, fit) - margin) if near else 0.0
                want_false, want_hard, log_w = near and r > margin, p > 0, beta * p
            assert neg.false[i, j] == want_false and neg.hard[i, j] == want_hard, (i, j)
            assert neg.log_w[i, j] == pytest.approx(log_w, abs=1e-5)
    assert neg.false.any() and neg.hard.any()  # both kinds were exercised


def test_shares_and_strongest_pairs_by_loops():
    emb, ll = city_batch(30, seed=1)
    neg = batch_negatives(
        emb, ll, LossVariogram(make_fit(range_m=900.0, nugget=0.2, psill=0.5), 1100.0, "practical", 0, 0)
    )
    shares = share_by_distance(neg, bins=6)
    edges = np.linspace(0, neg.h_m.max(), 7)
    for k in range(6):
        pairs = [
            (i, j)
            for i in range(30)
            for j in range(i + 1, 30)
            if (edges[k] <= neg.h_m[i, j] < edges[k + 1]) or (k == 5 and neg.h_m[i, j] == edges[6])
        ]
        assert shares["pairs"][k] == len(pairs)
        if pairs:
            want = sum(bool(neg.false[i, j] or neg.false[j, i]) for i, j in pairs) / len(pairs)
            assert shares["false_share"][k] == pytest.approx(want)
    top = strongest_pairs(neg, "hard", k=5)
    assert list(top["strength"]) == sorted(top["strength"], reverse=True)
    best = max((neg.strength[i, j] for i in range(30) for j in range(30) if neg.hard[i, j]), default=0.0)
    assert top["strength"].iloc[0] == pytest.approx(best)
    assert all(neg.hard[i, j] or neg.hard[j, i] for i, j in zip(top["i"], top["j"]))


def test_figures_show_false_in_blue_and_hard_in_red():
    emb, ll = city_batch(16, seed=2)
    lv = LossVariogram(make_fit(range_m=900.0, nugget=0.2, psill=0.5), 1100.0, "practical", 0, 0)
    neg = batch_negatives(emb, ll, lv)
    z = np.asarray(figs.negatives_heatmap(neg).data[0].z)
    assert ((z < 0) == neg.false).all() and ((z > 0) == neg.hard).all()
    g = figs.gamma_figure(neg, lv)
    assert g.data[-1].y[0] == pytest.approx(lv.fit.gamma([0.0])[0])
    assert any(s.x0 == pytest.approx(1100.0) for s in g.layout.shapes)


def test_run_variogram_prefers_the_runs_own_and_says_why_there_is_none():
    emb, ll = city_batch(40, seed=3)
    saved = {**LossVariogram(make_fit(), 1234.0, "practical", 77, 4096).to_dict(), "variant": "swclip"}
    lv, why = run_variogram({"loss_variogram": saved}, emb, ll, "swclip")
    assert lv.split_m == 1234.0 and "step 77" in why
    # the other variant was not what the run used: fit here; a 2-km city in 6.4-km bins has no chen2025 fit
    lv, why = run_variogram({"loss_variogram": saved}, emb, ll, "chen2025")
    assert lv is None and "no variogram could be fitted" in why


@pytest.mark.slow
@pytest.mark.xdist_group(name="app")
def test_negatives_page_under_apptest(tmp_path_factory, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.app_fixture import fixture_runs

    root = fixture_runs(tmp_path_factory.mktemp("negatives_fixture"))
    monkeypatch.setenv("SWCLIP_RUNS_DIR", str(root))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=120).run()
    at.switch_page("pages/negatives.py").run()
    assert not at.exception, [e.value for e in at.exception]
    text = "\n".join(str(m.value) for m in at.markdown) + "\n".join(str(w.value) for w in at.warning)
    assert "Negatives" in "\n".join(t.value for t in at.title)
    assert "False negatives" in text or "No weights to show" in text
    if "No weights to show" not in text:  # the controls are live: the variant moves the page and the URL
        at.radio(key="url:variant").set_value("chen2025").run()
        assert not at.exception, [e.value for e in at.exception]
        assert at.query_params["variant"] == "chen2025"
