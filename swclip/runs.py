"""Run directories that describe themselves (docs/method.md, "The run directory").

    runs/<run_id>/
      manifest.json        schema_version, model config (rebuilds the model), git commit, library
                           versions, weights sha256, and whatever training passes: loss, σ, λ, data hash,
                           split, seeds, metrics summary
      model.safetensors    weights
      predictions.parquet  embeddings.npy  gallery.npz  metrics.json  train_log.csv   (artefacts)

Every file is written atomically (a temporary file in the same folder, then
os.replace), and manifest.json is written last: a run whose manifest exists is
complete, and a killed write never leaves a half-file that loads.

Loading rebuilds the model from the manifest alone, then loads the weights
strictly; a missing key, a wrong shape, an unknown schema version, a corrupt
file or weights that do not match the manifest's sha256 raise RunError naming
the problem. Nothing here unpickles: numpy files load with allow_pickle=False.

One concept, the run directory (its files, its manifest, loading it), so one
module past 400 lines; generic atomic I/O and path confinement are swclip.io.
"""

from __future__ import annotations

import csv
import datetime as _dt
import importlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from swclip.io import RunError, atomic_write, atomic_write_json, resolve_inside, sha256_file
from swclip.method.model import build_model
from swclip.retrieval.gallery import Gallery
from swclip.retrieval.gallery_source import check_gallery_source, gallery_places, stored_gallery_source
from swclip.retrieval.predictor import Predictor
from swclip.viz.scale import fmt_m

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
ARTEFACTS = {  # name -> file name inside the run directory
    "predictions": "predictions.parquet",
    "embeddings": "embeddings.npy",
    "gallery": "gallery.npz",
    "image_gallery": "image_gallery.npz",  # optional: training-image embeddings for image-gallery kNN
    "metrics": "metrics.json",
    "train_log": "train_log.csv",
}
CONFIG = "config.yaml"  # the resolved training config (swclip.training.config.save_config)
# everything else a run folder holds: training's folders, and the workflows' markers about the run
RUN_FOLDERS = ("checkpoints", "tensorboard")
RUN_MARKERS = (".complete", "record.json")
RESERVED_KEYS = ("schema_version", "model", "weights_sha256", "created_utc")
# What wrote the run: our trainer ("trained", the default when the manifest says nothing) or
# `swclip import` ("imported": another model's predictions; no weights, manifest "model" is its name).
KIND_TRAINED, KIND_IMPORTED = "trained", "imported"
_VERSIONED = ("torch", "torchvision", "open_clip", "numpy", "faiss", "safetensors", "pandas", "swclip")
# ------------------------------------------------------------------------------------- provenance


def library_versions() -> dict:
    """Versions of the libraries a run depends on ({name: version or None})."""
    out = {}
    for name in _VERSIONED:
        try:
            out[name] = getattr(importlib.import_module(name), "__version__", None)
        except ImportError:
            out[name] = None
    return out


def git_commit(repo_dir: str | os.PathLike | None = None) -> str | None:
    """HEAD commit of the repository holding this package (suffix "-dirty" with local changes), or None."""
    repo_dir = Path(repo_dir or Path(__file__).resolve().parent.parent)
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo_dir,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


# -------------------------------------------------------------------------------------- artefacts


WEIGHTS_KEY = "weights_sha256"  # metrics.json's key, and predictions.parquet's schema metadata key (bytes)


def _current_weights_sha256(run_dir) -> str | None:
    """The weights hash of the run's manifest, when there is a readable one (the artefacts' default)."""
    try:
        return read_manifest(run_dir).get(WEIGHTS_KEY)
    except RunError:
        return None


