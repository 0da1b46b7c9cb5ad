"""Render crude street-view images from latent field values, a batch at a time.

The picture, top to bottom: sky; a row of façades seen from across the street,
with windows on a grid and a coloured shop awning on the ground floor; trees
in front; the pavement; the road with a dashed centre line and cars.

What drives what:

- the 12 latent fields (``FIELD_NAMES``, values in (0, 1), spatially
  correlated): façade hue and lightness, building height and count across the
  view, window size and tone, greenery, pavement tone, road width and tone,
  awning hue, haze of the sky. These carry the location signal, and each moves
  a large area of the image, since the demo's towers see 32–64 px;
- the city's style (``CityStyle``): palette centre, floor height, sky, trees,
  road tint. It differs between cities and is constant inside one;
- per-image nuisance (``Nuisance``), drawn independently of the location:
  brightness ±15 %, where the building row starts and which way it runs
  (the heading), horizon jitter, tree positions, cars, pixel noise σ = 0.05
  (tiles of a fixed noise bank, picked per image: see ``_noise``).

Everything is numpy on (N, H, W) arrays; no Python loop runs per pixel or per image.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np

FIELD_NAMES = (
    "facade_hue",
    "facade_value",
    "building_height",
    "building_count",
    "pavement_tone",
    "window_size",
    "window_tone",
    "greenery",
    "road_width",
    "road_tone",
    "awning_hue",
    "haze",
)

FIELD_VISUALS = {
    "facade_hue": "façade colour hue, within the city's palette",
    "facade_value": "façade lightness",
    "building_height": "building height (sky line)",
    "building_count": "buildings across the view (1.5 to 5)",
    "pavement_tone": "pavement lightness",
    "window_size": "window size (20 % to 80 % of each window cell)",
    "window_tone": "window glass from dark to bright",
    "greenery": "number and size of trees (0 to 4)",
    "road_width": "height of the road band",
    "road_tone": "asphalt lightness",
    "awning_hue": "ground-floor awning hue (full colour circle)",
    "haze": "sky from blue to hazy grey",
}

MAX_TREES = 4
MAX_CARS = 2


@dataclass(frozen=True)
class CityStyle:
    """City-wide look, constant inside a city and different between cities."""

    hue_centre: float  # façade palette centre, hue in [0, 1)
    hue_spread: float  # façade hue span driven by the facade_hue field
    saturation: float  # façade saturation
    floor_h: float  # storey height, fraction of the image height
    sky_rgb: tuple  # clear sky colour
    tree_rgb: tuple
    road_tint: tuple  # multiplies the asphalt grey
    pavement_rgb: tuple
    car_rate: float  # expected cars per image (nuisance: no location signal)
    window_columns: int = 3  # window columns per building

    @staticmethod
    def sample(rng: np.random.Generator) -> CityStyle:
        return CityStyle(
            hue_centre=float(rng.uniform(0, 1)),
            hue_spread=float(rng.uniform(0.35, 0.55)),
            saturation=float(rng.uniform(0.35, 0.6)),
            floor_h=float(rng.uniform(0.075, 0.1)),
            sky_rgb=tuple(float(c) for c in rng.uniform([0.35, 0.55, 0.8], [0.55, 0.7, 0.95])),
            tree_rgb=tuple(float(c) for c in rng.uniform([0.1, 0.35, 0.05], [0.25, 0.55, 0.2])),
            road_tint=tuple(float(c) for c in rng.uniform(0.9, 1.1, size=3)),
            pavement_rgb=tuple(float(c) for c in rng.uniform(0.55, 0.75, size=3)),
            car_rate=float(rng.uniform(0.3, 1.2)),
            window_columns=int(rng.integers(2, 5)),
        )

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Nuisance:
    """Per-image draws that carry no location signal; arrays of shape (N,) or (N, k)."""

    brightness: np.ndarray  # (N,) multiplier in [1 - b, 1 + b]
    phase: np.ndarray  # (N,) where the building row starts, from the heading
    mirror: np.ndarray  # (N,) bool, view direction along the street, from the heading
    horizon: np.ndarray  # (N,) shift of the building base, fraction of the height
    building_seed: np.ndarray  # (N,) uint64, per-building jitter
    tree_u: np.ndarray  # (N, MAX_TREES) horizontal tree positions
    car_n: np.ndarray  # (N,) cars in the image
    car_u: np.ndarray  # (N, MAX_CARS)
    car_rgb: np.ndarray  # (N, MAX_CARS, 3)
    noise_seed: np.ndarray  # (N,) uint64 seeds of the pixel noise

    @staticmethod
    def sample(
        rng: np.random.Generator, heading_deg: np.ndarray, style: CityStyle, brightness: float = 0.15
    ) -> Nuisance:
        n = len(heading_deg)
        heading = np.asarray(heading_deg, dtype=np.float64)
        return Nuisance(
            brightness=rng.uniform(1 - brightness, 1 + brightness, n),
            phase=(heading % 90.0) / 90.0,
            mirror=heading >= 180.0,
            horizon=rng.uniform(-0.02, 0.02, n),
            building_seed=rng.integers(0, 2**62, n, dtype=np.uint64),
            tree_u=rng.uniform(0.05, 0.95, (n, MAX_TREES)),
            car_n=np.minimum(rng.poisson(style.car_rate, n), MAX_CARS),
            car_u=rng.uniform(0.0, 0.8, (n, MAX_CARS)),
            car_rgb=rng.uniform(0.05, 0.95, (n, MAX_CARS, 3)),
            noise_seed=rng.integers(0, 2**62, n, dtype=np.uint64),
        )

    def take(self, sl: slice) -> Nuisance:
        return Nuisance(**{k: v[sl] for k, v in self.__dict__.items()})


def _hash01(k: np.ndarray, seed: np.ndarray, salt: int) -> np.ndarray:
    """Integer hash of (building index, image seed) to [0, 1): exact on every machine (no libm)."""
    with np.errstate(over="ignore"):
        x = (
            k.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
            + seed.astype(np.uint64)
            + np.uint64(salt * 0xBF58476D1CE4E5B9 % 2**64)
        )
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB; h, s, v broadcastable arrays in [0, 1]. Returns (..., 3)."""
    h, s, v = np.broadcast_arrays(np.mod(h, 1.0), s, v)
    i = np.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.astype(int) % 6
    r = np.choose(i, [v, q, p, p, t, v])
    g = np.choose(i, [t, v, v, q, p, p])
    b = np.choose(i, [p, p, t, v, v, q])
    return np.stack([r, g, b], -1)


