"""GPU step hygiene without a GPU: the TF32 switch, the runtime record, the new config keys, and the one-command
GPU benchmark's defaults and markdown table (the CUDA run itself needs a lent GPU)."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rayder_core.runtime import apply_gpu_settings, runtime_info
from rayder_core.train_config import load_train_config
from rayder_core.yamlconf import ConfigError


def test_new_keys_do_not_change_the_run_id_and_are_validated():
    base = load_train_config({"steps": 10})
    other = load_train_config({"steps": 10, "tf32": False, "dist_timeout_min": 90, "store_mode": "index",
                               "eval": {"mode": "job"}})
    assert base.run_id == other.run_id  # execution settings, not what is trained
    assert (base.tf32, base.dist_timeout_min, base.store_mode, base.eval.mode) == (True, 30.0, "direct", "inline")
    with pytest.raises(ConfigError, match="store_mode"):
        load_train_config({"store_mode": "nfs"})
    with pytest.raises(ConfigError, match="eval.mode"):
        load_train_config({"eval": {"mode": "later"}})
    with pytest.raises(ConfigError, match="dist_timeout_min"):
        load_train_config({"dist_timeout_min": 0})


def test_tf32_applies_on_cuda_only():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        assert apply_gpu_settings(True, torch.device("cpu")) == {"tf32": None}
        assert torch.backends.cuda.matmul.allow_tf32 is False  # CPU: untouched
        # the switch itself (setting the flags needs no GPU): on, then off again
        assert apply_gpu_settings(True, torch.device("cuda")) == {"tf32": True}
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        assert apply_gpu_settings(False, torch.device("cuda")) == {"tf32": False}
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_runtime_info_names_the_backend_in_use():
    from rayder_core.models.rayder.model import RayDer
    from rayder_core.models.rayder.config import ModelConfig

    model = RayDer(ModelConfig.from_preset("tiny-xs"))
    info = runtime_info(model, torch.device("cpu"), world=2)
    assert info["attention_backend"] == model.backend == "sdpa"
    assert info["natten_fused"] is None and info["tf32"] is None and info["world_size"] == 2
    assert info["torch"] == torch.__version__


def test_benchmark_cuda_defaults_and_markdown(tmp_path):
    import benchmarks.train_step as bench

    def parsed(**given):
        base = dict(presets=None, precisions=None, resolution=None, batch=None, tf32=True, views=None, model=None,
                    threads=None)
        return argparse.Namespace(**{**base, **given})

    saved = torch.backends.cuda.matmul.allow_tf32
    try:
        a = parsed()
        bench._apply_device_defaults(a, torch.device("cuda"))
        assert (a.presets, a.precisions, a.resolution, a.batch) == ("XS,S,B,L", "bf16", 256, 1)
        b = parsed(presets="S", batch=2)
        bench._apply_device_defaults(b, torch.device("cuda"))
        assert (b.presets, b.batch, b.resolution) == ("S", 2, 256)  # given values win
        c = parsed()
        bench._apply_device_defaults(c, torch.device("cpu"))
        assert (c.presets, c.precisions, c.resolution, c.batch) == (
            "tiny-xs,tiny-2x128,tiny-2x256,tiny-s,tiny-b,tiny-l", "fp32,bf16", 32, 4)
        # CPU defaults are the demo's runs: 4 views, patch 2 without NA layers, one thread per run
        assert (c.views, c.model, c.threads) == (4, ["patch=2", "local_layers=false"], 1)
        assert (a.views, a.model, a.threads) == (8, [], None)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    # markdown: one row per (preset, precision); MFU = achieved / denominator
    args = argparse.Namespace(resolution=256, views=8, batch=1, steps=5, warmup=2, peak_tflops=None)
    sec, fl, peak = 0.25, 3.0e12, 8.0e14
    rows = [("XS", "bf16", sec, 1 / sec, fl, fl / sec, fl / sec / peak)]
    path = tmp_path / "mfu.md"
    bench.write_markdown(str(path), rows, args=args, device=torch.device("cpu"), peaks={"bf16": peak}, settings={})
    table = [line for line in path.read_text().splitlines() if line.startswith("| XS")]
    assert len(table) == 1
    cells = [c.strip() for c in table[0].strip("|").split("|")]
    assert cells[:2] == ["XS", "bf16"] and float(cells[2]) == pytest.approx(sec)
    assert float(cells[5]) == pytest.approx(fl / sec / 1e9, rel=1e-3)  # GFLOP/s on CPU
    assert float(cells[6].rstrip("%")) == pytest.approx(100 * fl / sec / peak, abs=0.05)
    assert re.search(r"\| preset \| precision \|", path.read_text())


def test_train_step_benchmark_needs_no_video_decoder():
    """The GPU benchmark (`--compile` included) runs where PyAV is not installed (a bare GPU machine): importing it
    and its compile helper must not pull in the data loader. `sys.modules['av'] = None` makes `import av` fail."""
    code = ("import sys; sys.modules['av'] = None\n"
            "import benchmarks.train_step as bench\n"
            "assert bench.compile_layers.__module__ == 'rayder_core.runtime'\n"
            "print('imported without av')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "imported without av" in proc.stdout