def write_predictions(run_dir, df, weights_sha256: str | None = None) -> Path:
    """predictions.parquet: one row per eval sample (id, city, lat, lon, pred_lat, pred_lon, error_m, ...).

    weights_sha256: the weights the predictions came from (default: the manifest's), kept in the file's
    schema metadata so a run whose weights were replaced shows its predictions as stale.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    sha = weights_sha256 or _current_weights_sha256(run_dir)
    table = pa.Table.from_pandas(df, preserve_index=False)
    if sha:
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), WEIGHTS_KEY.encode(): sha.encode()})
    return atomic_write(Path(run_dir) / ARTEFACTS["predictions"], lambda tmp: pq.write_table(table, tmp))


def read_predictions(run_dir, scalar_only: bool = False):
    """predictions.parquet as a DataFrame. scalar_only: leave out list columns (topk_*), which cost most
    of the read at OSV-5M's size; :func:`read_topk` reads those as arrays."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = _artefact_path(run_dir, "predictions")
    try:
        columns = None
        if scalar_only:
            schema = pq.read_schema(path)
            columns = [f.name for f in schema if not pa.types.is_list(f.type) and not pa.types.is_large_list(f.type)]
        return pd.read_parquet(path, columns=columns)
    except Exception as e:  # pyarrow raises several types for a bad file
        raise RunError(f"{path} is not a readable parquet file: {e}") from e


def predictions_rows(run_dir) -> int:
    """Rows of predictions.parquet, from its footer (no data read)."""
    import pyarrow.parquet as pq

    path = _artefact_path(run_dir, "predictions")
    try:
        return int(pq.read_metadata(path).num_rows)
    except Exception as e:
        raise RunError(f"{path} is not a readable parquet file: {e}") from e


def read_topk(run_dir) -> tuple | None:
    """The top-k candidates of predictions.parquet as arrays: (latlon (N, K, 2) float64, prob (N, K) float64).

    None when the table has no topk_lat / topk_lon / topk_prob columns; RunError when the lists are
    ragged (rows with different k) or hold nulls.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = _artefact_path(run_dir, "predictions")
    names = ("topk_lat", "topk_lon", "topk_prob")
    try:
        if not set(names) <= set(pq.read_schema(path).names):
            return None
        table = pq.read_table(path, columns=list(names))
    except Exception as e:
        raise RunError(f"{path} is not a readable parquet file: {e}") from e
    n = table.num_rows
    out = []
    for name in names:
        col = table.column(name).combine_chunks()
        lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
        if n and (lengths.min() != lengths.max() or col.null_count):
            raise RunError(
                f"{path}: {name} must hold one list of the same length per row "
                f"(k from {lengths.min()} to {lengths.max()}, {col.null_count} null)"
            )
        k = int(lengths[0]) if n else 0
        out.append(col.flatten().to_numpy(zero_copy_only=False).astype(np.float64).reshape(n, k))
    return np.stack(out[:2], -1), out[2]


def write_embeddings(run_dir, embeddings: np.ndarray, dtype=np.float16) -> Path:
    """embeddings.npy: (N, D) eval image embeddings, row-aligned with predictions (float16 by default)."""
    arr = np.ascontiguousarray(np.asarray(embeddings), dtype=dtype)
    if arr.ndim != 2:
        raise ValueError(f"embeddings must be (N, D), got {arr.shape}")

    def write(tmp: Path):
        with open(tmp, "wb") as f:  # a file object: numpy would append ".npy" to the temp name
            np.save(f, arr, allow_pickle=False)

    return atomic_write(Path(run_dir) / ARTEFACTS["embeddings"], write)


def read_embeddings(run_dir, mmap: bool = True) -> np.ndarray:
    """(N, D) as stored (float16 or float32); memory-mapped by default."""
    path = _artefact_path(run_dir, "embeddings")
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except ValueError as e:
        raise RunError(f"{path} is not a plain numpy array file (pickled objects are refused): {e}") from e
    except OSError as e:
        raise RunError(f"{path} is not a readable .npy file: {e}") from e
    if arr.ndim != 2:
        raise RunError(f"{path} must hold an (N, D) array, got shape {arr.shape}")
    return arr


def write_gallery(run_dir, gallery) -> Path:
    """gallery.npz from a swclip.retrieval.gallery.Gallery."""
    return gallery.save(Path(run_dir) / ARTEFACTS["gallery"])


def read_gallery(run_dir, name: str = "gallery"):
    """gallery.npz (name="gallery", candidate locations) or image_gallery.npz (name="image_gallery")."""

    return Gallery.load(_artefact_path(run_dir, name))


def write_image_gallery(run_dir, gallery) -> Path:
    """image_gallery.npz: training-image embeddings and their locations (Gallery with kind="image")."""
    return gallery.save(Path(run_dir) / ARTEFACTS["image_gallery"])


def write_metrics(run_dir, metrics: dict, weights_sha256: str | None = None) -> Path:
    """metrics.json, with the weights it measured (``weights_sha256``, default: the manifest's)."""
    sha = weights_sha256 or metrics.get(WEIGHTS_KEY) or _current_weights_sha256(run_dir)
    return atomic_write_json(Path(run_dir) / ARTEFACTS["metrics"], {**metrics, **({WEIGHTS_KEY: sha} if sha else {})})


def read_metrics(run_dir) -> dict:
    return _read_json(_artefact_path(run_dir, "metrics"))


def write_train_log(run_dir, rows) -> Path:
    """train_log.csv from a DataFrame or a list of dicts (step, loss terms, lr, throughput)."""

    def write(tmp: Path):
        if hasattr(rows, "to_csv"):
            rows.to_csv(tmp, index=False)
            return
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)

    return atomic_write(Path(run_dir) / ARTEFACTS["train_log"], write)


