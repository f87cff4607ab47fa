"""Metrics: the quantiser, FID/KID through torchmetrics with the offline TF-Inception, PSNR/SSIM,
the reference cache (docs/method.md §4.2)."""

import pytest
import torch

from rsd_engine.evaluate import metrics as M


def test_quantiser_maps_the_range_ends_and_centre():
    x = torch.tensor([-1.0, 0.0, 1.0, -3.0, 3.0, 0.5])
    assert M.quantize(x).tolist() == [0, 128, 255, 0, 255, 191]


def test_quantiser_inverts_the_loaders_uint8_to_float():
    from rsd_engine.data import to_float

    u = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(M.quantize(to_float(u)), u)


def test_fid_of_a_set_with_itself_is_zero_and_different_sets_positive():
    torch.manual_seed(0)
    a = torch.randn(300, 64)
    assert abs(M.fid_from_features(a, a)) < 1e-6
    assert M.fid_from_features(a, torch.randn(300, 64) + 1.0) > 10


def test_fid_is_finite_for_many_features_with_large_means():
    torch.manual_seed(0)
    a = torch.randn(30_000, 2048) + 1e3
    v = M.fid_from_features(a, a + 0.01)
    # same covariance, means 0.01 apart in each of 2048 dims: FID = 2048 · 0.01² exactly
    assert abs(v - 0.2048) < 0.01


def test_too_few_samples_is_a_clear_error():
    with pytest.raises(M.TooFewSamples, match="at least 2"):
        M.fid_from_features(torch.randn(10, 8), torch.randn(1, 8))


def test_kid_is_deterministic_and_near_zero_for_same_distribution():
    torch.manual_seed(0)
    a, b = torch.randn(200, 32), torch.randn(200, 32)
    k1 = M.kid_from_features(a, b, subset_size=50)
    k2 = M.kid_from_features(a, b, subset_size=50)
    assert k1 == k2 and abs(k1[0]) < 0.05


def test_missing_weights_name_the_path(tmp_path):
    with pytest.raises(M.FIDWeightsError, match="nowhere.pt"):
        M.find_fid_weights(str(tmp_path / "nowhere.pt"))


def test_default_weights_are_found_offline():
    assert M.find_fid_weights().name == "default_1.pt"


def test_inception_features_and_deterministic_fid():
    net = M.load_feature_network()
    torch.manual_seed(0)
    imgs = torch.randint(0, 256, (4, 1, 32, 32), dtype=torch.uint8)
    f1, f2 = M.extract_features(net, imgs, 2), M.extract_features(net, imgs, 4)
    assert f1.shape == (4, 2048)
    assert torch.allclose(f1, f2, atol=1e-4)  # batch size does not change features
    assert M.fid_from_features(f1, f1) == pytest.approx(0.0, abs=1e-3)


def test_reference_cache_is_keyed_by_identity(tmp_path):
    net = M.load_feature_network()
    calls = []

    def images():
        calls.append(1)
        return torch.zeros(2, 1, 16, 16, dtype=torch.uint8)

    a = M.cached_features("set-a", images, net, tmp_path)
    b = M.cached_features("set-a", images, net, tmp_path)
    M.cached_features("set-b", images, net, tmp_path)
    assert torch.equal(a, b) and len(calls) == 2


def test_psnr_of_a_known_error():
    psnr, ssim = M.psnr_ssim(torch.full((2, 1, 16, 16), 0.1), torch.zeros(2, 1, 16, 16))
    assert psnr == pytest.approx(26.0206, abs=1e-3)
    assert M.psnr_ssim(torch.zeros(1, 1, 16, 16) + 0.3, torch.zeros(1, 1, 16, 16) + 0.3)[1] == pytest.approx(1.0)
