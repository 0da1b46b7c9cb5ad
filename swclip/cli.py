"""The ``swclip`` command line: one subcommand per task.

    swclip train --config train/configs/vitb32_swclip.yaml data.table=my.csv   # train (torchrun for several GPUs)
    swclip evaluate runs/my-run                                                # write the artefacts the app reads
    swclip demo --out runs/demo                                                # the CPU demo bundle `make run` opens
    swclip bench losses                                                        # training-step throughput per loss
    swclip synth --out /tmp/world                                              # render the procedural world
    swclip experiment --out runs/experiments/try --quick                       # configs x seeds -> experiment.json
    swclip predict photo.jpg --run runs/demo/swclip-s50                        # where was this photo taken?
    swclip import preds.csv --out runs/their-model                             # another model's predictions
    swclip baseline geoclip --table photos.csv --out runs/geoclip              # GeoCLIP's predictions as a run
    swclip info                                                                # versions and device

Each subcommand is registered in ``COMMANDS`` as a ``configure_X(parser)`` /
``run_X(args) -> int`` pair in this file. The pairs are thin: the work lives in
the library, and where a subcommand has many options (``bench``, ``experiment``)
its pair hands the parser to the library module that defines them
(``swclip.workflows.bench``, ``swclip.workflows.experiments``). A subcommand's
module is imported only when it runs, so ``swclip --help`` stays fast. The scripts in
train/ call :func:`main` with their subcommand.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable

RAW = argparse.RawDescriptionHelpFormatter


# ------------------------------------------------------------------------------------------------ shared


def add_data_options(p: argparse.ArgumentParser) -> None:
    """--data-root and --drop-invalid, for the commands that read a sample table and its images."""
    p.add_argument(
        "--data-root",
        metavar="DIR",
        help="the one trusted folder for data: the sample table and the image root must lie inside it, "
        "symlinks resolved (config: data.data_root; recorded in the run's manifest)",
    )
    p.add_argument(
        "--drop-invalid",
        action="store_true",
        help="drop the table rows validation flags (bad coordinates, missing or unreadable images, ...) and "
        "print how many, instead of stopping (config: data.drop_invalid: true)",
    )


# ------------------------------------------------------------------------------------------------ train


def configure_train(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Train SW-CLIP (or one-hot CLIP, SW-CLIP+NC, semivariogram-weighted CLIP) from a YAML config. "
        "Overrides are section.key=value (values read as YAML). The resolved config is saved as "
        "<out_dir>/<run_id>/config.yaml; --resume auto continues from the run's newest checkpoint "
        "(or starts fresh when there is none). A run_id that already holds a run is refused unless "
        "--overwrite; a run that fails before its first checkpoint removes the folder it created. "
        "See swclip/training/loop.py for what is written."
    )
    p.epilog = (
        "examples:\n"
        "  swclip train --config swclip/training/configs/demo_swclip.yaml loss.sigma_m=50 steps=300\n"
        "  swclip train --config my.yaml --data-root /data/streets data.table=/data/streets/split.csv run_id=a "
        "--overwrite\n"
        "  torchrun --nproc_per_node 8 train/train.py --config train/configs/vitb32_swclip.yaml data.table=my.csv"
    )
    p.add_argument("--config", help="YAML config (train/configs/*.yaml, swclip/training/configs/demo_*.yaml)")
    p.add_argument("--resume", help="checkpoint folder, run folder, or 'auto' (the run's newest checkpoint, if any)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing run of the same run_id: every file of the old run (weights, predictions, "
        "metrics, embeddings, galleries, logs, checkpoints) is removed first (config: overwrite: true). "
        "Without it, training into an existing run folder is refused",
    )
    add_data_options(p)
    p.add_argument(
        "--evaluate",
        action="store_true",
        help="evaluate the final model on data.eval_split afterwards, on the training device, over the same ranks",
    )
    p.add_argument(
        "overrides", nargs="*", metavar="key.sub=value", help="config overrides, e.g. loss.name=swclip loss.sigma_m=50"
    )


def run_train(args) -> int:
    from swclip.training.config import load_config
    from swclip.training.evaluation import evaluate_run
    from swclip.training.loop import train

    cfg = load_config(args.config, args.overrides)
    cfg.overwrite = cfg.overwrite or args.overwrite
    cfg.data.drop_invalid = cfg.data.drop_invalid or args.drop_invalid
    cfg.data.data_root = args.data_root or cfg.data.data_root
    then = None
    if args.evaluate or cfg.evaluate:  # on the training device, sharded over the same ranks

        def then(run_dir, device):
            evaluate_run(run_dir, device=str(device), progress=cfg.progress)

    run_dir = train(cfg, resume=args.resume, then=then)
    if int(os.environ.get("RANK", "0")) == 0:
        print(run_dir)
    return 0


# --------------------------------------------------------------------------------------------- evaluate


def configure_evaluate(p: argparse.ArgumentParser) -> None:
    from swclip.retrieval.gallery_source import GALLERY_SOURCES

    p.description = (
        "Evaluate a trained run and write the artefacts the app reads into its directory: "
        "predictions.parquet (top-1 error_m, knn-kde kde_error_m, top-k), embeddings.npy, gallery.npz, "
        "metrics.json (overall and per city), and a metrics summary in manifest.json."
    )
    p.epilog = (
        "examples:\n"
        "  swclip evaluate runs/demo/swclip-s50\n"
        "  swclip evaluate copied/run --table /data/cities/samples.csv --root /data/cities   # trained elsewhere\n"
        "  swclip evaluate runs/x --checkpoint runs/x/checkpoints/step_00004000             # an earlier checkpoint\n"
        "  swclip evaluate runs/osv5m --gallery geoclip100k                                 "
        "# world scale: GeoCLIP's gallery"
    )
    p.add_argument("run_dir", help="run directory (holds manifest.json and model.safetensors)")
    p.add_argument("--table", help="sample table (default: the one named in the manifest)")
    p.add_argument("--root", help="image root (default: the manifest's, else the table's folder)")
    p.add_argument("--split", help="rows to evaluate (default: the manifest's eval split, else 'test')")
    p.add_argument("--gallery-split", help="rows whose locations form the gallery (default: 'train')")
    p.add_argument(
        "--gallery",
        choices=GALLERY_SOURCES,
        default=None,  # swclip.retrieval.gallery_source
        help="candidate places: split (the gallery split's locations) or geoclip100k (GeoCLIP's 100K "
        "coordinates, world scale; needs the geoclip wheel); either is encoded by the run's location "
        "tower into gallery.npz (default: the manifest's data.gallery, else split)",
    )
    p.add_argument(
        "--checkpoint", help="evaluate this checkpoints/step_* folder's weights (they become the run's weights)"
    )
    p.add_argument("--top-k", type=int, default=5, help="candidates kept per sample (default 5)")
    p.add_argument("--batch-size", type=int, default=256, help="images per encoder batch (default 256)")
    p.add_argument("--num-workers", type=int, default=0, help="data-loader worker processes (default 0)")
    p.add_argument(
        "--device",
        default="auto",
        help="auto (this rank's GPU when there is one, else the CPU; default), cpu, cuda[:N]. Under torchrun "
        "each rank encodes its share of the images and rank 0 writes the artefacts",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_data_options(p)


def run_evaluate(args) -> int:
    from swclip.analysis.metrics import SUMMARY_KEYS
    from swclip.training.distributed import init_distributed
    from swclip.training.evaluation import evaluate_run

    dist_info = init_distributed(args.device)  # under torchrun: the images are encoded sharded over the ranks
    metrics = evaluate_run(
        args.run_dir,
        table=args.table,
        root=args.root,
        split=args.split,
        train_split=args.gallery_split,
        top_k=args.top_k,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        device=args.device,
        progress=not args.quiet,
        checkpoint=args.checkpoint,
        gallery_source=args.gallery,
        data_root=args.data_root,
        drop_invalid=True if args.drop_invalid else None,
    )
    if dist_info.world_size > 1:
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
    if metrics is not None:  # rank 0
        print(json.dumps({k: metrics[k] for k in SUMMARY_KEYS if k in metrics}, indent=1))
    return 0


# ------------------------------------------------------------------------------------------------- demo


def configure_demo(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Build the demo bundle the app opens by default: render the procedural world, split it into "
        "held-out spatial blocks, train one-hot CLIP, SW-CLIP at several sigma and SW-CLIP+NC on the CPU "
        "(swclip/training/configs/demo_*.yaml), evaluate each run, and write results.json/.md. Every "
        "step is skipped when its output is complete, so an interrupted build resumes."
    )
    p.epilog = "example:\n  swclip demo --out runs/demo      # what `make run` does when runs/demo/.complete is absent"
    p.add_argument("--out", default="runs/demo", help="bundle folder (default runs/demo)")
    p.add_argument("--seed", type=int, default=0, help="world, split and training seed")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps per model (default: the demo configs')")
    p.add_argument("--models", nargs="+", default=None, help="run ids to build (default: all of DEMO_MODELS)")
    p.add_argument(
        "--samples-per-city", type=int, default=None, help="world size per city (default: swclip.workflows.demo's)"
    )
    p.add_argument("--cities", nargs="+", default=None, help="world cities (default: swclip.workflows.demo's)")
    p.add_argument(
        "--rebuild", action="store_true", help="rebuild the runs even where they are complete (the world is kept)"
    )
    p.add_argument(
        "--workers", type=int, default=None, help="runs trained at once, one torch thread each (default: min(2, CPUs))"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "overrides", nargs="*", metavar="key.sub=value", help="config overrides for every run, e.g. batch_size=128"
    )


def run_demo(args) -> int:
    from swclip.workflows.demo import build_demo

    build_demo(
        args.out,
        seed=args.seed,
        steps=args.steps,
        models=args.models,
        samples_per_city=args.samples_per_city,
        cities=args.cities,
        rebuild=args.rebuild,
        progress=not args.quiet,
        workers=args.workers,
        extra_overrides=tuple(args.overrides),
    )
    return 0


# ------------------------------------------------------------------------------------------------ bench


def configure_bench(p: argparse.ArgumentParser) -> None:
    from swclip.workflows import bench

    p.description = bench.__doc__.split("\n\n", 1)[0] + (
        " Each loss gets its own model and optimiser (same seed); their steps run round-robin, so load drifts on a "
        "shared machine hit all alike. Writes benchmarks/results/<name>-<machine>.json and prints a table."
    )
    bench.configure(p)


def run_bench(args) -> int:
    from swclip.workflows.bench import format_table, measure
    from swclip.workflows.benchmark import write_result

    result = measure(args)
    print(format_table(result))
    if not args.no_write:
        print(f"wrote {write_result(args.name, result)}")
    return 0


# ------------------------------------------------------------------------------------------------ synth


def configure_synth(p: argparse.ArgumentParser) -> None:
    from swclip.synth.world import CITIES

    p.description = (
        "Render the procedural demo world: eight UK city centres with grid, radial or organic streets, "
        "street-view-like images driven by latent Gaussian random fields with known correlation ranges. "
        "Writes samples.csv + images/ (read it with swclip.data.read_table), world.json (the ground truth), "
        "streets.geojson and latent.csv."
    )
    p.add_argument("--out", required=True, help="output folder (must be empty unless --overwrite)")
    p.add_argument("--seed", type=int, default=0, help="world seed; the same seed gives the same images (default 0)")
    p.add_argument("--samples-per-city", type=int, default=1500, help="capture points per city (default 1500)")
    p.add_argument("--image-size", type=int, default=64, help="square image side in pixels (default 64)")
    p.add_argument(
        "--cities", nargs="+", default=None, metavar="CITY", help=f"subset of {', '.join(CITIES)} (default: all)"
    )
    p.add_argument("--format", choices=("jpg", "png"), default="jpg", help="image format (default jpg)")
    p.add_argument(
        "--workers", type=int, default=2, help="render processes (default 2); the images do not depend on it"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing world in --out")
    p.add_argument(
        "--covariance",
        choices=("gaussian", "exponential"),
        default="gaussian",
        help="latent fields' covariance (default gaussian; exponential: rough fields, a world whose shape "
        "differs from SW-CLIP's Gaussian kernel)",
    )


def run_synth(args) -> int:
    from swclip.synth.world import make_world

    t0 = time.perf_counter()
    world = make_world(
        args.out,
        seed=args.seed,
        cities=args.cities,
        samples_per_city=args.samples_per_city,
        image_size=args.image_size,
        image_format=args.format,
        overwrite=args.overwrite,
        workers=args.workers,
        progress=True,
        covariance=args.covariance,
    )
    dt = time.perf_counter() - t0
    n = len(world.table)
    print(
        f"wrote {n} images in {len(world.meta['cities'])} cities to {world.root} in {dt:.1f} s ({n / dt:.0f} images/s)"
    )
    return 0


# ---------------------------------------------------------------------------------------------- predict


def configure_predict(p: argparse.ArgumentParser) -> None:
    from swclip.retrieval.gallery_source import GALLERY_SOURCES

    p.description = (
        "Predict where street-view photos were taken with a trained run: the top-k gallery "
        "places with probabilities, the knn-kde estimate and a confidence radius."
    )
    p.epilog = (
        "examples:\n  swclip predict photo.jpg --run runs/demo/swclip-s50 --top-k 5\n"
        "  swclip predict photo.jpg --run runs/osv5m --gallery geoclip100k   # world scale: GeoCLIP's 100K places\n"
        "  swclip predict photo.jpg --run runs/demo/swclip-s50 --search image   # nearest training images (kNN)"
    )
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...)")
    p.add_argument("--run", required=True, help="run directory (holds manifest.json, model.safetensors, gallery.npz)")
    p.add_argument("--runs-root", default=None, help="refuse a --run outside this folder")
    p.add_argument("--top-k", type=int, default=5, help="places to list per image (default 5)")
    p.add_argument(
        "--gallery",
        choices=GALLERY_SOURCES,
        default=None,  # swclip.retrieval.gallery_source
        help="candidate places: split (the gallery split's locations) or geoclip100k (GeoCLIP's 100K "
        "coordinates, world scale; encoded by the run's location tower unless `swclip evaluate "
        "--gallery geoclip100k` stored them as the run's gallery) (default: the run's gallery.npz)",
    )
    p.add_argument(
        "--search",
        choices=("location", "image"),
        default="location",
        help="compare each photo with the location tower's places (default) or with the training "
        "images' embeddings (image_gallery.npz: the kNN baseline)",
    )
    p.add_argument(
        "--kde-bandwidth-m", type=float, default=None, help="knn-kde kernel width in metres (default: the run's)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per image instead of a table")
    p.add_argument("--data-root", metavar="DIR", help="refuse image files outside this folder (symlinks resolved)")
    p.epilog += (
        "\n\nAn image that cannot be read is skipped with one line on stderr and the rest are predicted; "
        "the exit status is then 1 (2 when none could be read). A photo whose shorter side is under "
        "max(16 px, a quarter of the model's input side) is predicted with a warning that the prediction "
        "is unreliable."
    )


def run_predict(args) -> int:
    from swclip.data import ImageError, open_image, tiny_image_warning
    from swclip.io import RunError, resolve_inside
    from swclip.runs import load_predictor

    predictor = load_predictor(
        args.run,
        runs_root=args.runs_root,
        gallery=args.gallery,
        search=args.search,
        kde_bandwidth_m=args.kde_bandwidth_m,
        progress=True,
    )
    paths, images, failed = [], [], 0
    for path in args.images:  # an unreadable file costs its own line, not the batch
        try:
            image = open_image(resolve_inside(args.data_root, path, "image", "data root") if args.data_root else path)
        except (ImageError, RunError, OSError) as e:
            if args.debug:
                raise
            print(f"swclip: error: {one_line(e)}", file=sys.stderr)
            failed += 1
            continue
        warning = tiny_image_warning(image.size, predictor.input_px, path)
        if warning:
            print(f"swclip: warning: {warning}", file=sys.stderr)
        paths.append(path)
        images.append(image)
    if not images:
        return 2
    for path, pred in zip(paths, predictor.predict(images, top_k=args.top_k, progress=len(images) > 1)):
        if args.json:
            print(
                json.dumps(
                    {"image": path, "estimate": list(pred.estimate), "radius_m": pred.radius_m, "top_k": pred.as_rows()}
                )
            )
            continue
        print(f"{path}: knn-kde estimate {pred.estimate[0]:.6f}, {pred.estimate[1]:.6f} (± {pred.radius_m:,.0f} m)")
        for row in pred.as_rows():
            print(
                f"  {row['rank']:>2}. {row['lat']:.6f}, {row['lon']:.6f}   p={row['prob']:.3f}   cos={row['score']:.3f}"
            )
    if failed:
        print(f"swclip: {failed} of {len(args.images)} image(s) not read; the rest were predicted", file=sys.stderr)
    return 1 if failed else 0


# --------------------------------------------------------------------------------------------- baseline


def configure_baseline(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Run a published model on a sample table and write its predictions as a run the app opens. geoclip: "
        "GeoCLIP (the geoclip wheel's image MLP, logit scale, location encoder and 100K-coordinate gallery, "
        "each place once: 94,123) on open_clip's ViT-L-14 with OpenAI's weights; per photo the top-k places "
        "with their probabilities (softmax over the gallery) and GeoCLIP's 512-d image embedding. The ViT-L/14 "
        "weights are read from --weights or the Hugging Face cache (repository timm/vit_large_patch14_clip_224"
        ".openai, file open_clip_model.safetensors or open_clip_pytorch_model.bin); nothing is downloaded."
    )
    p.epilog = (
        "examples:\n"
        "  swclip baseline geoclip --table photos.csv --out runs/geoclip\n"
        "  swclip baseline geoclip --table sample.csv --root /data/photos --out runs/geoclip "
        "--weights ~/models/open_clip_model.safetensors --top-k 10\n"
        "make the weights file on a machine with internet (it lands in ~/.cache/huggingface/hub/):\n"
        "  python -c \"import open_clip; open_clip.create_model('ViT-L-14', pretrained='openai')\""
    )
    p.add_argument("model", choices=("geoclip",), help="the baseline to run (geoclip)")
    p.add_argument("--table", required=True, help="sample table (CSV/TSV/Parquet with id, image, lat, lon, city)")
    p.add_argument("--out", required=True, help="run directory to write (refused if it exists, unless --force)")
    p.add_argument(
        "--weights",
        default=None,
        help="OpenAI's CLIP ViT-L/14 in open_clip's format (open_clip_model.safetensors, or a tensors-only "
        ".bin/.pt); default: the Hugging Face cache",
    )
    p.add_argument("--root", default=None, help="folder the table's image paths are relative to (default: its folder)")
    p.add_argument("--top-k", type=int, default=5, help="places kept per photo, with probabilities (default 5)")
    p.add_argument("--batch-size", type=int, default=32, help="images per ViT-L-14 batch (default 32)")
    p.add_argument("--device", default="auto", help="auto (a GPU when there is one, else the CPU; default), cpu, cuda")
    p.add_argument("--force", action="store_true", help="replace an existing run directory")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run_baseline(args) -> int:
    from pathlib import Path

    from swclip.data import read_table
    from swclip.io import sha256_file
    from swclip.method.geoclip_image import GeoCLIPImage, find_vit_l14_weights
    from swclip.workflows.baseline import geoclip_predictions

    out = Path(args.out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not args.force:  # before the ViT-L work
        raise FileExistsError(f"{out} exists; choose another --out or pass --force to replace it")
    weights = find_vit_l14_weights(args.weights)  # FileNotFoundError naming the file and where it looked
    from swclip.workflows.importer import import_predictions  # the run writer, shared with `swclip import`

    table = read_table(args.table, root=args.root)  # a bad table fails before the model is built
    root = table.attrs["root"]
    model = GeoCLIPImage(weights)
    predictions, embeddings = geoclip_predictions(
        table,
        root,
        top_k=args.top_k,
        batch_size=args.batch_size,
        device=args.device,
        model=model,
        progress=not args.quiet,
    )
    source = {
        **predictions.attrs["source"],
        "command": "swclip baseline geoclip",
        "table": str(Path(args.table).resolve()),
        "table_sha256": sha256_file(args.table),
        "image_weights_sha256": sha256_file(model.weights_path),
    }
    import_predictions(
        predictions, out, model="geoclip", source=source, embeddings=embeddings, images_root=root, force=args.force
    )
    print(out)
    return 0


# ------------------------------------------------------------------------------------------------- info


def configure_info(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Print versions, the torch device and where runs are looked for: the first thing to paste into a bug report."
    )


def run_info(args) -> int:
    import torch

    import swclip

    print(f"swclip {swclip.__version__}, python {platform.python_version()}, torch {torch.__version__}")
    print(
        f"cuda available: {torch.cuda.is_available()}"
        + (f" ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "")
    )
    for name in ("open_clip", "faiss", "streamlit", "skgstat", "esda"):
        try:
            mod = importlib.import_module(name)
            print(f"{name} {getattr(mod, '__version__', '?')}")
        except ImportError as e:
            print(f"{name}: not installed ({e})")
    print(f"runs directory (app): {os.environ.get('SWCLIP_RUNS_DIR') or 'runs'}")
    return 0


# ------------------------------------------------------------------------------------------------ import


def configure_import(p: argparse.ArgumentParser) -> None:
    p.formatter_class = RAW
    p.description = """Turn another model's predictions into a run the app opens (kind "imported").

