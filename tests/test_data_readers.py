"""Readers (CSV/Parquet, OSV-5M, EXIF folder) on good and broken inputs; the validation report."""

import io
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

from swclip.data import DataValidationError, read_exif_folder, read_osv5m, read_table, resolve_image_path, validate

CITIES = {"Leeds": (53.7965, -1.5478), "York": (53.9600, -1.0873)}


def _jpeg(path, colour=(120, 80, 40), exif=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 12), colour).save(path, "JPEG", **({"exif": exif} if exif is not None else {}))


def _dataset(tmp_path, n=6):
    rows = []
    for i in range(n):
        city = list(CITIES)[i % 2]
        lat, lon = CITIES[city]
        _jpeg(tmp_path / "img" / f"{i}.jpg")
        rows.append(dict(uid=f"s{i}", path=f"img/{i}.jpg", latitude=lat + 0.001 * i, longitude=lon, town=city))
    return pd.DataFrame(rows)


MAP = {"id": "uid", "image": "path", "lat": "latitude", "lon": "longitude", "city": "town"}


def test_read_csv_and_parquet_with_column_mapping(tmp_path):
    raw = _dataset(tmp_path)
    raw.to_csv(tmp_path / "t.csv", index=False)
    raw.to_parquet(tmp_path / "t.parquet")
    for name in ("t.csv", "t.parquet"):
        t = read_table(tmp_path / name, columns=MAP)
        assert list(t.columns[:5]) == ["id", "image", "lat", "lon", "city"]
        assert t["lat"].dtype == np.float64 and t["id"].tolist() == raw["uid"].tolist()
        np.testing.assert_allclose(t["lat"], raw["latitude"])
        assert t.attrs["validation"]["problems"] == {} and t.attrs["root"] == str(tmp_path.resolve())


def test_csv_missing_column_names_it(tmp_path):
    raw = _dataset(tmp_path).drop(columns=["longitude"])
    raw.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(ValueError, match=r"'lon' \(looked for column 'longitude'\)"):
        read_table(tmp_path / "t.csv", columns=MAP)


def test_swapped_lat_lon_is_reported_then_dropped_on_request(tmp_path):
    raw = _dataset(tmp_path)
    # rows 1 and 4: a lon/lat mix-up that puts |lat| > 90
    raw.loc[[1, 4], "latitude"] = [153.7, 153.9]
    raw.loc[[1, 4], "longitude"] = [-27.5, -27.4]
    raw.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataValidationError, match="bad_coords") as e:
        read_table(tmp_path / "t.csv", columns=MAP)
    assert "swapped" in str(e.value) and "row 1" in str(e.value)
    with pytest.warns(UserWarning, match="dropped 2 rows"):
        t = read_table(tmp_path / "t.csv", columns=MAP, drop_invalid=True)
    assert len(t) == 4 and t.attrs["validation"]["n_dropped"] == 2
    assert t["id"].tolist() == ["s0", "s2", "s3", "s5"]


def test_broken_images_and_escaping_paths_become_report_entries(tmp_path):
    raw = _dataset(tmp_path, n=8)
    (tmp_path / "img" / "1.jpg").write_bytes(b"")  # 0-byte
    (tmp_path / "img" / "2.jpg").write_text("not a jpeg at all")  # text named .jpg
    full = (tmp_path / "img" / "3.jpg").read_bytes()
    big = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(big, "JPEG")
    (tmp_path / "img" / "3.jpg").write_bytes(big.getvalue()[: len(big.getvalue()) - 300])  # truncated
    assert len(full) > 0
    (tmp_path.parent / "secret.jpg").write_bytes(full)
    raw.loc[4, "path"] = "../secret.jpg"
    raw.loc[5, "path"] = "img/../../secret.jpg"
    raw.loc[6, "path"] = "img/missing.jpg"
    raw.to_csv(tmp_path / "t.csv", index=False)
    report = validate(read_table(tmp_path / "t.csv", columns=MAP, check_images=False), tmp_path)
    assert {k: p.count for k, p in report.problems.items()} == {
        "bad_path": 2,
        "missing_image": 1,
        "unreadable_image": 3,
    }
    assert report.problems["unreadable_image"].rows.tolist() == [1, 2, 3]
    text = report.text()
    assert (
        "empty file" in text and "not an image" in text and "truncated" in text and "escapes the dataset root" in text
    )
    with pytest.raises(DataValidationError):
        read_table(tmp_path / "t.csv", columns=MAP)
    with pytest.warns(UserWarning):
        t = read_table(tmp_path / "t.csv", columns=MAP, drop_invalid=True)
    assert t["id"].tolist() == ["s0", "s7"]
    # full decode catches the same files
    assert (
        validate(read_table(tmp_path / "t.csv", columns=MAP, check_images=False), tmp_path, check_images="decode")
        .problems["unreadable_image"]
        .count
        == 3
    )


