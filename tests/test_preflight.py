"""Preflight before any submission, and the launcher's rough edges (issue 15 items 2-3, issue 14 items 4-5).

Local tests use the session's real synthetic corpus and benchmarks and break one thing at a time: each problem must
be refused with exactly one line naming its grid key, and nothing may be submitted (no run directory, no launch
record). SLURM tests (marker `slurm`) run on the suite's real one-node cluster, which has no GPUs: a GPU request is
refused by the preflight; with --skip-preflight sbatch rejects it, the error says what SLURM said and which runs were
not submitted, and a second launch after fixing the grid submits exactly those runs.
"""
from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml

from sweeps import launcher
from sweeps.preflight import (CpuFloor, Partition, PreflightError, check_slurm_resources, cpu_peak_per_thread,
                              gres_gpus, parse_slurm_time, preflight, run_train_flops)
from sweeps.spec import available_cores, load_spec, spec_from_mapping
from sweeps.state import classify, write_json_atomic


def _grid(tmp_path: Path, synth, *, presets=("tiny-xs",), fractions=(0.1, 1.0), slurm=None, **base_over) -> dict:
    base = {"steps": 12, "batch_size": 2, "precision": "fp32", "device": "cpu", "checkpoint_every": 4,
            "log_every": 2, "optim": {"warmup_steps": 2},
            "data": {"frames": 4, "resolution": 32, "manifest": str(synth.manifest)},
            "eval": {"every": 4, "from_step": 4, "probe_iters": 5, "lpips": False,
                     "benchmarks": [{"name": "re10k-synth", "path": str(synth.re10k), "kind": "re10k"},
                                    {"name": "probe-synth", "path": str(synth.probe), "kind": "probe"}]}}
    for key, value in base_over.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return {"name": "pf", "out_dir": str(tmp_path / "runs"), "db": str(tmp_path / "r.duckdb"), "base": base,
            "grid": {"presets": list(presets), "fractions": list(fractions)},
            "local": {"parallel": 1, "threads_per_run": 1},
            "slurm": slurm or {"cpus_per_task": 1, "time_min": 30}}


def _write(tmp_path: Path, grid: dict) -> Path:
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def _refused(capsys, tmp_path, argv) -> list[str]:
    """Run `rayder-sweep launch ...`; assert it refused and submitted nothing; return the problem lines."""
    assert launcher.main(argv) == 2
    err = capsys.readouterr().err
    assert "nothing was submitted" in err and "Traceback" not in err
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "preflight must not create run directories"
    return [ln.strip() for ln in err.splitlines()[1:] if ln.strip()]


def test_good_grid_passes_with_compute_estimate(tmp_path, synth_data):
    spec = spec_from_mapping(_grid(tmp_path, synth_data), "g.yaml")
    report = preflight(spec, spec.runs(), "local")
    assert report.ok, report.problems
    assert report.n_runs == 2 and report.train_flops > 0 and report.gpu_hours_est is None


def test_cpu_floor_is_each_runs_flops_over_its_precisions_peak_times_threads(tmp_path, synth_data):
    """The floor = sum over runs of FLOPs / (per-thread peak of the run's precision x threads at once), threads =
    min(parallel, runs) x threads per run, capped at the cores; FLOPs from `run_train_flops` (checked against
    FlopCounterMode in test_flops) and peaks given, so the closed form is exact."""
    grid = _grid(tmp_path, synth_data, presets=("tiny-xs", "tiny-w32"), fractions=(1.0,))
    grid["local"] = {"parallel": 2, "threads_per_run": 1}
    grid["preset_overrides"] = {"tiny-w32": {"precision": "bf16"}}
    spec = spec_from_mapping(grid, "g.yaml")
    runs = spec.runs()
    assert sorted(c.precision for c in runs) == ["bf16", "fp32"]
    peaks = {"fp32": 5e10, "bf16": 2e11}
    report = preflight(spec, runs, "local", peak_per_thread=peaks.__getitem__)
    threads = min(available_cores(), 2)
    floor = report.cpu
    assert isinstance(floor, CpuFloor) and floor.threads == threads
    assert floor.flops == pytest.approx(report.train_flops)
    assert floor.seconds == pytest.approx(sum(run_train_flops(c) / (peaks[c.precision] * threads) for c in runs))
    assert floor.peak_per_thread == peaks
    text = report.summary()
    assert "CPU floor: >= " in text and f"x {threads} threads at once" in text
    # what a training of twice the floor's time reached: half the peak
    assert f"{0.5:.0%} of this CPU's matmul peak" in floor.achieved(2 * floor.seconds)


