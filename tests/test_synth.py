"""The demo world: determinism, files, streets, field statistics, and the promise itself."""

import json

import numpy as np
import pytest
from PIL import Image

from swclip.cli import main as swclip_main
from swclip.data import read_table
from swclip.geo import local_metres_to_degrees, pairwise_haversine_m
from swclip.synth import CITIES, FIELD_NAMES, FieldSpec, correlation, field_values, load_world, make_world, world_fields
from swclip.synth.streets import StreetParams, make_streets, sample_along


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """All eight cities, 500 samples each at 32 px: small enough to render in seconds."""
    return make_world(tmp_path_factory.mktemp("world"), seed=1, samples_per_city=500, image_size=32)


def test_same_seed_same_image_other_seed_differs(tmp_path):
    kw = dict(cities=["Leeds", "Bristol"], samples_per_city=12, image_size=32)
    a = make_world(tmp_path / "a", seed=5, **kw)
    b = make_world(tmp_path / "b", seed=5, workers=2, **kw)  # worker processes do not change the images
    c = make_world(tmp_path / "c", seed=6, **kw)
    for rel in a.table["image"]:
        assert (a.root / rel).read_bytes() == (b.root / rel).read_bytes()
    assert (a.root / "samples.csv").read_bytes() == (b.root / "samples.csv").read_bytes()
    assert (a.root / "world.json").read_bytes() == (b.root / "world.json").read_bytes()
    differ = [
        not np.array_equal(np.asarray(Image.open(a.root / r)), np.asarray(Image.open(c.root / r)))
        for r in a.table["image"]
    ]
    assert all(differ)
    assert not np.allclose(a.table["lat"], c.table["lat"])


def test_refuses_to_clobber(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="overwrite"):
        make_world(tmp_path, cities=["Leeds"], samples_per_city=4, image_size=16)
    with pytest.raises(ValueError, match="unknown city"):
        make_world(tmp_path / "x", cities=["Atlantis"], samples_per_city=4)


@pytest.mark.xdist_group("synth_world")  # one worker renders the module's world once
def test_files_are_an_ordinary_dataset_with_ground_truth(world):
    t = read_table(world.root / "samples.csv", min_city_samples=500)  # validates every image header too
    assert len(t) == 8 * 500 and sorted(t["city"].unique()) == sorted(CITIES)
    assert t["heading"].between(0, 360).all()
    meta = load_world(world.root)
    assert meta == json.loads((world.root / "world.json").read_text())
    assert {c["network"]["network"] for c in meta["cities"]} == {"grid", "radial", "organic"}
    for c in meta["cities"]:
        assert [f["name"] for f in c["fields"]] == list(FIELD_NAMES)
        ranges = [f["range_m"] for f in c["fields"]]
        assert min(ranges) >= 150 and max(ranges) <= 2000 and len(set(ranges)) == 12
        # the sample's centre is the real city centre, within the city's extent
        sub = t[t["city"] == c["name"]]
        centre = np.array(c["centre_latlon"])
        assert pairwise_haversine_m(sub[["lat", "lon"]].to_numpy(), centre[None]).max() < c["extent_m"] * 0.75
    geo = json.loads((world.root / "streets.geojson").read_text())
    assert {f["properties"]["city"] for f in geo["features"]} == set(CITIES)
    lon, lat = geo["features"][0]["geometry"]["coordinates"][0]  # GeoJSON order
    assert 50 < lat < 57 and -5 < lon < 1
    # latent.csv holds the truth behind the pixels; re-evaluating a field from world.json reproduces it
    import pandas as pd

    latent = pd.read_csv(world.root / "latent.csv")
    specs = world_fields(meta, "Glasgow")
    rows = latent[latent["id"].str.startswith("glasgow-")]
    from scipy.special import ndtr

    np.testing.assert_allclose(
        ndtr(field_values(specs[0], rows[["x_m", "y_m"]].to_numpy())), rows[specs[0].name], atol=2e-6
    )


