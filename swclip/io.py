"""Files written atomically, hashed, and kept inside a root.

- :func:`atomic_write` (and ``_bytes`` / ``_json``): a temporary file in the
  same folder, fsynced, then ``os.replace``; a killed write never leaves a
  half-file under the final name.
- :func:`resolve_inside`: the one helper that keeps a path inside a root
  (``../`` escapes, absolute paths elsewhere and symlinks that leave it raise
  :class:`RunError`). The app, the run loader and the catalog all use it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch


class RunError(ValueError):
    """A run directory or one of its files is missing, corrupt or does not match its manifest, or a path
    leaves the root it must stay in (runs root, dataset root). A ValueError."""


# --------------------------------------------------------------------------------------------- paths


def resolve_inside(
    root: str | os.PathLike, path: str | os.PathLike, what: str = "path", root_name: str = "runs root"
) -> Path:
    """``path`` (absolute, or relative to ``root``) resolved, symlinks included; RunError if it leaves ``root``.

    The one path-confinement check of the project: runs, galleries, the app's image and table paths and the
    dataset readers (``swclip.data.images.resolve_image_path``) all go through it. ``what`` and ``root_name``
    only word the error.
    """
    root_r = Path(root).resolve()
    p = Path(path)
    p_r = (p if p.is_absolute() else root_r / p).resolve()
    if p_r != root_r and root_r not in p_r.parents:
        link = _symlink_out(Path(root), p)
        if link is not None:
            raise RunError(
                f"{what} {str(path)!r} escapes the {root_name} {str(root_r)!r} through the symlink {str(link)!r} "
                f"-> {str(link.resolve())!r}; symlinks are resolved, so the {root_name} must hold the link's target "
                "(point it at a folder above both); refusing to read it"
            )
        raise RunError(f"{what} {str(path)!r} escapes the {root_name} {str(root_r)!r}; refusing to read it")
    return p_r


def _symlink_out(root: Path, path: Path) -> Path | None:
    """The first symlink on ``path`` (absolute, or relative to ``root``) whose target leaves ``root``, when
    the path itself, read without following links, stays inside it; else None. Words resolve_inside's error."""
    root_r = root.resolve()
    for base in (root.absolute(), root_r):
        lexical = Path(os.path.normpath(path if path.is_absolute() else base / path))
        if lexical != base and base not in lexical.parents:
            continue
        here = base
        for part in lexical.relative_to(base).parts:
            here = here / part
            if here.is_symlink():
                target = here.resolve()
                if target != root_r and root_r not in target.parents:
                    return here
    return None


# ---------------------------------------------------------------------------------------- atomic I/O


def atomic_write(path: str | os.PathLike, write_fn: Callable[[Path], Any]) -> Path:
    """Write ``path`` atomically: ``write_fn(tmp_path)`` writes a temporary file in the same folder,
    which is fsynced and then renamed over ``path`` (os.replace). If ``write_fn`` raises or the
    process dies, ``path`` keeps its old content (or stays absent) and the temporary file is removed
    (on an exception). Training checkpoints use this too:
    ``atomic_write(p, lambda tmp: torch.save(state, tmp))``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        write_fn(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a run is meant to be read by the app's user too
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_json(path, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False, default=json_default, allow_nan=False)
    return atomic_write_bytes(path, (text + "\n").encode())


def json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path,)):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
