"""Rewrite the generated tables of docs/ from the files they come from.

    .venv/bin/python -m benchmarks.render_docs           # rewrite the marked tables in place
    .venv/bin/python -m benchmarks.render_docs --check   # exit 1 and name each table that differs

A generated table sits between two markers in a Markdown file:

    <!-- table:NAME -->
    ... (rewritten by this script)
    <!-- /table:NAME -->

NAME picks the renderer in TABLES. The experiment tables come from benchmarks/results/experiment-*.json
through ``swclip.analysis.experiment_stats.summary_table`` (1,000 block resamples, seed 0), the benchmark
tables from the other JSON files in benchmarks/results/ as written, and the module map of
docs/architecture.md from each module's docstring. Text outside the markers is left alone.
tests/test_docs.py fails when a committed table differs from what this script renders.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

from swclip.analysis.experiment_stats import (
    CONTROL_COMPARISONS,
    SWCLIP_LONG,
    SWCLIP_VAR,
    SWCLIP_VAR_KERNEL,
    VAL_EXP,
    VAL_NC,
    VAL_SIGMA,
    comparisons_table,
    held_out_cities,
    seed_records,
    summary_table,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"
MARKER = re.compile(r"(<!-- table:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /table:(?P=name) -->)", re.S)


def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def table(head: list[str], rows: list[list], align: str | None = None) -> str:
    """A Markdown table; ``align`` is one character per column: l (left) or r (right)."""
    align = align or "l" * len(head)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def machine_line(d: dict, file: str) -> str:
    """One line naming the machine and load a benchmark JSON records, and the file."""
    m = d.get("machine", {})
    cpu = m.get("cpu_model") or "CPU model not recorded"
    parts = [f"{m.get('cpu_cores', '?')} cores ({cpu})", f"{m.get('torch_threads', '?')} torch thread(s)"]
    if m.get("cuda"):
        parts.append(f"CUDA {m['cuda']}")
    parts.append(f"torch {m.get('torch', '?')}, Python {m.get('python', '?')}")
    load_1min = None
    for key in ("load_average", "load_average_1_5_15", "load_average_1min_start_end"):
        if d.get(key) or m.get(key):
            vals = d.get(key) or m.get(key)
            load_1min = "–".join(f"{v:.1f}" for v in (vals[:1] if key != "load_average_1min_start_end" else vals))
            break
    if load_1min is None and "load_avg_1min" in d:
        load_1min = f"{d['load_avg_1min']:.1f}"
    if load_1min is not None:
        parts.append(f"1-min load {load_1min}")
    return f"Machine: {', '.join(parts)}. Source: `benchmarks/results/{file}`."


def fmt(x, spec: str) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


# --------------------------------------------------------------------------------------------- experiments


def _sigma_cell(values) -> str:
    if not values or any(v is None for v in values):
        return ""
    if max(values) - min(values) < 1e-9:
        return f"{values[0]:.0f}"
    return f"{sum(values) / len(values):.0f} (mean)"


def _ci(r, m: str, spec: str) -> str:
    if not math.isfinite(r[f"d_{m}"]):
        return ""
    return f"{r[f'd_{m}']:{spec}} [{r[f'd_{m}_lo']:{spec}}, {r[f'd_{m}_hi']:{spec}}]"


def _block_ci(r, m: str, spec: str) -> str:
    """The secondary interval: test blocks resampled with the seeds held fixed."""
    if not math.isfinite(r[f"d_{m}"]):
        return ""
    return f"[{r[f'd_{m}_block_lo']:{spec}}, {r[f'd_{m}_block_hi']:{spec}}]"


def experiment_summary(name: str) -> str:
    """The summary table of benchmarks/results/experiment-<name>.json: mean ± sd across seeds, Δ vs CLIP."""
    exp = load(f"experiment-{name}.json")
    df = summary_table(exp, n_boot=1000, seed=0)
    head = [
        "config",
        "seeds",
        "σ (m)",
        "val median (m)",
        "test median (m)",
        "Δ median vs CLIP, 95 % CI (seeds × blocks)",
        "block-only CI",
        "test acc@500 m",
        "Δ acc@250 m, 95 % CI (seeds × blocks)",
    ]
    rows = [
        [
            r["config"],
            r["n_seeds"],
            _sigma_cell(r["sigma_m_values"]),
            f"{r['val_median_m']:.0f} ± {r['val_median_m_sd']:.0f}",
            f"{r['test_median_m']:.0f} ± {r['test_median_m_sd']:.0f}",
            _ci(r, "median_m", "+.0f"),
            _block_ci(r, "median_m", "+.0f"),
            f"{r['test_acc@500m']:.3f} ± {r['test_acc@500m_sd']:.3f}",
            _ci(r, "acc@250m", "+.3f"),
        ]
        for _, r in df.iterrows()
    ]
    st = exp["status"]
    foot = (
        f"\n\n{st['finished']} of {st['planned']} runs; written {exp['created_utc']}; "
        f"source: `benchmarks/results/experiment-{name}.json`."
    )
    return table(head, rows, "lrrrrllrl") + foot


def experiment_comparisons(name: str) -> str:
    """The named comparisons of experiment-<name>.json: the headline, SW-CLIP against each control and the
    longer runs against each other, each with its two-level and block-only intervals."""
    exp = load(f"experiment-{name}.json")
    df = comparisons_table(exp, n_boot=1000, seed=0)
    head = ["B", "A", "role", "seeds", "test median B / A (m)", "Δ median B − A, 95 % CI (seeds × blocks)",
            "block-only CI", "Δ acc@250 m, 95 % CI (seeds × blocks)"]  # fmt: skip
    rows = [
        [
            r["b"],
            r["a"],
            r["role"],
            r["n_paired"],
            f"{r['b_test_median_m']:.0f} / {r['a_test_median_m']:.0f}",
            _ci(r, "median_m", "+.0f"),
            _block_ci(r, "median_m", "+.0f"),
            _ci(r, "acc@250m", "+.3f"),
        ]
        for _, r in df.iterrows()
    ]
    return table(head, rows, "lllrrlll")


# the per-city table's rows: each selected config against its baseline, then SW-CLIP against each control
CITY_CONFIGS = (VAL_SIGMA, SWCLIP_VAR, VAL_NC, "semivariogram", VAL_EXP, SWCLIP_VAR_KERNEL, SWCLIP_LONG)


def experiment_cities(name: str) -> str:
    """Per city, the headline and the other selected configs against their baseline, and SW-CLIP against each
    control: Δ test median with its two-level interval on that city's test rows (selection stays on the whole
    validation split), from experiment-<name>.json's runs like the other experiment tables. The first row is
    CLIP's test median per city, for scale."""
    exp = load(f"experiment-{name}.json")
    cities = held_out_cities(exp)
    per = {c: summary_table(exp, n_boot=1000, seed=0, city=c).set_index("config") for c in cities}
    comp = {c: comparisons_table(exp, n_boot=1000, seed=0, city=c).set_index(["b", "a"]) for c in cities}
    rows = [["clip", "", "test median (m), for scale"] + [f"{per[c].loc['clip', 'test_median_m']:.0f}" for c in cities]]
    for config in (c for c in CITY_CONFIGS if c in per[cities[0]].index):
        first = per[cities[0]].loc[config]
        rows.append(
            [config, first["vs"], first["role"], *(_ci(per[c].loc[config], "median_m", "+.0f") for c in cities)]
        )
    for b, a in (p for p in CONTROL_COMPARISONS if p in comp[cities[0]].index):
        first = comp[cities[0]].loc[(b, a)]
        rows.append([b, a, first["role"], *(_ci(comp[c].loc[(b, a)], "median_m", "+.0f") for c in cities)])
    head = ["B", "A", "role"] + cities
    foot = (
        "\n\nEach city's cell: Δ test median B − A (m) on that city's test rows, mean over seeds, with its 95 % "
        "two-level interval (seeds × blocks); the first row is CLIP's test median there. "
        f"Source: `benchmarks/results/experiment-{name}.json`."
    )
    return table(head, rows, "lll" + "l" * len(cities)) + foot