def test_cpu_floor_only_for_local_cpu_runs(tmp_path, synth_data):
    spec = spec_from_mapping(_grid(tmp_path, synth_data), "g.yaml")
    assert preflight(spec, spec.runs(), "slurm", partitions={}).cpu is None  # the cluster's CPUs are not these
    gpu = spec_from_mapping(_grid(tmp_path, synth_data, device="cuda"), "g.yaml")
    assert preflight(gpu, gpu.runs(), "local", peak_per_thread=lambda p: 1e10).cpu is None


def test_cpu_peak_per_thread_is_measured_on_one_thread_and_restores_threads():
    threads = torch.get_num_threads()
    fp32 = cpu_peak_per_thread("fp32")
    assert torch.get_num_threads() == threads
    assert 1e8 < fp32 < 1e13  # FLOP/s of one thread: between 0.1 GFLOP/s and 10 TFLOP/s
    # auto: the better of the two precisions, as `precision: auto` chooses (same cached measurement)
    assert cpu_peak_per_thread("auto") == max(fp32, cpu_peak_per_thread("bf16"))


def test_missing_manifest_is_one_line_and_nothing_submitted(tmp_path, synth_data, capsys):
    grid = _grid(tmp_path, synth_data, data={"manifest": str(tmp_path / "nope" / "manifest.json")})
    lines = _refused(capsys, tmp_path, ["launch", str(_write(tmp_path, grid)), "--executor", "local"])
    assert len(lines) == 1 and lines[0].startswith("base.data.manifest: ") and "does not exist" in lines[0]
    # --dry-run runs the same checks
    lines = _refused(capsys, tmp_path, ["launch", str(_write(tmp_path, grid)), "--executor", "local", "--dry-run"])
    assert len(lines) == 1 and lines[0].startswith("base.data.manifest: ")


def test_missing_benchmark_is_one_line(tmp_path, synth_data, capsys):
    grid = _grid(tmp_path, synth_data)
    grid["base"]["eval"]["benchmarks"][0]["path"] = str(tmp_path / "re10k")
    lines = _refused(capsys, tmp_path, ["launch", str(_write(tmp_path, grid)), "--executor", "local"])
    assert lines == [f"base.eval.benchmarks[0].path: {tmp_path / 're10k'} does not exist (benchmark 're10k-synth' "
                     "(re10k); `rayder-data bench --out <dir>` writes one; real RE10K: pixelSplat's .torch chunks)"]


def test_wrong_benchmark_format_and_bad_fraction_and_missing_shard(tmp_path, synth_data, capsys):
    data = tmp_path / "data"
    shutil.copytree(synth_data.root, data, ignore=shutil.ignore_patterns("*.mp4"))
    first = json.loads((data / "manifest.json").read_text())
    shards = sorted((data / "shards").glob("*.tar"))
    shards[-1].unlink()
    grid = _grid(tmp_path, synth_data, fractions=(0.1, 0.5, 1.0), data={"manifest": str(data / "manifest.json")})
    grid["base"]["eval"]["benchmarks"][1] = {"name": "probe-synth", "path": str(synth_data.re10k), "kind": "probe"}
    grid["grid"]["presets"] = ["tiny-xs", "tiny-s"]  # each problem is printed once, not once per preset
    lines = _refused(capsys, tmp_path, ["launch", str(_write(tmp_path, grid)), "--executor", "local"])
    assert len(lines) == 3, lines
    assert sum(ln.startswith(f"base.data.manifest: 1 of the {len(shards)} shard file(s) listed in ")
               and ln.endswith(shards[-1].name) for ln in lines) == 1
    assert sum(ln.startswith("grid.fractions[1]: 0.5 is not a fraction of ") for ln in lines) == 1
    assert sum(ln.startswith(f"base.eval.benchmarks[1].path: {synth_data.re10k} is not a readable benchmark "
                             "'probe-synth' (probe): FileNotFoundError") for ln in lines) == 1
    assert first  # the copied manifest is the real one