def read_train_log(run_dir):
    import pandas as pd

    path = _artefact_path(run_dir, "train_log")
    try:
        return pd.read_csv(path)
    except Exception as e:
        raise RunError(f"{path} is not a readable CSV file: {e}") from e


def artefact_weights(run_dir) -> dict[str, str | None]:
    """{artefact: the weights sha256 it records, None when it records none} for predictions and metrics present."""
    import pyarrow.parquet as pq

    run_dir = Path(run_dir)
    out: dict[str, str | None] = {}
    path = run_dir / ARTEFACTS["predictions"]
    if path.is_file():
        try:
            meta = pq.read_schema(path).metadata or {}
        except Exception as e:  # pyarrow raises several types for a bad file
            raise RunError(f"{path} is not a readable parquet file: {e}") from e
        sha = meta.get(WEIGHTS_KEY.encode())
        out["predictions"] = sha.decode() if sha else None
    path = run_dir / ARTEFACTS["metrics"]
    if path.is_file():
        metrics = _read_json(path)
        sha = metrics.get(WEIGHTS_KEY) if isinstance(metrics, dict) else None
        out["metrics"] = str(sha) if sha else None
    return out


def stale_artefacts(run_dir, manifest: dict) -> str | None:
    """Why the run's predictions / metrics do not belong to its weights (they record another weights_sha256),
    or None when they agree or record none (runs evaluated before the hash was recorded)."""
    want = manifest.get(WEIGHTS_KEY)
    if not want:
        return None
    bad = [ARTEFACTS[name] for name, sha in artefact_weights(run_dir).items() if sha and sha != want]
    if not bad:
        return None
    return (
        f"{' and '.join(bad)} came from other weights than the run's model.safetensors (weights_sha256 "
        f"{want[:12]}…): the run was retrained over an evaluated one; run `swclip evaluate {run_dir}` again"
    )


_WRITERS = {
    "predictions": write_predictions,
    "embeddings": write_embeddings,
    "gallery": write_gallery,
    "image_gallery": write_image_gallery,
    "metrics": write_metrics,
    "train_log": write_train_log,
}


def _artefact_path(run_dir, name: str) -> Path:
    path = resolve_inside(run_dir, ARTEFACTS[name])
    if not path.is_file():
        raise RunError(f"run {str(run_dir)!r} has no {ARTEFACTS[name]}")
    return path


