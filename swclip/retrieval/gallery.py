"""A ``Gallery``: candidate locations (N, 2) and their L2-normalised embeddings (N, D) float32.

By default the training locations with duplicates removed, encoded once by the
location tower (kind="location"), or training-image embeddings with their
locations (kind="image", the "Revisiting IM2GPS" kNN baseline, also the app's
"nearest training images"). ``ids`` are sample ids (image paths for an image
gallery), ``city`` the city name of each entry (read by a text tower's
template); the two are kept apart. Stored as gallery.npz, never pickled; loaded
with the embeddings memory-mapped from the (uncompressed) .npz, so a 1M × 512
gallery (2 GB) opens in milliseconds and its pages stay in the OS page cache,
shared between processes.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from swclip.geo import check_latlon
from swclip.io import RunError, atomic_write

GALLERY_KINDS = ("location", "image")
CHECK_ROWS = 65_536  # rows per chunk of the finite / unit-norm check: no (N, D) temporaries


def _check_unit_rows(emb: np.ndarray) -> None:
    """ValueError unless every row of (N, D) float32 ``emb`` is finite and L2-normalised (|norm − 1| ≤ 1e-3).

    One pass in chunks of CHECK_ROWS rows: a squared norm is finite exactly when its row is (short of
    float32 overflow, which the chunk's own isfinite then tells apart), so a memory-mapped gallery is
    read once and never copied whole.
    """
    lo, hi, bad = np.inf, -np.inf, False
    for s in range(0, len(emb), CHECK_ROWS):
        chunk = emb[s : s + CHECK_ROWS]
        sq = np.einsum("ij,ij->i", chunk, chunk)  # (n,) squared norms
        if not np.isfinite(sq).all():
            if not np.isfinite(chunk).all():
                bad = True
                break
            sq = np.einsum("ij,ij->i", chunk.astype(np.float64), chunk.astype(np.float64))  # finite but overflowed
        norms = np.sqrt(sq)
        lo, hi = min(lo, float(norms.min())), max(hi, float(norms.max()))
    if bad:
        raise ValueError("gallery embeddings contain NaN or inf")
    if max(abs(lo - 1), abs(hi - 1)) > 1e-3:
        raise ValueError(f"gallery embeddings must be L2-normalised; norms range {lo:.4f}..{hi:.4f}")


def _npz_memmap(path: Path, member: str) -> np.ndarray | None:
    """A read-only memory map of ``member`` (e.g. "embeddings") inside the .npz at ``path``, or None when it
    cannot be mapped (compressed, encrypted, an object array, an unknown .npy version): then read it whole.

    np.savez stores members uncompressed, each a plain .npy file at some offset of the zip: its local
    header (30 bytes + name + extra field) is skipped, then the .npy header read, and the data mapped.
    Unlike reading through zipfile, the member's CRC is not checked.
    """
    with zipfile.ZipFile(path) as z:
        try:
            info = z.getinfo(member + ".npy")
        except KeyError:
            return None
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise ValueError(f"bad local header for {member}.npy")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            return None
        offset = f.tell()
    if dtype.hasobject:
        return None
    if offset + int(np.prod(shape)) * dtype.itemsize > info.header_offset + 30 + name_len + extra_len + info.file_size:
        raise ValueError(f"{member}.npy is shorter than its header says")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


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
    ids: np.ndarray | None = None
    city: np.ndarray | None = None

    def __post_init__(self):
        self.latlon = np.ascontiguousarray(self.latlon, dtype=np.float64)
        self.embeddings = np.ascontiguousarray(self.embeddings, dtype=np.float32)  # a float32 memory map stays one
        check_latlon(self.latlon, "gallery latlon")
        if self.kind not in GALLERY_KINDS:
            raise ValueError(f"gallery kind must be one of {GALLERY_KINDS}, got {self.kind!r}")
        if self.embeddings.ndim != 2 or len(self.embeddings) != len(self.latlon):
            raise ValueError(
                f"gallery embeddings must be (N, D) with N = {len(self.latlon)} locations, got {self.embeddings.shape}"
            )
        if len(self.latlon) == 0:
            raise ValueError("gallery is empty")
        _check_unit_rows(self.embeddings)
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
    def from_locations(
        cls,
        model,
        latlon,
        city: Sequence[str] | None = None,
        dedup: bool = True,
        batch_size: int = 4096,
        progress: bool = False,
    ) -> Gallery:
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
                c = None if city is None else list(city[s : s + batch_size])
                chunks.append(model.encode_location(latlon[s : s + batch_size], c).cpu().numpy())
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
    def load(cls, path, mmap: bool = True) -> Gallery:
        """Inverse of :meth:`save`; RunError (a ValueError) naming the problem for a corrupt or malformed file.

        mmap: the embeddings stay a read-only memory map of the file (see :func:`_npz_memmap`; checked for
        finite unit rows in one chunked pass); False reads them into memory.
        """
        try:
            with np.load(path, allow_pickle=False) as z:
                mapped = _npz_memmap(Path(path), "embeddings") if mmap and "embeddings" in z.files else None
                data = {k: z[k] for k in z.files if not (k == "embeddings" and mapped is not None)}
            if mapped is not None:
                data["embeddings"] = mapped
        except Exception as e:  # OSError, ValueError (pickled arrays), zipfile.BadZipFile, EOFError ...
            raise RunError(f"{path} is not a readable gallery .npz (corrupt, truncated or pickled): {e}") from None
        missing = [k for k in ("latlon", "embeddings") if k not in data]
        if missing:
            raise RunError(f"{path} lacks array(s) {missing}; has {sorted(data)}")
        try:
            return cls(
                data["latlon"], data["embeddings"], str(data.get("kind", "location")), data.get("ids"), data.get("city")
            )
        except ValueError as e:
            raise RunError(f"{path}: {e}") from None