PREDICTIONS is CSV, Parquet or JSON Lines, one row per photo: an id, the true latitude/longitude and
the predicted latitude/longitude. These column names are recognised without --columns:
  id | image_id                           true: lat, lon | latitude, longitude | true_lat, true_lon |
                                               gt_lat, gt_long
  predicted: pred_lat, pred_lon | pred_latitude, pred_longitude | predicted_lat, predicted_long
  optional: image (relative to --images-root), city, country, region, sub-region | area, split,
            confidence; top-k as list columns topk_lat, topk_lon, topk_prob, or as
            pred_lat_1..k, pred_lon_1..k, prob_1..k
A wide table with one pair per model (pred_lat_<model>, pred_lon_<model>; a bare pair is "model")
gives one run per model under --out, or only the one --model names.
Empty prediction cells are abstentions: kept, counted (coverage), GeoScore 0. A malformed value
(latitude 200), a duplicate id or a missing image is an error naming the count and the first row.

examples:
  swclip import osv5m/select.csv --out runs/osv5m             # wide: runs/osv5m/model, runs/osv5m/base
  swclip import preds.parquet --out runs/vlm --model my-vlm --images-root photos/
  swclip import p.jsonl --out runs/x --columns id=photo lat=y lon=x pred_lat=py pred_lon=px"""
    p.add_argument("predictions", help="the predictions file (.csv, .csv.gz, .parquet, .jsonl)")
    p.add_argument("--out", required=True, help="the run directory to write (a folder of runs for a wide table)")
    p.add_argument("--model", help="the model's name (default: the --out folder's name); in a wide table, which model")
    p.add_argument("--images-root", help="the folder image paths are relative to (default: the table's folder)")
    p.add_argument(
        "--columns",
        nargs="+",
        default=[],
        metavar="NAME=COLUMN",
        help="schema name = the file's column, e.g. lat=gps_lat pred_lat=guess_lat (overrides recognition)",
    )
    p.add_argument(
        "--embeddings", help="(N, D) .npy of image embeddings, rows in table order (or in --embedding-ids order)"
    )
    p.add_argument("--embedding-ids", help="text file, one id per line: the id of each --embeddings row, any order")
    p.add_argument("--force", action="store_true", help="replace an existing run at --out")


def run_import(args) -> int:
    from swclip.workflows.importer import import_file

    columns = {}
    for item in args.columns:
        name, sep, col = item.partition("=")
        if not sep or not name or not col:
            raise ValueError(f"--columns takes NAME=COLUMN pairs, got {item!r}")
        columns[name] = col
    written = import_file(
        args.predictions,
        args.out,
        model=args.model,
        columns=columns or None,
        embeddings=args.embeddings,
        embedding_ids=args.embedding_ids,
        images_root=args.images_root,
        force=args.force,
    )
    for run_dir in written:
        m = json.loads((run_dir / "manifest.json").read_text())["metrics"]
        print(
            f"{run_dir}: {m['n_rows']} rows, coverage {m['coverage']:.3f}, median error {m['median_m'] / 1000:.1f} km "
            f"(answered rows), GeoScore {m['geoscore']:.0f}"
        )
    return 0


# ------------------------------------------------------------------------------------------------ experiment


def configure_experiment(p: argparse.ArgumentParser) -> None:
    from swclip.workflows.experiments import configure

    configure(p)


def run_experiment(args) -> int:
    from swclip.workflows.experiments import run

    return run(args)


# ------------------------------------------------------------------------------------------------- main

# name -> (one-line help, configure, run)
COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "train": (
        "train a model from a YAML config (+ key=value overrides); torchrun for several GPUs",
        configure_train,
        run_train,
    ),
    "evaluate": (
        "evaluate a run: predictions, embeddings, gallery, metrics (what the app reads)",
        configure_evaluate,
        run_evaluate,
    ),
    "demo": ("build the CPU demo bundle: procedural world + small CLIP / SW-CLIP runs", configure_demo, run_demo),
    "experiment": (
        "configs x seeds on the demo world with a validation split -> experiment.json + summary (resumable)",
        configure_experiment,
        run_experiment,
    ),
    "bench": ("training-step throughput of every loss on one model, side by side", configure_bench, run_bench),
    "synth": ("render the procedural demo world (eight UK cities) into a folder", configure_synth, run_synth),
    "predict": (
        "predict where photos were taken with a trained run (top-k places, knn-kde estimate)",
        configure_predict,
        run_predict,
    ),
    "import": (
        "another model's predictions (CSV / Parquet / JSON Lines) -> a run the app opens",
        configure_import,
        run_import,
    ),
    "baseline": (
        "run GeoCLIP on a sample table (top-k over its 100K gallery, probabilities, embeddings) into a run",
        configure_baseline,
        run_baseline,
    ),
    "info": ("print versions, the torch device and where runs are looked for", configure_info, run_info),
}


def build_parser(command: str) -> argparse.ArgumentParser:
    """The parser of one subcommand (``swclip <command> --help`` prints it)."""
    help_text, configure, _ = COMMANDS[command]
    parser = argparse.ArgumentParser(prog=f"swclip {command}", description=help_text, formatter_class=RAW)
    parser.epilog = ""
    configure(parser)
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback instead of one line")
    return parser


def known_errors() -> tuple[type[BaseException], ...]:
    """What a person can fix from one line: bad data or config values (DataValidationError, RunError,
    ImageError and EmptyTableError are ValueErrors), missing files and runs that exist."""
    return (ValueError, FileNotFoundError, FileExistsError)


def one_line(error: BaseException) -> str:
    """An error's message on one line (a validation report's lines joined)."""
    return " ".join(part.strip() for part in str(error).splitlines() if part.strip()) or type(error).__name__


def overview() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        __doc__.split("\n\n")[0].replace("``", ""),
        "",
        "usage: swclip COMMAND [options]   (swclip COMMAND --help for its options)",
        "",
        "A known error (bad data, a bad config value, a missing file, a run that exists) prints one line",
        "`swclip: error: ...` and exits with status 2; --debug shows the traceback instead.",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {help_text}" for name, (help_text, _, _) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv=None) -> int:
    """``swclip COMMAND ...``. Options and positional overrides may be mixed (parse_intermixed_args)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = bool(argv) and argv[0] == "--debug"  # `swclip --debug COMMAND ...` as well as `swclip COMMAND --debug`
    if debug:
        argv = argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        print(overview())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(
            f"swclip: unknown command {command!r}; choose one of {', '.join(COMMANDS)}\n\n{overview()}", file=sys.stderr
        )
        return 2
    args = build_parser(command).parse_intermixed_args(rest)
    args.debug = args.debug or debug
    try:
        return int(COMMANDS[command][2](args) or 0)
    except known_errors() as e:
        if args.debug:
            raise
        print(f"swclip: error: {one_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
