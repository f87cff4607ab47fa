"""One prepared check of the engine on a GPU (about 8 minutes on one large GPU), or the same code path
at tiny sizes on a CPU (``--device cpu --quick``, run by the test suite).

Stages, each timed, written as one table (with the card's name) to benchmarks/RESULTS.md (or --out):

1. smoke: ``rsd-engine run`` of the GPU presets cifar10-denoise-0.2 (DDPM++ 32×32) and
   celebahq64-inpaint-0.6-gpu (DDPM++ 64×64 with a mask channel) for a few teacher steps and RSD
   iterations and a small final evaluation, in bf16 (``--quick``: fp32, one preset, tiny DDPM++),
   on synthetic images of the preset's shape written here (nothing is downloaded);
2. throughput: teacher step and RSD iteration at the paper's DDPM++ size and batch (the
   cifar10-denoise-0.2 preset's network and teacher batch, bf16 autocast), peak memory
   (:func:`bench_speed.run`);
3. FID features: TF-Inception feature throughput on the device;
4. Fashion-MNIST: a short denoising run (fmnist-denoise-0.2, shortened) with teacher and generator FID.
   The IDX files are read from ``--fmnist`` (default: Debian's /usr/share/datasets/fashion-mnist, else
   benchmarks/data/fashion-mnist, a folder to copy the four ``*.gz`` files into so that a machine
   without the Debian package carries them); without them the stage is reported as skipped.

    python benchmarks/gpu_check.py                       # on a GPU
    python benchmarks/gpu_check.py --device cpu --quick  # tiny, on a CPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rsd_engine.data.sources import FASHION_MNIST_DIR
from rsd_engine.io import config as cfg

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_speed  # noqa: E402
from results_file import prepend_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SMOKE_PRESETS = ("cifar10-denoise-0.2.toml", "celebahq64-inpaint-0.6-gpu.toml")
TINY_DDPMPP = ["network.model_channels=16", "network.channel_mult=[1,2]", "network.num_blocks=1", "network.attn_resolutions=[8]"]


def synthetic_npz(path: Path, n: int, channels: int, resolution: int, seed: int) -> Path:
    """Smooth random images (N, C, H, W) uint8 (low-frequency noise, upsampled), so that every stage has data of the preset's shape."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, channels, 4, 4, generator=g)
    img = torch.nn.functional.interpolate(low, size=(resolution, resolution), mode="bilinear", align_corners=False)
    np.savez(path, images=(img * 255).round().clamp(0, 255).to(torch.uint8).numpy())
    return path


