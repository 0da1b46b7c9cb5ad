"""Images: one safe way to open them, a torch Dataset over a sample table, augmentation.

``open_image`` is the only place that calls Pillow on user data. It reads the
bytes itself (no file handle or temp file outlives the call), refuses
decompression bombs before decoding, applies the EXIF orientation, and turns
every mode (CMYK, 16-bit, alpha, palette) into 8-bit RGB. Every failure becomes
an ``ImageError`` that names the file and the problem. HEIC / HEIF (most phone
photos) open through pillow-heif's Pillow plugin, registered on import; libheif
applies the container's rotation when decoding and pillow-heif then reports EXIF
orientation 1, so no photo is turned twice.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from pathlib import Path

import numpy as np
from pillow_heif import register_heif_opener

from swclip.io import resolve_inside

register_heif_opener()  # Image.open reads HEIC / HEIF from here on (uploads, EXIF GPS, folders of phone photos)

DEFAULT_MAX_PIXELS = 64_000_000  # 8000 × 8000; a street-view frame is a few Mpx
JPEG_EOI = b"\xff\xd9"


@functools.lru_cache(maxsize=64)
def _resolved_root(root: str) -> Path:
    return Path(root).resolve()  # once per root, not once per row


def resolve_image_path(root, rel) -> Path:
    """``root / rel``, refusing anything that would read outside ``root``.

    Rejects empty paths, absolute paths and any path whose normalised form
    leaves the root (``../``, or a symlinked folder pointing outside).
    """
    rel = str(rel)
    if rel in ("", "nan", "None"):
        raise ValueError(f"empty image path {rel!r}")
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        raise ValueError(f"image path {rel!r} is absolute; paths must be relative to the dataset root")
    return resolve_inside(_resolved_root(str(root)), rel, what="image path", root_name="dataset root")


class ImageError(ValueError):
    """An image that cannot be used: missing, empty, truncated, not an image, too large."""


TINY_IMAGE_PX = 16  # a photo whose shorter side is under this, or under a quarter of the model's input side, ...


def tiny_image_warning(size_px: tuple[int, int], input_px: int, name: str = "photo") -> str | None:
    """A sentence saying the prediction is unreliable when the photo is tiny, else None.

    size_px: the photo's (width, height) in pixels; input_px: the side of the square the model's
    preprocess resizes to. Tiny means a shorter side under ``max(TINY_IMAGE_PX, input_px // 4)``: the
    model then sees the photo blown up more than 4 times, mostly interpolation.
    """
    limit = max(TINY_IMAGE_PX, int(input_px) // 4)
    w, h = size_px
    if min(w, h) >= limit:
        return None
    return (
        f"{name} is only {w}×{h} px (under {limit} px on its shorter side for a model that reads "
        f"{input_px}×{input_px}); the prediction is unreliable"
    )


def _name(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return getattr(source, "name", None) or f"<{type(source).__name__}>"


def _read_bytes(source) -> bytes:
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise ImageError(f"{path}: file does not exist")
        if not path.is_file():
            raise ImageError(f"{path}: not a regular file")
        return path.read_bytes()
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise ImageError(f"{_name(source)}: file-like object must be opened in binary mode")
        return bytes(data)
    raise ImageError(f"cannot open an image from {type(source).__name__}; pass a path, bytes or a binary file object")


def _to_rgb(img):
    """Any Pillow mode -> 8-bit RGB; alpha is composited over white, wide greys are rescaled, not clipped."""
    from PIL import Image

    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        if mode == "F" and arr.max(initial=0) <= 1.0:
            top = 1.0
        grey = np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def open_image(source, max_pixels: int = DEFAULT_MAX_PIXELS):
    """Open an image as an 8-bit RGB ``PIL.Image.Image``, EXIF orientation applied.

    source: a path, the raw bytes, or a binary file object (e.g. an upload).
    max_pixels: refuse images larger than this (width × height) before decoding
    them: a decompression bomb costs nothing but its header.
    Raises ImageError (a ValueError) naming the problem: missing, 0-byte,
    not an image, truncated or corrupt, too large.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    name = _name(source)
    data = _read_bytes(source)
    if len(data) == 0:
        raise ImageError(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(
                    f"{name}: {w}×{h} = {w * h:,} pixels exceeds max_pixels={max_pixels:,} (decompression-bomb guard)"
                )
            img.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image Pillow can read ({len(data)} bytes, starting {data[:8]!r})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name}: refused as a decompression bomb ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"{name}: truncated or corrupt image ({e})") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception as e:  # a broken EXIF block should not cost the pixels
        warnings.warn(f"{name}: EXIF orientation unreadable, image left as stored ({e})", stacklevel=2)
    return _to_rgb(img)


