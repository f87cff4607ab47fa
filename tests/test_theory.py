"""The linear-Gaussian theory (rsd_engine.theory; docs/method.md, linear-Gaussian theory): the Gaussian
identities behind ``rsd-engine theory`` and a smoke run of the command."""

import json

import numpy as np
import pytest
import torch

from rsd_engine.cli import main
from rsd_engine.evaluate.sampling import heun_sample
from rsd_engine.models.networks import EDMDenoiser
from rsd_engine.theory.experiment import CleanLaw, TheoryConfig, distill_linear, null_direction_drift
from rsd_engine.theory.gaussian import (
    GaussianDenoiser,
    ambient_affine_minimiser,
    gaussian_denoiser,
    gaussian_w2,
    off_subspace_variance,
    principal_angles_deg,
    psd_sqrt,
)
from rsd_engine.train.objectives import ambient_tweedie_loss

F64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny networks: one thread is faster than two contending ones (as ``run_theory`` does)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _low_rank_law(d: int, eigenvalues, seed: int = 0) -> CleanLaw:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return CleanLaw(0.3 * rng.standard_normal(d), q[:, : len(eigenvalues)], np.asarray(eigenvalues, dtype=np.float64))


def test_exact_denoiser_matches_a_monte_carlo_regression():
    """E[x | x + s n] = μ + Σ(Σ + s²I)⁻¹(v − μ): the conditional mean of a Gaussian pair is affine, so
    least squares of x on (v, 1) over many draws estimates it."""
    law = _low_rank_law(3, (1.0, 0.3))
    s = 0.7
    rng = np.random.default_rng(1)
    n = 200_000
    x = law.mean + (rng.standard_normal((n, 2)) * np.sqrt(law.eigenvalues)) @ law.basis.T
    v = x + s * rng.standard_normal((n, 3))
    design = np.hstack([v, np.ones((n, 1))])
    coef, *_ = np.linalg.lstsq(design, x, rcond=None)
    gain_mc, offset_mc = coef[:3].T, coef[3]
    gain = law.cov @ np.linalg.inv(law.cov + s**2 * np.eye(3))
    assert np.abs(gain_mc - gain).max() < 0.01
    assert np.abs(offset_mc - (law.mean - gain @ law.mean)).max() < 0.01
    # the function, the module (any σ shape) and the formula agree
    pts = torch.as_tensor(v[:5])
    ref = torch.as_tensor(law.mean + (v[:5] - law.mean) @ gain.T)
    mean, cov = torch.as_tensor(law.mean), torch.as_tensor(law.cov)
    assert torch.allclose(gaussian_denoiser(pts, mean, cov, s), ref, atol=1e-10)
    net = GaussianDenoiser(mean, cov)
    assert torch.allclose(net(pts, torch.full((5,), s, dtype=F64)), ref, atol=1e-10)
    assert torch.allclose(net(pts.reshape(5, 3, 1, 1), s).reshape(5, 3), ref, atol=1e-10)


class _Affine:
    """D(v; σ) = M v + c on (B, d, 1, 1) tensors, M and c read from a flat parameter vector θ (d² + d,),
    with the loss weight the engine's loss reads (EDM's λ(σ), from an EDMDenoiser)."""

    def __init__(self, theta, d):
        self.m, self.c = theta[: d * d].reshape(d, d), theta[d * d :]
        self.loss_weight = EDMDenoiser(sigma_data=0.5).loss_weight

    def __call__(self, x, sigma):
        v = x.reshape(x.shape[0], -1)
        return (v @ self.m.T + self.c).reshape(x.shape)


