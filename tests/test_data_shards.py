"""WebDataset shards: round trip of metadata and image bytes; broken shards fail clearly."""

import io
import tarfile

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from PIL import Image

from swclip.data import ImageError, open_image, read_table, read_webdataset, stream_webdataset, write_webdataset


@pytest.fixture
def dataset(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(7):
        ext = "png" if i % 3 == 0 else "jpg"
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / f"im{i}.{ext}")
        rows.append(
            dict(
                id=f"id.{i}",
                image=f"im{i}.{ext}",
                lat=51.5 + i * 1e-4,
                lon=-0.12 - i * 1e-4,
                city="London" if i < 4 else "Leeds",
                heading=float(10 * i),
            )
        )
    pd.DataFrame(rows).to_csv(tmp_path / "samples.csv", index=False)
    return tmp_path, read_table(tmp_path / "samples.csv")


def test_round_trip(dataset, tmp_path_factory):
    root, table = dataset
    out = tmp_path_factory.mktemp("shards")
    shards = write_webdataset(table, root, out, shard_size=3)
    assert [p.name for p in shards] == ["shard-000000.tar", "shard-000001.tar", "shard-000002.tar"]
    assert all(p.is_file() for p in shards)
    with tarfile.open(shards[0]) as tf:
        assert len([m for m in tf.getnames() if m.endswith(".json")]) == 3

    back = read_webdataset(str(out / "shard-{000000..000002}.tar"))
    assert back["id"].tolist() == table["id"].tolist()
    np.testing.assert_array_equal(back[["lat", "lon"]].to_numpy(), table[["lat", "lon"]].to_numpy())
    assert back["city"].tolist() == table["city"].tolist() and back["heading"].tolist() == table["heading"].tolist()
    assert back["image"].iloc[4].startswith("shard-000001.tar#")
    pd.testing.assert_frame_equal(read_webdataset(str(out / "*.tar")), back)

    tf = open_clip.image_transform(16, is_train=False)
    items = list(stream_webdataset([str(p) for p in shards], transform=tf))
    assert [it["id"] for it in items] == table["id"].tolist()
    for it, rel in zip(items, table["image"]):
        torch.testing.assert_close(it["image"], tf(open_image(root / rel)))  # the same bytes, the same pixels
    assert items[2]["latlon"].dtype == torch.float64
    torch.testing.assert_close(items[2]["latlon"], torch.tensor(table[["lat", "lon"]].to_numpy()[2]))

    shuffled = [it["id"] for it in stream_webdataset(str(out / "*.tar"), shuffle=5, seed=1)]
    assert sorted(shuffled) == sorted(table["id"]) and shuffled == [
        it["id"] for it in stream_webdataset(str(out / "*.tar"), shuffle=5, seed=1)
    ]


def test_writer_refuses_escapes_and_missing_files(dataset, tmp_path_factory):
    root, table = dataset
    bad = table.copy()
    bad.loc[2, "image"] = "../elsewhere.jpg"
    with pytest.raises(ValueError, match="escapes"):
        write_webdataset(bad, root, tmp_path_factory.mktemp("s1"))
    bad = table.copy()
    bad.loc[2, "image"] = "gone.jpg"
    with pytest.raises(ImageError, match="does not exist"):
        write_webdataset(bad, root, tmp_path_factory.mktemp("s2"))
    with pytest.raises(FileNotFoundError):
        read_webdataset(str(root / "nothing-*.tar"))


def test_corrupt_image_in_a_shard_names_the_sample(tmp_path):
    path = tmp_path / "bad-000000.tar"
    with tarfile.open(path, "w") as tf:
        for name, data in (
            ("000.json", b'{"id": "x", "lat": 1.0, "lon": 2.0, "city": "C"}'),
            ("000.jpg", b"not a jpeg"),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    assert read_webdataset(str(path))["id"].tolist() == ["x"]
    with pytest.raises(ImageError, match=r"bad-000000.tar#000.jpg: .*not an image"):
        list(stream_webdataset(str(path)))
