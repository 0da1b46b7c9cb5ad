"""Training batches: where they come from, in a resumable, seeded order.

Three sources, one interface (:class:`TrainData`): ``batches(epoch,
start_batch)`` yields dicts {"images" (B, 3, H, W) float on the device,
"latlon" (B, 2) float64, "index" (B,) long[, "tokens" (B, L) long]}, this
rank's share of each global batch. "tokens" is there when a ``tokenize``
callable (latlon (B, 2), index (B,)) -> (B, L) is given: a text location
tower's input, made here on the host (in the DataLoader's workers for file
data), as open_clip tokenises in its data pipeline, so the model's forward
sees tensors only. The order of an epoch depends only on (seed, epoch); augmentation only
on (seed, epoch, batch, rank) or (seed, epoch, sample). So a run resumed at
(epoch, batch) sees exactly the batches the uninterrupted run would have seen.

- :class:`PreloadedData`: every training image decoded once into a uint8
  tensor; batches are index gathers, augmented on the device as a batch
  (swclip.data.StreetAugment). The demo's path: a 2-core CPU cannot afford a
  PNG decode per sample per step.
- :class:`LoaderData`: a DataLoader over ``swclip.data.ImageDataset``, with
  workers, pinned memory and persistent workers; the path for real data sets.
- :class:`SyntheticData`: random tensors of the right shape (benchmarks).

Sharding across ranks is torch's ``DistributedSampler`` (rank r takes every
W-th index of the epoch's permutation, ``drop_last``), so the W ranks' batches
at one step are exactly the single-process global batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from open_clip.constants import OPENAI_DATASET_MEAN as CLIP_MEAN
from open_clip.constants import OPENAI_DATASET_STD as CLIP_STD
from torch.utils.data import DistributedSampler, Sampler

from swclip.data import ImageDataset, StreetAugment, open_image, resolve_image_path


class _Range:
    """A stand-in 'dataset' of length n for DistributedSampler, which only needs len()."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


def epoch_indices(
    n: int, epoch: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True
) -> np.ndarray:
    """This rank's sample indices for ``epoch``, as DistributedSampler(drop_last=True) orders them. -> (n // W,)."""
    sampler = DistributedSampler(
        _Range(n), num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed, drop_last=True
    )
    sampler.set_epoch(epoch)
    return np.fromiter(iter(sampler), dtype=np.int64)


class ResumableSampler(Sampler):
    """Yields (epoch, index) pairs of one epoch from batch ``start_batch`` on.

    The pair lets a dataset seed its per-sample augmentation by (epoch, index),
    so workers and resumes do not change what each sample looks like.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self.epoch, self.start_batch = 0, 0

    def set_position(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self):
        idx = epoch_indices(self.n, self.epoch, self.seed, self.rank, self.world_size, self.shuffle)
        usable = (len(idx) // self.batch_size) * self.batch_size
        for i in idx[self.start_batch * self.batch_size : usable]:
            yield (self.epoch, int(i))

    def __len__(self) -> int:
        per_rank = self.n // self.world_size
        return max(per_rank // self.batch_size - self.start_batch, 0) * self.batch_size


def batch_seed(seed: int, epoch: int, batch: int, rank: int) -> int:
    """A distinct 63-bit seed per (seed, epoch, batch, rank)."""
    return int(np.random.SeedSequence([seed, epoch, batch, rank]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def augment_batch(images: torch.Tensor, seed: int, epoch: int, batch: int, rank: int, mean, std) -> torch.Tensor:
    """swclip.data.StreetAugment (brightness, noise, shifts) on a normalised batch (B, 3, H, W), on its device,
    with draws fixed by (seed, epoch, batch, rank): a resumed run augments exactly as the uninterrupted one."""

    gen = torch.Generator(device=images.device).manual_seed(batch_seed(seed, epoch, batch, rank))
    return StreetAugment(mean=mean, std=std, generator=gen)(images)


def _add_tokens(batch: dict, tokenize, latlon_host: np.ndarray, idx_host: torch.Tensor) -> None:
    """batch["tokens"] = tokenize(latlon, index) on the host, then to the batch's device (no-op without tokenize)."""
    if tokenize is None:
        return
    idx = idx_host.numpy()
    batch["tokens"] = tokenize(latlon_host[idx], idx).to(batch["images"].device, non_blocking=True)


class TokenizedDataset(torch.utils.data.Dataset):
    """Adds item["tokens"] (L,) = tokenize(item's latlon, item's index) to a dataset of dicts: runs in the workers."""

    def __init__(self, dataset, tokenize):
        self.dataset, self.tokenize = dataset, tokenize

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        item = self.dataset[i]
        latlon = np.asarray(item["latlon"], dtype=np.float64).reshape(1, 2)
        return {**item, "tokens": self.tokenize(latlon, np.array([item["index"]]))[0]}