def test_preset_override_and_cuda_keys_are_named(tmp_path, synth_data, capsys):
    grid = _grid(tmp_path, synth_data, presets=("tiny-xs", "tiny-s"))
    grid["preset_overrides"] = {"tiny-s": {"data": {"manifest": str(tmp_path / "s.json")}}}
    grid["base"]["device"] = "cuda"
    import torch

    lines = _refused(capsys, tmp_path, ["launch", str(_write(tmp_path, grid)), "--executor", "local"])
    assert lines[0].startswith("preset_overrides.tiny-s.data.manifest: ")
    if not torch.cuda.is_available():
        assert lines[1].startswith("base.device: cuda, but the local executor has no CUDA GPU")
        assert len(lines) == 2
    else:
        assert len(lines) == 1


def test_family_override_keys_are_named(tmp_path, synth_data, capsys):
    """family_overrides apply last (SweepSpec.runs), so a bad value set there is reported under its own key."""
    grid = _grid(tmp_path, synth_data)
    grid["grid"].update(families=["rayder", "erayzer"],
                        family_overrides={"erayzer": {"data": {"manifest": str(tmp_path / "e.json")}}})
    grid["preset_overrides"] = {"tiny-xs": {"data": {"manifest": str(tmp_path / "x.json")}}}
    lines = _refused(capsys, tmp_path, ["launch", str(_write(tmp_path, grid)), "--executor", "local"])
    assert [ln.split(":")[0] for ln in lines] == ["preset_overrides.tiny-xs.data.manifest",
                                                  "grid.family_overrides.erayzer.data.manifest"]


def test_skip_preflight(tmp_path, capsys):
    grid = {"name": "pf", "out_dir": str(tmp_path / "runs"), "db": str(tmp_path / "r.duckdb"),
            "base": {"data": {"manifest": "missing.json"}, "device": "cpu"}, "grid": {"presets": ["tiny-xs"],
                                                                                   "fractions": [1.0]}}
    assert launcher.main(["launch", str(_write(tmp_path, grid)), "--executor", "local", "--dry-run",
                          "--skip-preflight"]) == 0
    assert "preflight: skipped (--skip-preflight)" in capsys.readouterr().out


def test_paper_grid_estimate_matches_the_flop_table():
    """sweeps/grid.yaml: 3 fractions x 200k steps x batch 256 of XS/S/B/L; training FLOPs per sample at 256^2, 8 views
    from the `rayder-flops` table (2.254 / 4.509 / 11.067 / 18.171 TFLOP, checked against FlopCounterMode)."""
    spec = load_spec(Path(__file__).parents[1] / "sweeps" / "grid.yaml")
    report = preflight(spec, spec.runs(), "slurm", partitions={})
    expected = 3 * 200_000 * 256 * (2.254 + 4.509 + 11.067 + 18.171) * 1e12
    assert report.train_flops == pytest.approx(expected, rel=2e-3)
    assert report.gpu_hours_est == pytest.approx(report.train_flops / (989e12 * 0.4) / 3600)
    # reserved: 3 runs each of 4/4/8/16 nodes x 8 GPUs x 24 h
    assert report.gpu_hours_reserved == pytest.approx(3 * (4 + 4 + 8 + 16) * 8 * 24)
    assert any(p.startswith("slurm.partition: not set and the cluster has no default partition") for p in
               report.problems)


def test_slurm_time_and_gres_parsing():
    assert parse_slurm_time("infinite") is None and parse_slurm_time("UNLIMITED") is None
    assert parse_slurm_time("30") == 30 and parse_slurm_time("30:30") == 30.5
    assert parse_slurm_time("2:00:00") == 120 and parse_slurm_time("1-00:00:00") == 1440
    assert parse_slurm_time("2-12") == 2 * 1440 + 720 and parse_slurm_time("1-02:30") == 1440 + 150
    assert gres_gpus("(null)") == 0 and gres_gpus("gpu:8") == 8 and gres_gpus("gpu:h100:8(S:0-1)") == 8
    assert gres_gpus("gpu:a100:4,shard:8") == 4 and gres_gpus("gpu:a100:2(S:0),gpu:v100:2(S:1)") == 4