# layer labels of the label map; painting writes a label, colours come from a palette at the end
SKY, FACADE, WINDOW, AWNING, PAVEMENT, ROAD, DASH, TRUNK = range(8)
CROWN = 8  # CROWN + t for tree t
CAR = CROWN + MAX_TREES  # CAR + c for car c
N_LABELS = CAR + MAX_CARS


def render_batch(
    fields: dict[str, np.ndarray], style: CityStyle, nuisance: Nuisance, size: int, noise_std: float = 0.05
) -> np.ndarray:
    """Render N images.

    fields: name -> (N,) values in (0, 1) for every name in FIELD_NAMES.
    Returns (N, size, size, 3) uint8.

    Layers are painted as labels into a uint8 (N, H, W) map, and looked up once in
    a (N, labels, W, 3) palette: a byte per pixel per layer instead of three floats.
    """
    missing = set(FIELD_NAMES) - set(fields)
    if missing:
        raise ValueError(f"render_batch needs every field; missing {sorted(missing)}")
    f = {k: np.asarray(v, dtype=np.float64)[:, None, None] for k, v in fields.items()}  # (N, 1, 1)
    nz = nuisance
    n = len(nz.brightness)
    v = ((np.arange(size) + 0.5) / size)[None, :, None]  # (1, H, 1) top to bottom
    u = ((np.arange(size) + 0.5) / size)[None, None, :]  # (1, 1, W) left to right
    label = np.full((n, size, size), SKY, dtype=np.uint8)  # (N, H, W)
    palette = np.zeros((n, N_LABELS, size, 3), dtype=np.float32)  # (N, labels, W, 3)

    # sky: clear blue to hazy grey (lighter towards the horizon: applied at the end)
    palette[:, SKY] = (1 - f["haze"]) * np.asarray(style.sky_rgb) + f["haze"] * 0.82  # (N, 1, 3)

    # buildings: nb across the view, each with its own jittered height and colour
    v_base = 0.66 + nz.horizon[:, None, None]  # (N, 1, 1)
    nb = 1.5 + 3.5 * f["building_count"]
    x = u * nb + nz.phase[:, None, None]  # (N, 1, W) building coordinate
    k = np.floor(x)
    ub = x - k  # position inside the building, [0, 1)
    bseed = nz.building_seed[:, None, None]
    height = (0.18 + 0.4 * f["building_height"]) * (0.85 + 0.3 * _hash01(k, bseed, 1))
    top = v_base - height  # (N, 1, W)
    in_building = (v >= top) & (v < v_base)  # (N, H, W)
    hue = style.hue_centre + style.hue_spread * (f["facade_hue"] - 0.5) + 0.04 * (_hash01(k, bseed, 2) - 0.5)
    val = 0.3 + 0.6 * f["facade_value"] + 0.06 * (_hash01(k, bseed, 3) - 0.5)
    palette[:, FACADE] = hsv_to_rgb(hue, style.saturation, np.clip(val, 0, 1))[:, 0]  # (N, W, 3)
    label[in_building] = FACADE

    # windows on a grid: columns and size from the fields; ground floor left to the awning
    ncol = style.window_columns
    ws = 0.2 + 0.6 * f["window_size"]
    cu = ncol * ub - np.floor(ncol * ub)  # (N, 1, W)
    fv = (v_base - v) / style.floor_h  # storeys above the base, (N, H, 1)
    cv = fv - np.floor(fv)
    win_u = (np.abs(cu - 0.5) < ws / 2) & (ub > 0.06) & (ub < 0.94)  # (N, 1, W)
    win_v = (np.abs(cv - 0.5) < 0.15 + 0.3 * ws) & (fv >= 1.0)  # (N, H, 1)
    label[in_building & win_u & win_v & (v > top + 0.25 * style.floor_h)] = WINDOW
    palette[:, WINDOW] = (1 - f["window_tone"]) * np.array([0.08, 0.1, 0.16]) + f["window_tone"] * np.array(
        [0.8, 0.85, 0.9]
    )

    # ground-floor awning band, a strong colour cue
    label[in_building & ((fv >= 0.3) & (fv < 0.95)) & ((ub > 0.04) & (ub < 0.96))] = AWNING
    palette[:, AWNING] = hsv_to_rgb(f["awning_hue"], 0.75, 0.8)[:, 0]

    # pavement, then the road band at the bottom with a dashed centre line
    road_top = 1.0 - (0.08 + 0.2 * f["road_width"])  # (N, 1, 1)
    on_road = np.broadcast_to(v >= road_top, (n, size, 1))  # (N, H, 1)
    label[np.broadcast_to((v >= v_base) & (v < road_top), (n, size, 1))[..., 0]] = PAVEMENT
    label[on_road[..., 0]] = ROAD
    palette[:, PAVEMENT] = np.asarray(style.pavement_rgb) * (0.6 + 0.6 * f["pavement_tone"])
    palette[:, ROAD] = (0.12 + 0.4 * f["road_tone"]) * np.asarray(style.road_tint)
    centre = (road_top + 1.0) / 2
    dash = (np.abs(v - centre) < 0.012) & on_road & (np.mod(u * 6 + nz.phase[:, None, None], 1.0) < 0.5)
    label[dash] = DASH
    palette[:, DASH] = np.array([0.9, 0.9, 0.85])

    # trees in front of the façades: count and size from greenery, positions are nuisance
    n_trees = np.floor(f["greenery"] * (MAX_TREES + 0.99))[:, 0, 0]  # (N,)
    r = 0.05 + 0.1 * f["greenery"]  # (N, 1, 1) crown radius
    cv_t = v_base - 1.6 * r
    palette[:, TRUNK] = np.array([0.3, 0.2, 0.12])
    for t in range(MAX_TREES):
        on = (n_trees > t)[:, None, None]
        cu_t = nz.tree_u[:, t, None, None]
        trunk = on & (np.abs(u - cu_t) < 0.012 + 0.1 * r) & ((v >= cv_t) & (v < v_base + 0.02))
        crown = on & ((u - cu_t) ** 2 + (v - cv_t) ** 2 < r**2)
        label[trunk] = TRUNK
        label[crown] = CROWN + t
        shade = 0.9 + 0.2 * _hash01(np.full((n, 1), t), nz.building_seed[:, None], 7)  # (N, 1)
        palette[:, CROWN + t] = np.asarray(style.tree_rgb) * shade[..., None]

    # cars on the road: nuisance, a little occlusion
    for c in range(MAX_CARS):
        on = (nz.car_n > c)[:, None, None]
        cu_c = nz.car_u[:, c, None, None]
        body = (
            on & ((u >= cu_c) & (u < cu_c + 0.2)) & ((v >= road_top + 0.01) & (v < np.minimum(road_top + 0.09, 0.99)))
        )
        label[body] = CAR + c
        palette[:, CAR + c] = nz.car_rgb[:, c, None, :]

    # mirror on the byte-sized label map and the small palette, not on the float image
    flip = nz.mirror[:, None, None]
    label = np.where(flip, label[:, :, ::-1], label)
    palette = np.where(flip[..., None], palette[:, :, ::-1], palette)
    img = palette[np.arange(n)[:, None, None], label, np.arange(size)[None, None, :]]  # (N, H, W, 3)
    shade = np.where(label == SKY, (0.8 + 0.3 * v).astype(np.float32), np.float32(1.0))  # (N, H, W)
    img *= (shade * nz.brightness[:, None, None].astype(np.float32))[..., None]
    img += np.float32(noise_std) * _noise(nz.noise_seed, size)
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