def engine(args: list[str], log: Path) -> tuple[int, float]:
    """``python -m rsd_engine ARGS`` in a fresh process (exit code, seconds); its output goes to ``log``."""
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    start = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.call([sys.executable, "-m", "rsd_engine", *args], stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    return rc, time.perf_counter() - start


def smoke(work: Path, quick: bool, device: str) -> list[tuple[str, str, float]]:
    """Stage 1: every stage of GPU presets for a few iterations (bf16 on a GPU)."""
    rows = []
    for name in SMOKE_PRESETS[:1] if quick else SMOKE_PRESETS:
        preset = cfg.load(ROOT / "presets" / name, ["data.path=x.npz", "data.source=npz"])
        res = 16 if quick else preset.data.resolution
        ch = preset.data.channels
        train = synthetic_npz(work / f"{name}-train.npz", 64, ch, res, 0)
        held = synthetic_npz(work / f"{name}-eval.npz", 64, ch, res, 1)
        batch = 8 if quick else 64
        sets = [
            "data.source=npz",
            f"data.path='{train}'",
            f"data.eval_path='{held}'",
            f"data.resolution={res}",
            f"teacher.kimg={2 * batch / 1000}",
            f"teacher.batch_size={batch}",
            f"distill.kimg={2 * batch / 1000}",
            f"distill.batch_size={batch}",
            "eval.live_fid_n=0",
            f"eval.final_fid_n={4 if quick else 64}",
            f"eval.reference_n={4 if quick else 64}",
            f"eval.grid_n={4 if quick else 16}",
            f"eval.teacher_steps={2 if quick else 4}",
            f"eval.psnr_n={4 if quick else 16}",
            f"eval.batch_size={batch}",
            f"accelerate.device={device}",
            f"accelerate.mixed_precision={'no' if device == 'cpu' else 'bf16'}",
            "accelerate.num_processes=1",
        ]
        if quick:
            sets += TINY_DDPMPP
        rc, secs = engine(
            ["run", str(ROOT / "presets" / name), "--out", str(work / f"smoke-{name}"), *[a for s in sets for a in ("--set", s)]],
            work / f"smoke-{name}.log",
        )
        rows.append(
            (
                f"smoke: {name} teacher → distill → evaluate ({'fp32' if device == 'cpu' else 'bf16'})",
                "ok" if rc == 0 else f"FAILED (exit {rc}, log {work / f'smoke-{name}.log'})",
                secs,
            )
        )
    return rows


def throughput(quick: bool, device: torch.device) -> list[tuple[str, str, float]]:
    """Stage 2: teacher step and RSD iteration at DDPM++ size (bench_speed's measurements), bf16 autocast on a GPU."""
    preset = cfg.load(
        ROOT / "presets" / SMOKE_PRESETS[0],
        ["data.path=x", *(TINY_DDPMPP + ["data.resolution=16", "eval.teacher_steps=2"] if quick else [])],
    )
    batch = 4 if quick else preset.teacher.batch_size
    start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            rows = bench_speed.run(preset, batch, 2 if quick else 5, device)
    else:
        rows = bench_speed.run(preset, batch, 2, device)
    secs = time.perf_counter() - start
    return [(f"DDPM++ {preset.data.resolution}×{preset.data.resolution}: {k}", v, secs) for k, v in rows]


def features(quick: bool, device: torch.device) -> list[tuple[str, str, float]]:
    """Stage 3: TF-Inception feature throughput on the device."""
    from rsd_engine.evaluate.metrics import FIDWeightsError, extract_features, load_feature_network

    try:
        net = load_feature_network().to(device)
    except FIDWeightsError as e:
        return [("FID features", f"skipped: {e}", 0.0)]
    n, batch = (8, 8) if quick else (4096, 256)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    extract_features(net, images[:batch], batch)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    extract_features(net, images, batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    secs = time.perf_counter() - start
    return [(f"FID features, 32×32 → 299×299, batch {batch}", f"{n / secs:.1f} images/s", secs)]


def fashion_mnist(work: Path, quick: bool, device: str, fmnist: Path | None) -> list[tuple[str, str, float]]:
    """Stage 4: a short Fashion-MNIST denoising run with teacher and generator FID."""
    folder = fmnist or next(
        (p for p in (FASHION_MNIST_DIR, ROOT / "benchmarks" / "data" / "fashion-mnist") if (p / "t10k-images-idx3-ubyte.gz").is_file()),
        None,
    )
    if folder is None:
        return [("Fashion-MNIST run", f"skipped: no IDX files in {FASHION_MNIST_DIR} or benchmarks/data/fashion-mnist", 0.0)]
    n = 4 if quick else 2000
    sets = [
        f"data.path='{folder}'",
        f"accelerate.device={device}",
        f"eval.final_fid_n={n}",
        f"eval.reference_n={n}",
        "eval.models=['teacher-truncated','generator']",
        "eval.live_fid_n=0",
        "eval.psnr_n=0",
        *(
            [
                "teacher.kimg=0.032",
                "teacher.batch_size=16",
                "distill.kimg=0.008",
                "distill.batch_size=8",
                "data.max_images=64",
                "eval.teacher_steps=2",
                "eval.batch_size=8",
                "eval.grid_n=4",
                "network.block_out_channels=[16,32]",
            ]
            if quick
            else [
                "teacher.kimg=320",
                "teacher.batch_size=256",
                "teacher.lr_warmup_kimg=10",
                "distill.kimg=32",
                "distill.batch_size=64",
                "eval.batch_size=500",
            ]
        ),
    ]
    out = work / "fmnist"
    rc, secs = engine(
        ["run", str(ROOT / "presets" / "fmnist-denoise-0.2.toml"), "--out", str(out), *[a for s in sets for a in ("--set", s)]],
        work / "fmnist.log",
    )
    if rc != 0:
        return [("Fashion-MNIST run", f"FAILED (exit {rc}, log {work / 'fmnist.log'})", secs)]
    metrics = json.loads((out / "metrics.json").read_text())
    fid = {m: metrics.get(m, {}).get("fid") for m in ("teacher-truncated", "generator")}
    shown = ", ".join(f"{m} {'n/a' if v is None else f'{v:.2f}'}" for m, v in fid.items())
    return [(f"Fashion-MNIST denoising σ = 0.2, FID at n = {n}", shown, secs)]


def main(argv: list[str] | None = None) -> int:
    """Run the four stages, print and write the table. Returns 1 when a stage failed, else 0."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=("cuda", "cpu"))
    ap.add_argument("--quick", action="store_true", help="tiny sizes (the CI's check of this script)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "RESULTS.md")
    ap.add_argument("--work", type=Path, default=None, help="folder for the runs (default: a temporary one)")
    ap.add_argument("--fmnist", type=Path, default=None, help="folder of the Fashion-MNIST IDX files")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = smoke(work, args.quick, args.device)
        rows += throughput(args.quick, device)
        rows += features(args.quick, device)
        rows += fashion_mnist(work, args.quick, args.device, args.fmnist)
    total = time.perf_counter() - start
    table = "| check | result | stage s |\n|---|---|---|\n" + "\n".join(f"| {k} | {v} | {s:.0f} |" for k, v, s in rows)
    command = "python benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:])
    section = (
        f"## gpu_check{' --quick' if args.quick else ''} on {bench_speed._machine(device)}\n\n"
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} with `{command.strip()}`, {total:.0f} s in all.\n\n{table}\n"
    )
    print(section)
    prepend_section(args.out, section)
    return 1 if any("FAILED" in v for _, v, _ in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