def test_resolve_image_path_rejects_escapes(tmp_path):
    assert resolve_image_path(tmp_path, "a/b.jpg") == (tmp_path / "a" / "b.jpg").resolve()
    for bad in ("../x.jpg", "a/../../x.jpg", "/etc/passwd", "", "nan"):
        with pytest.raises(ValueError):
            resolve_image_path(tmp_path, bad)
    (tmp_path / "link").symlink_to(tmp_path.parent)
    with pytest.raises(ValueError, match="escapes"):
        resolve_image_path(tmp_path, "link/x.jpg")


def test_duplicates_and_small_cities(tmp_path):
    raw = _dataset(tmp_path)
    raw.loc[3, "uid"] = "s1"
    raw.loc[5, "town"] = "Tiny"
    raw.to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(DataValidationError) as e:
        read_table(tmp_path / "t.csv", columns=MAP, min_city_samples=2)
    report = e.value.report
    assert report.problems["duplicate_id"].rows.tolist() == [3]
    assert report.problems["small_city"].rows.tolist() == [5] and "'Tiny': 1 sample(s) < 2" in report.text()
    assert set(report.problems) == {"duplicate_id", "small_city"}


# -- property test: validation of the CSV reader against a naive reference -------------------------

_coord = st.one_of(
    st.floats(-95, 95, allow_nan=False),
    st.floats(-200, 370, allow_nan=False),
    st.just(math.nan),
    st.just(math.inf),
    st.just(-math.inf),
)
_row = st.fixed_dictionaries(
    dict(id=st.sampled_from("abcdefghij"), lat=_coord, lon=_coord, city=st.sampled_from(["A", "B", ""]))
)


@given(st.lists(_row, min_size=1, max_size=25))
def test_csv_validation_matches_a_naive_reference(tmp_path_factory, rows):
    tmp = tmp_path_factory.mktemp("prop")
    df = pd.DataFrame(rows)
    df["image"] = "x.jpg"
    df.to_csv(tmp / "t.csv", index=False, float_format="%.17g")
    seen, expect_keep = set(), []
    for r in rows:  # naive reference of the rules in the docs
        ok = math.isfinite(r["lat"]) and math.isfinite(r["lon"]) and abs(r["lat"]) <= 90 and -180 <= r["lon"] <= 360
        ok = ok and r["city"] != "" and r["id"] not in seen
        seen.add(r["id"])
        expect_keep.append(ok)
    if all(expect_keep):
        t = read_table(tmp / "t.csv", check_images=False)
    else:
        with pytest.raises(DataValidationError):
            read_table(tmp / "t.csv", check_images=False)
        with pytest.warns(UserWarning):
            t = read_table(tmp / "t.csv", check_images=False, drop_invalid=True)
        assert t.attrs["validation"]["n_dropped"] == len(rows) - sum(expect_keep)
    kept = [r for r, k in zip(rows, expect_keep) if k]
    assert t["id"].tolist() == [r["id"] for r in kept]
    np.testing.assert_array_equal(t["lat"].to_numpy(), [r["lat"] for r in kept])


# -- OSV-5M ----------------------------------------------------------------------------------------


def _osv(tmp_path, nested=False):
    rows = []
    for i in range(4):
        sub = tmp_path / "images" / "train" / ("07" if nested else "")
        _jpeg(sub / f"{1000 + i}.jpg")
        rows.append(
            {
                "id": 1000 + i,
                "latitude": 48.85 + i * 0.01,
                "longitude": 2.35,
                "country": "FR",
                "region": "IDF",
                "sub-region": "Paris",
                "city": "Paris",
            }
        )
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)