def test_per_preset_resources_against_partitions(tmp_path):
    """Issue 14 item 5: per-preset gpus_per_node/nodes/time checked against each partition sinfo reports."""
    grid = {"name": "p", "out_dir": str(tmp_path / "runs"), "base": {"data": {"manifest": "m.json"}},
            "grid": {"presets": ["XS", "B", "L"], "fractions": [1.0]},
            "slurm": {"partition": "gpu", "nodes": 4, "gpus_per_node": 8, "tasks_per_node": 8, "cpus_per_task": 12,
                      "time_min": 1440,
                      "per_preset": {"B": {"partition": "big", "nodes": 8, "time_min": 4000},
                                     "L": {"partition": "gpu", "nodes": 16}}}}
    spec = spec_from_mapping(grid, "g.yaml")
    parts = {"gpu": Partition("gpu", True, 2880, [(6, 96, 8, "gpu:h100:8"), (4, 96, 4, "gpu:a100:4")]),
             "big": Partition("big", False, 2880, [(32, 96, 8, "gpu:8")])}
    problems, notes = [], []
    check_slurm_resources(spec, ["XS", "B", "L"], parts, problems, notes)
    assert problems == [
        "slurm.per_preset.B.time_min: 4000 min exceeds the time limit of partition 'big' (2880 min)",
        "slurm.per_preset.L.nodes: 16 node(s) with 8 GPU(s) requested for preset L, but partition 'gpu' has 6 "
        "such node(s)"]
    problems = []
    check_slurm_resources(spec, ["XS"], {"cpu": Partition("cpu", True, None, [(2, 8, 0, "(null)")])}, problems,
                          notes)
    assert problems == ["slurm.partition: partition 'gpu' does not exist (sinfo lists: cpu)"]


def test_split_arrays_and_retry_failed_only(tmp_path, synth_data):
    assert launcher.split_arrays(list(range(5)), 2) == [[0, 1], [2, 3], [4]]
    assert launcher.split_arrays(list(range(5)), None) == [list(range(5))]
    assert launcher.split_arrays(list(range(5)), 5) == [list(range(5))]
    spec = spec_from_mapping(_grid(tmp_path, synth_data, fractions=(0.01, 0.1, 0.5, 1.0)), "g.yaml")
    new, failed, cancelled, stale = spec.runs()
    now = time.time()
    for cfg, status, hb in ((failed, "failed", now), (cancelled, "cancelled", now), (stale, "running", now - 9e3)):
        write_json_atomic(cfg.run_dir / "state.json", {"run_id": cfg.run_id, "status": status, "step": 4,
                                                       "heartbeat": hb})
    plans = launcher.plan_launch(spec.runs(), queue=None, only_failed=True)
    assert [(p.action, p.reason) for p in plans] == [
        ("skip", "not failed (--retry-failed-only)"), ("submit", "resume from step 4 (failed)"),
        ("skip", "cancelled at step 4, not failed (--retry-failed-only)"),
        ("submit", "resume from step 4 (stale heartbeat)")]
    plans = launcher.plan_launch(spec.runs(), queue=None)
    assert (plans[2].action, plans[2].reason) == ("submit", "resume from step 4 (cancelled)")