def check_image_file(path, decode: bool = False) -> str | None:
    """Cheap health check of an image file: None if fine, else a short reason.

    Without ``decode``: exists, non-empty, Pillow recognises the header, and a
    JPEG ends with its end-of-image marker (a truncated download does not).
    With ``decode``: a full ``open_image``.
    """
    from PIL import Image, UnidentifiedImageError

    p = Path(path)
    if not p.is_file():
        return "missing"
    size = p.stat().st_size
    if size == 0:
        return "empty file (0 bytes)"
    if decode:
        try:
            open_image(p)
        except ImageError as e:
            return str(e).removeprefix(f"{p}: ")
        return None
    try:
        with open(p, "rb") as fh:
            with Image.open(fh) as img:
                fmt = img.format
            if fmt == "JPEG":
                fh.seek(max(0, size - 64))
                if JPEG_EOI not in fh.read():
                    return "truncated JPEG (no end-of-image marker)"
    except UnidentifiedImageError:
        return "not an image Pillow can read"
    except Exception as e:
        return f"truncated or corrupt ({e})"
    return None


class ImageDataset:
    """A torch map-style Dataset over a sample table with image paths.

    table: the sample table (``id, image, lat, lon, city``...); ``image`` paths
    resolve under ``root`` (default: ``table.attrs["root"]``, which the readers
    set), and paths escaping it are rejected.
    transform: PIL image -> tensor, normally the model's own open_clip preprocess
    (``open_clip.image_transform``); default: ``torchvision.transforms.ToTensor``.
    Item: ``dict(image=(C, H, W) float tensor, latlon=(2,) float64 tensor, index=int)``,
    with ``index`` the row position in ``table``.
    """

    def __init__(self, table, root=None, transform=None):
        import torch

        root = root if root is not None else table.attrs.get("root")
        if root is None:
            raise ValueError("ImageDataset needs root=, the folder the table's image paths are relative to")
        self.root = Path(root)
        self.paths = [resolve_image_path(self.root, p) for p in table["image"].astype(str)]
        self.latlon = torch.tensor(table[["lat", "lon"]].to_numpy(dtype=np.float64, copy=True))  # (N, 2)
        if transform is None:
            from torchvision.transforms import ToTensor

            transform = ToTensor()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        return dict(image=self.transform(open_image(self.paths[i])), latlon=self.latlon[i], index=int(i))


class StreetAugment:
    """Photometric and small geometric jitter on normalised image tensors, per image.

    The demo world's calibration (shared notes) found that without it the image
    tower keys on per-image noise and memorises. Applied after the model's
    preprocess, on (C, H, W) or a batch (B, C, H, W), on any device, so training
    can run it on the GPU batch:

    - brightness: multiply the *unnormalised* pixels by U(1 - b, 1 + b);
    - noise_std: add N(0, noise_std²) on the [0, 1] pixel scale;
    - max_shift_px: translate by up to this many pixels, edges replicated.

    mean, std: the Normalize constants of the preprocess (open_clip's
    ``OPENAI_DATASET_MEAN``/``STD`` by default), to work on the pixel scale.
    generator: a torch.Generator for reproducible draws (on the tensor's device).
    """

    def __init__(self, brightness=0.15, noise_std=0.05, max_shift_px=2, mean=None, std=None, generator=None):
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        self.brightness, self.noise_std, self.max_shift_px = float(brightness), float(noise_std), int(max_shift_px)
        self.mean = tuple(mean or OPENAI_DATASET_MEAN)
        self.std = tuple(std or OPENAI_DATASET_STD)
        self.generator = generator

    def __call__(self, x):
        import torch
        import torch.nn.functional as F

        single = x.dim() == 3
        if single:
            x = x.unsqueeze(0)
        b, c, h, w = x.shape
        g = self.generator
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, c, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, c, 1, 1)
        px = x * std + mean  # (B, C, H, W) back on the [0, 1] pixel scale
        if self.brightness > 0:
            factor = 1.0 + self.brightness * (
                2.0 * torch.rand(b, 1, 1, 1, generator=g, device=x.device, dtype=x.dtype) - 1.0
            )
            px = px * factor
        if self.noise_std > 0:
            px = px + self.noise_std * torch.randn(px.shape, generator=g, device=x.device, dtype=x.dtype)
        if self.max_shift_px > 0:
            s = self.max_shift_px
            padded = F.pad(px, (s, s, s, s), mode="replicate")  # (B, C, H + 2s, W + 2s)
            dy, dx = torch.randint(0, 2 * s + 1, (2, b), generator=g, device=x.device)
            rows = dy.view(b, 1) + torch.arange(h, device=x.device).view(1, h)  # (B, H)
            cols = dx.view(b, 1) + torch.arange(w, device=x.device).view(1, w)  # (B, W)
            px = padded[
                torch.arange(b, device=x.device).view(b, 1, 1, 1),
                torch.arange(c, device=x.device).view(1, c, 1, 1),
                rows.view(b, 1, h, 1),
                cols.view(b, 1, 1, w),
            ]
        out = (px.clamp(0.0, 1.0) - mean) / std
        return out[0] if single else out
