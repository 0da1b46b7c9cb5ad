"""GeoCLIP (Vivanco Cepeda et al. 2023) from a photo: open_clip's ViT-L-14 and the geoclip wheel's heads.

    model = GeoCLIPImage(weights="open_clip_model.safetensors")   # None: looked up in the Hugging Face cache
    image_features = model.encode_image(images)        # (B, 3, 224, 224) model.preprocess_val -> (B, 512), unit rows
    location_features = model.encode_location(latlon)  # (N, 2) degrees -> (N, 512), unit rows
    prob, index = softmax_topk(image_features, location_features, model.scale(), k=5)   # (B, k), (B, k)

GeoCLIP, as the geoclip wheel (1.3.0, MIT) computes it:

- image: CLIP ViT-L/14 with OpenAI's weights, frozen; its projected 768-d image embedding
  (transformers' ``CLIPModel.get_image_features``: ln_post(CLS) @ proj, which is what open_clip's
  ``visual(x)`` returns), then ``Sequential(Linear(768, 768), ReLU(), Linear(768, 512))``
  (``image_encoder_mlp_weights.pth``);
- location: GeoCLIP's location encoder (``GPSLocationTower`` with the wheel's weights,
  ``swclip.method.geoclip_wheel``);
- logits = exp(t) · cos(image, location), t from ``logit_scale_weights.pth`` (3.681, exp(t) ≈ 39.7);
  probabilities: the softmax of the logits over the gallery.

OpenAI's ViT-L/14 weights are never downloaded. They are read from a local file in open_clip's
format (``open_clip_model.safetensors``, or a tensors-only ``.bin`` / ``.pt`` read with
``weights_only=True``; a full CLIP checkpoint or the image tower alone) or found where
``open_clip.create_model("ViT-L-14", pretrained="openai")`` leaves them: the Hugging Face cache,
repository ``timm/vit_large_patch14_clip_224.openai`` (:func:`find_vit_l14_weights`).
The ViT uses QuickGELU, as OpenAI's CLIP does.
"""

from __future__ import annotations

from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F
from huggingface_hub import try_to_load_from_cache
from huggingface_hub.constants import HF_HUB_CACHE
from safetensors import SafetensorError, safe_open
from torch import nn

from swclip.geo import check_latlon
from swclip.method.geoclip_wheel import (
    GEOCLIP_DEPTH,
    GEOCLIP_EMBED_DIM,
    GEOCLIP_HIDDEN,
    GEOCLIP_RFF_DIM,
    GEOCLIP_SCALES,
    geoclip_image_head_state,
    geoclip_location_state_dict,
)
from swclip.method.model import _quiet_open_clip
from swclip.method.towers import GPSLocationTower

ARCH = "ViT-L-14"
CLIP_DIM = 768  # ViT-L/14's projected image embedding, the MLP's input
OPENAI_HF_REPO = "timm/vit_large_patch14_clip_224.openai"  # open_clip's hf_hub for ViT-L-14 / "openai"
CACHE_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # what open_clip saves, in its order
MAKE_WEIGHTS = (
    "on a machine with internet: python -c \"import open_clip; open_clip.create_model('ViT-L-14', "
    f"pretrained='openai')\" leaves {CACHE_FILES[0]} in ~/.cache/huggingface/hub/"
    f"models--{OPENAI_HF_REPO.replace('/', '--')}/snapshots/*/; copy it here and pass --weights FILE"
)


def find_vit_l14_weights(weights=None, cache_dir=None) -> Path:
    """The local file holding OpenAI's CLIP ViT-L/14 weights in open_clip's format; nothing is downloaded.

    weights: a file (it must exist). None: ``CACHE_FILES`` of ``OPENAI_HF_REPO`` in the Hugging Face hub
    cache (``cache_dir``, default ``huggingface_hub.constants.HF_HUB_CACHE``, which follows HF_HOME and
    HF_HUB_CACHE). FileNotFoundError naming the file, where it looked and how to make it.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"GeoCLIP image weights {path}: no such file ({MAKE_WEIGHTS})")
        return path
    cache_dir = Path(cache_dir or HF_HUB_CACHE)
    for name in CACHE_FILES:
        found = try_to_load_from_cache(OPENAI_HF_REPO, name, cache_dir=str(cache_dir))
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    raise FileNotFoundError(
        f"GeoCLIP needs OpenAI's CLIP ViT-L/14 weights ({CACHE_FILES[0]} of {OPENAI_HF_REPO}) and found none: "
        f"looked for {' and '.join(CACHE_FILES)} in {cache_dir / ('models--' + OPENAI_HF_REPO.replace('/', '--'))}"
        f"; nothing is downloaded. Make it {MAKE_WEIGHTS}"
    )


def read_image_tower_state(path) -> dict[str, torch.Tensor]:
    """The image tower's tensors from an open_clip checkpoint (``visual.*`` of a full CLIP, or the tower alone).

    .safetensors through safetensors; anything else through ``torch.load(weights_only=True)``.
    ValueError naming the file when it cannot be read that way.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                keys = list(f.keys())
                wanted = [k for k in keys if k.startswith("visual.")] or keys
                state = {k: f.get_tensor(k) for k in wanted}
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{path}: not a readable safetensors file ({err})") from None
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickled objects, TorchScript archives, truncated files
            raise ValueError(
                f"{path}: not a tensors-only torch checkpoint (read with weights_only=True; OpenAI's TorchScript "
                f"ViT-L-14.pt is not one, open_clip's {CACHE_FILES[0]} is): {str(err).splitlines()[0]}"
            ) from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{path}: not a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("visual.") for k in state):
        state = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    return state


