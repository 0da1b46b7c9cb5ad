"""A small world-scale runs folder for the app's tests, built by the benchmark's own builder.

``benchmarks.app_scale.build`` writes two synthetic runs of OSV-5M's shape (cities on every
continent, top-5 predictions, embeddings, a location and an image gallery, a model, metrics.json
with Recall-vs-Area and the admin-level table); here at a size a test can afford.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

N_EVAL, N_CITIES = 3000, 30


def world_runs(root: Path) -> Path:
    """root/osv5m-swclip and root/osv5m-clip (the second links to the first's galleries)."""
    from benchmarks.app_scale import build

    build(Path(root), n_eval=N_EVAL, n_gallery=4000, n_images=2000, n_cities=N_CITIES, dim=64, progress=False)
    return Path(root)


def broken_copy(src_run: Path, dst_run: Path, problem: str) -> Path:
    """A copy of a run with one kind of bad input: 'nan' coordinates, 'dup' ids or 'rows' (embeddings row count)."""
    import pandas as pd

    from swclip import runs

    shutil.copytree(src_run, dst_run, symlinks=False)
    df = pd.read_parquet(dst_run / "predictions.parquet")
    if problem == "nan":
        df.loc[[5, 17, 42], "lat"] = np.nan
        runs.write_predictions(dst_run, df)
    elif problem == "dup":
        df.loc[[10, 11, 12], "id"] = df.loc[9, "id"]
        runs.write_predictions(dst_run, df)
    elif problem == "rows":
        runs.write_embeddings(dst_run, np.load(dst_run / "embeddings.npy")[:-7])
    else:
        raise ValueError(problem)
    return dst_run


def cached_build(cache_dir: Path, sources: list, build) -> Path:
    """``build(root)`` once per version of ``sources`` (files whose bytes are hashed), kept in pytest's cache
    folder ``cache_dir``; older versions are removed, and a file lock keeps two workers from building at once."""
    import fcntl
    import hashlib

    h = hashlib.sha256()
    for f in sources:
        h.update(Path(f).read_bytes())
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    root = cache_dir / h.hexdigest()[:16]
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (root / ".complete").is_file():
                shutil.rmtree(root, ignore_errors=True)
                for old in cache_dir.iterdir():
                    if old.is_dir() and old != root:
                        shutil.rmtree(old, ignore_errors=True)
                build(root)
                (root / ".complete").write_text("test fixture\n")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return root


def cached_world(cache_dir: Path) -> Path:
    """world_runs built once per version of the code that writes it (:func:`cached_build`)."""
    repo = Path(__file__).resolve().parents[1]
    sources = sorted((repo / "swclip").rglob("*.py")) + [repo / "benchmarks" / "app_scale.py", Path(__file__)]
    return cached_build(cache_dir, sources, world_runs)
