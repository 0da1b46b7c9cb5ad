"""What the ``geoclip`` wheel ships (MIT, Vivanco Cepeda et al. 2023), read without importing it.

- The pretrained location encoder's weights: ``gps_init="geoclip"`` loads them into
  our GPS tower (``swclip.method.towers.GPSLocationTower``), which then has GeoCLIP's
  exact architecture: Equal Earth scaled by GeoCLIP's SF / 180, random Fourier
  features at σ = 2⁰, 2⁴, 2⁸ with 256 frequencies each, per scale a 3 × 1024 ReLU MLP
  and a 512-d head, the scales summed.
- Its 100K-coordinate GPS gallery (:func:`geoclip_gallery_latlon`), candidate places for world-scale
  prediction (``Gallery.from_locations(model, geoclip_gallery_latlon())``).
- Its image head (:func:`geoclip_image_head_state`): the MLP after CLIP ViT-L/14's 768-d projected
  image embedding and the learnt log logit scale t (``swclip.method.geoclip_image`` composes them).

The package's own ``__init__`` imports ``transformers`` (for its image encoder), which we
neither need nor install, so the files are found through the installed distribution's
metadata and nothing of geoclip is imported. The weights are read with
``torch.load(weights_only=True)``: tensors only, never an unpickled object.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import numpy as np
import torch

GEOCLIP_SCALES = (2.0**0, 2.0**4, 2.0**8)
GEOCLIP_RFF_DIM, GEOCLIP_HIDDEN, GEOCLIP_DEPTH, GEOCLIP_EMBED_DIM = 256, 1024, 3, 512
WEIGHTS_FILE = "geoclip/model/weights/location_encoder_weights.pth"
GALLERY_FILE = "geoclip/model/gps_gallery/coordinates_100K.csv"
IMAGE_MLP_FILE = "geoclip/model/weights/image_encoder_mlp_weights.pth"
LOGIT_SCALE_FILE = "geoclip/model/weights/logit_scale_weights.pth"
# GeoCLIP's LocEnc{i}: capsule = [GaussianEncoding, Linear, ReLU, Linear, ReLU, Linear, ReLU], head = [Linear]
# ours:  rff.{i}.b and mlps.{i} = [Linear, ReLU, Linear, ReLU, Linear, ReLU, Linear]
_LAYERS = {"capsule.1": "0", "capsule.3": "2", "capsule.5": "4", "head.0": "6"}


def package_file(relative: str) -> Path:
    """Path of a file inside the installed geoclip distribution; FileNotFoundError naming the fix."""
    try:
        dist = importlib.metadata.distribution("geoclip")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            "GeoCLIP's files come from the geoclip wheel, which is not installed: "
            "pip install --no-deps geoclip==1.3.0 (see docs/dependencies.md)"
        ) from None
    path = Path(dist.locate_file(relative))
    if not path.is_file():
        raise FileNotFoundError(f"the installed geoclip {dist.version} has no {relative}")
    return path


def check_geoclip_architecture(embed_dim: int, scales, rff_dim: int, hidden: int, depth: int) -> None:
    """ValueError naming every setting that differs from GeoCLIP's location encoder."""
    want = {
        "embed_dim": GEOCLIP_EMBED_DIM,
        "gps_scales": GEOCLIP_SCALES,
        "gps_rff_dim": GEOCLIP_RFF_DIM,
        "gps_hidden": GEOCLIP_HIDDEN,
        "gps_depth": GEOCLIP_DEPTH,
    }
    got = {
        "embed_dim": int(embed_dim),
        "gps_scales": tuple(float(s) for s in scales),
        "gps_rff_dim": int(rff_dim),
        "gps_hidden": int(hidden),
        "gps_depth": int(depth),
    }
    bad = [f"{k}={got[k]} (GeoCLIP: {want[k]})" for k in want if got[k] != want[k]]
    if bad:
        raise ValueError("gps_init=geoclip needs GeoCLIP's location-encoder architecture; " + ", ".join(bad))


def geoclip_location_state_dict() -> dict:
    """GeoCLIP's pretrained location-encoder weights, renamed to our GPS tower's state-dict keys."""
    theirs = torch.load(package_file(WEIGHTS_FILE), map_location="cpu", weights_only=True)
    ours = {}
    for i in range(len(GEOCLIP_SCALES)):
        ours[f"rff.{i}.b"] = theirs[f"LocEnc{i}.capsule.0.b"]
        for layer, index in _LAYERS.items():
            for kind in ("weight", "bias"):
                ours[f"mlps.{i}.{index}.{kind}"] = theirs[f"LocEnc{i}.{layer}.{kind}"]
    return ours


def geoclip_image_head_state() -> tuple[dict, torch.Tensor]:
    """(the image MLP's state dict, t): GeoCLIP's image head as the wheel stores it.

    MLP keys ``0.weight`` (768, 768), ``0.bias`` (768,), ``2.weight`` (512, 768), ``2.bias`` (512,):
    ``nn.Sequential(Linear(768, 768), ReLU(), Linear(768, 512))``. t: a 0-d float32 tensor, the log of the
    logit scale (GeoCLIP's logits are exp(t) · cos).
    """
    mlp = torch.load(package_file(IMAGE_MLP_FILE), map_location="cpu", weights_only=True)
    log_scale = torch.load(package_file(LOGIT_SCALE_FILE), map_location="cpu", weights_only=True)
    return mlp, log_scale


def geoclip_gallery_latlon() -> np.ndarray:
    """GeoCLIP's GPS gallery: (100000, 2) float64 latlon degrees (its CSV's LAT, LON columns)."""
    import pandas as pd

    table = pd.read_csv(package_file(GALLERY_FILE), dtype={"LAT": np.float64, "LON": np.float64})
    return table[["LAT", "LON"]].to_numpy(np.float64)