class GeoCLIPHead(nn.Module):
    """GeoCLIP's image head and logit scale, with the geoclip wheel's weights.

    forward: (B, 768) ViT-L/14 projected image embeddings -> (B, 512) float32, L2-normalised, through
    ``mlp`` = Sequential(Linear(768, 768), ReLU(), Linear(768, 512)). ``logit_scale`` is t; :meth:`scale` exp(t).
    """

    def __init__(self):
        super().__init__()
        mlp_state, log_scale = geoclip_image_head_state()
        self.mlp = nn.Sequential(nn.Linear(CLIP_DIM, CLIP_DIM), nn.ReLU(), nn.Linear(CLIP_DIM, GEOCLIP_EMBED_DIM))
        self.mlp.load_state_dict(mlp_state, strict=True)
        self.logit_scale = nn.Parameter(log_scale.float().reshape(()), requires_grad=False)

    def forward(self, clip_features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.mlp(clip_features.float()), dim=-1)  # (B, 512)

    def scale(self) -> torch.Tensor:
        """exp(t), GeoCLIP's logit scale (not clamped). Scalar float32."""
        return self.logit_scale.exp()


class GeoCLIPImage(nn.Module):
    """GeoCLIP: ViT-L-14 image tower + :class:`GeoCLIPHead` + GeoCLIP's location encoder.

    weights: OpenAI's ViT-L/14 in open_clip's format (see :func:`find_vit_l14_weights`; None looks in the
    Hugging Face cache). random_init: a randomly initialised ViT-L-14 from ``init_seed`` instead (tests);
    the head and the location encoder are always GeoCLIP's. Attributes: ``visual``, ``head``,
    ``location``, ``preprocess_val`` (PIL -> (3, 224, 224): shorter side to 224 bicubic, centre crop,
    OpenAI's mean / std, as GeoCLIP's CLIP processor), ``weights_path`` (None for random_init).
    """

    embed_dim = GEOCLIP_EMBED_DIM

    def __init__(self, weights=None, random_init: bool = False, init_seed: int = 0):
        super().__init__()
        self.weights_path = None if random_init else find_vit_l14_weights(weights)  # fails before building
        with torch.random.fork_rng(devices=[]), _quiet_open_clip(True):
            torch.manual_seed(init_seed)
            clip, _, self.preprocess_val = open_clip.create_model_and_transforms(
                ARCH, pretrained=None, force_quick_gelu=True
            )
        self.visual = clip.visual
        del clip  # the text tower goes with it
        if self.weights_path is not None:
            self._load_visual(self.weights_path)
        self.head = GeoCLIPHead()
        self.location = GPSLocationTower(
            GEOCLIP_EMBED_DIM, GEOCLIP_SCALES, GEOCLIP_RFF_DIM, GEOCLIP_HIDDEN, GEOCLIP_DEPTH
        )
        self.location.load_state_dict(geoclip_location_state_dict(), strict=True)
        self.requires_grad_(False)
        self.eval()

    def _load_visual(self, path: Path) -> None:
        state = read_image_tower_state(path)
        try:
            missing, unexpected = self.visual.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shape mismatches: another architecture's weights
            raise ValueError(f"{path}: not {ARCH} image-tower weights: {str(err).splitlines()[-1].strip()}") from None
        if missing or unexpected:
            raise ValueError(
                f"{path}: not an open_clip {ARCH} checkpoint: {len(missing)} image-tower tensor(s) missing "
                f"{missing[:3]}, {len(unexpected)} unexpected {unexpected[:3]}"
            )

    @property
    def device(self) -> torch.device:
        return self.head.logit_scale.device

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, 224, 224) preprocessed images -> (B, 512) float32, L2-normalised (GeoCLIP's image features)."""
        return self.head(self.visual(images.to(self.device, torch.float32)))  # ViT: (B, 768) projected embedding

    def encode_location(self, latlon, city=None, check: bool = True) -> torch.Tensor:
        """(N, 2) latlon degrees (numpy or torch) -> (N, 512) float32, L2-normalised. ``city`` is ignored."""
        if check:
            check_latlon(latlon)
        latlon = torch.as_tensor(latlon, dtype=torch.float64, device=self.device)
        return F.normalize(self.location(latlon).float(), dim=-1)

    def scale(self) -> torch.Tensor:
        """exp(t), GeoCLIP's logit scale. Scalar float32."""
        return self.head.scale()


def softmax_topk(image_features: torch.Tensor, location_features: torch.Tensor, scale, k: int):
    """GeoCLIP's probabilities over a gallery and their k largest.

    image_features: (B, D), location_features: (N, D), both L2-normalised; scale: exp(t).
    -> (prob (B, k), index (B, k) into the gallery), best first; prob is the softmax of
    scale · cos over all N places, so a row of all N probabilities sums to 1.
    """
    if not 1 <= k <= len(location_features):
        raise ValueError(f"top_k must be between 1 and the gallery's {len(location_features)} places, got {k}")
    logits = scale * (image_features @ location_features.T)  # (B, N)
    prob, index = torch.topk(logits.softmax(dim=-1), k, dim=-1)  # (B, k)
    return prob, index
