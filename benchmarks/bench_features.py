"""Throughput of the TF-Inception FID features on this machine, variants interleaved in one run.

Each variant turns the same uint8 images (N, 1, 32, 32) into (N, 2048) pool3 features: grey → RGB, bilinear
resize to 299×299, (u − 128)/128, the TorchScript network. Variants differ only in how the network is
called: the memory layout of its input (contiguous NCHW or channels_last), the batch size, the number of
torch threads, whether the single grey channel is resized before it is replicated, and the network frozen
for inference (batch norms folded into the convolutions). Rounds visit the
variants in turn, so a machine whose load changes during the run slows every variant alike; the table
gives each variant's median images/s over the rounds, its ratio to the first variant (the engine's
previous way) and the largest feature difference from it.

Prints a Markdown table and prepends it, with the machine and the command, to benchmarks/RESULTS.md
(or --out). Usage:

    python benchmarks/bench_features.py [--images 64] [--batch 64] [--rounds 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from results_file import prepend_section

from rsd_engine.evaluate.metrics import load_feature_network

ROOT = Path(__file__).resolve().parents[1]


def _frozen(net):
    """The network frozen for inference (``torch.jit.freeze`` + ``optimize_for_inference``: batch norms
    folded into the convolutions, oneDNN layouts)."""
    return torch.jit.optimize_for_inference(torch.jit.freeze(net.eval()))


def _features(net, u8: torch.Tensor, batch: int, channels_last: bool, resize_grey: bool) -> torch.Tensor:
    """(N, 1, H, W) uint8 → (N, 2048) features with one variant's settings."""
    out = []
    with torch.inference_mode():
        for s in range(0, u8.shape[0], batch):
            x = u8[s : s + batch].to(torch.float32)
            if not resize_grey:
                x = x.expand(-1, 3, -1, -1)
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            if resize_grey:
                x = x.expand(-1, 3, -1, -1)
            x = (x - 128.0) / 128.0
            x = x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()
            out.append(net(x))
    return torch.cat(out)


def main(argv: list[str] | None = None) -> int:
    """Measure, print and record the table; returns 0."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=64, help="images per measurement (a multiple of every batch)")
    ap.add_argument("--batch", type=int, default=64, help="the engine's batch (eval.batch_size); half of it is measured too")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    args = ap.parse_args(argv)
    threads = torch.get_num_threads()
    net = load_feature_network().net
    u8 = torch.randint(0, 256, (args.images, 1, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    # (name, batch, channels_last, resize grey first, threads)
    frozen = _frozen(net)
    b, half = args.batch, max(args.batch // 2, 1)
    # (name, network, batch, channels_last, resize grey first, threads)
    variants = [
        (f"NCHW, batch {b} (before)", net, b, False, False, threads),
        (f"channels_last, batch {b}", net, b, True, False, threads),
        (f"NCHW, batch {half}", net, half, False, False, threads),
        (f"frozen for inference, batch {b}", frozen, b, False, False, threads),
        (f"frozen for inference, channels_last, batch {b}", frozen, b, True, False, threads),
        (f"NCHW, grey resized first, batch {b}", net, b, False, True, threads),
    ]
    if threads > 1:
        variants.append((f"NCHW, batch {b}, 1 thread (of {threads})", net, b, False, False, 1))
    speeds: dict[str, list[float]] = {v[0]: [] for v in variants}
    feats: dict[str, torch.Tensor] = {}
    for name, model, batch, cl, grey, th in variants:  # warm-up (first-call graph optimisation)
        torch.set_num_threads(th)
        _features(model, u8[:2], batch, cl, grey)
    for r in range(args.rounds):
        for name, model, batch, cl, grey, th in variants:
            torch.set_num_threads(th)
            t0 = time.perf_counter()
            f = _features(model, u8, batch, cl, grey)
            speeds[name].append(args.images / (time.perf_counter() - t0))
            feats[name] = f
            print(f"round {r + 1}: {name}: {speeds[name][-1]:.2f} images/s", flush=True)
    torch.set_num_threads(threads)
    base = variants[0][0]
    b = statistics.median(speeds[base])
    rows = [
        f"| {name} | {statistics.median(speeds[name]):.2f} | {statistics.median(speeds[name]) / b:.2f} | "
        f"{(feats[name] - feats[base]).abs().max().item():.1e} |"
        for name, *_ in variants
    ]
    table = "| variant | images/s (median of rounds) | ratio to before | max feature difference |\n|---|---|---|---|\n" + "\n".join(rows)
    print(table)
    machine = f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    section = (
        f"## TF-Inception features: layout, batch and threads ({machine})\n\n"
        f"Written {time.strftime('%Y-%m-%d %H:%M')} UTC by `python benchmarks/bench_features.py "
        f"{' '.join(argv if argv is not None else sys.argv[1:])}`"
        f" ({args.images} images per measurement, {args.rounds} rounds, variants interleaved).\n\n{table}\n"
    )
    prepend_section(Path(args.out), section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
