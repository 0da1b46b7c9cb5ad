"""``make_world``: the demo world, written as an ordinary dataset plus its ground truth.

Layout of ``out_dir``::

    samples.csv        id, image, lat, lon, city, country, heading (read it with swclip.data.read_table)
    images/<city>/<id>.jpg
    world.json         cities, centres, extents, networks, styles, every field's range_m and seed
    streets.geojson    the street network per city (LineStrings, [lon, lat]), map context offline
    latent.csv         id + each latent field's value in (0, 1) at the sample: the truth behind the pixels

Nothing downstream special-cases the demo: it is read through the same readers as
real data. Deterministic from ``seed`` (byte-identical images on the same
Pillow/libjpeg).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from swclip.geo import local_metres_to_degrees
from swclip.synth.fields import COVARIANCES, N_FEATURES, FieldSpec, field_uniform
from swclip.synth.render import FIELD_NAMES, FIELD_VISUALS, CityStyle, Nuisance, render_batch
from swclip.synth.streets import StreetParams, make_streets, sample_along

# The SW-CLIP paper's eight UK cities: (centre lat, lon), street-network type.
CITIES: dict[str, tuple[tuple[float, float], str]] = {
    "London": ((51.5072, -0.1276), "organic"),
    "Birmingham": ((52.4796, -1.9026), "radial"),
    "Manchester": ((53.4794, -2.2453), "grid"),
    "Leeds": ((53.7965, -1.5478), "grid"),
    "Glasgow": ((55.8609, -4.2514), "grid"),
    "Liverpool": ((53.4084, -2.9916), "radial"),
    "Bristol": ((51.4545, -2.5879), "organic"),
    "Edinburgh": ((55.9533, -3.1883), "organic"),
}

RANGE_MIN_M, RANGE_MAX_M = 150.0, 2000.0
BRIGHTNESS = 0.15  # per-image brightness ±15 %
NOISE_STD = 0.05  # per-pixel Gaussian noise, on the [0, 1] scale
CHUNK = 256  # images rendered per numpy batch


@dataclass
class World:
    """What ``make_world`` wrote: the dataset root, its sample table and world.json's content."""

    root: Path
    table: pd.DataFrame
    meta: dict


def slug(name: str) -> str:
    return "".join(c.lower() if c.isalnum() else "-" for c in name).strip("-")


