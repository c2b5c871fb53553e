"""A new user's first hour (issue 15): the card's commands work verbatim on a demo-like store.

The store is written through `ResultsStore` the way the demo fills it: 4 tiny presets x 3 data fractions on the
synthetic benchmark `re10k-synth`, 4 evaluated checkpoints per run, psnr/mse/ssim evaluated and LPIPS recorded as
missing with its reason. `rayder-fit --metric mse --bench re10k` must resolve `re10k` to `re10k-synth`, say so, and fit
the frontier; the number of frontier points is checked against a brute-force frontier computed here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fitting.cli import main as fit_main
from rayder_core.store import BenchLookupError, ResultsStore

PRESETS = {"tiny-xs": 1.0, "tiny-s": 1.9, "tiny-b": 3.6, "tiny-l": 7.3}  # GFLOP per step (relative sizes)
FRACTIONS = {0.01: 20, 0.1: 200, 1.0: 2000}
STEPS = (30, 60, 90, 120)
LPIPS_REASON = "VGG16 ImageNet weights not found in /root/.cache/torch/hub/checkpoints/vgg16-397923af.pth"


def _demo_like_store(db: Path, bench: str = "re10k-synth", extra_bench: str | None = None) -> list[dict]:
    """Write a demo-shaped store; return the (run_id, D, C, mse) points it holds for `bench`."""
    rng = np.random.default_rng(0)
    store = ResultsStore(db)
    pts = []
    with store.batch():
        for preset, gflop_per_step in PRESETS.items():
            for frac, D in FRACTIONS.items():
                run_id = f"demo-{preset}-f{frac}"
                store.upsert_run(run_id, sweep="demo", preset=preset, params=int(gflop_per_step * 1e6),
                                 fraction=frac, D=D, config={}, status="finished")
                for step in STEPS:
                    C = gflop_per_step * step
                    mse = 0.07 + 0.5 * C ** -0.3 + 0.2 * D ** -0.2 + 0.002 * rng.standard_normal()
                    store.add_checkpoint(run_id, step=step, samples=2 * step, flops=C * 1e9, wall_time_s=step)
                    values = {"mse": mse, "psnr": -10 * np.log10(mse / 4), "ssim": 0.5 - mse}
                    store.add_evals(run_id, step, bench=bench, values=values, n=4, missing={"lpips": LPIPS_REASON})
                    if extra_bench:
                        store.add_evals(run_id, step, bench=extra_bench, values={"mse": mse}, n=4)
                    pts.append(dict(run_id=run_id, D=D, C=C, mse=mse))
    return pts


def _brute_force_frontier_size(pts: list[dict]) -> int:
    """Per D: a point is on the frontier when no point with C' <= C (same D) has a lower or equal metric."""
    n = 0
    for p in pts:
        same_d = [q for q in pts if q["D"] == p["D"] and q is not p]
        if all(not (q["C"] <= p["C"] and q["mse"] <= p["mse"]) for q in same_d):
            n += 1
    return n


def test_card_fit_command_resolves_the_benchmark_family(tmp_path, capsys, monkeypatch):
    pts = _demo_like_store(tmp_path / "results.duckdb")
    monkeypatch.chdir(tmp_path)  # the card's command uses the default --db results.duckdb
    assert fit_main(["--metric", "mse", "--bench", "re10k", "--bootstrap", "20", "--starts", "4", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "--bench re10k -> using benchmark 're10k-synth'" in err
    rec = json.loads(out)
    assert rec["bench"] == "re10k-synth" and rec["formula"].startswith("MSE(C,D) ~ ")
    assert rec["n_points"] == _brute_force_frontier_size(pts)
    fits = ResultsStore(tmp_path / "results.duckdb").fits(metric="mse")
    assert list(fits["bench"]) == ["re10k-synth"]


def test_exact_bench_name_is_used_as_is(tmp_path):
    _demo_like_store(tmp_path / "r.duckdb")
    store = ResultsStore(tmp_path / "r.duckdb")
    assert store.resolve_bench("re10k-synth", "mse") == "re10k-synth"
    assert store.resolve_bench("RE10K", "psnr") == "re10k-synth"


def test_wrong_bench_lists_what_the_store_has(tmp_path, capsys):
    db = tmp_path / "r.duckdb"
    _demo_like_store(db)
    assert fit_main(["--metric", "mse", "--bench", "dl3dv", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "has no mse evaluations on bench 'dl3dv'" in err
    n = len(PRESETS) * len(FRACTIONS) * len(STEPS)
    assert f"re10k-synth: lpips 0 (+{n} missing), mse {n}, psnr {n}, ssim {n}" in err
    assert "Traceback" not in err


def test_metric_recorded_only_as_missing_gives_the_reason(tmp_path):
    db = tmp_path / "r.duckdb"
    _demo_like_store(db)
    with pytest.raises(BenchLookupError, match="recorded as missing on re10k-synth, e.g. VGG16 ImageNet weights"):
        ResultsStore(db).resolve_bench("re10k", "lpips")


def test_ambiguous_family_lists_both(tmp_path, capsys):
    db = tmp_path / "r.duckdb"
    _demo_like_store(db, extra_bench="re10k-real")
    assert fit_main(["--metric", "mse", "--bench", "re10k", "--db", str(db)]) == 2
    err = capsys.readouterr().err
    assert "ambiguous" in err and "re10k-real, re10k-synth" in err
    n = len(PRESETS) * len(FRACTIONS) * len(STEPS)
    assert f"re10k-real: mse {n}" in err
    # psnr exists on one of them only, so the family is not ambiguous for psnr
    assert ResultsStore(db).resolve_bench("re10k", "psnr") == "re10k-synth"


def test_empty_store_says_so(tmp_path):
    db = tmp_path / "r.duckdb"
    ResultsStore(db).initialise()
    with pytest.raises(BenchLookupError, match="no evaluations at all"):
        ResultsStore(db).resolve_bench("re10k", "mse")


@pytest.mark.slow
def test_card_fit_command_verbatim_console_script(tmp_path):
    """`rayder-fit --metric mse --bench re10k` exactly as printed on the card (default 1000 bootstraps)."""
    _demo_like_store(tmp_path / "results.duckdb")
    exe = Path(sys.executable).with_name("rayder-fit")
    proc = subprocess.run([str(exe), "--metric", "mse", "--bench", "re10k"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr
    assert "re10k-synth" in proc.stderr and "MSE(C,D) ~ " in proc.stdout


def test_card_status_command_verbatim(capsys, monkeypatch):
    """`rayder-sweep status sweeps/demo.yaml` from the repository root: one row per demo run, exit code 0."""
    from sweeps.launcher import main as sweep_main

    from sweeps.spec import load_spec

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    ids = [c.run_id for c in load_spec("sweeps/demo.yaml").runs()]
    assert sweep_main(["status", "sweeps/demo.yaml"]) == 0
    out = capsys.readouterr().out
    assert f"({len(ids)} runs)" in out and all(run_id in out for run_id in ids)


@pytest.mark.slow
def test_card_report_command_verbatim(tmp_path):
    """`rayder-report` exactly as printed on the card, on the demo-shaped store: writes reports/out/study.pdf."""
    pytest.importorskip("matplotlib")
    _demo_like_store(tmp_path / "results.duckdb")
    exe = Path(sys.executable).with_name("rayder-report")
    proc = subprocess.run([str(exe)], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "reports" / "out" / "study.pdf").stat().st_size > 10_000
    assert "re10k-synth" in proc.stdout