def experiment_sigmas(name: str) -> str:
    """Per seed: the variogram-suggested σ, the validation-chosen σ and λ of experiment-<name>.json."""
    recs = seed_records(load(f"experiment-{name}.json"))
    seeds = sorted({s for by_seed in recs.values() for s in by_seed})
    rows = []
    for s in seeds:
        var = recs.get("swclip-var", {}).get(s, {}).get("sigma_m")
        val = recs.get(VAL_SIGMA, {}).get(s, {}).get("sigma_m")
        lam = recs.get(VAL_NC, {}).get(s, {}).get("nc_weight")
        rows.append([s, fmt(var, ".0f"), fmt(val, ".0f"), fmt(lam, "g")])
    return table(["seed", "variogram-suggested σ (m)", "validation-chosen σ (m)", "validation-chosen λ"], rows, "rrrr")


# --------------------------------------------------------------------------------------------- benchmarks


LOSS_COLUMNS = [
    ("clip", "ClipLoss"),
    ("swclip", "SoftClipLoss"),
    ("swclip+nc", "SoftClipLoss + NC"),
    ("semivariogram", "SemivariogramWeightedLoss (swclip)"),
    ("semivariogram-chen2025", "SemivariogramWeightedLoss (chen2025)"),
]


def losses() -> str:
    d = load("losses-cpu2.json")
    by = {(r["batch"], r["loss"]): r for r in d["rows"]}
    rows = []
    for b in sorted({r["batch"] for r in d["rows"]}):
        row = [b]
        for key, _ in LOSS_COLUMNS:
            r = by.get((b, key))
            row.append("" if r is None else f"{1000 * r['median_s']:.1f} ms ({r['ratio_to_clip']:.2f}×)")
        rows.append(row)
    dim = d["rows"][0]["dim"]
    head = ["B"] + [label for _, label in LOSS_COLUMNS]
    return (
        table(head, rows, "r" * len(head))
        + f"\n\nD = {dim}, σ = {d['sigma_m']:g} m, device {d['device']}, bf16 {d['bf16']}; "
        + "median of interleaved runs, ratio to ClipLoss in the same run.\n"
        + machine_line(d, "losses-cpu2.json")
    )


