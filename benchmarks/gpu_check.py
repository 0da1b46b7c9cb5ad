"""The one-shot GPU check's driver: runs the steps in order, writes one JSON, prints a summary.

    bash benchmarks/gpu_check.sh [OUT_DIR]          # on a GPU machine (see that script)
    python -m benchmarks.gpu_check --dry-run        # on the CPU: every step small, CUDA-only parts skipped

Steps: 1 the CUDA tests; 2 the loss benchmark in bf16; 3 train/bench.py, ViT-B/32 at
224 px in bf16 on synthetic tensors, clip vs swclip vs swclip+nc vs semivariogram; 4 a 200-step
ViT-B/32 SW-CLIP run under torchrun --nproc_per_node 1 with compile on, killed mid-run and
resumed with --resume auto; 5 evaluation of that run on the GPU against a small demo world.
Each step runs in its own process with a time limit, so one failure does not stop the rest.
The JSON goes to OUT_DIR/gpu-check-<gpu name>.json (cpu<N> for a dry run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


TIMEOUT_SCALE = 1.0  # the dry run on a small shared CPU gets more time per step


def run_step(name: str, cmd: list, timeout_s: int, env: dict, log: list, cwd=ROOT) -> dict:
    timeout_s = int(timeout_s * TIMEOUT_SCALE)
    t0 = time.perf_counter()
    print(f"[gpu_check] {name}: {' '.join(map(str, cmd))}", flush=True)
    try:
        proc = subprocess.run(
            [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s
        )
        rc, out = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as e:
        rc, out = (
            124,
            f"timed out after {timeout_s} s\n"
            + ((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")),
        )
    step = {"name": name, "rc": rc, "seconds": round(time.perf_counter() - t0, 1), "tail": out[-4000:]}
    log.append(step)
    print(f"[gpu_check] {name}: rc {rc} in {step['seconds']} s", flush=True)
    return step


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"), help="folder for the JSON")
    p.add_argument("--dry-run", action="store_true", help="CPU: small sizes, CUDA-only steps skipped")
    args = p.parse_args(argv)

    import torch

    dry = args.dry_run
    global TIMEOUT_SCALE
    TIMEOUT_SCALE = 4.0 if dry else 1.0
    if not dry and not torch.cuda.is_available():
        print("[gpu_check] no CUDA device: run with --dry-run on a CPU machine", file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    tag = gpu.lower().replace(" ", "-") if gpu else f"cpu{os.cpu_count()}"
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    results = work / "results"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "SWCLIP_RESULTS_DIR": str(results),
        "PYTHONUNBUFFERED": "1",
    }
    py = sys.executable
    steps: list = []
    t_all = time.perf_counter()

    # 1. the CUDA tests (skipped without CUDA: the dry run checks they collect and import)
    run_step(
        "cuda_tests",
        [
            py,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "-m",
            "cuda",
            "tests/test_losses.py",
            "tests/test_training_gpu_path.py",
        ],
        240,
        env,
        steps,
    )
    if steps[-1]["rc"] == 5:  # pytest: no test selected is not a failure here
        steps[-1]["rc"] = 0

    # 2. the loss benchmark, bf16
    batches = ["256"] if dry else ["1024", "4096", "16384"]
    s = run_step(
        "loss_benchmark_bf16",
        [py, "-m", "benchmarks.losses", "--bf16", "--batch", *batches, "--repeats", "3" if dry else "20"],
        240,
        env,
        steps,
    )
    s["result"] = _read_json(results, "losses-")

    # 3. train/bench.py: one training step per loss, ViT-B/32 at 224 px bf16 on synthetic tensors
    bench = (
        [
            py,
            "train/bench.py",
            "losses",
            "--data",
            "synthetic",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--batch",
            "16",
            "--device",
            "cpu",
        ]
        if dry
        else [
            py,
            "train/bench.py",
            "losses",
            "--config",
            "train/configs/vitb32_swclip.yaml",
            "--data",
            "synthetic",
            "--steps",
            "20",
            "--warmup",
            "5",
            "precision=bf16",
            "compile=false",
            "data.synthetic_size=4096",
        ]
    )
    s = run_step("train_step_benchmark", bench, 300, env, steps)
    s["result"] = _read_json(results, "train-step-")

    # 4. a 200-step SW-CLIP run under torchrun, compile on, killed mid-run, resumed with --resume auto
    runs = work / "runs"
    common = (
        [
            "--config",
            "swclip/training/configs/demo_swclip.yaml",
            "steps=6",
            "batch_size=16",
            "device=cpu",
            "compile=false",
            "ckpt_every=2",
            "data.synthetic=true",
            "data.synthetic_size=256",
            "model.gps_hidden=32",
        ]
        if dry
        else [
            "--config",
            "train/configs/vitb32_swclip.yaml",
            "steps=200",
            "ckpt_every=50",
            "log_every=25",
            "compile=true",
            "data.synthetic=true",
            "data.synthetic_size=8192",
            "precision=bf16",
        ]
    )
    common += [f"out_dir={runs}", "run_id=check", "progress=false"]
    torchrun = [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "train/train.py"]
    kill_at = 3 if dry else 120
    s = run_step("train_killed", torchrun + common + [f"fault_at_step={kill_at}"], 300, env, steps)
    s["expected_failure"] = True  # SIGKILLed on purpose
    s["rc_ok"] = s["rc"] != 0 and "SIGKILL" in s["tail"]  # killed at the fault, not failed for another reason
    s = run_step("train_resumed", torchrun + common + ["--resume", "auto"], 300, env, steps)
    s["result"] = _train_summary(runs / "check")

    # 5. evaluation on the GPU, against a small demo world (the synthetic run has no images of its own)
    world = work / "world"
    make = [
        py,
        "-c",
        "import sys; from swclip.synth import make_world; from swclip.data import read_table, spatial_split; "
        "w = sys.argv[1]; make_world(w, seed=0, cities=['Leeds'], samples_per_city=int(sys.argv[2]), image_size=64, "
        "workers=4); spatial_split(read_table(w + '/samples.csv'), test_frac=0.25, block_m=200, buffer_m=0, "
        "seed=0).to_csv(w + '/split.csv', index=False)",
        str(world),
        "48" if dry else "400",
    ]
    run_step("demo_world", make, 240, env, steps)
    s = run_step(
        "evaluate",
        [
            py,
            "train/evaluate.py",
            str(runs / "check"),
            "--table",
            str(world / "split.csv"),
            "--root",
            str(world),
            "--quiet",
            "--device",
            "cpu" if dry else "auto",
        ],
        240,
        env,
        steps,
    )
    metrics = runs / "check" / "metrics.json"
    s["result"] = json.loads(metrics.read_text()) if metrics.is_file() else None

    ok = all((st.get("rc_ok") if st.get("expected_failure") else st["rc"] == 0) for st in steps)
    out = {
        "gpu": gpu,
        "dry_run": dry,
        "ok": ok,
        "seconds": round(time.perf_counter() - t_all, 1),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "steps": steps,
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / f"gpu-check-{tag}{'-dry-run' if dry else ''}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    print(summary(out))
    print(f"[gpu_check] wrote {path}")
    return 0 if ok else 1


def _read_json(folder: Path, prefix: str):
    found = sorted(folder.glob(f"{prefix}*.json")) if folder.is_dir() else []
    return json.loads(found[-1].read_text()) if found else None


def _train_summary(run_dir: Path):
    import csv

    log = run_dir / "train_log.csv"
    if not log.is_file():
        return None
    rows = list(csv.DictReader(log.open()))
    return {
        "last_step": int(rows[-1]["step"]),
        "rows": len(rows),
        "final_loss": float(rows[-1]["loss"]),
        "images_per_s_last": float(rows[-1]["images_per_s"]),
        "has_model": (run_dir / "model.safetensors").is_file(),
        "tensorboard_files": len(list((run_dir / "tensorboard").glob("events.*"))),
    }


def summary(out: dict) -> str:
    lines = [
        f"GPU check on {out['gpu'] or 'CPU (dry run)'}: {'OK' if out['ok'] else 'FAILED'} in {out['seconds']} s "
        f"(torch {out['torch']}, CUDA {out['cuda']})"
    ]
    for st in out["steps"]:
        good = st.get("rc_ok") if st.get("expected_failure") else st["rc"] == 0
        lines.append(f"  {'ok ' if good else 'BAD'} {st['name']:<22} {st['seconds']:>7.1f} s")
        res = st.get("result") or {}
        if st["name"] == "loss_benchmark_bf16" and res:
            for r in res.get("rows", []):
                lines.append(
                    f"      B={r['batch']:<6} {r['loss']:<14} {1000 * r['median_s']:8.2f} ms  x{r['ratio_to_clip']:.2f}"
                )
        if st["name"] == "train_step_benchmark" and res:
            for r in res.get("rows", []):
                lines.append(
                    f"      {r['loss']:<14} {r['images_per_s']:8.0f} img/s  x{r['ratio_to_clip'] or 1:.3f} clip"
                )
        if st["name"] == "train_resumed" and res:
            lines.append(
                f"      resumed to step {res['last_step']}, loss {res['final_loss']:.3f}, "
                f"{res['images_per_s_last']:.0f} img/s, {res['tensorboard_files']} event file(s)"
            )
        if st["name"] == "evaluate" and res:
            lines.append(f"      n={res.get('n')} median {res.get('median_m', float('nan')):.0f} m")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
