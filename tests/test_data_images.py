"""open_image on every mode and every kind of broken file; ImageDataset; StreetAugment."""

import io

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from PIL import Image

from swclip.data import ImageDataset, ImageError, StreetAugment, check_image_file, open_image


def _jpeg_bytes(size=(24, 16), colour=(200, 30, 40), **kw) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=95, **kw)
    return buf.getvalue()


def test_rgb_from_path_bytes_and_file_object(tmp_path):
    data = _jpeg_bytes()
    p = tmp_path / "a.jpg"
    p.write_bytes(data)
    ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    for src in (p, str(p), data, io.BytesIO(data)):
        img = open_image(src)
        assert img.mode == "RGB" and img.size == (24, 16)
        np.testing.assert_array_equal(np.asarray(img), ref)


def test_exif_orientation_applied(tmp_path):
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[0, 0] = (255, 0, 0)  # a marker in the stored top-left corner
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs a 90° clockwise turn
    p = tmp_path / "rot.png"
    img.save(p, exif=exif)
    out = open_image(p)
    assert out.size == (10, 20)  # width and height swapped
    # reference: Pillow's own transpose for orientation 6
    np.testing.assert_array_equal(np.asarray(out), np.asarray(img.transpose(Image.Transpose.ROTATE_270)))


def test_cmyk_16bit_alpha_palette_become_rgb(tmp_path):
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    buf = io.BytesIO()
    cmyk.save(buf, "JPEG")
    red = np.asarray(open_image(buf.getvalue())).reshape(-1, 3).mean(0)
    assert red[0] > 200 and red[1] < 60 and red[2] < 60

    grey16 = np.array([[0, 32768, 65535]], dtype=np.uint16)
    p = tmp_path / "g16.png"
    Image.fromarray(grey16).save(p)
    out = np.asarray(open_image(p))
    assert out.shape == (1, 3, 3)
    np.testing.assert_array_equal(out[0, :, 0], [0, 128, 255])  # rescaled, not clipped at 255

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 0)  # fully transparent -> white background
    rgba[1, 1] = (10, 20, 30, 255)
    out = np.asarray(open_image(_png(Image.fromarray(rgba, "RGBA"))))
    np.testing.assert_array_equal(out[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(out[1, 1], [10, 20, 30])

    pal = Image.new("P", (2, 1))
    pal.putpalette([0, 0, 255, 0, 255, 0] + [0] * 762)
    pal.putpixel((1, 0), 1)
    out = np.asarray(open_image(_png(pal)))
    np.testing.assert_array_equal(out[0], [[0, 0, 255], [0, 255, 0]])


def _png(img) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_broken_files_raise_clear_image_errors(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo\n")
    full = _jpeg_bytes(size=(64, 64))
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(full[: len(full) // 2])
    cases = {empty: "empty file", text: "not an image", trunc: "truncated", tmp_path / "nope.jpg": "does not exist"}
    for path, words in cases.items():
        with pytest.raises(ImageError, match=words) as e:
            open_image(path)
        assert isinstance(e.value, ValueError) and str(path) in str(e.value)
    assert check_image_file(empty) == "empty file (0 bytes)"
    assert check_image_file(text) == "not an image Pillow can read"
    assert "truncated" in check_image_file(trunc)
    assert check_image_file(tmp_path / "nope.jpg") == "missing"
    good = tmp_path / "good.jpg"
    good.write_bytes(full)
    assert check_image_file(good) is None and check_image_file(good, decode=True) is None
    assert list(tmp_path.iterdir()) and not any(
        p.name.startswith("tmp") for p in tmp_path.iterdir()
    )  # no temp files left


def test_decompression_bomb_refused_before_decoding():
    data = _png(Image.new("L", (400, 300)))
    with pytest.raises(ImageError, match="decompression-bomb"):
        open_image(data, max_pixels=100_000)
    assert open_image(data, max_pixels=120_000).size == (400, 300)


def test_image_dataset_uses_the_given_open_clip_transform(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    table = pd.DataFrame(
        dict(
            id=["a", "b", "c"],
            image=[f"{i}.png" for i in range(3)],
            lat=[51.5, 52.0, 53.0],
            lon=[-0.1, -1.0, -2.0],
            city="X",
        )
    )
    tf = open_clip.image_transform(32, is_train=False)
    ds = ImageDataset(table, tmp_path, tf)
    assert len(ds) == 3
    item = ds[2]
    assert item["image"].shape == (3, 32, 32) and item["index"] == 2
    assert item["latlon"].dtype == torch.float64 and item["latlon"].tolist() == [53.0, -2.0]
    ref = tf(Image.open(tmp_path / "2.png").convert("RGB"))
    torch.testing.assert_close(item["image"], ref)
    bad = table.assign(image=["0.png", "../outside.png", "2.png"])
    with pytest.raises(ValueError, match="escapes the dataset root"):
        ImageDataset(bad, tmp_path, tf)


def _normalised(batch_px):
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    return (batch_px - mean) / std, mean, std


def test_street_augment_each_part():
    g = torch.Generator().manual_seed(0)
    px = 0.3 + 0.4 * torch.rand(6, 3, 16, 16, generator=g)  # mid-range: no clamping
    x, mean, std = _normalised(px)
    torch.testing.assert_close(StreetAugment(0, 0, 0)(x), x)

    out = StreetAugment(brightness=0.15, noise_std=0, max_shift_px=0)(x) * std + mean
    ratio = (out / px).flatten(1)  # one factor per image
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), atol=1e-4)
    assert ((ratio[:, 0] >= 0.85 - 1e-5) & (ratio[:, 0] <= 1.15 + 1e-5)).all() and ratio[:, 0].std() > 0.01

    out = StreetAugment(brightness=0, noise_std=0.05, max_shift_px=0)(x) * std + mean
    assert abs(float((out - px).std()) - 0.05) < 0.005

    s = 2
    out = StreetAugment(brightness=0, noise_std=0, max_shift_px=s)(x)
    padded = torch.nn.functional.pad(px, (s, s, s, s), mode="replicate")
    for b in range(len(x)):  # each image equals one of the (2s+1)² replicate-padded crops
        crops = [
            (padded[b, :, dy : dy + 16, dx : dx + 16] - mean[0]) / std[0]
            for dy in range(2 * s + 1)
            for dx in range(2 * s + 1)
        ]
        assert min(float((out[b] - c).abs().max()) for c in crops) < 1e-5

    a = StreetAugment(generator=torch.Generator().manual_seed(3))(x)
    b = StreetAugment(generator=torch.Generator().manual_seed(3))(x)
    torch.testing.assert_close(a, b)
    assert StreetAugment()(x[0]).shape == (3, 16, 16)