def _seed(*parts: int) -> int:
    """A stable integer seed for one random choice, from the world seed and indices."""
    return int(np.random.SeedSequence(list(parts)).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def city_plan(name: str, index: int, seed: int, covariance: str = "gaussian") -> dict:
    """Everything random about one city except its images: network, style, fields.

    covariance: the latent fields' covariance (a key of ``swclip.synth.fields.COVARIANCES``);
    it changes only the fields' texture, not the ranges, streets or style drawn here.
    """
    if name not in CITIES:
        raise ValueError(f"unknown city {name!r}; the demo world knows {sorted(CITIES)}")
    (lat, lon), network = CITIES[name]
    rng = np.random.default_rng(_seed(seed, index, 0))
    streets = StreetParams(
        network=network,
        extent_m=float(rng.uniform(2000, 3000)),
        spacing_m=float(rng.uniform(160, 260)) if network != "radial" else float(rng.uniform(200, 300)),
        angle_deg=float(rng.uniform(0, 90)),
        n_spokes=int(rng.integers(10, 17)),
        wobble_m=float(rng.uniform(30, 70)) if network == "organic" else 0.0,
    )
    style = CityStyle.sample(rng)
    # ranges spread log-evenly over [150, 2000] m, scaled per city, shuffled over the fields
    ranges = np.geomspace(RANGE_MIN_M, RANGE_MAX_M, len(FIELD_NAMES)) * rng.uniform(0.8, 1.2)
    ranges = np.clip(ranges, RANGE_MIN_M, RANGE_MAX_M)[rng.permutation(len(FIELD_NAMES))]
    fields = [
        FieldSpec(fname, float(round(r, 1)), _seed(seed, index, 100 + j), N_FEATURES, covariance)
        for j, (fname, r) in enumerate(zip(FIELD_NAMES, ranges))
    ]
    return dict(
        name=name, slug=slug(name), index=index, centre_latlon=(lat, lon), streets=streets, style=style, fields=fields
    )


def _prepare_city(plan: dict, seed: int, n: int) -> dict:
    """Streets, capture points, field values and nuisance of one city (cheap; images come later)."""
    idx = plan["index"]
    lines = make_streets(plan["streets"], _seed(seed, idx, 1))
    xy, heading, spacing = sample_along(lines, n, _seed(seed, idx, 2))
    latlon = local_metres_to_degrees(xy, plan["centre_latlon"])  # (n, 2)
    values = {spec.name: field_uniform(spec, xy) for spec in plan["fields"]}  # name -> (n,) in (0, 1)
    nuisance = Nuisance.sample(np.random.default_rng(_seed(seed, idx, 3)), heading, plan["style"], BRIGHTNESS)
    ids = [f"{plan['slug']}-{i:05d}" for i in range(n)]
    table = pd.DataFrame(
        dict(
            id=ids,
            image="",
            lat=latlon[:, 0],
            lon=latlon[:, 1],
            city=plan["name"],
            country="GB",
            heading=np.round(heading, 2),
        )
    )
    latent = pd.DataFrame(dict(id=ids, x_m=xy[:, 0], y_m=xy[:, 1], **values))
    streets_ll = [local_metres_to_degrees(np.asarray(line.coords), plan["centre_latlon"]) for line in lines]
    return dict(table=table, latent=latent, values=values, nuisance=nuisance, streets_ll=streets_ll, spacing=spacing)


def _render_chunk(task: tuple) -> int:
    """Render and save one chunk of images (runs in a worker process). Returns the count."""
    from PIL import Image

    root, paths, values, style, nuisance, image_size, image_format, quality = task
    batch = render_batch(values, style, nuisance, image_size, NOISE_STD)  # (n, S, S, 3) uint8
    save_kw = dict(quality=quality) if image_format == "jpg" else dict(compress_level=1)
    for rel, arr in zip(paths, batch):
        Image.fromarray(arr).save(Path(root) / rel, **save_kw)
    return len(paths)


def _city_meta(plan: dict, n: int, spacing: float, seed: int) -> dict:
    ranges = [s.range_m for s in plan["fields"]]
    idx = plan["index"]
    return dict(
        name=plan["name"],
        slug=plan["slug"],
        country="GB",
        centre_latlon=list(plan["centre_latlon"]),
        extent_m=plan["streets"].extent_m,
        network=asdict(plan["streets"]),
        n_samples=n,
        sample_spacing_m=round(spacing, 2),
        style=plan["style"].to_dict(),
        fields=[dict(s.to_dict(), drives=FIELD_VISUALS[s.name]) for s in plan["fields"]],
        range_m=dict(min=min(ranges), median=float(np.median(ranges)), max=max(ranges)),
        # derived from the world seed; recorded so each stage can be re-run alone
        seeds=dict(
            plan=_seed(seed, idx, 0),
            streets=_seed(seed, idx, 1),
            samples=_seed(seed, idx, 2),
            nuisance=_seed(seed, idx, 3),
        ),
    )


def make_world(
    out_dir,
    seed: int = 0,
    cities=None,
    samples_per_city: int = 1500,
    image_size: int = 64,
    image_format: str = "jpg",
    jpeg_quality: int = 90,
    overwrite: bool = False,
    progress: bool = False,
    workers: int = 1,
    covariance: str = "gaussian",
) -> World:
    """Render the demo world into ``out_dir`` and return it.

    cities: names from ``CITIES`` (default: all eight, in that order).
    samples_per_city: capture points per city, spread evenly along its streets.
    image_size: square images of this many pixels (32–128 sensible).
    image_format: "jpg" (small, like real street view) or "png" (lossless).
    overwrite: replace an existing world in ``out_dir``; otherwise a non-empty
    ``out_dir`` is an error, so nothing is clobbered by accident.
    progress: show a tqdm bar over images.
    workers: processes that render and encode (default 1, in this process; the CLI
    uses 2). Workers are spawned, so the caller's main module must be importable
    (a script or the console command, not stdin). The images do not depend on it.
    covariance: "gaussian" (the default demo world) or "exponential" (rough fields whose
    correlation falls linearly at the origin: a world that does not share the shape of
    SW-CLIP's Gaussian kernel). Streets, styles, ranges and nuisance are the same for both.
    """
    if covariance not in COVARIANCES:
        raise ValueError(f"covariance must be one of {list(COVARIANCES)}, got {covariance!r}")
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    if samples_per_city < 2:
        raise ValueError(f"samples_per_city must be at least 2, got {samples_per_city}")
    if not 8 <= image_size <= 1024:
        raise ValueError(f"image_size must be in [8, 1024] pixels, got {image_size}")
    names = list(CITIES) if cities is None else list(cities)
    if len(set(names)) != len(names) or not names:
        raise ValueError(f"cities must be distinct names from {list(CITIES)}, got {names}")
    plans = [city_plan(name, list(CITIES).index(name) if name in CITIES else -1, seed, covariance) for name in names]
    root = Path(out_dir)
    if root.exists() and any(root.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{root} is not empty; pass overwrite=True (--overwrite) to replace it")
        for sub in ("images",):
            shutil.rmtree(root / sub, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)

    cities_data = []
    tasks = []
    for plan in plans:
        data = _prepare_city(plan, seed, samples_per_city)
        rel = [f"images/{plan['slug']}/{i}.{image_format}" for i in data["table"]["id"]]
        data["table"]["image"] = rel
        (root / "images" / plan["slug"]).mkdir(parents=True, exist_ok=True)
        for start in range(0, samples_per_city, CHUNK):
            sl = slice(start, min(start + CHUNK, samples_per_city))
            values = {k: v[sl] for k, v in data["values"].items()}
            tasks.append(
                (
                    str(root),
                    rel[sl],
                    values,
                    plan["style"],
                    data["nuisance"].take(sl),
                    image_size,
                    image_format,
                    jpeg_quality,
                )
            )
        cities_data.append(data)

    workers = max(1, int(workers))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(plans) * samples_per_city, unit="img", desc="rendering")
    try:
        if workers == 1:
            for task in tasks:
                k = _render_chunk(task)
                if bar is not None:
                    bar.update(k)
        else:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            # spawn: no forked copies of the caller's threads (torch, Streamlit); a broken
            # worker raises BrokenProcessPool here instead of hanging
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                for fut in as_completed([pool.submit(_render_chunk, t) for t in tasks]):
                    k = fut.result()
                    if bar is not None:
                        bar.update(k)
    finally:
        if bar is not None:
            bar.close()

    tables = [d["table"] for d in cities_data]
    latents = [d["latent"] for d in cities_data]
    metas = [_city_meta(plan, samples_per_city, d["spacing"], seed) for plan, d in zip(plans, cities_data)]
    features = []
    for plan, d in zip(plans, cities_data):
        for line in d["streets_ll"]:
            coords = np.round(line[:, ::-1], 6).tolist()  # GeoJSON is [lon, lat]
            features.append(
                dict(
                    type="Feature",
                    properties=dict(city=plan["name"]),
                    geometry=dict(type="LineString", coordinates=coords),
                )
            )

    table = pd.concat(tables, ignore_index=True)
    table.to_csv(root / "samples.csv", index=False, float_format="%.7f")
    pd.concat(latents, ignore_index=True).to_csv(root / "latent.csv", index=False, float_format="%.6f")
    with open(root / "streets.geojson", "w") as fh:
        json.dump(dict(type="FeatureCollection", features=features), fh)
    meta = dict(
        format="swclip-synth-world",
        version=1,
        seed=seed,
        image_size=image_size,
        image_format=image_format,
        samples_per_city=samples_per_city,
        field_names=list(FIELD_NAMES),
        covariance=covariance,
        field_method=f"random Fourier features, {N_FEATURES} per field, covariance {COVARIANCES[covariance]}; "
        "values mapped to (0, 1) by the normal CDF (swclip.synth.fields.field_uniform)",
        nuisance=dict(
            brightness=BRIGHTNESS,
            noise_std=NOISE_STD,
            heading="building-row phase and mirror",
            trees="positions",
            cars="count, position, colour",
        ),
        files=dict(samples="samples.csv", images="images/", streets="streets.geojson", latent="latent.csv"),
        cities=metas,
    )
    tmp = root / "world.json.tmp"
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, root / "world.json")  # world.json last: its presence marks a complete world
    return World(root=root, table=table, meta=meta)


def load_world(root) -> dict:
    """world.json of a world written by ``make_world``, with a clear error if it is not one."""
    path = Path(root) / "world.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a demo world written by make_world")
    meta = json.loads(path.read_text())
    if meta.get("format") != "swclip-synth-world":
        raise ValueError(f"{path} is not a swclip synth world (format={meta.get('format')!r})")
    return meta


def world_fields(meta: dict, city: str) -> list[FieldSpec]:
    """The FieldSpecs of one city of a loaded world.json, to re-evaluate its fields anywhere."""
    for c in meta["cities"]:
        if c["name"] == city:
            return [
                FieldSpec(f["name"], f["range_m"], f["seed"], f["n_features"], f.get("covariance", "gaussian"))
                for f in c["fields"]
            ]
    raise ValueError(f"city {city!r} not in this world; it has {[c['name'] for c in meta['cities']]}")
