"""Spatial train/test splits with a buffer, and a content hash of a table.

A random split leaks: neighbouring panoramas land on both sides, and a model
that memorises looks like one that generalises. Here whole square blocks go to
test, and training points too close to any test point are set aside.

The rule, so that nothing is lost silently: every row gets ``split`` in
{"train", "test", "buffer"}. "buffer" rows are training-block rows within
``buffer_m`` of some test row; they are excluded from both sides, and counted
in ``table.attrs["split"]``. After the split, every train row is more than
``buffer_m`` (great-circle) from every test row.

Places stay whole: with a ``place_id`` column every photo of a place takes the block of the place's first
photo, and a place with one photo in the buffer has all of its training photos there, so the headings of
one panorama never sit on both sides.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from swclip.geo import EARTH_RADIUS_M, check_latlon, degrees_to_local_metres, unit_vectors


def _chord_m(arc_m: float) -> float:
    """The straight-line (chord) length through the Earth of a great-circle arc."""
    return 2.0 * EARTH_RADIUS_M * np.sin(arc_m / (2.0 * EARTH_RADIUS_M))


def spatial_split(
    table: pd.DataFrame,
    test_frac: float = 0.2,
    block_m: float = 250.0,
    buffer_m: float = 100.0,
    seed: int = 0,
    by: str | None = "city",
    val_frac: float = 0.0,
    block_column: bool = False,
) -> pd.DataFrame:
    """Assign ``split`` = train / test / buffer by spatial blocks plus a buffer.

    table: a sample table with ``lat, lon`` (and ``city`` when ``by="city"``; ``place_id`` keeps places whole).
    test_frac: target share of test rows, reached per group by whole blocks
    (so the achieved share is close, not exact; it is in ``attrs["split"]``).
    block_m: side of the square blocks, metres, on a grid in each group's local
    frame with a seeded random offset.
    buffer_m: minimum great-circle distance from any train row to any test row.
    seed: the same seed and table give the same split.
    by: the column that groups rows (blocks are drawn per group, so every city
    gets test data); None treats the table as one group.
    val_frac: share of rows for a validation split ("val"), drawn as whole blocks from the
    blocks left after test (0: no validation split). Train rows within ``buffer_m`` of any
    val *or* test row become "buffer"; val and test may touch each other (both are held out).
    block_column: also return each row's block as ``block`` ("<group>:<bx>,<by>"), the unit of
    a block bootstrap over held-out rows.
    Returns a copy with the ``split`` column; the buffer check spans all groups,
    so neighbouring cities cannot leak either. O(N log N): a KD-tree on unit vectors.
    """
    if not 0.0 < test_frac < 1.0:
        raise ValueError(f"test_frac must be in (0, 1), got {test_frac}")
    if not 0.0 <= val_frac < 1.0 - test_frac:
        raise ValueError(f"val_frac must be in [0, 1 - test_frac), got {val_frac} with test_frac {test_frac}")
    if block_m <= 0 or buffer_m < 0:
        raise ValueError(f"block_m must be > 0 and buffer_m >= 0, got {block_m}, {buffer_m}")
    latlon = table[["lat", "lon"]].to_numpy(dtype=np.float64)  # (N, 2)
    check_latlon(latlon, "table lat/lon")
    n = len(table)
    rng = np.random.default_rng(seed)
    if by is not None and table[by].isna().any():
        raise ValueError(
            f"spatial_split: {int(table[by].isna().sum())} row(s) have no {by!r}; validate the table first"
        )
    groups = np.zeros(n, dtype=np.int64) if by is None else pd.factorize(table[by].astype(str), sort=True)[0]
    is_test = np.zeros(n, dtype=bool)
    is_val = np.zeros(n, dtype=bool)
    block_name = np.empty(n, dtype=object)
    group_names = np.zeros(n, dtype=object) if by is None else table[by].astype(str).to_numpy()
    place = table["place_id"].astype(str).to_numpy() if "place_id" in table.columns else None
    for g in range(groups.max() + 1 if n else 0):
        rows = np.flatnonzero(groups == g)
        centre = (float(np.mean(latlon[rows, 0])), float(np.mean(latlon[rows, 1])))
        xy = degrees_to_local_metres(latlon[rows], centre)  # (n_g, 2) metres
        offset = rng.uniform(0.0, block_m, size=2)
        block = np.floor((xy + offset) / block_m).astype(np.int64)  # (n_g, 2) block indices
        if place is not None:  # every photo of a place in the block of its first photo
            _, first, place_inv = np.unique(place[rows], return_index=True, return_inverse=True)
            block = block[first[place_inv.reshape(-1)]]
        keys, inverse, counts = np.unique(block, axis=0, return_inverse=True, return_counts=True)
        order = rng.permutation(len(keys))
        # take whole blocks until the group's test share is reached, then the val share
        cum = np.cumsum(counts[order])
        n_test = int(np.searchsorted(cum, test_frac * len(rows)) + 1)
        n_test = min(n_test, len(keys) - 1) if len(keys) > 1 else 0
        n_val = 0
        if val_frac > 0 and n_test < len(keys) - 1:
            n_val = int(np.searchsorted(cum, (test_frac + val_frac) * len(rows)) + 1) - n_test
            n_val = max(0, min(n_val, len(keys) - 1 - n_test))
        test_blocks = np.zeros(len(keys), dtype=bool)
        test_blocks[order[:n_test]] = True
        val_blocks = np.zeros(len(keys), dtype=bool)
        val_blocks[order[n_test : n_test + n_val]] = True
        inverse = inverse.reshape(-1)
        is_test[rows] = test_blocks[inverse]
        is_val[rows] = val_blocks[inverse]
        block_name[rows] = [f"{group_names[rows[0]]}:{bx},{by_}" for bx, by_ in keys[inverse]]

    split = np.where(is_test, "test", np.where(is_val, "val", "train")).astype(object)
    held_out = is_test | is_val
    if buffer_m > 0 and held_out.any() and (~held_out).any():
        xyz = unit_vectors(latlon) * EARTH_RADIUS_M  # (N, 3) metres
        tree = cKDTree(xyz[held_out])
        train_rows = np.flatnonzero(~held_out)
        # chord ≤ arc, so a chord radius of chord(buffer_m) finds every arc ≤ buffer_m; nudge up for rounding
        dist, _ = tree.query(xyz[train_rows], k=1, distance_upper_bound=_chord_m(buffer_m) * (1 + 1e-9) + 1e-6)
        split[train_rows[np.isfinite(dist)]] = "buffer"
        if place is not None:  # a place partly in the buffer goes there whole
            buffered = np.isin(place, place[split == "buffer"]) & (split == "train")
            split[buffered] = "buffer"
    out = table.copy()
    out["split"] = split
    if block_column:
        out["block"] = block_name
    counts = {
        k: int((split == k).sum())
        for k in (("train", "val", "test", "buffer") if val_frac > 0 else ("train", "test", "buffer"))
    }
    out.attrs["split"] = dict(
        method="spatial blocks + buffer",
        test_frac=test_frac,
        val_frac=val_frac,
        block_m=block_m,
        buffer_m=buffer_m,
        seed=seed,
        by=by,
        counts=counts,
        achieved_test_frac=counts["test"] / max(n, 1),
        table_hash=table_hash(table),
    )
    return out


def table_hash(table: pd.DataFrame, columns=("id", "image", "lat", "lon", "city")) -> str:
    """SHA-256 (hex) of the table's content, independent of row order.

    Coordinates are rounded to 1e-7 degrees (about 1 cm), so a CSV round trip
    gives the same hash. For the run manifest: which data a split was drawn from.
    """
    cols = [c for c in columns if c in table.columns]
    if not cols:
        raise ValueError(f"table_hash: none of {list(columns)} in the table")
    df = table[cols].copy()
    for c in ("lat", "lon"):
        if c in df:
            df[c] = pd.to_numeric(df[c], errors="coerce").map(lambda v: f"{v:.7f}")
    df = df.astype(str)
    lines = sorted("\x1f".join(r) for r in df.itertuples(index=False, name=None))
    h = hashlib.sha256()
    h.update(("\x1f".join(cols) + "\n").encode())
    for line in lines:
        h.update(line.encode())
        h.update(b"\n")
    return h.hexdigest()
