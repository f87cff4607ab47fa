"""Speed and memory of the RSD engine on one network, in one run.

Measures, for the network of a preset (default: the quickstart's):
  * sampling throughput of the one-step generator (NFE 1) against the teacher's Heun sampler
    (NFE 2·steps − 1 = 35 at 18 steps) on the same network, and their ratio against the NFE ratio;
  * training throughput of one teacher step and of one RSD iteration (fake-score step + generator
    step), and their ratio;
  * peak memory (CUDA: max allocated; CPU: the process's peak resident set).

Prints a Markdown table and writes it, with the machine and the command, to benchmarks/RESULTS.md
(or --out). Usage:

    python benchmarks/bench_speed.py [--preset presets/quickstart.toml] [--batch 64] [--repeats 5] [--step-only]
"""

from __future__ import annotations

import argparse
import copy
import platform
import resource
import sys
import time
from pathlib import Path

import torch
from results_file import prepend_section

from rsd_engine import assembly
from rsd_engine.evaluate.sampling import heun_sample, one_step_generate
from rsd_engine.io import config as cfg
from rsd_engine.models.networks import build_network, count_parameters
from rsd_engine.train.distill import fake_score_loss, generator_loss

ROOT = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _teacher_step_seconds(net, objective, z, device, repeats: int) -> float:
    """Seconds of one teacher training step (loss on y = z/2, backward, Adam lr 1e-5), median of ``repeats`` after a warm-up
    (:func:`_timed`)."""
    opt = torch.optim.Adam(net.parameters(), lr=1e-5)
    y = z * 0.5

    def step():
        loss = objective.loss(net, y).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return _timed(step, device, repeats)


def _timed(fn, device, repeats: int) -> float:
    """Median wall seconds of ``fn()`` over ``repeats`` runs after one warm-up run."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(preset: cfg.Preset, batch: int, repeats: int, device: torch.device, step_only: bool = False) -> list[tuple[str, str]]:
    """Run every measurement (``step_only``: only the bare teacher training step, the figure that
    scales a run's wall time to another machine); returns (quantity, value) rows."""
    torch.manual_seed(0)
    measurement = assembly.build_measurement(preset).to(device)
    objective = assembly.build_objective(preset, measurement)
    net = build_network(preset, measurement.op.cond_channels, measurement.op.cond_kind).to(device)
    shape = (preset.data.channels, preset.data.resolution, preset.data.resolution)
    z = torch.randn(batch, *shape, device=device)
    steps, d = preset.eval.teacher_steps, preset.distill
    rows: list[tuple[str, str]] = [("network parameters", f"{count_parameters(net):,}"), ("batch", str(batch))]
    if step_only:
        t = _teacher_step_seconds(net, objective, z, device, repeats)
        return rows + [("teacher training step, s (images/s)", f"{t:.3f} ({batch / t:.1f})")]

    net.eval()
    with torch.no_grad():
        t_gen = _timed(lambda: one_step_generate(net, z, d.sigma_init), device, repeats)
        nfe = heun_sample(net, z, steps).nfe
        t_heun = _timed(lambda: heun_sample(net, z, steps), device, max(1, repeats // 2))
    rows += [
        ("one-step generator, images/s (NFE 1)", f"{batch / t_gen:.1f}"),
        (f"teacher Heun {steps} steps, images/s (NFE {nfe})", f"{batch / t_heun:.2f}"),
        ("sampling speed-up generator / teacher", f"{t_heun / t_gen:.1f}× (NFE ratio {nfe})"),
    ]

    net.train()
    t_teacher = _teacher_step_seconds(net, objective, z, device, repeats)
    teacher = copy.deepcopy(net).eval().requires_grad_(False)
    fake, gen = copy.deepcopy(net), copy.deepcopy(net)
    opt_f = torch.optim.Adam(fake.parameters(), lr=1e-5, betas=(0.0, 0.999))
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-5, betas=(0.0, 0.999))

    def distill_iteration():
        loss_f = fake_score_loss(gen, fake, objective, z, sigma_init=d.sigma_init)
        loss_f.backward()
        opt_f.step()
        opt_f.zero_grad(set_to_none=True)
        fake.eval().requires_grad_(False)
        step = generator_loss(
            gen,
            teacher,
            fake,
            objective,
            z,
            sigma_init=d.sigma_init,
            alpha=d.alpha,
            t_max=d.t_max,
            rho=preset.network.rho,
            loss_scale=100.0,
        )
        step.loss.backward()
        opt_g.step()
        opt_g.zero_grad(set_to_none=True)
        fake.train().requires_grad_(True)

    t_distill = _timed(distill_iteration, device, repeats)
    rows += [
        ("teacher training step, s (images/s)", f"{t_teacher:.3f} ({batch / t_teacher:.1f})"),
        ("RSD iteration (fake-score + generator step), s (images/s)", f"{t_distill:.3f} ({batch / t_distill:.1f})"),
        ("RSD iteration / teacher step", f"{t_distill / t_teacher:.2f}×"),
        ("peak memory, MiB", f"{_peak_memory_mb(device):.0f} ({'CUDA allocated' if device.type == 'cuda' else 'process RSS'})"),
    ]
    return rows


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    import os

    return (
        f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch "
        f"{torch.__version__}"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print and write the table. Returns 0."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default=str(ROOT / "presets" / "quickstart.toml"))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    ap.add_argument(
        "--step-only",
        action="store_true",
        help="measure only the bare teacher training step (seconds; a machine's speed for scaling run times)",
    )
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    preset = cfg.load(args.preset)
    rows = run(preset, args.batch, args.repeats, device, args.step_only)
    table = "| quantity | value |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *(argv if argv is not None else sys.argv[1:])])
    section = (
        f"## {Path(args.preset).name} on {_machine(device)}\n\n"
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} with `{command}` (median of {args.repeats} runs after a warm-up).\n\n{table}\n"
    )
    print(section)
    prepend_section(Path(args.out), section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