def _read_json(path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise RunError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunError(f"{path} is not valid JSON (corrupt or truncated): {e}") from None


# ------------------------------------------------------------------------------ an existing run


class RunExistsError(RunError):
    """Training would write into a run folder that already holds a run (or other files)."""


def run_contents(run_dir) -> tuple[list[str], list[str]]:
    """(names of a run's own files and folders in ``run_dir``, names of anything else), each sorted.

    A run's own: manifest, weights, the artefacts, config.yaml, checkpoints/, tensorboard/, the workflows'
    markers and atomic_write's leftover temporary files (``.<name>.*.tmp``). Both empty when the folder is
    absent or empty.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return [], []
    own = {MANIFEST, WEIGHTS, CONFIG, *ARTEFACTS.values(), *RUN_FOLDERS, *RUN_MARKERS}
    names = sorted(p.name for p in run_dir.iterdir())
    mine = [n for n in names if n in own or (n.startswith(".") and n.endswith(".tmp"))]
    return mine, [n for n in names if n not in mine]


def clear_run(run_dir) -> list[str]:
    """Remove every file and folder of the run in ``run_dir`` (the folder itself stays); -> the names removed.

    Refuses (RunExistsError, nothing removed) when the folder also holds files a run does not write: they
    may be someone's data, and a run id is no licence to delete them.
    """
    run_dir = Path(run_dir)
    mine, other = run_contents(run_dir)
    if other:
        raise RunExistsError(
            f"{run_dir} holds files a run does not write ({', '.join(other[:5])}{', ...' if len(other) > 5 else ''}); "
            "refusing to clear it: move them away or pick another run_id"
        )
    for name in mine:
        path = run_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return mine


def refuse_existing(run_dir) -> None:
    """RunExistsError naming what ``run_dir`` holds and the ways on, unless it is absent or empty."""
    mine, other = run_contents(run_dir)
    if not (mine or other):
        return
    held = mine + other
    raise RunExistsError(
        f"run {str(run_dir)!r} already exists ({', '.join(held[:6])}{', ...' if len(held) > 6 else ''}); "
        "training into it would mix a new model with the old run's files. Pick another run_id, continue it "
        "with --resume auto, or replace it with --overwrite (config: overwrite: true), which first removes "
        "every file of the old run"
    )


# ----------------------------------------------------------------------------------- save / load


def save_run(run_dir, model, manifest: dict, artefacts: dict | None = None) -> Path:
    """Write ``model`` (an SWCLIP), the artefacts, then manifest.json, each atomically.

    manifest: the caller's keys (loss config, sigma_m, nc_weight, data hash, split, seeds, metrics
    summary, ...). save_run adds schema_version, created_utc, model (the ModelConfig that rebuilds
    the model), weights_sha256, git_commit and library_versions (unless given).
    artefacts: {name: value} with names from ARTEFACTS: predictions (DataFrame), embeddings
    ((N, D) array), gallery (swclip.retrieval.gallery.Gallery), metrics (dict), train_log (DataFrame or rows).
    Returns the run directory.
    """

    run_dir = Path(run_dir)
    clash = [k for k in RESERVED_KEYS if k in manifest]
    if clash:
        raise ValueError(f"manifest keys {clash} are written by save_run itself; rename them")
    unknown = sorted(set(artefacts or {}) - set(_WRITERS))
    if unknown:
        raise ValueError(f"unknown artefact(s) {unknown}; save_run writes: {sorted(_WRITERS)}")
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    weights = atomic_write(run_dir / WEIGHTS, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    weights_sha256 = sha256_file(weights)
    for name, value in (artefacts or {}).items():
        if name in ("predictions", "metrics"):  # they record the weights they belong to
            _WRITERS[name](run_dir, value, weights_sha256=weights_sha256)
        else:
            _WRITERS[name](run_dir, value)
    full = {
        "schema_version": SCHEMA_VERSION,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "model": model.config.to_dict(),
        "weights_sha256": weights_sha256,
        "git_commit": manifest.get("git_commit", git_commit()),
        "library_versions": manifest.get("library_versions", library_versions()),
        **{k: v for k, v in manifest.items() if k not in ("git_commit", "library_versions")},
    }
    atomic_write_json(run_dir / MANIFEST, full)
    return run_dir


def read_manifest(run_dir) -> dict:
    """manifest.json, checked for a known schema_version and a model config."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise RunError(f"{run_dir} is not a run directory: no {MANIFEST}")
    manifest = _read_json(path)
    if not isinstance(manifest, dict):
        raise RunError(f"{path} must hold a JSON object, got {type(manifest).__name__}")
    version = manifest.get("schema_version")
    if version is None:
        raise RunError(f"{path} has no schema_version")
    if version != SCHEMA_VERSION:
        raise RunError(
            f"{path} has schema_version {version!r}; this swclip reads schema_version {SCHEMA_VERSION} "
            "(written by a different swclip version?)"
        )
    if manifest.get("kind") == KIND_IMPORTED:
        if not isinstance(manifest.get("model"), str) or not manifest["model"]:
            raise RunError(f"{path} is an imported run without the name of the model that made its predictions")
    elif not isinstance(manifest.get("model"), dict):
        raise RunError(f"{path} has no 'model' config to rebuild the model from")
    return manifest