def test_cancelled_label_and_watch_redraws_in_place(tmp_path, synth_data):
    now = time.time()
    st = {"status": "preempted", "step": 8, "heartbeat": now}
    assert classify(st, {"executor": "slurm", "cancelled_at": now}, None, True, now) == "cancelled"
    assert classify(st, {"executor": "slurm"}, None, True, now) == "preempted"
    assert classify(st, {"executor": "slurm", "cancelled_at": now}, "PENDING", True, now) == "requeued"
    assert classify({**st, "status": "cancelled"}, {"executor": "slurm"}, None, True, now) == "cancelled"

    spec = spec_from_mapping(_grid(tmp_path, synth_data), "g.yaml")
    calls = []

    def rows():
        calls.append(1)
        return launcher.sweep_status(spec.runs())

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Tty()
    assert launcher.watch_status(rows, interval_s=0.01, count=3, stream=out) == 0
    text = out.getvalue()
    assert len(calls) == 3 and text.count("\x1b[H\x1b[J") == 3 and text.count("not-submitted") >= 6
    plain = io.StringIO()
    launcher.watch_status(rows, interval_s=0.01, count=2, stream=plain)
    assert "\x1b[" not in plain.getvalue() and plain.getvalue().count("(2 runs)") == 2


# ------------------------------------------------------------------------------------------------ real SLURM
def _squeue_ids() -> set[str]:
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.slurm
def test_gpu_request_refused_on_cluster_without_gpus(slurm_cluster, tmp_path, synth_data, capsys):
    before = _squeue_ids()
    grid = _grid(tmp_path, synth_data, slurm={"cpus_per_task": 1, "time_min": 30, "gpus_per_node": 1})
    lines = _refused(capsys, tmp_path, ["launch", str(_write(tmp_path, grid)), "--executor", "slurm"])
    assert len(lines) == 1, lines
    assert lines[0].startswith("slurm.gpus_per_node: 1 GPU(s) per node requested, but partition 'debug' has no "
                               "GPUs configured (sinfo %G: (null))")
    grid = _grid(tmp_path, synth_data, slurm={"cpus_per_task": 1, "time_min": 30, "partition": "gpu"})
    lines = _refused(capsys, tmp_path, ["launch", str(_write(tmp_path, grid)), "--executor", "slurm", "--dry-run"])
    assert lines == ["slurm.partition: partition 'gpu' does not exist (sinfo lists: debug)"]
    assert _squeue_ids() == before


@pytest.mark.slurm
@pytest.mark.slow
def test_sbatch_rejection_is_clear_and_relaunch_submits_exactly_the_missing_runs(slurm_cluster, tmp_path,
                                                                                 synth_data, capsys):
    """tiny-xs submits; tiny-s asks for a GPU (preflight skipped) and sbatch rejects its array. The error names the
    runs not submitted; after fixing the grid, launch submits exactly them (split into arrays of 1 here)."""
    grid = _grid(tmp_path, synth_data, presets=("tiny-xs", "tiny-s"), steps=400,
                 slurm={"cpus_per_task": 1, "time_min": 30, "per_preset": {"tiny-s": {"gpus_per_node": 1}}})
    path = _write(tmp_path, grid)
    spec = load_spec(path)
    xs = [c for c in spec.runs() if c.model["preset"] == "tiny-xs"]
    s_runs = [c for c in spec.runs() if c.model["preset"] == "tiny-s"]
    try:
        assert launcher.main(["launch", str(path), "--executor", "slurm", "--skip-preflight",
                              "--set", "base.log_every=4"]) == 2
        out, err = capsys.readouterr()
        assert "Traceback" not in err
        assert "SLURM rejected 1 job array(s); 2 run(s) were NOT submitted (2 were):" in err
        assert "preset(s) tiny-s: sbatch said: sbatch: error:" in err
        assert err.count("Invalid generic resource") == 1  # said once, inside the error (submitit's echo muted)
        for c in s_runs:
            assert f"not submitted: {c.run_id}" in err and not (c.run_dir / "launch.json").exists()
        for c in xs:
            assert (c.run_dir / "launch.json").exists()
        # the follow-up command carries the --set override it was given
        assert f"follow with: rayder-sweep status {path} --set base.log_every=4" in out
        # fix the grid: the second launch submits exactly the two tiny-s runs, as two arrays of one
        grid["slurm"]["per_preset"] = {"tiny-s": {"gpus_per_node": 0}}
        _write(tmp_path, grid)
        assert launcher.main(["launch", str(path), "--executor", "slurm", "--set", "base.log_every=4",
                              "--max-array-size", "1"]) == 0
        out = capsys.readouterr().out
        submitted = [ln.split()[1] for ln in out.splitlines() if ln.startswith("  submit ")]
        assert sorted(submitted) == sorted(c.run_id for c in s_runs)
        assert out.count("[array 1/2: MaxArraySize 1]") == 1 and out.count("[array 2/2: MaxArraySize 1]") == 1
        arrays = {json.loads((c.run_dir / "launch.json").read_text())["job_id"].split("_")[0] for c in s_runs}
        assert len(arrays) == 2
        # a plain scancel of a running run: it saves and is labelled cancelled (resumable), not preempted
        target = xs[0]

        def running_with_checkpoint():
            st = json.loads((target.run_dir / "state.json").read_text()) if (target.run_dir / "state.json").exists() \
                else {}
            return st.get("status") == "running" and st.get("last_checkpoint")

        deadline = time.monotonic() + 240
        while not running_with_checkpoint():
            assert time.monotonic() < deadline, "run never reached a checkpoint"
            time.sleep(0.5)
        job = json.loads((target.run_dir / "launch.json").read_text())["job_id"]
        subprocess.run(["scancel", job], check=True)
        deadline = time.monotonic() + 60
        while json.loads((target.run_dir / "state.json").read_text())["status"] == "running":
            assert time.monotonic() < deadline, "cancelled run did not stop"
            time.sleep(0.5)
        time.sleep(2)
        assert json.loads((target.run_dir / "state.json").read_text())["status"] == "cancelled"
        rows = {r.run_id: r.state for r in launcher.sweep_status(spec.runs())}
        assert rows[target.run_id] == "cancelled"
        plans = launcher.plan_launch(spec.runs(), queue={})
        assert next(p for p in plans if p.cfg.run_id == target.run_id).reason.endswith("(cancelled)")
    finally:
        launcher.cancel(spec)


