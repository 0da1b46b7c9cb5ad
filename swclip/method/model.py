"""SWCLIP: an open_clip image tower and a location tower in one embedding space.

    model = SWCLIP(ModelConfig(arch="swclip-tiny", location_tower="gps"))
    out = model(images, latlon)            # dict: image_features, location_features (B, D) L2-normalised,
    loss = SoftClipLoss(50.0)(**out)       #       logit_scale = exp(t) (scalar), latlon (B, 2) passed through

The image tower is any open_clip architecture by name (``ViT-B-32``,
``RN50``, ...) or one of the small configs registered from
``swclip/model_configs/`` (``swclip-tiny``: a ViT at 32 px, patch 8, width 64,
2 layers, that trains on a 2-core CPU in a minute). The text tower of the
open_clip model is kept only when ``location_tower == "text"``.

``pretrained`` is None (random init from ``init_seed``), a local weights file
(an open_clip checkpoint: safetensors, or .pt/.bin read with
``weights_only=True``), or an open_clip tag such as ``"openai"``, which is
downloaded only when asked for and fails at once, naming the tag, when it is
not cached and there is no network.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from swclip.geo import check_latlon
from swclip.method.geoclip_wheel import check_geoclip_architecture, geoclip_location_state_dict
from swclip.method.towers import DEFAULT_TEMPLATE, GPSLocationTower, TextLocationTower, check_template

CONFIG_DIR = Path(__file__).parent / "model_configs"
LOCATION_TOWERS = ("gps", "text")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
MAX_LOGIT_SCALE = 100.0  # open_clip clamps exp(t) at 100 during training


class PretrainedUnavailableError(RuntimeError):
    """A named pretrained tag is not cached locally and cannot be downloaded."""


_registered = False


def register_configs() -> None:
    """Add ``swclip/model_configs/*.json`` to open_clip's model registry (once per process)."""
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


@dataclass
class ModelConfig:
    """Everything needed to rebuild an SWCLIP model; stored in the run manifest.

    arch: open_clip architecture name. pretrained: None | open_clip tag | local
    file path. location_tower: "gps" or "text". embed_dim, image_size: None
    keeps the architecture's value. template: location-as-text format string
    ({lat}, {lon}, {city}, {in_city}). context_tokens: learnable CoOp context
    tokens for the text tower. gps_scales: Fourier scales σ (see
    swclip.method.towers; 2^8 ≈ 67 km, 2^14 ≈ 1 km wavelengths). gps_rff_dim,
    gps_hidden, gps_depth: per-scale Fourier features and MLP. gps_seed,
    init_seed: seeds for the Fourier matrices and for the initial weights.
    lock_image, lock_location: LiT-style, freeze a tower except its final
    projection. dtype: parameter dtype ("float32", "bfloat16", "float16").
    init_logit_scale: initial t, with logit_scale = exp(t).
    """

    arch: str = "swclip-tiny"
    pretrained: str | None = None
    location_tower: str = "gps"
    embed_dim: int | None = None
    image_size: int | None = None
    template: str = DEFAULT_TEMPLATE
    context_tokens: int = 0
    gps_scales: tuple = (2.0**0, 2.0**4, 2.0**8)
    gps_rff_dim: int = 256
    gps_hidden: int = 1024
    gps_depth: int = 3
    gps_seed: int = 0
    gps_init: str | None = None  # "geoclip": GeoCLIP's pretrained location encoder (swclip.method.geoclip_wheel)
    init_seed: int = 0
    lock_image: bool = False
    lock_location: bool = False
    grad_checkpointing: bool = False
    dtype: str = "float32"
    init_logit_scale: float = math.log(1 / 0.07)

    def __post_init__(self):
        self.gps_scales = tuple(float(s) for s in self.gps_scales)
        if self.location_tower not in LOCATION_TOWERS:
            raise ValueError(f"location_tower must be one of {LOCATION_TOWERS}, got {self.location_tower!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {self.dtype!r}")
        if self.location_tower == "text":
            check_template(self.template)
        if self.gps_init not in (None, "geoclip"):
            raise ValueError(f"gps_init must be null or 'geoclip', got {self.gps_init!r}")
        if self.gps_init and self.location_tower != "gps":
            raise ValueError("gps_init=geoclip needs location_tower='gps'")
        if self.context_tokens and self.location_tower != "text":
            raise ValueError("context_tokens only apply to the text location tower")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["gps_scales"] = list(self.gps_scales)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, missing keys take the defaults."""
        if not isinstance(d, dict):
            raise ValueError(f"model config must be a JSON object, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"model config has unknown key(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


# Street-level demo: GeoCLIP's three scales plus finer ones (4.2 km, 1 km, 263 m wavelengths), small MLPs.
DEMO_CONFIG = ModelConfig(
    arch="swclip-tiny",
    gps_scales=(2.0**0, 2.0**4, 2.0**8, 2.0**12, 2.0**14, 2.0**16),
    gps_rff_dim=64,
    gps_hidden=128,
    gps_depth=2,
)


def _network_reachable(host: str = "huggingface.co", port: int = 443, timeout_s: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _cached_pretrained(tag_cfg: dict) -> str | None:
    """Local path of a tag's weights if already downloaded, without touching the network."""
    if "file" in tag_cfg:
        return tag_cfg["file"]
    hub = tag_cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import hf_hub_download

        repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for name in names:
            try:
                return hf_hub_download(repo_id=repo, filename=name, local_files_only=True)
            except Exception:  # not in the cache: any hub error means "not here"
                continue
    url = tag_cfg.get("url", "")
    if url:
        path = os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url))
        if os.path.isfile(path):
            return path
    return None


def _tag_preprocess(arch: str, pretrained: str | None) -> dict:
    """Image normalisation a pretrained tag was trained with ({} for no tag or a file)."""
    if not pretrained or os.path.isfile(pretrained):
        return {}
    import open_clip

    tag_cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    return {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}


@contextlib.contextmanager
def _quiet_open_clip(quiet: bool):
    """Hide open_clip's "No pretrained weights loaded" warning when random init is what was asked for."""
    if not quiet:
        yield
        return
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def resolve_pretrained(arch: str, pretrained: str | None) -> tuple[str | None, dict]:
    """-> (local weights path or None, the tag's preprocess overrides).

    A local file always works. A tag is looked up in the local cache first,
    then downloaded; with no network it fails at once with
    PretrainedUnavailableError naming the tag.
    """
    if pretrained is None or pretrained == "":
        return None, {}
    if os.path.isfile(pretrained):
        return pretrained, {}
    import open_clip

    tag_cfg = open_clip.get_pretrained_cfg(arch, pretrained)
    if not tag_cfg:
        looks_like_path = os.sep in pretrained or pretrained.endswith((".safetensors", ".pt", ".pth", ".bin"))
        if looks_like_path:
            raise FileNotFoundError(f"pretrained weights file not found: {pretrained}")
        raise ValueError(
            f"pretrained {pretrained!r} is neither a file nor an open_clip tag for {arch}; "
            f"known tags: {open_clip.list_pretrained_tags_by_model(arch)}"
        )
    preprocess = _tag_preprocess(arch, pretrained)
    path = _cached_pretrained(tag_cfg)
    if path:
        return path, preprocess
    if not _network_reachable():
        raise PretrainedUnavailableError(
            f"open_clip pretrained tag {pretrained!r} for {arch} is not in the local cache and there is no network "
            "(or HF_HUB_OFFLINE=1). Pass a local weights file path as `pretrained`, or fetch the tag once on a "
            "machine with network."
        )
    return open_clip.download_pretrained(tag_cfg), preprocess


def _visual_projection_parameters(visual: nn.Module):
    """The final projection of an open_clip image tower (what LiT-style locking leaves trainable)."""
    if isinstance(getattr(visual, "proj", None), nn.Parameter):  # VisionTransformer
        return [visual.proj]
    if getattr(visual, "attnpool", None) is not None:  # ModifiedResNet
        return list(visual.attnpool.c_proj.parameters())
    if getattr(visual, "head", None) is not None:  # TimmModel
        return list(visual.head.parameters())
    raise ValueError(f"don't know the projection of image tower {type(visual).__name__} to lock it LiT-style")


class SWCLIP(nn.Module):
    """Image tower + location tower + learnable log logit scale t.

    Attributes: ``visual`` (open_clip image tower), ``location`` (GPS or text
    tower), ``logit_scale`` (t), ``preprocess_train`` / ``preprocess_val``
    (open_clip image transforms, PIL -> (3, H, W) tensor), ``config``.
    """

    def __init__(self, config: ModelConfig, load_pretrained: bool = True):
        """load_pretrained=False skips ``config.pretrained``'s weights (but keeps a tag's image
        normalisation): what swclip.runs does before loading a run's own weights."""
        super().__init__()
        import open_clip

        register_configs()
        self.config = config
        if load_pretrained:
            path, tag_preprocess = resolve_pretrained(config.arch, config.pretrained)
        else:
            path, tag_preprocess = None, _tag_preprocess(config.arch, config.pretrained)
        kwargs = {"embed_dim": config.embed_dim} if config.embed_dim else {}
        with torch.random.fork_rng(devices=[]), _quiet_open_clip(path is None):
            torch.manual_seed(config.init_seed)
            clip, self.preprocess_train, self.preprocess_val = open_clip.create_model_and_transforms(
                config.arch,
                pretrained=path,
                force_image_size=config.image_size,
                force_custom_text=True,
                image_mean=tag_preprocess.get("mean"),
                image_std=tag_preprocess.get("std"),
                image_interpolation=tag_preprocess.get("interpolation"),
                image_resize_mode=tag_preprocess.get("resize_mode"),
                **kwargs,
            )
            self.visual = clip.visual
            embed_dim = int(config.embed_dim or open_clip.get_model_config(config.arch)["embed_dim"])
            if config.location_tower == "gps":
                if config.gps_init == "geoclip":
                    check_geoclip_architecture(
                        embed_dim, config.gps_scales, config.gps_rff_dim, config.gps_hidden, config.gps_depth
                    )
                self.location = GPSLocationTower(
                    embed_dim,
                    config.gps_scales,
                    config.gps_rff_dim,
                    config.gps_hidden,
                    config.gps_depth,
                    config.gps_seed,
                )
                if config.gps_init == "geoclip" and load_pretrained:  # a saved run brings its own weights
                    self.location.load_state_dict(geoclip_location_state_dict(), strict=True)
            else:
                tokenizer = open_clip.get_tokenizer(config.arch)
                self.location = TextLocationTower(
                    clip.text, tokenizer, config.template, config.context_tokens, seed=config.init_seed
                )
        del clip  # the unused text tower (gps) goes with it
        self.embed_dim = embed_dim
        self.image_size = self.visual.image_size if hasattr(self.visual, "image_size") else config.image_size
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))
        if config.grad_checkpointing:
            self.visual.set_grad_checkpointing(True)
            if config.location_tower == "text":
                self.location.text.set_grad_checkpointing(True)
        if config.lock_image:
            keep = {id(p) for p in _visual_projection_parameters(self.visual)}
            for p in self.visual.parameters():
                p.requires_grad = id(p) in keep
        if config.lock_location:
            keep = {id(p) for p in self.location.projection_parameters()}
            ctx = getattr(self.location, "context", None)
            for p in self.location.parameters():
                p.requires_grad = id(p) in keep or p is ctx
        self.to(DTYPES[config.dtype])

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.config.dtype]

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.config.lock_image:
            # a locked tower keeps its BatchNorm statistics too (LiT)
            for m in self.visual.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) preprocessed images -> (B, D) float32, L2-normalised."""
        features = self.visual(images.to(device=self.device, dtype=self.dtype))
        return F.normalize(features.float(), dim=-1)

    def encode_location(
        self,
        latlon,
        city: Sequence[str | None] | None = None,
        check: bool = True,
        tokens: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, 2) latlon degrees (numpy or torch) -> (B, D) float32, L2-normalised.

        city: optional B names, read by the text tower's template ({in_city}); the GPS tower ignores it.
        tokens: (B, L) the same locations already tokenised (text tower; training passes them).
        """
        if check:
            check_latlon(latlon)
        latlon = torch.as_tensor(latlon, dtype=torch.float64, device=self.device)
        return F.normalize(self.location(latlon, city, tokens=tokens).float(), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """Location strings -> (B, D) float32, L2-normalised (text tower only)."""
        if self.config.location_tower != "text":
            raise ValueError("encode_text needs location_tower='text'; this model has a gps tower")
        return F.normalize(self.location.encode_texts(texts).float(), dim=-1)

    def scale(self) -> torch.Tensor:
        """exp(t), clamped at MAX_LOGIT_SCALE as open_clip does during training. Scalar float32."""
        return self.logit_scale.float().clamp(max=math.log(MAX_LOGIT_SCALE)).exp()

    def forward(
        self,
        images: torch.Tensor,
        latlon,
        texts: Sequence[str] | None = None,
        city: Sequence[str | None] | None = None,
        tokens: torch.Tensor | None = None,
    ) -> dict:
        """images: (B, 3, H, W); latlon: (B, 2) degrees; texts: optional B location strings (text tower).

        tokens: (B, L) long, the locations tokenised by the data pipeline (text tower): with them
        the forward sees tensors only, so torch.compile captures it in one graph.

        -> dict(image_features (B, D), location_features (B, D), logit_scale scalar, latlon (B, 2)),
        ready for ``loss(**out)`` with the swclip.method.losses classes.
        """
        latlon = torch.as_tensor(latlon, dtype=torch.float64, device=self.device)
        image_features = self.encode_image(images)
        if texts is not None:
            location_features = self.encode_text(texts)
        else:
            location_features = self.encode_location(latlon, city, check=False, tokens=tokens)
        return {
            "image_features": image_features,
            "location_features": location_features,
            "logit_scale": self.scale(),
            "latlon": latlon,
        }


def build_model(config: ModelConfig | dict, load_pretrained: bool = True) -> SWCLIP:
    """SWCLIP from a ModelConfig or its dict form (as stored in a manifest)."""
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    return SWCLIP(config, load_pretrained=load_pretrained)
