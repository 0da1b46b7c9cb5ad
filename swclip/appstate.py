"""What the app knows about a runs directory, without Streamlit.

The app reads run directories (DESIGN.md, "The run directory") under one
root, and nothing outside it: every path that comes from a manifest, a
predictions table or the URL goes through :func:`inside_root`, which refuses
absolute paths and ``../`` escapes.

- :func:`discover_runs` finds runs (any folder with a manifest.json, up to
  three levels down), newest first, and says which belong to the demo bundle.
- :func:`find_world` finds the synthetic world a demo run was trained on, so
  the maps can draw its streets and the semivariogram page its true ranges.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

MANIFEST = "manifest.json"
WORLD = "world.json"
MAX_DEPTH = 3


class OutsideRootError(ValueError):
    """A path points outside the runs directory."""


def inside_root(root: Path | str, path: Path | str) -> Path:
    """Resolve ``path`` (relative to ``root``, or absolute) and check it stays inside ``root``.

    Symlinks are resolved before the check, so a link cannot escape either.
    Raises OutsideRootError naming the offending path.
    """
    root_r = Path(root).resolve()
    p = Path(path)
    full = (p if p.is_absolute() else root_r / p).resolve()
    if full != root_r and root_r not in full.parents:
        raise OutsideRootError(f"refusing to read {str(path)!r}: it is outside the runs directory {str(root_r)!r}")
    return full


@dataclass
class RunInfo:
    """One run directory: its id (path relative to the root), folder and manifest."""

    run_id: str
    path: Path
    manifest: dict = field(repr=False)
    is_demo: bool = False

    @property
    def stamp(self) -> float:
        """Modification time of the manifest: cache keys change when a run is rewritten."""
        try:
            return (self.path / MANIFEST).stat().st_mtime
        except OSError:
            return 0.0

    @property
    def sigma_m(self) -> Optional[float]:
        """The run's soft-label bandwidth (None for one-hot CLIP)."""
        loss = self.manifest.get("loss") or {}
        for src in (loss, self.manifest):
            for key in ("sigma_m", "sigma"):
                v = src.get(key) if isinstance(src, dict) else None
                if isinstance(v, (int, float)) and v > 0:
                    return float(v)
        return None

    @property
    def label(self) -> str:
        """Short human label: id, loss kind and σ."""
        loss = self.manifest.get("loss") or {}
        kind = loss.get("name") or loss.get("kind") or self.manifest.get("loss_name") or ""
        sigma = self.sigma_m
        bits = [self.run_id]
        if kind:
            bits.append(str(kind))
        if sigma:
            bits.append(f"σ={sigma:g} m")
        return " · ".join(bits)


def _read_json(path: Path) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def discover_runs(runs_root: Path | str) -> list[RunInfo]:
    """All runs under ``runs_root`` (folders holding manifest.json, depth ≤ 3), newest first.

    A run is marked demo when its manifest says so (``demo: true`` or a data
    source of kind ``synth``) or when a folder between it and the root holds
    the world.json of the procedural world.
    """
    root = Path(runs_root)
    if not root.is_dir():
        return []
    root_r = root.resolve()
    found = []
    for dirpath, dirnames, filenames in os.walk(root_r, followlinks=False):
        rel = Path(dirpath).relative_to(root_r)
        depth = len(rel.parts)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < MAX_DEPTH else []
        if MANIFEST not in filenames or depth == 0:
            continue
        manifest = _read_json(Path(dirpath) / MANIFEST)
        if manifest is None:
            continue
        run = RunInfo(rel.as_posix(), Path(dirpath), manifest)
        run.is_demo = _looks_demo(run, root_r)
        found.append(run)
    found.sort(key=lambda r: (-r.stamp, r.run_id))
    return found


def _looks_demo(run: RunInfo, root: Path) -> bool:
    m = run.manifest
    if m.get("demo") is True:
        return True
    data = m.get("data") or {}
    if isinstance(data, dict) and str(data.get("kind") or data.get("source") or "").lower() in ("synth", "demo", "procedural"):
        return True
    return find_world(run, root) is not None


def find_world(run: RunInfo, runs_root: Path | str) -> Optional[Path]:
    """world.json of the procedural world this run used, searched from the run up to the root."""
    root = Path(runs_root).resolve()
    here = run.path.resolve()
    while True:
        for cand in (here / WORLD, here / "world" / WORLD):
            if cand.is_file():
                return inside_root(root, cand)
        if here == root or root not in here.parents:
            return None
        here = here.parent


def read_world(path: Optional[Path]) -> Optional[dict]:
    """world.json as a dict, or None when absent or unreadable."""
    return _read_json(path) if path is not None else None


def world_city(world: Optional[dict], city: Optional[str]) -> Optional[dict]:
    """The world.json entry of one city (a dict), whether cities are a list or a mapping."""
    if not world or not city:
        return None
    cities = world.get("cities")
    if isinstance(cities, dict):
        entry = cities.get(city)
        return entry if isinstance(entry, dict) else None
    if isinstance(cities, list):
        for entry in cities:
            if isinstance(entry, dict) and entry.get("name") == city:
                return entry
    return None


def city_streets(world: Optional[dict], city: Optional[str]) -> list[np.ndarray]:
    """The city's street polylines as (M, 2) latlon arrays (empty when unknown)."""
    entry = world_city(world, city)
    if not entry:
        return []
    raw = entry.get("streets_latlon") or entry.get("streets") or []
    out = []
    for line in raw:
        a = np.asarray(line, dtype=np.float64)
        if a.ndim == 2 and a.shape[1] == 2 and len(a) >= 2 and np.isfinite(a).all():
            out.append(a)
    return out


def city_true_ranges(world: Optional[dict], city: Optional[str]) -> dict[str, float]:
    """{field name: true practical range in metres} for a demo city (empty when unknown)."""
    entry = world_city(world, city)
    if not entry:
        return {}
    fields = entry.get("fields") or []
    out = {}
    items = fields.items() if isinstance(fields, dict) else ((f.get("name"), f) for f in fields if isinstance(f, dict))
    for name, f in items:
        r = f.get("range_m") if isinstance(f, dict) else f
        if isinstance(r, (int, float)):
            out[str(name)] = float(r)
    return out


def read_metrics(run: RunInfo) -> dict:
    """metrics.json of a run ({} when absent), else the manifest's metrics summary."""
    m = _read_json(run.path / "metrics.json")
    if m is None:
        m = run.manifest.get("metrics") if isinstance(run.manifest.get("metrics"), dict) else {}
    return m


def overall_metrics(metrics: dict) -> dict:
    """The overall block of a metrics dict, whether nested under 'overall' or at the top."""
    inner = metrics.get("overall")
    if isinstance(inner, dict):
        return inner
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
