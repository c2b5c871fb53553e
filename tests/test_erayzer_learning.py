"""Acceptance: a tiny E-RayZer preset trains on the synthetic corpus; the loss falls clearly and NVS PSNR on the
synthetic benchmark (target cameras predicted from the target images, E-RayZer's protocol) beats the mean-colour
baseline. Both are printed."""

from __future__ import annotations

import time

import pytest
import torch

STEPS = 60
RESOLUTION = 16  # the 32^2 corpus, loaded at 16^2: the dense CPU renderer costs pixels x Gaussians per target view


@pytest.mark.slow
def test_tiny_erayzer_learns_beyond_mean_colour(synth_data):
    from rayder_core.data.loader import VideoClipLoader
    from rayder_core.data.manifest import Manifest
    from rayder_core.evaluation.nvs import evaluate_nvs
    from rayder_core.models import build_model
    from rayder_core.eval_config import BenchmarkSpec

    torch.manual_seed(0)
    model = build_model({"family": "erayzer", "preset": "tiny-xs"}).train()
    loader = VideoClipLoader(Manifest.load(synth_data.manifest).shards(1.0), frames=4, fps=2.0, resolution=RESOLUTION,
                             batch_size=4, seed=0, num_workers=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.05)
    gen = torch.Generator().manual_seed(0)
    losses, data, t0 = [], iter(loader), time.monotonic()
    for step in range(STEPS):
        for group in opt.param_groups:
            group["lr"] = 1e-3 * min(1.0, (step + 1) / 10)
        out = model.training_loss(next(data)["x"], generator=gen)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(float(out["loss"].detach()))
    model.eval()
    ev = evaluate_nvs(model, BenchmarkSpec("re10k-synth", str(synth_data.re10k)), resolution=RESOLUTION,
                      device=torch.device("cpu"), use_lpips=False)["values"]
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    print(f"\nE-RayZer tiny-xs, {STEPS} steps at {RESOLUTION}^2 ({time.monotonic() - t0:.0f} s): loss mean of the "
          f"first 10 steps {first:.4f} -> of the last 10 {last:.4f}; PSNR {ev['psnr']:.2f} dB vs mean-colour baseline "
          f"{ev['baseline_psnr']:.2f} dB")
    assert last < 0.5 * first
    assert ev["psnr"] > ev["baseline_psnr"] + 1.0
