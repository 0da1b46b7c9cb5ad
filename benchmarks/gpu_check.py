"""The one-shot GPU check's driver: runs the steps in order, rewrites one JSON after each, prints a summary.

    bash benchmarks/gpu_check.sh [OUT_DIR]          # on a GPU machine (see that script)
    python -m benchmarks.gpu_check --dry-run        # on the CPU: every step small, CUDA-only parts skipped

Steps, each in its own process with its own time limit (STEPS: the estimated seconds on one H100 beside
each, at most 7 minutes in all, so the check fits one 10-minute call with the set-up and a margin):

1. cuda_tests: ``pytest -m cuda`` (bf16 steps of every loss under CUDA sync-debug mode "error", a CPU
   checkpoint resumed on CUDA with fused AdamW, CUDA against CPU losses).
2. loss_ratios_bf16: benchmarks/losses.py at B = 4,096 and 16,384 under bf16 autocast: each loss's time
   against ClipLoss and its bf16-against-fp32 parity (value and gradient).
3. vit_step_eager: ViT-B/32 at 224 px, bf16, eager: one training step per loss on synthetic tensors
   (img/s, peak memory, SW-CLIP's overhead against one-hot CLIP; the goal is at most 3 %).
4. jpeg_dataloader: a small rendered world of real JPEG files through the file-backed DataLoader
   (workers, pinned memory, non-blocking copies): img/s and the share of the step spent waiting for data.
5. resume_vs_uninterrupted: a ViT-B/32 run under torchrun killed mid-run and resumed with --resume
   auto, against the same run uninterrupted: final weights equal within RESUME_TOLERANCE, and the
   resumed optimiser still fused AdamW.
6. evaluate: train/evaluate.py on that run against the rendered world.
7. vit_step_compiled: the step of 3 under torch.compile (inductor), last, with its own short limit: a
   cold compile may take most of it, and a kill there loses nothing of 1-6.

The JSON (OUT_DIR/gpu-check-<gpu name>.json, ...-dry-run.json on the CPU) is written before the first
step with every step "pending" and rewritten after each, so a check killed at the call's limit still
returns every finished step's result.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# name, estimated seconds on one H100 (not yet measured there), time limit in seconds (GPU run)
STEPS = (
    ("cuda_tests", 40, 60),
    ("loss_ratios_bf16", 30, 60),
    ("vit_step_eager", 45, 75),
    ("jpeg_dataloader", 45, 75),
    ("resume_vs_uninterrupted", 90, 120),
    ("evaluate", 30, 45),
    ("vit_step_compiled", 90, 120),
)
BUDGET_S = 560  # the GPU run's whole budget from the driver's start: the call's 600 s less the venv set-up
DRY_LIMIT_SCALE = 4  # the dry run on a small shared CPU gets this many times each step's limit
OVERHEAD_GOAL_PCT = 3.0  # SW-CLIP's step against one-hot CLIP's
# resumed against uninterrupted final weights: ‖Δw‖ / ‖w‖. CPU float32 replays the same arithmetic; CUDA's
# atomics-based backward kernels (embedding, index_add) reorder float sums, which bf16 steps amplify a little
RESUME_TOLERANCE = {"cpu": 1e-6, "cuda": 1e-3}


class Check:
    """The steps' records and the JSON they are written to after every step."""

    def __init__(self, path: Path, head: dict, dry: bool):
        self.path, self.head, self.dry = path, head, dry
        self.t0 = time.perf_counter()
        self.steps = {
            name: {"name": name, "estimated_gpu_s": est, "limit_s": limit, "status": "pending"}
            for name, est, limit in STEPS
        }
        self.write()

    def left_s(self) -> float:
        return BUDGET_S - (time.perf_counter() - self.t0)

    def run(self, name: str, cmds: list[list], env: dict) -> dict:
        """Run one step's commands in order under the step's limit (and, on a GPU, what is left of the budget)."""
        step = self.steps[name]
        limit = step["limit_s"] * DRY_LIMIT_SCALE if self.dry else min(step["limit_s"], int(self.left_s()))
        if limit < 10:
            step.update(status="skipped", reason=f"{self.left_s():.0f} s left of the {BUDGET_S} s budget")
            self.write()
            return step
        t0, tails = time.perf_counter(), []
        rc = 0
        for cmd in cmds:
            left = limit - (time.perf_counter() - t0)
            print(f"[gpu_check] {name}: {' '.join(map(str, cmd))}", flush=True)
            try:
                proc = subprocess.run(
                    [str(c) for c in cmd], cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(left, 1)
                )
                rc, out = proc.returncode, proc.stdout + proc.stderr
            except subprocess.TimeoutExpired as e:
                rc, out = 124, f"timed out after {limit} s\n{_text(e.stdout)}{_text(e.stderr)}"
            tails.append(out[-3000:])
            if rc != 0 and not (cmd is cmds[0] and step.get("first_may_die")):
                break
        step.update(rc=rc, seconds=round(time.perf_counter() - t0, 1), limit_s=limit, tail="\n".join(tails)[-6000:])
        step["status"] = "ok" if rc == 0 else ("timed_out" if rc == 124 else "failed")
        print(f"[gpu_check] {name}: {step['status']} (rc {rc}) in {step['seconds']} s", flush=True)
        if rc != 0:  # the log's end here too: CI shows this output, not the JSON
            print("\n".join(step["tail"].rstrip().splitlines()[-12:]), flush=True)
        self.write()
        return step

    def write(self) -> None:
        done = [s for s in self.steps.values() if s["status"] != "pending"]
        out = {
            **self.head,
            "ok": bool(done) and len(done) == len(self.steps) and all(s["status"] == "ok" for s in done),
            "complete": len(done) == len(self.steps),
            "seconds": round(time.perf_counter() - self.t0, 1),
            "budget_s": BUDGET_S,
            "estimated_gpu_s_total": sum(est for _, est, _ in STEPS),
            "steps": list(self.steps.values()),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(out, indent=1) + "\n")
        os.replace(tmp, self.path)
        self.out = out