def test_cancel_vs_requeue_from_slurmctld_fields():
    """Field values measured on the suite's SLURM right after `scancel` / `scontrol requeue` of a running job."""
    from sweeps.job import cancelled_by_user

    cancelled = {"JobState": "COMPLETING", "Reason": "None", "Restarts": "0", "EndTime": "2026-12-01T06:12:33",
                 "RunTime": "00:00:03", "TimeLimit": "365-00:00:00"}
    requeued = {"JobState": "COMPLETING", "Reason": "None", "Restarts": "1", "EndTime": "Unknown",
                "RunTime": "00:00:00", "TimeLimit": "UNLIMITED"}
    assert cancelled_by_user(cancelled, 0) and not cancelled_by_user(requeued, 0)
    assert not cancelled_by_user({**cancelled, "Restarts": "2"}, 1)      # requeued again while completing
    assert cancelled_by_user({**cancelled, "Restarts": "1"}, 1)          # cancelled after an earlier requeue
    assert not cancelled_by_user({**cancelled, "RunTime": "00:30:00", "TimeLimit": "00:30:00"}, 0)  # time limit
    assert cancelled_by_user({"JobState": "CANCELLED"}, 0) and not cancelled_by_user({"JobState": "RUNNING"}, 0)


def test_batch_larger_than_a_fractions_videos_is_refused_with_its_key(tmp_path, synth_data, capsys):
    """A data fraction with fewer videos than one batch would fail the run at its first step: refused up front."""
    from rayder_core.data.manifest import Manifest

    videos = Manifest.load(synth_data.manifest).num_videos(0.1)
    grid = _grid(tmp_path, synth_data, presets=("tiny-xs", "tiny-s"), fractions=(0.1, 1.0))
    grid["preset_overrides"] = {"tiny-s": {"batch_size": videos + 1}}
    lines = _refused(capsys, tmp_path, ["launch", str(_write(tmp_path, grid)), "--executor", "local"])
    assert lines == [f"preset_overrides.tiny-s.batch_size: {videos + 1} is more than the {videos} video(s) of data "
                     f"fraction 0.1 in {synth_data.manifest} (a batch takes batch_size different clips); lower it "
                     "or drop the fraction"]
    grid["preset_overrides"] = {"tiny-s": {"batch_size": videos}}  # exactly one batch fits: accepted
    spec = load_spec(_write(tmp_path, grid))
    assert preflight(spec, spec.runs(), "local").ok