def train_step() -> str:
    two, one = load("train-step-cpu2.json"), load("train-step-1thread-cpu2.json")
    one_by = {r["loss"]: r for r in one["rows"]}
    rows = []
    for r in two["rows"]:
        o = one_by.get(r["loss"], {})
        rows.append(
            [
                r["loss"],
                f"{r['step_ms']:.1f} ms",
                f"{r['images_per_s']:,.0f}",
                f"{r['ratio_to_clip']:.3f}",
                fmt(o.get("cpu_ms"), ".1f") + " ms" if o else "",
                fmt(o.get("cpu_ratio_to_clip"), ".3f"),
            ]
        )
    head = ["loss", "2 threads: step", "img/s", "× clip", "1 thread: CPU time/step", "× clip"]
    return (
        table(head, rows, "lrrrrr")
        + f"\n\nModel {two['model']['arch']} + {two['model']['location_tower']} ({two['model_params']:,} parameters), "
        + f"batch {two['batch_size']}, {two['data']} data, {two['steps']} timed steps per loss, "
        + f"σ = {two['sigma_m']:g} m.\n"
        + machine_line(two, "train-step-cpu2.json")
        + "\n"
        + machine_line(one, "train-step-1thread-cpu2.json")
    )


def train_step_loader() -> str:
    d = load("train-step-demo-loader-1thread-cpu2.json")
    rows = [
        [r["loss"], f"{r['step_ms']:.1f} ms", f"{r['images_per_s']:,.0f}", f"{100 * r['data_wait_frac']:.0f} %"]
        for r in d["rows"]
    ]
    return (
        table(["loss", "step", "img/s", "data wait"], rows, "lrrr")
        + f"\n\nThe demo world's preloaded batches (`--data {d['data']}`), batch {d['batch_size']}.\n"
        + machine_line(d, "train-step-demo-loader-1thread-cpu2.json")
    )


def data_render() -> str:
    d = load("data-cpu2.json")
    rows = [
        [k.split("=")[1], f"{v['seconds']:.1f}", f"{v['images_per_s']:,.0f}", v["images"], f"{v['image_size']} px"]
        for k, v in d["render"].items()
    ]
    return (
        table(["workers", "seconds", "images/s", "images", "size"], rows, "rrrrr")
        + "\n\n"
        + machine_line(d, "data-cpu2.json")
    )


def data_loader() -> str:
    d = load("data-cpu2.json")
    rows = []
    for k, v in d["loader"].items():
        images, transform = k.split(" -> ")
        rows.append([images, transform, f"{v['images_per_s_per_core']:,.0f}"])
    return table(["images", "transform", "images/s per core"], rows, "llr") + "\n\n" + machine_line(d, "data-cpu2.json")