def _text(x) -> str:
    return x.decode(errors="replace") if isinstance(x, bytes) else (x or "")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "results"), help="JSON folder")
    p.add_argument("--dry-run", action="store_true", help="CPU: small sizes, CUDA-only parts skipped")
    args = p.parse_args(argv)

    import torch

    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        print("[gpu_check] no CUDA device: run with --dry-run on a CPU machine", file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    tag = gpu.lower().replace(" ", "-") if gpu else f"cpu{os.cpu_count()}"
    head = {
        "gpu": gpu,
        "dry_run": dry,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    check = Check(Path(args.out) / f"gpu-check-{tag}{'-dry-run' if dry else ''}.json", head, dry)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    results = work / "results"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
        "HF_HUB_OFFLINE": "1",
        "SWCLIP_RESULTS_DIR": str(results),
        "PYTHONUNBUFFERED": "1",
    }
    py = sys.executable
    try:
        run_steps(check, py, env, work, results, dry)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(summary(check.out))
    print(f"[gpu_check] wrote {check.path}")
    return 0 if check.out["ok"] else 1


def run_steps(check: Check, py: str, env: dict, work: Path, results: Path, dry: bool) -> None:
    device = ["--device", "cpu"] if dry else []
    bench = [py, "train/bench.py", "losses", *device]
    # ViT-B/32 at 224 px on the GPU; the demo model at 32 px on the CPU (same code path, small sizes)
    vit = (
        ["--config", "swclip/training/configs/demo_swclip.yaml", "--batch", "16", "--steps", "2", "--warmup", "1"]
        if dry
        else ["--config", "train/configs/vitb32_swclip.yaml", "--steps", "10", "--warmup", "3", "precision=bf16"]
    )

    # 1. the CUDA tests (skipped without CUDA: the dry run checks that they collect and import)
    tests = ["tests/test_losses.py", "tests/test_training_gpu_path.py"]
    pytest = [py, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-m", "cuda"]
    # the image's own pytest plugins (xdist, cov, benchmark, mock, timeout) stay out of the carried pytest
    s = check.run("cuda_tests", [[*pytest, *tests]], {**env, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    if s.get("rc") == 5:  # pytest: no test selected is not a failure here
        s.update(rc=0, status="ok")
    check.write()

    # 2. loss ratios and bf16 parity
    batches = ["64", "128"] if dry else ["4096", "16384"]
    s = check.run(
        "loss_ratios_bf16",
        [[py, "-m", "benchmarks.losses", "--bf16", "--parity", "--batch", *batches, "--repeats", "2" if dry else "10"]],
        env,
    )
    s["result"] = _read_json(results, "losses-")
    check.write()

    # 3. the training step, eager
    s = check.run(
        "vit_step_eager",
        [[*bench, *vit, "--data", "synthetic", "--name", "step-eager", "compile=false", "data.synthetic_size=1024"]],
        env,
    )
    s["result"] = _step_result(_read_json(results, "step-eager-"))
    check.write()

    # 4. real JPEG files through the DataLoader; the same world is the evaluation's
    world = work / "world"
    make = [
        py,
        "-c",
        "import sys; from swclip.synth import make_world; from swclip.data import read_table, spatial_split; "
        "w = sys.argv[1]; make_world(w, seed=0, cities=['Leeds'], samples_per_city=int(sys.argv[2]), "
        "image_size=int(sys.argv[3]), workers=int(sys.argv[4])); spatial_split(read_table(w + '/samples.csv'), "
        "test_frac=0.25, block_m=200, buffer_m=0, seed=0).to_csv(w + '/split.csv', index=False)",
        world,
        *(["48", "64", "2"] if dry else ["512", "224", "16"]),
    ]
    loader = [
        *bench,
        *vit,
        "--data",
        "demo",
        "--table",
        world / "samples.csv",
        "--losses",
        "clip",
        "swclip",
        "--name",
        "jpeg-loader",
        "compile=false",
        "data.preload=false",
        f"data.num_workers={2 if dry else 8}",
    ]
    s = check.run("jpeg_dataloader", [make, loader], env)
    res = _read_json(results, "jpeg-loader-")
    s["result"] = None if res is None else {**_step_result(res), "jpeg_files": len(list(world.glob("**/*.jpg")))}
    check.write()

    # 5. killed and resumed against uninterrupted
    runs = work / "runs"
    common = (
        [
            "--config",
            "swclip/training/configs/demo_swclip.yaml",
            "steps=6",
            "batch_size=16",
            "device=cpu",
            "ckpt_every=2",
            "data.synthetic_size=256",
            "model.gps_hidden=32",
        ]
        if dry
        else [
            "--config",
            "train/configs/vitb32_swclip.yaml",
            "steps=50",
            "batch_size=64",
            "ckpt_every=25",  # a ViT-B/32 checkpoint with AdamW's moments is about 1.8 GB: few of them
            "log_every=10",
            "optim.warmup_steps=10",
            "data.synthetic_size=4096",
            "precision=bf16",
        ]
    )
    common += ["compile=false", "data.synthetic=true", f"out_dir={runs}", "progress=false"]
    torchrun = [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "train/train.py"]
    kill_at = 3 if dry else 30
    check.steps["resume_vs_uninterrupted"]["first_may_die"] = True  # SIGKILLed on purpose
    s = check.run(
        "resume_vs_uninterrupted",
        [
            [*torchrun, *common, "run_id=check", f"fault_at_step={kill_at}"],
            [*torchrun, *common, "run_id=check", "--resume", "auto"],
            [*torchrun, *common, "run_id=straight"],
        ],
        env,
    )
    s.pop("first_may_die", None)
    s["result"] = _resume_result(runs, "cpu" if dry else "cuda", kill_at)
    if s["status"] == "ok" and not (s["result"] or {}).get("ok"):
        s["status"] = "failed"
    check.write()

    # 6. evaluation of the resumed run against the rendered world
    s = check.run(
        "evaluate",
        [
            [
                py,
                "train/evaluate.py",
                runs / "check",
                "--table",
                world / "split.csv",
                "--root",
                world,
                "--quiet",
                "--device",
                "cpu" if dry else "auto",
            ]
        ],
        env,
    )
    metrics = runs / "check" / "metrics.json"
    s["result"] = json.loads(metrics.read_text()) if metrics.is_file() else None
    check.write()

    # 7. the step compiled: inductor on the GPU; aot_eager on the CPU (inductor's C++ build alone outlasts the
    # rehearsal there), which traces forward and backward as inductor does
    backend = "compile_backend=aot_eager" if dry else "compile_backend=inductor"
    s = check.run(
        "vit_step_compiled",
        [
            [
                *bench,
                *vit,
                "--data",
                "synthetic",
                "--losses",
                "clip",
                "swclip",
                "--name",
                "step-compiled",
                "compile=true",
                backend,
                "data.synthetic_size=1024",
            ]
        ],
        env,
    )
    res = _step_result(_read_json(results, "step-compiled-"))
    eager = check.steps["vit_step_eager"].get("result") or {}
    if res is not None and eager:
        res["compiled_over_eager_img_s"] = {
            loss: row["images_per_s"] / eager["losses"][loss]["images_per_s"]
            for loss, row in res["losses"].items()
            if loss in eager.get("losses", {})
        }
    s["result"] = res
    check.write()


def _read_json(folder: Path, prefix: str):
    found = sorted(folder.glob(f"{prefix}*.json")) if folder.is_dir() else []
    return json.loads(found[-1].read_text()) if found else None


def _step_result(res: dict | None) -> dict | None:
    """A step benchmark's figures per loss, and SW-CLIP's overhead against CLIP beside the goal."""
    if res is None:
        return None
    keys = ("images_per_s", "step_ms", "peak_mem_mib", "data_wait_frac", "extra_over_clip_pct")
    losses = {r["loss"]: {k: r.get(k) for k in keys} for r in res["rows"]}
    overhead = (losses.get("swclip") or {}).get("extra_over_clip_pct")
    return {
        "batch_size": res["batch_size"],
        "device": res["device"],
        "precision": res["precision"],
        "losses": losses,
        "swclip_overhead_pct": overhead,
        "overhead_goal_pct": OVERHEAD_GOAL_PCT,
        "overhead_within_goal": None if overhead is None else overhead <= OVERHEAD_GOAL_PCT,
    }


def _resume_result(runs: Path, device: str, kill_at: int) -> dict | None:
    """Final weights of the killed-and-resumed run against the uninterrupted one, and the resumed optimiser's kind."""
    import torch
    from safetensors.torch import load_file

    a, b = runs / "check" / "model.safetensors", runs / "straight" / "model.safetensors"
    if not (a.is_file() and b.is_file()):
        return None
    wa, wb = load_file(str(a)), load_file(str(b))
    if wa.keys() != wb.keys():
        return {"ok": False, "reason": "the two runs' weights have different tensors"}
    diff = sum(float((wa[k].double() - wb[k].double()).pow(2).sum()) for k in wa) ** 0.5
    norm = sum(float(wb[k].double().pow(2).sum()) for k in wb) ** 0.5
    max_abs = max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)
    ckpts = sorted((runs / "check" / "checkpoints").glob("step_*"))
    state = torch.load(ckpts[-1] / "state.pt", map_location="cpu", weights_only=True) if ckpts else None
    fused = None if state is None else [bool(g.get("fused")) for g in state["optimizer"]["param_groups"]]
    log = runs / "check" / "train_log.csv"
    steps = [int(r["step"]) for r in csv.DictReader(log.open())] if log.is_file() else []
    tol = RESUME_TOLERANCE[device]
    rel = diff / max(norm, 1e-30)
    fused_ok = fused is not None and (all(fused) if device == "cuda" else True)
    return {
        "killed_at_step": kill_at,
        "resumed_to_step": steps[-1] if steps else None,
        "weights_rel_l2": rel,
        "weights_max_abs": max_abs,
        "tolerance_rel_l2": tol,
        "weights_within_tolerance": rel <= tol,
        "fused_adamw_after_resume": fused,
        "ok": rel <= tol and fused_ok and steps == sorted(set(steps)),
    }


def summary(out: dict) -> str:
    lines = [
        f"GPU check on {out['gpu'] or 'CPU (dry run)'}: {'OK' if out['ok'] else 'FAILED'} in {out['seconds']} s "
        f"(torch {out['torch']}, CUDA {out['cuda']}; estimated {out['estimated_gpu_s_total']} s on one H100)"
    ]
    for st in out["steps"]:
        secs = f"{st['seconds']:>7.1f} s" if "seconds" in st else "      -  "
        lines.append(f"  {st['status']:<9} {st['name']:<24} {secs}  (est. {st['estimated_gpu_s']} s on an H100)")
        res = st.get("result") or {}
        if st["name"] == "loss_ratios_bf16" and res:
            for r in res.get("rows", []):
                lines.append(
                    f"      B={r['batch']:<6} {r['loss']:<22} {1000 * r['median_s']:8.2f} ms  x{r['ratio_to_clip']:.2f}"
                    f"  bf16/fp32 value {r.get('value_rel_err', float('nan')):.1e}"
                    f" grad {r.get('grad_rel_err', float('nan')):.1e}"
                )
        if st["name"] in ("vit_step_eager", "jpeg_dataloader", "vit_step_compiled") and res:
            for loss, r in res["losses"].items():
                lines.append(
                    f"      {loss:<14} {r['images_per_s']:8.0f} img/s  peak {r['peak_mem_mib']:.0f} MiB"
                    f"  data wait {r['data_wait_frac']:.1%}"
                )
            if res.get("swclip_overhead_pct") is not None:
                lines.append(
                    f"      SW-CLIP over CLIP {res['swclip_overhead_pct']:+.1f} %"
                    f" (goal <= {res['overhead_goal_pct']} %)"
                )
        if st["name"] == "resume_vs_uninterrupted" and res:
            lines.append(
                f"      killed at {res['killed_at_step']}, resumed to {res['resumed_to_step']}: "
                f"weights rel. L2 {res['weights_rel_l2']:.1e} (tolerance {res['tolerance_rel_l2']:.0e}), "
                f"fused AdamW {res['fused_adamw_after_resume']}"
            )
        if st["name"] == "evaluate" and res:
            lines.append(f"      n={res.get('n')} median {res.get('median_m', float('nan')):.0f} m")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
