"""The operator contract, checked: what ``rsd-engine check-operator`` prints and what the test suite runs
over every built-in operator and the example plug-in (docs/operators.md).

Each check returns a :class:`CheckResult` with its figure. Inputs are images in [-1, 1] of the preset's
shape; the float64 checks move the operator with ``.to(torch.float64)``, so they also show that its
fixed parts are buffers.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..train.objectives import family_of
from .base import Condition, Operator
from .measurement import Measurement

__all__ = ["CheckResult", "CHECKS", "run_checks", "format_table", "ADJOINT_TOLERANCE"]

#: Largest relative error of linearity and of ⟨Ax, y⟩ = ⟨x, Aᵀy⟩ accepted in float64.
ADJOINT_TOLERANCE = 1e-6
#: Batch of the timing check.
TIMING_BATCH = 64


@dataclass(frozen=True)
class CheckResult:
    """One line of the conformance table: the check's name, whether it passed, its figure (text)."""

    name: str
    passed: bool
    figure: str


def _inputs(op: Operator, batch: int, seed: int, dtype=torch.float32) -> torch.Tensor:
    rng = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, op.channels, op.resolution, op.resolution, generator=rng, dtype=torch.float64) * 2 - 1).to(dtype)


def _params(op: Operator, batch: int, seed: int, dtype=None) -> dict[str, torch.Tensor]:
    params = op.sample_params(batch, torch.Generator().manual_seed(seed))
    if dtype is None:
        return params
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in params.items()}


def check_shape(op: Operator) -> CheckResult:
    """A(x) has shape (B, *output_shape()) and the input's dtype (float32)."""
    y = op(_inputs(op, 2, 0), **_params(op, 2, 0))
    expected = (2, *op.output_shape())
    ok = tuple(y.shape) == expected and y.dtype == torch.float32
    return CheckResult(
        "shape and dtype", ok, f"{tuple(y.shape)} {str(y.dtype).removeprefix('torch.')}" + ("" if ok else f", declared {expected} float32")
    )


def check_finite(op: Operator) -> CheckResult:
    """A(x) and the gradient of ⟨A(x), r⟩ with respect to x are finite for x uniform in [-1, 1]."""
    x = _inputs(op, 4, 1).requires_grad_(True)
    y = op(x, **_params(op, 4, 1))
    (y * torch.randn(y.shape, generator=torch.Generator().manual_seed(2))).sum().backward()
    grad = x.grad
    ok = bool(torch.isfinite(y).all()) and grad is not None and bool(torch.isfinite(grad).all())
    figure = f"max|A(x)| = {y.detach().abs().max().item():.3g}, " + (
        "no gradient reaches x" if grad is None else f"max|grad| = {grad.abs().max().item():.3g}"
    )
    return CheckResult("finite outputs and gradients", ok, figure)


def check_seeding(op: Operator) -> CheckResult:
    """The same image index gives the same measurement and parameters; other indices differ where A is random."""
    m = Measurement(op, 0.0, seed=7)
    x = _inputs(op, 1, 3).expand(2, -1, -1, -1).contiguous()
    y1, p1 = m.frozen(x, [3, 4])
    y2, p2 = m.frozen(x, [3, 4])
    same = torch.equal(y1, y2) and p1.keys() == p2.keys() and all(torch.equal(p1[k], p2[k]) for k in p1)
    if not p1:
        return CheckResult(
            "seed determinism", same, "deterministic A (no random parameters)" if same else "the same index gave different measurements"
        )
    differs = [k for k in p1 if not torch.equal(p1[k][0], p1[k][1])]
    ok = same and len(differs) == len(p1)
    equal = [k for k in p1 if k not in differs]
    figure = f"same index: {'identical' if same else 'DIFFERENT'}; indices 3, 4 drew different {', '.join(differs) or 'nothing'}"
    figure += f"; the same {', '.join(equal)}" if equal else ""
    return CheckResult("seed determinism", ok, figure)