@pytest.mark.parametrize("nested", [False, True])
def test_read_osv5m(tmp_path, nested):
    _osv(tmp_path, nested)
    t = read_osv5m(tmp_path, "train")
    assert t["id"].tolist() == ["1000", "1001", "1002", "1003"] and (t["split"] == "train").all()
    assert t["image"].iloc[0] == ("images/train/07/1000.jpg" if nested else "images/train/1000.jpg")
    assert t["country"].iloc[0] == "FR"


def test_read_osv5m_broken(tmp_path):
    _osv(tmp_path)
    (tmp_path / "images" / "train" / "1002.jpg").unlink()
    with pytest.raises(DataValidationError, match="missing_image"):
        read_osv5m(tmp_path, "train")
    pd.read_csv(tmp_path / "train.csv").drop(columns=["latitude"]).to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(ValueError, match="latitude"):
        read_osv5m(tmp_path, "train")
    with pytest.raises(ValueError, match="split"):
        read_osv5m(tmp_path, "val")


# -- EXIF folder -----------------------------------------------------------------------------------


def _gps_exif(lat, lon, heading=None):
    def dms(x):
        x = abs(x)
        d, m = int(x), int((x - int(x)) * 60)
        return (IFDRational(d), IFDRational(m), IFDRational(round((x - d - m / 60) * 3600 * 1000), 1000))

    exif = Image.Exif()
    gps = {1: "N" if lat >= 0 else "S", 2: dms(lat), 3: "E" if lon >= 0 else "W", 4: dms(lon)}
    if heading is not None:
        gps[17] = IFDRational(heading)
    exif[ExifTags.IFD.GPSInfo] = gps
    exif[ExifTags.Base.DateTime] = "2024:05:01 10:00:00"
    return exif


def test_read_exif_folder_city_from_folder_and_geocode(tmp_path):
    _jpeg(tmp_path / "Manchester" / "a.jpg", exif=_gps_exif(53.4794, -2.2453, heading=270))
    _jpeg(tmp_path / "Edinburgh" / "b.jpg", exif=_gps_exif(55.9533, -3.1883))
    t = read_exif_folder(tmp_path, city_from="folder")
    assert t["city"].tolist() == ["Edinburgh", "Manchester"]  # sorted by path
    np.testing.assert_allclose(t[["lat", "lon"]].to_numpy(), [[55.9533, -3.1883], [53.4794, -2.2453]], atol=1e-6)
    assert t["heading"].iloc[1] == 270.0 and t["captured_at"].iloc[0] == "2024:05:01 10:00:00"
    g = read_exif_folder(tmp_path, city_from="geocode")
    assert g["city"].tolist() == ["Edinburgh", "Manchester"] and (g["country"] == "GB").all()
    c = read_exif_folder(tmp_path, city_from="column", cities={"Manchester/a.jpg": "M", "Edinburgh/b.jpg": "E"})
    assert c["city"].tolist() == ["E", "M"]


def test_read_exif_folder_broken(tmp_path):
    _jpeg(tmp_path / "Leeds" / "ok.jpg", exif=_gps_exif(53.7965, -1.5478))
    _jpeg(tmp_path / "Leeds" / "nogps.jpg")
    (tmp_path / "Leeds" / "text.jpg").write_text("hello")
    (tmp_path / "Leeds" / "zero.jpg").write_bytes(b"")
    with pytest.raises(DataValidationError) as e:
        read_exif_folder(tmp_path)
    report = e.value.report
    assert report.problems["bad_coords"].count == 3  # no GPS, and the two unreadable files have none either
    assert report.problems["unreadable_image"].count == 2
    with pytest.warns(UserWarning):
        t = read_exif_folder(tmp_path, drop_invalid=True)
    assert t["id"].tolist() == ["Leeds/ok"]
    with pytest.raises(ValueError, match="city_from"):
        read_exif_folder(tmp_path, city_from="guess")