def test_ambient_tweedie_minimiser_is_the_clean_law_denoiser_not_the_noisy_one():
    """Minimising the engine's ambient_tweedie_loss over affine D at a fixed s > σ_c, on noisy y only,
    gives Σ(Σ + s²I)⁻¹ (Tweedie on the clean law), not (Σ + σ_c²I)(Σ + σ_c²I + s²I)⁻¹. With the loss's
    own noise draw fixed (seeded), it is exactly quadratic in (M, c): one Newton step finds its minimum."""
    law = _low_rank_law(3, (1.0, 0.3), seed=2)
    sc, s, n = 0.5, 0.8, 200_000
    noisy_cov = law.cov + sc**2 * np.eye(3)
    gen = torch.Generator().manual_seed(0)
    y = torch.as_tensor(law.mean) + torch.randn(n, 3, generator=gen, dtype=F64) @ torch.as_tensor(np.linalg.cholesky(noisy_cov)).T
    y = y.reshape(n, 3, 1, 1)
    sig = torch.full((n,), s)

    def loss(theta):
        torch.manual_seed(1)  # the same top-up noise at every call
        return ambient_tweedie_loss(_Affine(theta, 3), y, sc, sigma=sig).mean()

    theta0 = torch.zeros(12, dtype=F64)
    grad = torch.autograd.functional.jacobian(loss, theta0)
    hess = torch.autograd.functional.hessian(loss, theta0)
    theta = theta0 - torch.linalg.solve(hess, grad)
    assert float(torch.autograd.functional.jacobian(loss, theta).abs().max()) < 1e-6 * float(grad.abs().max())
    m, c = theta[:9].reshape(3, 3).numpy(), theta[9:].numpy()
    clean = law.cov @ np.linalg.inv(law.cov + s**2 * np.eye(3))
    noisy = noisy_cov @ np.linalg.inv(noisy_cov + s**2 * np.eye(3))
    assert np.abs(m - clean).max() < 0.02
    assert np.abs(m - noisy).max() > 0.15
    assert np.abs(c - (law.mean - clean @ law.mean)).max() < 0.02
    # the closed form of the affine minimiser on a finite sample: N(ȳ, Ĉ_y − σ_c² I)
    m_hat, c_hat = ambient_affine_minimiser(y.reshape(n, 3), sc)
    assert np.abs(c_hat - law.cov).max() < 0.02 and np.abs(m_hat - law.mean).max() < 0.01


def test_sid_optimum_recovers_the_clean_law_from_noisy_measurements():
    """A = I: teacher = the Ambient minimiser fitted on noisy y (N(ȳ, (Ĉ_y − σ²I)₊)), fake = the exact
    denoiser of the generator's law; the engine's SiD loss drives a full-rank W to WWᵀ ≈ Σ, dropping σ²I."""
    torch.manual_seed(0)
    d, sc = 6, 0.5
    law = _low_rank_law(d, (1.0, 0.5), seed=3)
    rng = np.random.default_rng(4)
    x = law.mean + (rng.standard_normal((20_000, 2)) * np.sqrt(law.eigenvalues)) @ law.basis.T
    y = x + sc * rng.standard_normal(x.shape)
    m_hat, c_hat = ambient_affine_minimiser(y, sc)
    teacher = GaussianDenoiser(torch.as_tensor(m_hat), torch.as_tensor(c_hat))
    cfg = TheoryConfig(dim=d, rank=2, eigenvalues=(1.0, 0.5), batch=256)
    g = distill_linear(teacher, np.eye(d), sc, d, "gauss", cfg, alpha=1.0, steps=400, lr=1e-2)
    b, ww = (t.numpy() for t in g.moments())
    assert np.linalg.norm(ww - law.cov) < 0.1
    assert np.linalg.norm(ww - (law.cov + sc**2 * np.eye(d))) > 0.5  # the noisy law is far
    assert np.linalg.norm(b - law.mean) < 0.05
    assert off_subspace_variance(ww, law.basis) < 0.02


def test_alpha_above_one_pushes_off_subspace_variance_up_at_small_sigma_t():
    """The drift diagnostic: with exact teacher and fake, α = 1 shrinks variance the clean law lacks,
    α = 1.2 grows it (v = 0.25 per direction) unless σ_t stays above σ_c."""
    law = _low_rank_law(8, (1.0, 0.5), seed=5)
    up, se_up = null_direction_drift(law, 1.2, 0.25, batch=16000)
    down, se_down = null_direction_drift(law, 1.0, 0.25, batch=16000)
    floored, se_f = null_direction_drift(law, 1.2, 0.25, sigma_floor=0.2, batch=16000)
    assert up < -3 * se_up
    assert down > 3 * se_down
    assert floored > 3 * se_f