def save_imported_run(run_dir, manifest: dict, artefacts: dict) -> Path:
    """Write an imported run (no weights): the artefacts, then manifest.json with kind "imported", each atomically.

    manifest: the importer's keys; ``model`` (the model's name) is required. Adds schema_version,
    created_utc, kind, git_commit and library_versions. artefacts: as :func:`save_run`'s.
    """
    run_dir = Path(run_dir)
    if not isinstance(manifest.get("model"), str) or not manifest["model"]:
        raise ValueError("an imported run's manifest needs 'model': the name of the model that made the predictions")
    unknown = sorted(set(artefacts) - set(_WRITERS))
    if unknown:
        raise ValueError(f"unknown artefact(s) {unknown}; an imported run writes: {sorted(_WRITERS)}")
    run_dir.mkdir(parents=True, exist_ok=True)
    for name, value in artefacts.items():
        _WRITERS[name](run_dir, value)
    full = {
        "schema_version": SCHEMA_VERSION,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "kind": KIND_IMPORTED,
        "git_commit": git_commit(),
        "library_versions": library_versions(),
        **manifest,
    }
    atomic_write_json(run_dir / MANIFEST, full)
    return run_dir


def load_weights(model, weights_path, expected_sha256: str | None = None) -> None:
    """Load a safetensors file into ``model`` strictly; RunError naming missing/unexpected keys or shapes."""

    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise RunError(f"weights file {weights_path} is missing")
    if expected_sha256 and sha256_file(weights_path) != expected_sha256:
        raise RunError(
            f"{weights_path} does not match the manifest's weights_sha256: the file is corrupt or "
            "was replaced by another run's weights"
        )
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise RunError(f"{weights_path} is not a readable safetensors file (corrupt or truncated): {e}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise RunError(
            f"{weights_path} does not fit the model its manifest describes: "
            f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''} ({len(missing)}), "
            f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''} ({len(unexpected)})"
        )
    bad = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items() if state[k].shape != v.shape]
    if bad:
        k, got, want = bad[0]
        raise RunError(f"{weights_path}: wrong shape for {len(bad)} tensor(s); first is {k}: file {got}, model {want}")
    model.load_state_dict(state, strict=True)


@dataclass
class Run:
    """A run directory: its manifest, lazy artefact readers and (from :func:`load_run`) the rebuilt model.

    The one way the app, evaluation and the demo read and update a run. ``Run.open`` reads the manifest
    only (model None: the app's pages need no weights); :func:`load_run` also rebuilds the model.
    """

    run_dir: Path
    model: Any
    manifest: dict
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, run_dir, runs_root=None) -> Run:
        """The run at ``run_dir`` (inside ``runs_root`` when given), manifest checked, no model loaded."""
        run_dir = resolve_inside(runs_root, run_dir) if runs_root is not None else Path(run_dir).resolve()
        return cls(run_dir=run_dir, model=None, manifest=read_manifest(run_dir))

    def update_manifest(self, **changes) -> dict:
        """Set top-level manifest keys (see :func:`update_manifest`); the Run's manifest follows."""
        self.manifest = update_manifest(self.run_dir, **changes)
        return self.manifest

    def __iter__(self):
        """``model, manifest, artefacts = load_run(d)``; the artefact readers are this Run's."""
        return iter((self.model, self.manifest, self))

    def has(self, name: str) -> bool:
        return (self.run_dir / ARTEFACTS[name]).is_file()

    def predictions(self, scalar_only: bool = False):
        return read_predictions(self.run_dir, scalar_only)

    def topk(self) -> tuple | None:
        """(latlon (N, K, 2), prob (N, K)) of predictions.parquet's top-k lists (:func:`read_topk`)."""
        return read_topk(self.run_dir)

    def n_predictions(self) -> int:
        return predictions_rows(self.run_dir)

    def embeddings(self, mmap: bool = True) -> np.ndarray:
        return read_embeddings(self.run_dir, mmap)

    def gallery(self, name: str = "gallery"):
        """The location gallery, or name="image_gallery" for the training-image gallery."""
        if name not in self._cache:
            self._cache[name] = read_gallery(self.run_dir, name)
        return self._cache[name]

    def metrics(self) -> dict:
        return read_metrics(self.run_dir)

    def train_log(self):
        return read_train_log(self.run_dir)