def test_streets_differ_by_type_and_samples_are_street_view_spaced():
    spacing = {}
    for net in ("grid", "radial", "organic"):
        lines = make_streets(StreetParams(net, 2500.0, 220.0, 20.0, n_spokes=12, wobble_m=50.0), seed=0)
        assert lines and all(line.length > 1 for line in lines)
        xy, heading, spacing[net] = sample_along(lines, 1500, seed=0)
        assert np.abs(xy).max() < 1250 + 10 and ((heading >= 0) & (heading < 360)).all()
        d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1)) + np.eye(len(xy)) * 1e9
        assert 5 < np.median(d.min(1)) < 100  # tens of metres to the nearest neighbour
    assert 10 < min(spacing.values()) and max(spacing.values()) < 100


def test_fields_have_the_stated_covariance():
    """Empirical correlation over many independent fields against exp(-3 h²/r²)."""
    rng = np.random.default_rng(0)
    r = 500.0
    x = rng.uniform(-3000, 3000, (400, 2))
    for h in (0.0, 250.0, 500.0, 1000.0):
        ang = rng.uniform(0, 2 * np.pi, len(x))
        y = x + h * np.stack([np.cos(ang), np.sin(ang)], 1)
        prods, sq = [], []
        for s in range(40):
            spec = FieldSpec("f", r, seed=s)
            fx, fy = field_values(spec, x), field_values(spec, y)
            prods.append(np.mean(fx * fy))
            sq.append(np.mean(fx * fx))
        assert abs(np.mean(sq) - 1.0) < 0.05  # unit variance
        assert abs(np.mean(prods) - float(correlation(h, r))) < 0.05, h
    assert float(correlation(r, r)) == pytest.approx(np.exp(-3))


@pytest.mark.slow
@pytest.mark.xdist_group("synth_world")
def test_pixel_similarity_decays_with_distance_in_every_city(world):
    """The promise: near pairs look alike, far pairs do not; a shuffled control shows no effect."""
    rng = np.random.default_rng(0)
    for city, sub in world.table.groupby("city"):
        x = np.stack(
            [np.asarray(Image.open(world.root / p).reduce(4), dtype=np.float64).ravel() / 255 for p in sub["image"]]
        )  # (n, 8·8·3)
        d = pairwise_haversine_m(sub[["lat", "lon"]].to_numpy())
        gram = x @ x.T
        sq = np.diag(gram)
        f = np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * gram, 0))  # (n, n) pixel-feature distances
        iu = np.triu_indices(len(sub), 1)
        near, far = d[iu] < 150, d[iu] > 1500  # closer than the shortest range, beyond most of them
        assert near.sum() > 200 and far.sum() > 1000, city
        ratio = f[iu][near].mean() / f[iu][far].mean()
        perm = rng.permutation(len(sub))
        dp = d[np.ix_(perm, perm)][iu]
        control = f[iu][dp < 150].mean() / f[iu][dp > 1500].mean()
        assert ratio < 0.85, (city, ratio)
        assert control > 0.93, (city, control)


def test_cli_writes_a_world(tmp_path, capsys):
    out = tmp_path / "w"
    assert (
        swclip_main(
            [
                "synth",
                "--out",
                str(out),
                "--cities",
                "Leeds",
                "--samples-per-city",
                "8",
                "--image-size",
                "16",
                "--workers",
                "1",
            ]
        )
        == 0
    )
    assert "wrote 8 images" in capsys.readouterr().out
    assert load_world(out)["cities"][0]["name"] == "Leeds"
    with pytest.raises(SystemExit):
        swclip_main(["synth", "--help"])


