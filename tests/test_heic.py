"""Phone photos: HEIC / HEIF through pillow-heif, with EXIF GPS and orientation, in the library and on Predict."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image

from swclip.data import open_image
from swclip.data.table import exif_gps


def heic_bytes(orientation: int = 6) -> bytes:
    """A 64x32 HEIC made here: left quarter blue, the rest red; EXIF orientation and GPS 51°30'N 0°7'30"W."""
    img = Image.new("RGB", (64, 32), (200, 30, 30))
    img.paste((30, 30, 200), (0, 0, 16, 32))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    exif[ExifTags.Base.GPSInfo] = {1: "N", 2: (51.0, 30.0, 0.0), 3: "W", 4: (0.0, 7.0, 30.0)}
    buf = io.BytesIO()
    img.save(buf, format="HEIF", exif=exif.tobytes(), quality=95)
    return buf.getvalue()


def test_heic_opens_upright_with_its_gps():
    data = heic_bytes(orientation=6)
    assert data[4:12] == b"ftypheic"
    img = open_image(data)
    # orientation 6: shown rotated 90° clockwise, so 64x32 stands up as 32x64 and the blue left edge becomes the top
    assert img.size == (32, 64) and img.mode == "RGB"
    px = np.asarray(img).astype(int)
    assert px[:12, :, 2].mean() > 150 and px[:12, :, 0].mean() < 80  # top: blue
    assert px[-30:, :, 0].mean() > 150 and px[-30:, :, 2].mean() < 80  # bottom: red
    gps = exif_gps(io.BytesIO(data))
    assert gps["lat"] == pytest.approx(51.5) and gps["lon"] == pytest.approx(-(7.5 / 60))


def test_heic_without_rotation_stays_as_stored():
    img = open_image(heic_bytes(orientation=1))
    assert img.size == (64, 32)
    assert np.asarray(img)[:, :12, 2].mean() > 150  # blue on the left


@pytest.mark.slow
@pytest.mark.xdist_group(name="app")
def test_predict_page_takes_a_heic_upload_and_reads_its_gps(request, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.world_fixture import cached_world

    root = cached_world(Path(request.config.cache.mkdir("swclip_world_fixture")))
    monkeypatch.setenv("SWCLIP_RUNS_DIR", str(root))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=240)
    at.query_params.update({"run": "osv5m-swclip"})
    at.run()
    at.switch_page("pages/predict.py")
    at.run()
    at.file_uploader(key="uploads").set_value([("phone.heic", heic_bytes(), "image/heic")])
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "True spot** (EXIF GPS) 51.50000, -0.12500" in "\n".join(m.value for m in at.markdown)
