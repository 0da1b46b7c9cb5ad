"""A ``Gallery``: candidate locations (N, 2) and their L2-normalised embeddings (N, D) float32.

By default the training locations with duplicates removed, encoded once by the
location tower (kind="location"), or training-image embeddings with their
locations (kind="image", the "Revisiting IM2GPS" kNN baseline, also the app's
"nearest training images"). ``ids`` are sample ids (image paths for an image
gallery), ``city`` the city name of each entry (read by a text tower's
template); the two are kept apart. Stored as gallery.npz, never pickled.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from swclip.geo import check_latlon
from swclip.io import RunError, atomic_write

GALLERY_KINDS = ("location", "image")


# ------------------------------------------------------------------------------------------ gallery


@dataclass
class Gallery:
    """Candidates for search. latlon: (N, 2) float64 degrees; embeddings: (N, D) float32, L2-normalised;
    kind: "location" or "image"; ids: optional (N,) str, one identifier per entry (for an image gallery the
    training image's path under the data root); city: optional (N,) str city names. ids and city are kept
    apart: a location gallery has city names and no ids."""

    latlon: np.ndarray
    embeddings: np.ndarray
    kind: str = "location"
    ids: Optional[np.ndarray] = None
    city: Optional[np.ndarray] = None

    def __post_init__(self):
        self.latlon = np.ascontiguousarray(self.latlon, dtype=np.float64)
        self.embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        check_latlon(self.latlon, "gallery latlon")
        if self.kind not in GALLERY_KINDS:
            raise ValueError(f"gallery kind must be one of {GALLERY_KINDS}, got {self.kind!r}")
        if self.embeddings.ndim != 2 or len(self.embeddings) != len(self.latlon):
            raise ValueError(f"gallery embeddings must be (N, D) with N = {len(self.latlon)} locations, "
                             f"got {self.embeddings.shape}")
        if len(self.latlon) == 0:
            raise ValueError("gallery is empty")
        if not np.isfinite(self.embeddings).all():
            raise ValueError("gallery embeddings contain NaN or inf")
        norms = np.linalg.norm(self.embeddings, axis=1)
        if np.abs(norms - 1).max() > 1e-3:
            raise ValueError(f"gallery embeddings must be L2-normalised; norms range {norms.min():.4f}..{norms.max():.4f}")
        for name in ("ids", "city"):
            value = getattr(self, name)
            if value is not None:
                value = np.asarray(value).astype(str)
                if value.shape != (len(self.latlon),):
                    raise ValueError(f"gallery {name} must be (N,) = ({len(self.latlon)},), got {value.shape}")
                setattr(self, name, value)

    def __len__(self) -> int:
        return len(self.latlon)

    @property
    def dim(self) -> int:
        return self.embeddings.shape[1]

    @classmethod
    def from_locations(cls, model, latlon, city: Optional[Sequence[str]] = None, dedup: bool = True,
                       batch_size: int = 4096, progress: bool = False) -> "Gallery":
        """Encode candidate locations with ``model.encode_location``, once.

        latlon: (N, 2) degrees; city: N names (read by a text tower's template; kept per row).
        dedup: drop exact duplicate coordinates (rounded to 1e-7°, about 1 cm), keeping the first.
        """
        latlon = np.asarray(latlon, dtype=np.float64)
        check_latlon(latlon, "gallery latlon")
        city = None if city is None else np.asarray(city).astype(str)
        if dedup:
            _, first = np.unique(np.round(latlon, 7), axis=0, return_index=True)
            keep = np.sort(first)
            latlon = latlon[keep]
            city = None if city is None else city[keep]
        chunks = []

        starts = range(0, len(latlon), batch_size)
        with torch.inference_mode():
            for s in tqdm(starts, desc="encoding gallery", disable=not progress or len(starts) < 2):
                c = None if city is None else list(city[s:s + batch_size])
                chunks.append(model.encode_location(latlon[s:s + batch_size], c).cpu().numpy())
        return cls(latlon, np.concatenate(chunks), "location", city=city)

    def save(self, path) -> Path:
        """gallery.npz, atomically (latlon, embeddings, kind, ids, city); no pickled objects."""
        arrays = {"latlon": self.latlon, "embeddings": self.embeddings, "kind": np.array(self.kind)}
        arrays |= {name: getattr(self, name) for name in ("ids", "city") if getattr(self, name) is not None}
        path = Path(path)

        def write(tmp: Path):
            with open(tmp, "wb") as f:  # a file object, so numpy does not append ".npz" to the temp name
                np.savez(f, **arrays)

        return atomic_write(path, write)

    @classmethod
    def load(cls, path) -> "Gallery":
        """Inverse of :meth:`save`; RunError (a ValueError) naming the problem for a corrupt or malformed file."""
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except Exception as e:  # OSError, ValueError (pickled arrays), zipfile.BadZipFile, EOFError ...
            raise RunError(f"{path} is not a readable gallery .npz (corrupt, truncated or pickled): {e}") from None
        missing = [k for k in ("latlon", "embeddings") if k not in data]
        if missing:
            raise RunError(f"{path} lacks array(s) {missing}; has {sorted(data)}")
        try:
            return cls(data["latlon"], data["embeddings"], str(data.get("kind", "location")), data.get("ids"),
                       data.get("city"))
        except ValueError as e:
            raise RunError(f"{path}: {e}") from None