def load_run(run_dir, runs_root=None, device: str | torch.device = "cpu") -> Run:
    """Rebuild the model from manifest.json alone, load model.safetensors strictly, eval mode.

    runs_root: when given, ``run_dir`` (absolute or relative to it) must lie inside it.
    """

    run = Run.open(run_dir, runs_root)
    if run.manifest.get("kind") == KIND_IMPORTED:
        raise RunError(
            f"{run.run_dir} holds imported predictions of {run.manifest['model']!r}, not a model we can load: "
            "predicting needs a trained run"
        )
    try:
        model = build_model(run.manifest["model"], load_pretrained=False)
    except (TypeError, ValueError) as e:
        raise RunError(f"{run.run_dir / MANIFEST}: bad model config: {e}") from None
    load_weights(model, resolve_inside(run.run_dir, WEIGHTS), run.manifest.get("weights_sha256"))
    run.model = model.to(device).eval()
    return run


SEARCHES = ("location", "image")


def load_predictor(
    run_dir,
    runs_root=None,
    gallery: str | None = None,
    search: str = "location",
    device: str = "cpu",
    progress: bool = False,
    **kwargs,
) -> Predictor:
    """A run's model, gallery and faiss index, built once (swclip.retrieval.predictor.Predictor).

    gallery: which places the candidates are, as in ``swclip evaluate --gallery``: None (the run's
    stored gallery.npz, whatever it holds), "split" (the gallery split's locations; the stored gallery
    must hold them) or "geoclip100k" (GeoCLIP's 100K coordinates: the stored gallery when the manifest
    says it holds them, else encoded now by the run's location tower, with a progress bar when
    ``progress``). search: "location" compares photos with the location tower's embeddings of the
    places; "image" with the training images' embeddings (image_gallery.npz, the kNN baseline).
    The knn-kde width comes from ``kwargs["kde_bandwidth_m"]``, else the manifest's (for a stored
    gallery only: it belongs to that gallery), else the gallery's own spacing.
    """
    if search not in SEARCHES:
        raise ValueError(
            f"search {search!r} unknown; choose location (the location tower's places) or image "
            "(the training images' embeddings)"
        )
    if gallery is not None:
        check_gallery_source(gallery)
    run = load_run(run_dir, runs_root=runs_root, device=device)
    stored = stored_gallery_source(run.manifest)
    if search == "image":
        if gallery == "geoclip100k":
            raise ValueError(
                "search image reads the training images' embeddings; gallery geoclip100k holds "
                "places without images: use search location"
            )
        places = run.gallery("image_gallery")
    elif gallery == "geoclip100k" and stored != "geoclip100k":
        latlon, city = gallery_places("geoclip100k", run.model)
        places = Gallery.from_locations(run.model.eval(), latlon, city=city, progress=progress)
    elif gallery == "split" and stored != "split":
        raise RunError(
            f"{run.run_dir}: its gallery.npz holds {stored} places, not the split's; run "
            "`swclip evaluate RUN --gallery split` to store the split's gallery"
        )
    else:
        places = run.gallery("gallery")
        if kwargs.get("kde_bandwidth_m") is None:  # the CLI passes None for "not given"
            kwargs["kde_bandwidth_m"] = run.manifest.get("kde_bandwidth_m")
    predictor = Predictor(run.model, places, **kwargs)
    predictor.run = run
    return predictor