def data_structure() -> str:
    d = load("data-cpu2.json")
    bands = [b for b in next(iter(d["structure"].values())) if not b.startswith("1600")]
    rows = [[city] + [f"{v[b]:.2f}" for b in bands] for city, v in d["structure"].items()]
    return table(["city"] + bands, rows, "l" + "r" * len(bands))


def predict_photo() -> str:
    d = load("predict-cpu2.json")
    p = d["photo"]
    labels = {
        "decode": "decode (open_image)",
        "preprocess": "preprocess (val transform)",
        "encode": "encode, 1 thread (as Predictor)",
        "encode_all_threads": "encode, torch's 2 threads (for comparison)",
        "search_top5": "search + top-5 + knn-kde + radius",
        "end_to_end": "**end to end** (`Predictor.predict([img])`)",
    }
    rows = [[labels.get(k, k), f"{v:.1f}"] for k, v in p["median_ms"].items()]
    return (
        table(["stage", "median ms"], rows, "lr")
        + f"\n\n{p['model']}, a {p['photo_px'][0]}×{p['photo_px'][1]} JPEG, "
        + f"a {p['gallery_n']:,}-location gallery of D = {p['embed_dim']}.\n"
        + machine_line(d, "predict-cpu2.json")
    )


def predict_search() -> str:
    d = load("predict-cpu2.json")
    rows = []
    for r in d["search"]["rows"]:
        rows.append(
            [
                f"{r['n']:,}",
                r["dim"],
                f"{r['memory_mb']:,.0f} MB",
                f"{r['flat_single_query_ms']:.1f} ms",
                f"{r['flat_batch256_per_query_ms']:.2f} ms",
                fmt(r.get("ivf_build_s"), ".0f") + (" s" if "ivf_build_s" in r else ""),
                fmt(r.get("ivf_single_query_ms"), ".1f") + (" ms" if "ivf_single_query_ms" in r else ""),
                fmt(r.get("ivf_recall@10"), ".2f"),
            ]
        )
    head = [
        "entries",
        "D",
        "memory",
        "flat, 1 query",
        "flat, per query in a batch of 256",
        "IVF build",
        "IVF, 1 query",
        "IVF recall@10",
    ]
    return table(head, rows, "rrrrrrrr") + "\n\n" + machine_line(d, "predict-cpu2.json")


def predict_steps() -> str:
    d = load("predict-cpu2.json")
    s = d["steps"]
    rows = [
        [
            r["config"],
            f"{r['params_m']:.2f} M",
            f"{r['median_s']:.3f} s",
            r["images_per_s"],
            f"{r['ratio_to_demo']:.2f}",
        ]
        for r in s["rows"]
    ]
    return (
        table(["config", "params", "median step", "images/s", "ratio to the demo config"], rows, "lrrrr")
        + f"\n\nBatch {s['batch']}, {s['loss']}, forward + backward + AdamW.\n"
        + machine_line(d, "predict-cpu2.json")
    )