NOISE_TILES = 128


@functools.lru_cache(maxsize=4)
def _noise_bank(size: int) -> np.ndarray:
    """(NOISE_TILES, size, size, 3) float32 standard normals, the same on every call and machine."""
    return np.random.default_rng(20240611).standard_normal((NOISE_TILES, size, size, 3), dtype=np.float32)


def _noise(seeds: np.ndarray, size: int) -> np.ndarray:
    """Per-image standard-normal pixel noise, (N, size, size, 3) float32.

    Drawing fresh normals for every image cost more than the rest of the
    rendering, so each image takes a tile from a fixed bank, flipped and
    channel-permuted by its own seed (128 × 4 × 6 patterns). The noise is
    nuisance: which pattern an image gets carries no location signal.
    """
    bank = _noise_bank(size)
    s = seeds.astype(np.uint64)
    tile = (s % np.uint64(NOISE_TILES)).astype(np.intp)
    flip_v = ((s >> np.uint64(8)) & np.uint64(1)).astype(bool)
    flip_h = ((s >> np.uint64(9)) & np.uint64(1)).astype(bool)
    perm = _PERMS[((s >> np.uint64(10)) % np.uint64(6)).astype(np.intp)]  # (N, 3)
    ar = np.arange(size)
    rows = np.where(flip_v[:, None], ar[::-1], ar)  # (N, H)
    cols = np.where(flip_h[:, None], ar[::-1], ar)  # (N, W)
    return bank[tile[:, None, None, None], rows[:, :, None, None], cols[:, None, :, None], perm[:, None, None, :]]


_PERMS = np.array([(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)])
