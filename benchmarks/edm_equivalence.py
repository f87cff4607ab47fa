"""Our import of EDM-format pickles against EDM's own network, numerically.

Needs a checkout of EDM's repository (github.com/NVlabs/edm) outside this one, given with --edm; nothing
of it is copied here. For DDPM++ and NCSN++ networks of a few sizes (the full 55.7M-parameter CIFAR-10
DDPM++ included), it builds EDM's persistence-wrapped ``EDMPrecond`` with EDM's code, moves every weight
off its initial value, pickles ``dict(ema=...)`` as EDM's training loop does, imports the file with
:func:`rsd_engine.load_edm_teacher` (which runs none of its code) and compares D(x; σ) of both on random
inputs at 12 σ from 0.002 to 80. Prints max |D_ours − D_EDM| / max |D_EDM| per σ and the largest one.

    PYTHONPATH=. python3 benchmarks/edm_equivalence.py --edm /tmp/edm
"""

from __future__ import annotations

import argparse
import copy
import pickle
import sys
import tempfile
from pathlib import Path

import torch

from rsd_engine import load_edm_teacher
from rsd_engine.models.networks import SongUNetPrecond


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--edm", required=True, type=Path, help="a checkout of NVlabs/edm")
    args = ap.parse_args()
    sys.path.insert(0, str(args.edm))
    import dnnlib  # EDM's

    worst = 0.0
    for arch in ("ddpmpp", "ncsnpp"):
        sizes = [(16, [1, 2, 2], 3, 32, 2), (32, [2, 2, 2], 1, 32, 2)] + ([(32, [2, 2, 2], 3, 128, 4)] if arch == "ddpmpp" else [])
        for res, mult, ch, mc, blocks in sizes:
            torch.manual_seed(0)
            edm = dnnlib.util.construct_class_by_name(
                class_name="training.networks.EDMPrecond",
                img_resolution=res,
                img_channels=ch,
                label_dim=0,
                use_fp16=False,
                model_type="SongUNet",
                decoder_type="standard",
                model_channels=mc,
                channel_mult=mult,
                num_blocks=blocks,
                attn_resolutions=[16] if mc == 128 else [8, 16] if res == 32 else [8],
                dropout=0.13,
                augment_dim=9,
                **SongUNetPrecond.VARIANTS[arch],
            )
            with torch.no_grad():
                for p in edm.parameters():
                    p.add_(0.05 * torch.randn_like(p))
            ema = copy.deepcopy(edm).eval().requires_grad_(False)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "network-snapshot.pkl"
                with open(path, "wb") as f:
                    pickle.dump(dict(ema=ema, loss_fn=None, augment_pipe=None, dataset_kwargs=dnnlib.EasyDict(path="x.zip")), f)
                ours = load_edm_teacher(path)
            sigma = torch.logspace(torch.log10(torch.tensor(0.002)), torch.log10(torch.tensor(80.0)), 12)
            x = torch.randn(12, ch, res, res) * sigma.view(-1, 1, 1, 1) + torch.rand(12, ch, res, res) * 2 - 1
            with torch.no_grad():
                ref, got = ema(x, sigma), ours(x, sigma)
            rel = (got - ref).abs().flatten(1).amax(1) / ref.abs().flatten(1).amax(1)
            worst = max(worst, rel.max().item())
            print(
                f"{arch} {res}×{res}×{ch}, {sum(p.numel() for p in ours.parameters()):,} parameters: "
                + " ".join(f"σ={s:.3g}:{r:.1e}" for s, r in zip(sigma.tolist(), rel.tolist()))
            )
    print(f"largest relative difference: {worst:.2e}")
    return 0 if worst < 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
