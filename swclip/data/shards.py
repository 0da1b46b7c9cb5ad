"""WebDataset tar shards: write a sample table's images into shards, read them back, stream them.

Each sample in a shard is ``<key>.<jpg|png|...>`` (the original file's bytes,
not re-encoded) plus ``<key>.json`` with the row's metadata (id, lat, lon,
city, and the optional columns). Keys are the row number, zero-padded, since
WebDataset keys cannot contain dots and ids may.

In a table read back from shards, ``image`` is the shard key
``"<shard file name>#<key>.<ext>"``.
"""

from __future__ import annotations

import glob
import json
import math
import random
from pathlib import Path

import numpy as np
import pandas as pd

from swclip.data.images import ImageError, open_image, resolve_image_path
from swclip.data.validate import OPTIONAL, REQUIRED

_EXT = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp", ".tif": "tif", ".tiff": "tif", ".bmp": "bmp"}


def _meta(row: dict) -> dict:
    out = {}
    for k in REQUIRED + OPTIONAL:
        if k == "image" or k not in row:
            continue
        v = row[k]
        if isinstance(v, (np.floating, float)) and not math.isfinite(v):
            v = None
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


def write_webdataset(table: pd.DataFrame, root, out_dir, shard_size: int = 1000, prefix: str = "shard") -> list[Path]:
    """Write the table's images and metadata into tar shards of ``shard_size`` samples.

    table: a validated sample table; image paths resolve under ``root``
    (``../`` escapes are rejected). out_dir: created if needed.
    Returns the shard paths, in order (``<out_dir>/<prefix>-000000.tar``, ...).
    """
    import webdataset as wds

    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pattern = str(out_dir / f"{prefix}-%06d.tar")
    width = max(9, len(str(len(table))))
    rows = table.to_dict("records")
    with wds.ShardWriter(pattern, maxcount=shard_size, verbose=0) as sink:
        for i, row in enumerate(rows):
            path = resolve_image_path(root, row["image"])
            ext = _EXT.get(path.suffix.lower())
            if ext is None:
                raise ValueError(f"row {i} (id {row['id']!r}): unsupported image suffix {path.suffix!r}")
            if not path.is_file():
                raise ImageError(f"row {i} (id {row['id']!r}): {path} does not exist")
            sink.write({"__key__": f"{i:0{width}d}", ext: path.read_bytes(), "json": json.dumps(_meta(row)).encode()})
    n_shards = math.ceil(len(rows) / shard_size) if rows else 0
    return [Path(pattern % k) for k in range(n_shards)]


def _expand(pattern) -> list[str]:
    """Shard URLs from a list, a brace pattern (``shard-{000000..000009}.tar``) or a glob."""
    if isinstance(pattern, (list, tuple)):
        urls = [str(p) for p in pattern]
    else:
        pattern = str(pattern)
        if "{" in pattern:
            from webdataset.shardlists import expand_urls

            urls = list(expand_urls(pattern))
        else:
            urls = sorted(glob.glob(pattern))
    if not urls:
        raise FileNotFoundError(f"no shards match {pattern!r}")
    missing = [u for u in urls if "://" not in u and not Path(u).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} shard(s) missing, e.g. {missing[0]}")
    return urls


def _split_sample(sample: dict, url: str) -> tuple[dict, str, bytes]:
    key = sample["__key__"]
    if "json" not in sample:
        raise ValueError(f"{url}: sample {key!r} has no .json metadata")
    meta = json.loads(sample["json"])
    exts = [e for e in sample if e in _EXT.values()]
    if not exts:
        raise ValueError(f"{url}: sample {key!r} has no image (looked for {sorted(set(_EXT.values()))})")
    return meta, f"{Path(url).name}#{key}.{exts[0]}", sample[exts[0]]


def read_webdataset(pattern) -> pd.DataFrame:
    """The sample table stored in shards (metadata only; ``image`` is the shard key)."""
    import webdataset as wds

    rows = []
    for url in _expand(pattern):
        for sample in wds.WebDataset([url], shardshuffle=False, empty_check=False):
            meta, key, _ = _split_sample(sample, url)
            rows.append(dict(meta, image=key))
    df = pd.DataFrame(rows)
    for c in ("lat", "lon"):
        df[c] = df[c].astype(np.float64)
    cols = [c for c in REQUIRED + OPTIONAL if c in df.columns]
    return df[cols + [c for c in df.columns if c not in cols]]


def stream_webdataset(pattern, transform=None, shuffle: int = 0, seed: int = 0):
    """A torch IterableDataset streaming (image, latlon) from shards, for large sets on a GPU.

    pattern: shard list, brace pattern or glob. transform: PIL -> tensor (the
    model's open_clip preprocess). shuffle: buffer size for sample shuffling
    (0: file order). Shards are split across DDP ranks and DataLoader workers.
    Items: ``dict(image=(C, H, W) tensor, latlon=(2,) float64 tensor, id=str, city=str)``.
    A corrupt image raises ImageError naming the shard and key.
    Returns a ``webdataset.WebDataset`` pipeline (a ``torch.utils.data.IterableDataset``).
    """

    import torch
    import webdataset as wds

    urls = _expand(pattern)
    if transform is None:
        from torchvision.transforms import ToTensor

        transform = ToTensor()

    def decode(sample):
        meta, key, data = _split_sample(sample, sample.get("__url__", "?"))
        try:
            image = open_image(data)
        except ImageError as e:
            raise ImageError(f"{key}: {e}") from None
        latlon = torch.tensor([meta["lat"], meta["lon"]], dtype=torch.float64)
        return dict(image=transform(image), latlon=latlon, id=str(meta["id"]), city=str(meta.get("city")))

    ds = wds.WebDataset(
        urls,
        shardshuffle=len(urls) if shuffle else False,
        nodesplitter=wds.split_by_node,
        workersplitter=wds.split_by_worker,
        empty_check=False,
        seed=seed,
    )
    if shuffle:
        ds = ds.shuffle(shuffle, rng=random.Random(seed))
    return ds.map(decode)