class TrainData:
    """Base: ``steps_per_epoch`` and ``batches(epoch, start_batch)``."""

    steps_per_epoch: int
    n_samples: int

    def batches(self, epoch: int, start_batch: int = 0) -> Iterator[dict]:
        raise NotImplementedError


class PreloadedData(TrainData):
    """Images held in memory as uint8 (N, 3, H, W); batches gathered and augmented on ``device``.

    latlon: (N, 2) float64 degrees. mean/std: the image tower's normalisation.
    """

    def __init__(
        self,
        images_u8: torch.Tensor,
        latlon: np.ndarray,
        batch_size: int,
        seed: int,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
        augment: bool = True,
        mean=CLIP_MEAN,
        std=CLIP_STD,
        tokenize=None,
    ):
        if images_u8.dtype != torch.uint8 or images_u8.ndim != 4 or images_u8.shape[1] != 3:
            raise ValueError(f"images_u8 must be uint8 (N, 3, H, W), got {images_u8.dtype} {tuple(images_u8.shape)}")
        latlon = np.asarray(latlon, dtype=np.float64)
        if latlon.shape != (images_u8.shape[0], 2):
            raise ValueError(f"latlon must be (N, 2) = ({images_u8.shape[0]}, 2), got {latlon.shape}")
        self.images = images_u8.to(device)
        self.latlon_host, self.tokenize = latlon, tokenize
        # a copy: the table's arrays may be read-only views (pandas copy-on-write), which torch cannot wrap
        self.latlon = torch.tensor(latlon, device=device)  # (N, 2) float64
        self.n_samples = len(latlon)
        self.batch_size, self.seed, self.device = batch_size, seed, device
        self.rank, self.world_size, self.augment = rank, world_size, augment
        self.mean_t, self.std_t = tuple(mean), tuple(std)
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.steps_per_epoch = (self.n_samples // world_size) // batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"{self.n_samples} samples over {world_size} rank(s) cannot fill one batch of {batch_size}"
            )

    def batches(self, epoch: int, start_batch: int = 0) -> Iterator[dict]:
        idx_all = torch.as_tensor(epoch_indices(self.n_samples, epoch, self.seed, self.rank, self.world_size))
        for b in range(start_batch, self.steps_per_epoch):
            idx = idx_all[b * self.batch_size : (b + 1) * self.batch_size].to(self.device)
            images = (self.images[idx].float().div_(255) - self.mean) / self.std  # (B, 3, H, W) normalised
            if self.augment:
                images = augment_batch(images, self.seed, epoch, b, self.rank, self.mean_t, self.std_t)
            batch = {"images": images, "latlon": self.latlon[idx], "index": idx}
            _add_tokens(
                batch, self.tokenize, self.latlon_host, idx_all[b * self.batch_size : (b + 1) * self.batch_size]
            )
            yield batch


