"""A small runs directory for the app's tests, built by the real code.

``swclip.workflows.demo.build_demo`` renders a two-city procedural world, trains
one-hot CLIP and SW-CLIP (σ = 50 m) for a few steps on the CPU and evaluates
both, exactly as ``make run`` does for the full demo, only smaller. Building
takes about half a minute, so the result is kept in pytest's cache folder
under a hash of the code and configs that produce it: a change to swclip/ or
the demo configs rebuilds it, anything else reuses it. A file lock keeps two
pytest workers from building it at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = ("clip", "swclip-s50")
CITIES = ("London", "Manchester")
SAMPLES_PER_CITY = 150
STEPS = 8


def _code_hash() -> str:
    h = hashlib.sha256()
    files = (
        sorted((REPO / "swclip").rglob("*.py"))
        + sorted((REPO / "swclip").rglob("*.json"))
        + sorted((REPO / "swclip").rglob("*.yaml"))
    )
    for f in files:
        h.update(f.relative_to(REPO).as_posix().encode())
        h.update(f.read_bytes())
    h.update(repr((MODELS, CITIES, SAMPLES_PER_CITY, STEPS)).encode())
    return h.hexdigest()[:16]


def fixture_runs(cache_dir: Path) -> Path:
    """Path of a runs root holding demo/world, demo/clip and demo/swclip-s50 (built once per code version)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    root = cache_dir / _code_hash()
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (root / "demo" / ".complete").is_file():
                from swclip.workflows.demo import build_demo

                shutil.rmtree(root, ignore_errors=True)
                for old in cache_dir.iterdir():  # older code versions
                    if old.is_dir() and old != root:
                        shutil.rmtree(old, ignore_errors=True)
                build_demo(
                    root / "demo",
                    seed=0,
                    steps=STEPS,
                    models=list(MODELS),
                    samples_per_city=SAMPLES_PER_CITY,
                    cities=list(CITIES),
                    progress=False,
                    extra_overrides=("batch_size=64",),
                )
                (root / "demo" / ".complete").write_text("test fixture\n")
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return root