def update_manifest(run_dir, **changes) -> dict:
    """Set top-level keys of a run's manifest.json, atomically; -> the new manifest.

    The keys save_run owns (schema_version, model, weights_sha256, created_utc) cannot be changed here:
    they describe the weights, so they change only with :func:`save_run`.
    """
    clash = [k for k in RESERVED_KEYS if k in changes]
    if clash:
        raise ValueError(f"manifest keys {clash} are written by save_run itself; they change only with the weights")
    manifest = {**read_manifest(run_dir), **changes}
    atomic_write_json(Path(run_dir) / MANIFEST, manifest)
    return manifest


@dataclass
class RunInfo:
    """One run directory under a root: its id (path relative to the root), folder, manifest, or why it cannot load.

    :func:`list_runs` fills run_id, path, manifest / error; ``swclip.catalog.discover_runs`` adds is_demo
    and stale.
    """

    run_id: str
    path: Path
    manifest: dict | None = field(default=None, repr=False)
    error: str | None = None
    is_demo: bool = False
    stale: str | None = None  # why its predictions / metrics do not belong to its weights (stale_artefacts)

    @property
    def stamp(self) -> float:
        """Modification time of the manifest: cache keys change when a run is rewritten."""
        try:
            return (self.path / MANIFEST).stat().st_mtime
        except OSError:
            return 0.0

    @property
    def kind(self) -> str:
        """ "trained" (our trainer wrote it) or "imported" (another model's predictions, `swclip import`)."""
        return str((self.manifest or {}).get("kind") or KIND_TRAINED)

    @property
    def source(self) -> str:
        """Where the predictions came from: an imported run's source file (or description), else ""."""
        src = (self.manifest or {}).get("source")
        if not isinstance(src, dict):
            return ""
        return str(src.get("path") or src.get("description") or "")

    @property
    def loss_name(self) -> str:
        loss = (self.manifest or {}).get("loss")
        return str(loss.get("name", "")) if isinstance(loss, dict) else str(loss or "")

    @property
    def sigma_m(self) -> float | None:
        """The run's soft-label bandwidth in metres; None for one-hot CLIP.

        The manifest's top-level ``sigma_m`` (0 for losses without soft
        labels) wins over ``loss.sigma_m``, which keeps the config default
        even for a one-hot run.
        """
        m = self.manifest or {}
        v = m.get("sigma_m")
        if v is None and self.loss_name.startswith("swclip"):
            v = (m.get("loss") or {}).get("sigma_m")
        return float(v) if isinstance(v, (int, float)) and v > 0 else None

    @property
    def label(self) -> str:
        """Short human label: id, loss and σ."""
        bits = [self.run_id]
        if self.kind == KIND_IMPORTED:
            bits.append(f"imported: {self.manifest['model']}")
        if self.loss_name:
            bits.append(self.loss_name)
        if self.sigma_m:
            bits.append(f"σ={fmt_m(self.sigma_m)}")
        if self.stale:
            bits.append("STALE: artefacts of other weights")
        return " · ".join(bits)


def list_runs(runs_root, max_depth: int = 3) -> list[RunInfo]:
    """Every folder under ``runs_root`` (down to ``max_depth``) holding a manifest.json, sorted by run id.

    Broken runs are listed with ``error`` set instead of being skipped silently. Symlinks that leave
    the root are not followed.
    """
    root = Path(runs_root).resolve()
    if not root.is_dir():
        return []
    out = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        depth = len(Path(dirpath).relative_to(root).parts)
        if depth >= max_depth:
            dirnames[:] = []
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if MANIFEST in filenames:
            path = Path(dirpath)
            run_id = str(path.relative_to(root)) if path != root else "."
            try:
                resolve_inside(root, path / MANIFEST)
                out.append(RunInfo(run_id, path, read_manifest(path)))
            except RunError as e:
                out.append(RunInfo(run_id, path, None, str(e)))
    return sorted(out, key=lambda r: r.run_id)