class SyntheticData(TrainData):
    """Random images (fixed by seed) and random locations in a 4 km box: for throughput, no files."""

    def __init__(
        self,
        n: int,
        image_size: int,
        batch_size: int,
        seed: int,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
        centre=(48.0, 11.0),
        tokenize=None,
    ):
        g = torch.Generator().manual_seed(seed)
        self.n_samples, self.batch_size, self.seed, self.device = n, batch_size, seed, device
        self.rank, self.world_size = rank, world_size
        # a fixed pool of images (not per-batch-size), so any rank layout sees the same sample i
        self.images = torch.randn(min(n, 1024), 3, image_size, image_size, generator=g).to(device)
        latlon = torch.tensor(centre, dtype=torch.float64) + 0.02 * (
            torch.rand(n, 2, generator=g, dtype=torch.float64) - 0.5
        )
        self.latlon_host, self.tokenize = latlon.numpy(), tokenize
        self.latlon = latlon.to(device)
        self.steps_per_epoch = (n // world_size) // batch_size

    def batches(self, epoch: int, start_batch: int = 0) -> Iterator[dict]:
        idx_all = torch.as_tensor(epoch_indices(self.n_samples, epoch, self.seed, self.rank, self.world_size))
        for b in range(start_batch, self.steps_per_epoch):
            idx = idx_all[b * self.batch_size : (b + 1) * self.batch_size].to(self.device)
            batch = {"images": self.images[idx % len(self.images)], "latlon": self.latlon[idx], "index": idx}
            _add_tokens(
                batch, self.tokenize, self.latlon_host, idx_all[b * self.batch_size : (b + 1) * self.batch_size]
            )
            yield batch


class SeededDataset(torch.utils.data.Dataset):
    """Wraps a map-style dataset; item (epoch, i) is drawn with torch's RNG seeded by (seed, epoch, i).

    So a per-sample random transform gives the same result in any worker and
    after a resume. The caller's RNG state is left untouched.
    """

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, i = key
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(batch_seed(self.seed, epoch, i, -1 % 2**31))
            return self.dataset[i]


class LoaderData(TrainData):
    """A DataLoader over a map-style dataset of dicts {"image", "latlon", "index"}; for file-backed data.

    The dataset's transform should be deterministic (the model's preprocess_val);
    augmentation runs on the device per batch (StreetAugment), seeded by position.
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        seed: int,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        augment: bool = True,
        mean=CLIP_MEAN,
        std=CLIP_STD,
        tokenize=None,
    ):
        if tokenize is not None:
            dataset = TokenizedDataset(dataset, tokenize)
        self.n_samples, self.batch_size, self.device = len(dataset), batch_size, device
        self.seed, self.rank, self.augment, self.mean, self.std = seed, rank, augment, tuple(mean), tuple(std)
        self.sampler = ResumableSampler(len(dataset), batch_size, seed, rank, world_size)
        self.steps_per_epoch = (self.n_samples // world_size) // batch_size
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"{self.n_samples} samples over {world_size} rank(s) cannot fill one batch of {batch_size}"
            )
        self.loader = torch.utils.data.DataLoader(
            SeededDataset(dataset, seed),
            batch_size=batch_size,
            sampler=self.sampler,
            drop_last=True,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            persistent_workers=num_workers > 0,
            prefetch_factor=4 if num_workers > 0 else None,
        )

    def batches(self, epoch: int, start_batch: int = 0) -> Iterator[dict]:
        self.sampler.set_position(epoch, start_batch)
        nb = self.device.type == "cuda"
        for b, batch in enumerate(self.loader, start=start_batch):
            images = batch["image"].to(self.device, non_blocking=nb)
            if self.augment:  # on the device, as a batch, seeded by its position
                images = augment_batch(images, self.seed, epoch, b, self.rank, self.mean, self.std)
            out = {
                "images": images,
                "latlon": torch.as_tensor(batch["latlon"], dtype=torch.float64).to(self.device, non_blocking=nb),
                "index": batch["index"].to(self.device, non_blocking=nb),
            }
            if "tokens" in batch:
                out["tokens"] = batch["tokens"].to(self.device, non_blocking=nb)
            yield out


def make_train_data(
    cfg,
    image_size: int,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    mean=CLIP_MEAN,
    std=CLIP_STD,
    table=None,
    transform=None,
    tokenize=None,
) -> TrainData:
    """The TrainData that ``cfg.data`` asks for (cfg: swclip.training.config.TrainConfig).

    tokenize: (latlon (B, 2), index (B,)) -> (B, L) for a text location tower
    (swclip.training.loop.location_tokenizer), None for the GPS tower."""
    d = cfg.data
    if d.synthetic:
        return SyntheticData(
            d.synthetic_size, image_size, cfg.batch_size, cfg.seed, device, rank, world_size, tokenize=tokenize
        )
    if table is None:
        raise ValueError("data.table is empty: give a sample table (CSV / parquet) or set data.synthetic=true")
    if d.preload:
        images_u8 = preload_images(table, d.root, image_size, progress=cfg.progress)
        return PreloadedData(
            images_u8,
            table[["lat", "lon"]].to_numpy(np.float64),
            cfg.batch_size,
            cfg.seed,
            device,
            rank,
            world_size,
            augment=d.augment,
            mean=mean,
            std=std,
            tokenize=tokenize,
        )

    return LoaderData(
        ImageDataset(table, d.root or table.attrs.get("root") or ".", transform),
        cfg.batch_size,
        cfg.seed,
        device,
        rank,
        world_size,
        d.num_workers,
        augment=d.augment,
        mean=mean,
        std=std,
        tokenize=tokenize,
    )


_PRELOAD_CACHE: dict = {}  # one entry: the last table decoded (build_demo trains several models on it)


def preload_images(table, root, image_size: int, progress: bool = False) -> torch.Tensor:
    """Decode every image of ``table`` once, resized (bicubic, as open_clip's preprocess) to image_size².

    -> uint8 (N, 3, S, S). The last result is cached in memory, keyed by root, size and the image paths.
    """
    from PIL import Image

    root = root or table.attrs.get("root") or "."
    refs = table["image"].astype(str).tolist()
    key = (str(Path(root).resolve()), image_size, hashlib.sha256("\n".join(refs).encode()).hexdigest())
    if key in _PRELOAD_CACHE:
        return _PRELOAD_CACHE[key]
    out = torch.empty(len(refs), 3, image_size, image_size, dtype=torch.uint8)
    it = enumerate(refs)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, total=len(refs), desc="decoding images", leave=False)
    for i, ref in it:
        img = open_image(resolve_image_path(root, ref)).convert("RGB")
        if img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.BICUBIC)
        out[i] = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
    _PRELOAD_CACHE.clear()
    _PRELOAD_CACHE[key] = out
    return out


__all__ = [
    "TrainData",
    "PreloadedData",
    "LoaderData",
    "SyntheticData",
    "ResumableSampler",
    "SeededDataset",
    "augment_batch",
    "epoch_indices",
    "make_train_data",
    "preload_images",
]