def spatial_stats() -> str:
    d = load("spatial_stats-cpu2.json")
    r = d["results"]
    g, v, s, mo, ov = r["goals"], r["variogram_20k"], r["sampled_vs_all_pairs_5k"], r["morans_i_10k"], r["overlap_20k"]
    t = v["times"]
    rows = [
        [
            f"variogram + gaussian fit, {v['n']:,} samples, {v['pairs_sampled']:,} pairs sampled "
            f"({v['pairs_used']:,} within the max lag): scalar / D = 64 / D = 512",
            f"< {g['variogram_plus_fit_s']:g} s",
            " / ".join(f"{t[k]['median_s']:.2f} s" for k in ("scalar", "embeddings_d64", "embeddings_d512")),
        ],
        [
            "fitted range, sampled pairs vs all pairs of 5k samples (5 seeds): scalar / embeddings",
            f"within {100 * g['range_vs_all_pairs_rel']:.0f} %",
            f"at most {100 * s['scalar']['max_rel_diff']:.1f} % / {100 * s['embeddings_d64']['max_rel_diff']:.1f} % "
            f"apart (all pairs took {s['scalar']['all_pairs_s']:.1f} s / {s['embeddings_d64']['all_pairs_s']:.1f} s)",
        ],
        [
            f"fitted range: scalar / embeddings (true {v['true_range_m']:.0f} m)",
            "",
            f"{v['range_m_scalar']:.0f} m / {v['range_m_embeddings_d64']:.0f} m",
        ],
        [
            "`fit_embedding_variogram` from a 4096-row bank, D = 512 (the loss's refit)",
            "",
            f"{r['refit_4096_bank']['fit_embedding_variogram_d512']['median_s']:.2f} s",
        ],
        [
            f"Moran's I, {mo['n']:,} points, k = {mo['k']}, {mo['permutations']} permutations: "
            "ours (weights included) / esda.Moran + libpysal kNN",
            f"< {g['morans_i_s']:g} s",
            f"{mo['times']['ours_morans_i']['median_s']:.2f} s / "
            f"{mo['times']['esda_Moran_plus_libpysal_knn']['median_s']:.2f} s",
        ],
        [
            "LISA, same data: ours / esda.Moran_Local (after its numba compile)",
            "",
            f"{mo['times']['ours_local_morans_i']['median_s']:.2f} s / "
            f"{mo['times']['esda_Moran_Local_warm']['median_s']:.2f} s; "
            f"esda's first call {mo['esda_Moran_Local_first_call_compile_s']:.0f} s",
        ],
        [
            f"overlap@{ov['k']}, {ov['n']:,} embeddings, D = 64: faiss on 2 threads / on 1 thread",
            f"< {g['overlap_s']:g} s",
            f"{ov['times']['d64']['median_s']:.1f} s / {ov['times']['d64_faiss_1_thread']['median_s']:.1f} s wall, "
            f"{ov['cpu_s_faiss_1_thread']['d64']:.2f} CPU-s on 1 thread",
        ],
        [
            f"overlap@{ov['k']}, {ov['n']:,} embeddings, D = 512: 2 threads / 1 thread",
            "",
            f"{ov['times']['d512']['median_s']:.1f} s / {ov['times']['d512_faiss_1_thread']['median_s']:.1f} s wall, "
            f"{ov['cpu_s_faiss_1_thread']['d512']:.1f} CPU-s on 1 thread",
        ],
    ]
    return (
        table(["measurement", "goal", "measured (median)"], rows)
        + "\n\n"
        + machine_line(
            {**d, "load_average_1min_start_end": r["load_average_1min_start_end"]}, "spatial_stats-cpu2.json"
        )
    )


def _timing_rows(name: str) -> str:
    d = load(name)
    rows = [
        [f"B = {r['batch']}", f"{1000 * r['median_s']:.0f} ms", f"{1000 * r['min_s']:.0f} ms", r["runs"]]
        for r in d["rows"]
    ]
    return (
        f"{d['what']}:\n\n" + table(["batch", "median", "min", "runs"], rows, "lrrr") + "\n\n" + machine_line(d, name)
    )


PAGE_NAMES = {
    "overview": "Runs",
    "predict": "Predict",
    "error_map": "Error map",
    "semivariogram": "Semivariogram",
    "soft_labels": "Soft labels",
    "neighbourhoods": "Neighbourhoods",
    "compare": "Compare",
    "failures": "Failures",
}


def app_scale() -> str:
    d = load("app_scale-after-cpu2.json")
    rows = []
    for r in d["rows"]:
        first = f"{r['first_s']:.2f}"
        if r.get("first_photo_s") is not None:
            first += f" (first photo {r['first_photo_s']:.2f})"
        rows.append([PAGE_NAMES.get(r["page"], r["page"]), r["city"], first, f"{r['rerun_s']:.2f}"])
    rows.append(["server peak memory (ru_maxrss)", "", f"{d['peak_rss_gb']:.2f} GB", ""])
    return (
        table(["page", "view", "first load, s", "rerun, s"], rows, "llrr")
        + f"\n\nopen_clip import, paid once per server before the pages: {d['open_clip_import_s']:.1f} s.\n"
        + machine_line(d, "app_scale-after-cpu2.json")
    )


# --------------------------------------------------------------------------------------------- module map