def _float64(op: Operator) -> Operator:
    """A float64 copy of ``op`` (complex buffers as complex128), as ``.to(torch.float64)`` would give for a
    real operator; ``op`` itself is left as it is."""
    return copy.deepcopy(op)._apply(
        lambda t: t.to(torch.complex128) if t.is_complex() else t.to(torch.float64) if t.is_floating_point() else t
    )


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


def check_linearity(op: Operator) -> CheckResult:
    """‖A(a·x + b·z) − a·A(x) − b·A(z)‖ / ‖a·A(x) + b·A(z)‖ in float64, for linear operators."""
    if not op.linear:
        return CheckResult("linearity (float64)", True, "not linear: skipped")
    op64 = _float64(op)
    p = _params(op64, 2, 4, torch.float64)
    x, z = _inputs(op64, 2, 5, torch.float64), _inputs(op64, 2, 6, torch.float64)
    lhs = op64(0.7 * x - 1.3 * z, **p)
    rhs = 0.7 * op64(x, **p) - 1.3 * op64(z, **p)
    err = ((lhs - rhs).norm() / rhs.norm().clamp(min=1e-300)).item()
    return CheckResult("linearity (float64)", err <= ADJOINT_TOLERANCE, f"relative error {err:.2e}")


def check_adjoint(op: Operator) -> CheckResult:
    """|⟨A x, y⟩ − ⟨x, Aᵀ y⟩| / max(|⟨A x, y⟩|, |⟨x, Aᵀ y⟩|) in float64, for linear operators."""
    if not op.linear:
        return CheckResult("adjointness (float64)", True, "not linear: skipped")
    op64 = _float64(op)
    p = _params(op64, 2, 7, torch.float64)
    x = _inputs(op64, 2, 8, torch.float64)
    y = torch.randn(2, *op64.output_shape(), dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        lhs = (op64(x, **p) * y).sum().item()
        rhs = (x * op64.adjoint(y, **p)).sum().item()
    err = _rel(lhs, rhs)
    return CheckResult(
        "adjointness (float64)", err <= ADJOINT_TOLERANCE, f"⟨Ax,y⟩ = {lhs:.6g}, ⟨x,Aᵀy⟩ = {rhs:.6g}, relative error {err:.2e}"
    )


def check_buffers(op: Operator) -> CheckResult:
    """Every tensor the operator holds is a buffer or parameter, and ``.to(dtype)`` moves them all
    (a float64 input then gives a float64 measurement; complex buffers become complex128). On a machine
    with a GPU, ``.to("cuda")`` moves them too and a measurement on the GPU stays there."""
    loose = [name for name, v in vars(op).items() if isinstance(v, torch.Tensor)]
    op64 = _float64(op)
    stale = [
        n
        for n, b in op64.named_buffers()
        if (b.is_floating_point() and b.dtype != torch.float64) or (b.is_complex() and b.dtype != torch.complex128)
    ]
    y = op64(_inputs(op64, 1, 10, torch.float64), **_params(op64, 1, 10, torch.float64))
    ok = not loose and not stale and y.dtype == torch.float64
    if torch.cuda.is_available():
        gpu = copy.deepcopy(op).to("cuda")
        yg = gpu(_inputs(op, 1, 10).cuda(), **{k: v.cuda() for k, v in _params(op, 1, 10).items()})
        stale += [n for n, b in gpu.named_buffers() if b.device.type != "cuda"]
        ok = ok and yg.device.type == "cuda" and not stale
    n = len(list(op.buffers()))
    parts = [f"{n} buffer{'s' if n != 1 else ''}", f"float64 in → {str(y.dtype).removeprefix('torch.')} out"]
    if loose:
        parts.append(f"tensors not registered as buffers: {', '.join(loose)}")
    if stale:
        parts.append(f"buffers left behind by .to(): {', '.join(stale)}")
    return CheckResult("buffers follow .to()", ok, "; ".join(parts))


def check_condition(op: Operator) -> CheckResult:
    """Operators with mask channels (``cond_channels`` > 0) return a :class:`Condition` whose channels are
    (B, cond_channels, H, W), whose SiD mask is ``None`` or (B, 1, H, W) of 0/1, and whose projection
    keeps the image's shape (a pixel mask: x ⊙ mask; k-space: never longer than x); the parameters its
    objective family needs are drawn, and a pixel mask equals the condition's channels."""
    p = _params(op, 3, 11)
    if op.cond_channels == 0:
        ok = op.condition(**p) is None
        return CheckResult("mask condition", ok, "no mask channels" + ("" if ok else ", but condition() is not None"))
    c = op.condition(**p)
    problems = []
    if not isinstance(c, Condition):
        return CheckResult("mask condition", False, f"condition() returned {type(c).__name__}, not a Condition")
    res = op.resolution
    if tuple(c.channels.shape) != (3, op.cond_channels, res, res):
        problems.append(f"channels {tuple(c.channels.shape)} ≠ {(3, op.cond_channels, res, res)}")
    sid = c.sid_mask
    if sid is not None and (tuple(sid.shape) != (3, 1, res, res) or not set(sid.unique().tolist()) <= {0.0, 1.0}):
        problems.append(f"SiD mask {tuple(sid.shape)} not (3, 1, {res}, {res}) of 0/1")
    x = _inputs(op, 3, 12)
    px = c.project(x)
    if px.shape != x.shape:
        problems.append(f"project gives {tuple(px.shape)}")
    elif op.cond_kind == "pixel_mask" and not torch.allclose(px, x * c.channels):
        problems.append("project(x) is not x ⊙ mask channel (pixel mask)")
    elif op.cond_kind != "pixel_mask" and px.norm() > x.norm() * (1 + 1e-5):
        problems.append(f"project enlarges x (‖Px‖/‖x‖ = {(px.norm() / x.norm()).item():.4f})")
    missing = [k for k in family_of(op).needs if k not in p]
    if missing:
        problems.append(f"family {op.objective_family} needs the parameters {', '.join(missing)} from sample_params")
    elif op.cond_kind == "pixel_mask" and "mask" in p and not torch.equal(c.channels, p["mask"]):
        problems.append("the 'mask' parameter differs from the condition's channels")
    seen = "project(x) = x ⊙ mask" if op.cond_kind == "pixel_mask" else "‖Px‖ ≤ ‖x‖"
    return CheckResult(
        "mask condition", not problems, "; ".join(problems) or f"{type(c).__name__}: channels {tuple(c.channels.shape)}, {seen}"
    )


def check_timing(op: Operator) -> CheckResult:
    """Wall time of drawing the parameters and measuring a batch of 64 images (median of 3; always passes)."""
    x = _inputs(op, TIMING_BATCH, 13)
    times = []
    with torch.no_grad():
        for _ in range(3):
            t0 = time.perf_counter()
            op(x, **op.sample_params(TIMING_BATCH, torch.Generator().manual_seed(14)))
            times.append(time.perf_counter() - t0)
    return CheckResult(f"time per batch of {TIMING_BATCH}", True, f"{sorted(times)[1] * 1e3:.1f} ms")


#: Every check, in the order of the table.
CHECKS: tuple[Callable[[Operator], CheckResult], ...] = (
    check_shape,
    check_finite,
    check_seeding,
    check_linearity,
    check_adjoint,
    check_buffers,
    check_condition,
    check_timing,
)


def run_checks(op: Operator) -> list[CheckResult]:
    """Run :data:`CHECKS` on ``op`` (float32, CPU). A check that raises fails with the exception as its figure."""
    out = []
    for check in CHECKS:
        try:
            out.append(check(op))
        except Exception as e:  # noqa: BLE001 - one failing line instead of a traceback
            out.append(CheckResult(check.__name__.removeprefix("check_"), False, f"raised {type(e).__name__}: {e}"))
    return out


def format_table(results: list[CheckResult]) -> str:
    """The results as a text table, one line per check: ``PASS``/``FAIL``, name, figure."""
    width = max(len(r.name) for r in results)
    return "\n".join(f"{'PASS' if r.passed else 'FAIL'}  {r.name:<{width}}  {r.figure}" for r in results)
