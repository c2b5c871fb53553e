"""Evaluation robust to bad data: a corrupt scene (truncated JPEG) or a broken chunk is skipped with one line and
counted; a bad ground-truth camera record does not matter to NVS (never read); nothing left -> a clear error."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from rayder_core.data import evalsets as B
from rayder_core.evaluation.nvs import evaluate_nvs
from rayder_core.models.rayder.model import RayDer
from rayder_core.models.rayder.config import ModelConfig
from rayder_core.store import ResultsStore
from rayder_core.eval_config import BenchmarkSpec
from test_data_evalsets import scene

INDEX = {"context": [0, 4], "target": [1, 2, 3]}


def _bench(root, keys, corrupt=(), bad_camera=(), seed=0):
    rng = np.random.default_rng(seed)
    B.write_re10k_chunks([scene(k, rng) for k in keys], root, "test")
    path = root / "test" / "000000.torch"
    chunk = torch.load(path, weights_only=True)
    for item in chunk:
        if item["key"] in corrupt:  # truncated JPEG of the first target view
            item["images"][1] = item["images"][1][:40].clone()
        if item["key"] in bad_camera:  # NaN camera record (ground truth that NVS never uses)
            item["cameras"][:] = float("nan")
    torch.save(chunk, path)
    B.write_evaluation_index({k: INDEX for k in keys}, root / "evaluation_index.json")
    return root


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return RayDer(ModelConfig.from_preset("tiny-xs")).eval()


def test_corrupt_scene_is_skipped_and_counted(tmp_path, model, capsys):
    keys = ["a", "b", "c", "d"]
    bad = _bench(tmp_path / "bad", keys, corrupt={"b"}, bad_camera={"c"})
    good = _bench(tmp_path / "good", keys)  # same images (same seed), no damage
    # the same benchmark without the corrupt scene: an independent reference for the aggregated numbers
    B.write_evaluation_index({k: INDEX for k in ["a", "c", "d"]}, tmp_path / "good" / "sub_index.json")
    kw = dict(resolution=32, device=torch.device("cpu"), use_lpips=False, rank=0, world=1)
    out = evaluate_nvs(model, BenchmarkSpec("bad", str(bad)), **kw)
    assert "skipped 1 unreadable scene(s), e.g. b" in capsys.readouterr().err
    ref = evaluate_nvs(model, BenchmarkSpec("ref", str(good), index=str(good / "sub_index.json")), **kw)
    assert out["n"] == 3 and out["skipped"] == 1 and ref["n"] == 3 and ref["skipped"] == 0
    assert [s["scene"] for s in out["scenes"]] == ["a", "c", "d"]  # c (NaN cameras) is evaluated
    for m in ("psnr", "mse", "ssim"):
        assert out["values"][m] == pytest.approx(ref["values"][m], rel=1e-6)
    store = ResultsStore(tmp_path / "r.duckdb")
    store.add_evals("run", 1, bench="bad", values=out["values"], n=out["n"], skipped=out["skipped"])
    ev = store.evals("run")
    assert set(ev["n"]) == {3} and set(ev["skipped"]) == {1}


def test_unreadable_chunk_and_nothing_left(tmp_path, model):
    root = _bench(tmp_path / "b", ["a", "b"])
    (root / "test" / "000000.torch").write_bytes(b"not a torch file")
    bench = B.Re10kBenchmark(root, resolution=32, skip_bad=True, cameras=False)
    assert list(bench) == [] and sorted(k for k, _ in bench.skipped) == ["a", "b"]
    with pytest.raises(Exception):
        list(B.Re10kBenchmark(root, resolution=32))  # strict reading still raises
    with pytest.raises(ValueError, match=r"no scenes to evaluate \(2 skipped as unreadable\)"):
        evaluate_nvs(model, BenchmarkSpec("b", str(root)), resolution=32, device=torch.device("cpu"),
                     use_lpips=False, rank=0, world=1)


def test_shards_count_skips_once(tmp_path):
    root = _bench(tmp_path / "b", ["a", "b", "c", "d"], corrupt={"c"})
    total = []
    for lo, hi in ((0, 2), (2, 4)):
        bench = B.Re10kBenchmark(root, resolution=32, skip_bad=True, cameras=False)
        got = [(i, s.key) for i, s in bench.scenes(lo, hi)]
        total += bench.skipped
        assert all(lo <= i < hi for i, _ in got)
    assert [k for k, _ in total] == ["c"]


def test_probe_set_with_a_bad_sequence(tmp_path, model):
    """A probe sequence with a NaN camera record and one with a missing file are skipped and counted; the probe
    protocols run on the rest."""
    from rayder_core.evaluation.suite import evaluate_model
    from rayder_core.eval_config import EvalConfig
    from test_probe import synthetic_cameras

    cams = synthetic_cameras(5, seed=0)
    rng = np.random.default_rng(0)
    B.write_probe_set([{"key": f"s{i}", "frames": (rng.random((24, 32, 32, 3)) * 255).astype(np.uint8),
                        "cameras": cams[i]} for i in range(5)], tmp_path / "probe")
    data = dict(np.load(tmp_path / "probe" / "s1.npz"))
    data["t"][3] = np.nan
    np.savez_compressed(tmp_path / "probe" / "s1.npz", **data)
    (tmp_path / "probe" / "s3.npz").unlink()
    got = [s.key for s in B.ProbeSet(tmp_path / "probe", skip_bad=True)]
    assert got == ["s0", "s2", "s4"]
    with pytest.raises(ValueError, match="non-finite camera record"):
        list(B.ProbeSet(tmp_path / "probe"))
    spec = BenchmarkSpec("p", str(tmp_path / "probe"), "probe", protocols=["per_scene", "transfer"])
    records = evaluate_model(model, EvalConfig(benchmarks=[spec], probe_iters=5), resolution=32,
                             device=torch.device("cpu"), rank=0, world=1)
    by = {r["bench"]: r for r in records}
    assert by["p-per-scene"]["n"] == 3 and by["p-per-scene"]["skipped"] == 2
    # pairs (s, s+1 mod 5): (0,1) (1,2) (2,3) (3,4) (4,0) -> only (4,0) has two readable sequences
    assert by["p-transfer"]["n"] == 1 and by["p-transfer"]["skipped"] == 4