def _first_paragraph(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    return " ".join(doc.split("\n\n")[0].split()).replace("|", "\\|")


def layout() -> str:
    """One row per module of swclip/, appkit/, pages/, train/ and benchmarks/, from its docstring."""
    rows = []
    files = [ROOT / "app.py"]
    for folder in ("swclip", "appkit", "pages", "train", "benchmarks"):
        files += sorted(
            (ROOT / folder).rglob("*.py"), key=lambda p: (p.parent.as_posix(), p.name != "__init__.py", p.name)
        )
    for p in files:
        rel = p.relative_to(ROOT).as_posix()
        if p.name == "__init__.py":
            rel = rel[: -len("__init__.py")]
        text = _first_paragraph(p)
        if text or p.name != "__init__.py":
            rows.append([f"`{rel}`", text])
    return table(["module", "what it is (its docstring's first paragraph)"], rows)


TABLES: dict[str, tuple[str, Callable[[], str]]] = {
    "experiment-gaussian-b100": ("evidence.md", lambda: experiment_summary("gaussian-b100")),
    "experiment-gaussian-b100-sigmas": ("evidence.md", lambda: experiment_sigmas("gaussian-b100")),
    "experiment-gaussian-b100-comparisons": ("evidence.md", lambda: experiment_comparisons("gaussian-b100")),
    "experiment-gaussian-b100-cities": ("evidence.md", lambda: experiment_cities("gaussian-b100")),
    "experiment-exponential-b100": ("evidence.md", lambda: experiment_summary("exponential-b100")),
    "experiment-exponential-b100-sigmas": ("evidence.md", lambda: experiment_sigmas("exponential-b100")),
    "experiment-exponential-b100-cities": ("evidence.md", lambda: experiment_cities("exponential-b100")),
    "experiment-gaussian-b30": ("evidence.md", lambda: experiment_summary("gaussian-b30")),
    "experiment-gaussian-b30-sigmas": ("evidence.md", lambda: experiment_sigmas("gaussian-b30")),
    "experiment-gaussian-b30-cities": ("evidence.md", lambda: experiment_cities("gaussian-b30")),
    "losses": ("benchmarks.md", losses),
    "train-step": ("benchmarks.md", train_step),
    "train-step-loader": ("benchmarks.md", train_step_loader),
    "data-render": ("benchmarks.md", data_render),
    "data-loader": ("benchmarks.md", data_loader),
    "data-structure": ("benchmarks.md", data_structure),
    "predict-photo": ("benchmarks.md", predict_photo),
    "predict-search": ("benchmarks.md", predict_search),
    "predict-steps": ("benchmarks.md", predict_steps),
    "spatial-stats": ("benchmarks.md", spatial_stats),
    "figures": ("benchmarks.md", lambda: _timing_rows("figures-cpu2.json")),
    "negatives": ("benchmarks.md", lambda: _timing_rows("negatives-cpu2.json")),
    "app-scale": ("benchmarks.md", app_scale),
    "layout": ("architecture.md", layout),
}


def render_text(text: str, file: str) -> tuple[str, list[str]]:
    """``text`` with every marked table rendered anew -> (new text, names of the tables in it)."""
    names: list[str] = []

    def replace(m: re.Match) -> str:
        name = m.group("name")
        if name not in TABLES:
            raise KeyError(f"{file}: unknown table {name!r}; known: {sorted(TABLES)}")
        if TABLES[name][0] != file:
            raise KeyError(f"{file}: table {name!r} belongs in docs/{TABLES[name][0]}")
        names.append(name)
        return m.group(1) + TABLES[name][1]().rstrip("\n") + "\n" + m.group(4)

    return MARKER.sub(replace, text), names


def render_all(docs: Path = DOCS) -> dict[str, tuple[str, str, list[str]]]:
    """{file: (committed text, rendered text, table names)} for every file that TABLES writes into."""
    out = {}
    for file in sorted({f for f, _ in TABLES.values()}):
        old = (docs / file).read_text()
        new, names = render_text(old, file)
        out[file] = (old, new, names)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], prog="python -m benchmarks.render_docs")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs")
    args = parser.parse_args(argv)
    stale = []
    for file, (old, new, names) in render_all().items():
        missing = sorted(n for n, (f, _) in TABLES.items() if f == file and n not in names)
        if missing:
            print(f"docs/{file}: no markers for {', '.join(missing)}", file=sys.stderr)
            stale.append(file)
        if old != new:
            stale.append(file)
            if not args.check:
                (DOCS / file).write_text(new)
                print(f"rewrote docs/{file}")
    if args.check and stale:
        print(f"out of date: {', '.join(sorted(set(stale)))} (run python -m benchmarks.render_docs)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