def _empirical_correlation(covariance, r, lags_m, n_fields=40, n_points=400):
    """Mean over independent fields of f(x)·f(x + h), h at a random angle: the correlation at each lag."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-3000, 3000, (n_points, 2))
    out = []
    for h in lags_m:
        ang = rng.uniform(0, 2 * np.pi, len(x))
        y = x + h * np.stack([np.cos(ang), np.sin(ang)], 1)
        prods = [
            np.mean(field_values(spec, x) * field_values(spec, y))
            for spec in (FieldSpec("f", r, seed=s, covariance=covariance) for s in range(n_fields))
        ]
        out.append(float(np.mean(prods)))
    return np.array(out)


def test_exponential_fields_have_the_stated_covariance_and_differ_from_gaussian_near_the_origin():
    """exp(-3h/r) at every lag; near the origin it falls linearly (a rough field), the Gaussian one quadratically."""
    r = 500.0
    lags = np.array([0.0, 50.0, 150.0, 500.0, 1000.0])
    exp_corr = _empirical_correlation("exponential", r, lags)
    gauss_corr = _empirical_correlation("gaussian", r, lags)
    assert np.abs(exp_corr - correlation(lags, r, "exponential")).max() < 0.06
    assert np.abs(gauss_corr - correlation(lags, r, "gaussian")).max() < 0.06
    # at r/10 the exponential field has lost 26 % of its correlation, the Gaussian 3 %: the shapes differ
    assert 1 - exp_corr[1] > 0.18 and 1 - gauss_corr[1] < 0.08
    assert float(correlation(r, r, "exponential")) == pytest.approx(np.exp(-3))


def test_exponential_world_variogram_is_best_fit_by_the_exponential_model():
    """scikit-gstat (an independent fitter) tells the two worlds apart from field values alone."""
    import dataclasses

    from swclip.analysis.empirical_variogram import empirical_variogram
    from swclip.analysis.variogram import fit_variogram

    rng = np.random.default_rng(1)
    xy = rng.uniform(-2500, 2500, (1500, 2))
    latlon = local_metres_to_degrees(xy, (51.5, -0.1))
    rmse = {}
    for covariance in ("gaussian", "exponential"):
        # the mean of 8 independent fields' empirical variograms on the same points and bins
        emps = [
            empirical_variogram(
                latlon,
                values=field_values(FieldSpec("f", 800.0, seed=s, covariance=covariance), xy),
                bins=25,
                max_lag_m=1500.0,
                seed=0,
            )
            for s in range(8)
        ]
        emp = dataclasses.replace(emps[0], gamma=np.mean([e.gamma for e in emps], 0))
        rmse[covariance] = {m: fit_variogram(emp, m, nugget=False).rmse for m in ("gaussian", "exponential")}
    # each world's own model fits ten times better than the other's
    assert rmse["gaussian"]["gaussian"] * 5 < rmse["gaussian"]["exponential"]
    assert rmse["exponential"]["exponential"] * 5 < rmse["exponential"]["gaussian"]


def test_world_records_and_reloads_its_covariance(tmp_path):
    world = make_world(
        tmp_path / "w", seed=0, cities=["London"], samples_per_city=20, image_size=16, covariance="exponential"
    )
    meta = load_world(world.root)
    assert meta["covariance"] == "exponential" and "exp(-3 h / range_m)" in meta["field_method"]
    specs = world_fields(meta, "London")
    assert {s.covariance for s in specs} == {"exponential"}
    assert all(f["covariance"] == "exponential" for f in meta["cities"][0]["fields"])
    # the same seed's Gaussian world keeps its streets and ranges: only the field texture changes
    gauss = make_world(tmp_path / "g", seed=0, cities=["London"], samples_per_city=20, image_size=16)
    assert gauss.table[["lat", "lon"]].equals(world.table[["lat", "lon"]])
    assert [s.range_m for s in world_fields(load_world(gauss.root), "London")] == [s.range_m for s in specs]
    with pytest.raises(ValueError, match="covariance"):
        make_world(tmp_path / "x", cities=["London"], samples_per_city=20, image_size=16, covariance="spherical")
    # a world.json of version 1 stored the formula; it still reads as gaussian
    assert FieldSpec("f", 100.0, 0, covariance="gaussian: exp(-3 h^2 / range_m^2)").covariance == "gaussian"
