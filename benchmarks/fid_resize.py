"""How much the 299×299 resize moves FID: torch's bilinear ``interpolate`` (half-pixel centres, what the
engine used before) against TF1's bilinear resize (what the detector behind EDM's reference statistics
does, :func:`rsd_engine.evaluate.metrics.tf1_resize`), on the same images and the same TF-Inception weights,
and the feature throughput with and without a channels-last input.

    PYTHONPATH=. python3 benchmarks/fid_resize.py --n 300

Pairs measured (Fashion-MNIST at 32×32, grey replicated to RGB): clean test images against clean
training images (a small FID, mostly the n bias) and against the same test images with Gaussian noise
σ = 0.2 (a large FID). Prints one line per pair and the relative change.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from rsd_engine.data import read_images, to_float
from rsd_engine.evaluate.metrics import feature_statistics, fid_from_statistics, load_feature_network, quantize, tf1_resize


def features(net, images_u8: torch.Tensor, resize: str, batch: int, channels_last: bool = True) -> tuple[torch.Tensor, float]:
    """(N, 2048) features with the given resize, and images per second."""
    out, start = [], time.perf_counter()
    with torch.inference_mode():
        for s in range(0, images_u8.shape[0], batch):
            x = images_u8[s : s + batch].to(torch.float32).expand(-1, 3, -1, -1)
            x = tf1_resize(x) if resize == "tf1" else F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
            x = (x - 128.0) / 128.0
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            out.append(net.net(x).float())
    return torch.cat(out), images_u8.shape[0] / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--batch", type=int, default=50)
    args = ap.parse_args()
    torch.manual_seed(0)
    net = load_feature_network()
    test = read_images("fashion-mnist", None, "test", 1, 32, args.n)
    train = read_images("fashion-mnist", None, "train", 1, 32, args.n)
    noisy = quantize((to_float(test) + 0.2 * torch.randn(test.shape)).clamp(-1, 1))
    sets = {"test": test, "train": train, "noisy": noisy}
    feats, speed = {}, {}
    for resize in ("torch", "tf1"):
        for name, images in sets.items():
            feats[resize, name], speed[resize, name] = features(net, images, resize, args.batch)
    _, speed["tf1", "contiguous"] = features(net, test, "tf1", args.batch, channels_last=False)
    for other in ("train", "noisy"):
        fid = {}
        for resize in ("torch", "tf1"):
            mu, sigma = feature_statistics(feats[resize, "test"])
            fid[resize] = fid_from_statistics(mu, sigma, feats[resize, other])
        print(
            f"FID(test, {other}) n={args.n}: torch bilinear {fid['torch']:.4f}, TF1 bilinear {fid['tf1']:.4f}, "
            f"relative change {abs(fid['tf1'] - fid['torch']) / fid['tf1'] * 100:.2f} %"
        )
    print(
        f"features: {speed['tf1', 'test']:.1f} img/s channels-last, {speed['tf1', 'contiguous']:.1f} img/s contiguous "
        f"(batch {args.batch}, {torch.get_num_threads()} threads)"
    )


if __name__ == "__main__":
    main()