def test_heun_with_the_exact_clean_denoiser_returns_the_clean_law():
    """The probability-flow ODE carries N(0, σ_max² I) to the law whose exact denoiser drives it, so a
    teacher exact at every σ has no noise in its full samples (up to the Heun discretisation)."""
    law = _low_rank_law(5, (2.0, 0.5), seed=6)
    net = GaussianDenoiser(torch.as_tensor(law.mean), torch.as_tensor(law.cov))
    noise = torch.randn(20_000, 5, 1, 1, generator=torch.Generator().manual_seed(0))
    x = heun_sample(net, noise, steps=64).images.reshape(-1, 5).double().numpy()
    cov = np.cov(x, rowvar=False)
    assert off_subspace_variance(cov, law.basis) < 1e-6
    assert np.abs(cov - law.cov).max() < 0.06
    trunc = heun_sample(net, noise, steps=64, stop_sigma=0.5).images.reshape(-1, 5).double().numpy()
    top = np.sort(np.linalg.eigvalsh(np.cov(trunc, rowvar=False)))[::-1][:2]
    assert np.all(top < law.eigenvalues * 0.97)  # the posterior mean shrinks every eigenvalue


def test_w2_angles_and_off_subspace_variance_on_known_cases():
    a, b = np.array([1.0, 4.0, 0.0]), np.array([4.0, 1.0, 0.25])
    m1, m2 = np.zeros(3), np.array([0.3, 0.0, -0.4])
    expected = np.sqrt(0.25 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert gaussian_w2(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(expected, rel=1e-9)
    assert gaussian_w2(m2, np.diag(b), m2, np.diag(b)) == pytest.approx(0.0, abs=1e-7)
    th = np.radians(30.0)
    e1 = np.array([[1.0], [0.0], [0.0]])
    rot = np.array([[np.cos(th)], [np.sin(th)], [0.0]])
    assert principal_angles_deg(e1, rot)[0] == pytest.approx(30.0, abs=1e-9)
    basis = np.eye(5)[:, :2]
    assert off_subspace_variance(np.diag([3.0, 1.0, 0.0, 0.0, 0.0]) + 0.04 * np.eye(5), basis) == pytest.approx(3 * 0.04)
    assert np.allclose(psd_sqrt(np.diag([4.0, -1e-12])), np.diag([2.0, 0.0]))


def test_theory_quick_cli_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "theory"
    assert main(["theory", "--quick", "--out", str(out), "--seed", "1"]) == 0
    md = (out / "theory.md").read_text(encoding="utf-8")
    res = json.loads((out / "theory.json").read_text(encoding="utf-8"))
    png = (out / "theory.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    for op in ("identity", "mask", "blur"):
        assert f"## A = {op}" in md
    cfg = res["config"]
    per_setting = 2 + 2 * 2 + len(cfg["generators"])
    assert len(res["rows"]) == 3 * 2 * per_setting and cfg["seed"] == 1
    row = next(r for r in res["rows"] if r["model"] == "data y" and r["operator"] == "identity" and r["noise_sigma"] == 0.5)
    # the noisy data keep (d − r)σ² off the clean subspace (sampling error only)
    assert row["clean"]["var_perp"] == pytest.approx((cfg["dim"] - cfg["rank"]) * 0.25, rel=0.15)
    assert "What this run says" in capsys.readouterr().out


def test_results_do_not_depend_on_the_number_of_worker_processes():
    from rsd_engine.theory.experiment import run_theory

    cfg = TheoryConfig.quick(
        operators=("identity",),
        teacher_steps=10,
        distill_steps=5,
        gauss_distill_steps=5,
        n_samples=200,
        drift_variances=(0.04,),
        drift_batch=800,
        hidden=16,
        depth=1,
    )
    one = run_theory(cfg, progress=False, workers=1)
    two = run_theory(cfg, progress=False, workers=2)
    assert len(one["rows"]) == len(two["rows"]) == 2 * (2 + 4 + len(cfg.generators))
    for a, b in zip(one["rows"], two["rows"]):
        assert (a["operator"], a["noise_sigma"], a["model"], a["teacher"]) == (b["operator"], b["noise_sigma"], b["model"], b["teacher"])
        assert a["clean"] == pytest.approx(b["clean"], rel=1e-9, abs=1e-12)
