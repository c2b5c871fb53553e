"""Session-wide fixtures: a small synthetic corpus with benchmarks, and a real one-node SLURM cluster.

`synth_data` renders 40 clips at 32x32 (nested 1%/10%/100% manifest) and 4 benchmark scenes once per session.
`slurm_cluster` starts slurmctld + slurmd (+ munged if needed) with tests/slurm/slurm-up.sh in a temporary
directory, and stops exactly the daemons it started (by PID) at the end of the session. It skips when SLURM is not
installed (`bash tests/slurm/install-deps.sh`), when not root, or when a SLURM controller already answers here
(set RAYDER_SLURM_EXISTING=1 to run the SLURM tests against that cluster instead).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

TESTS = Path(__file__).resolve().parent
SLURM_SCRIPTS = TESTS / "slurm"


def _rayder_data(*args: str) -> None:
    cmd = [sys.executable, "-c", "import sys; from rayder_core.data.cli import main; sys.exit(main())", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"rayder-data {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> SimpleNamespace:
    """40 synthetic clips at 32x32 (2 shards, manifest with fractions 0.01/0.1/1.0) and 4 benchmark scenes."""
    root = tmp_path_factory.mktemp("synth")
    t0 = time.monotonic()
    _rayder_data("synth", "--out", str(root), "--clips", "40", "--resolution", "32", "--seconds", "5",
                 "--workers", "1")
    _rayder_data("manifest", "--shards", str(root / "shards"), "--fractions", "0.01,0.1,1.0")
    _rayder_data("bench", "--out", str(root / "bench"), "--scenes", "4", "--resolution", "32")
    return SimpleNamespace(root=root, manifest=root / "manifest.json", re10k=root / "bench" / "re10k-synth",
                           probe=root / "bench" / "probe-synth", seconds=time.monotonic() - t0)


def _controller_answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> SimpleNamespace:
    """A running one-node SLURM cluster (partition `debug`), up for the whole test session."""
    if os.environ.get("RAYDER_SLURM_EXISTING") == "1":
        if not _controller_answers():
            pytest.fail("RAYDER_SLURM_EXISTING=1 but `sinfo` gets no answer from a SLURM controller")
        yield SimpleNamespace(dir=None, started=False)
        return
    missing = [b for b in ("sbatch", "squeue", "scontrol", "srun") if shutil.which(b) is None]
    missing += [d for d in ("slurmctld", "slurmd", "munged") if not Path("/usr/sbin", d).exists()]
    if missing:
        pytest.skip(f"SLURM not installed (missing {', '.join(missing)}): bash tests/slurm/install-deps.sh")
    if os.geteuid() != 0:
        pytest.skip("the test cluster's daemons must be started as root (tests/slurm/slurm-up.sh)")
    if _controller_answers():
        pytest.skip("a SLURM controller already answers on this machine; set RAYDER_SLURM_EXISTING=1 to run "
                    "the SLURM tests against it")
    directory = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "SLURM_CI_DIR": str(directory)}
    up = subprocess.run(["bash", str(SLURM_SCRIPTS / "slurm-up.sh")], env=env, capture_output=True, text=True,
                        timeout=180)
    if up.returncode != 0:
        subprocess.run(["bash", str(SLURM_SCRIPTS / "slurm-down.sh")], env=env, capture_output=True, timeout=180)
        logs = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted((directory / "log").glob("*.log")))
        pytest.fail(f"slurm-up.sh failed ({up.returncode}):\n{up.stdout}\n{up.stderr}{logs}")
    try:
        yield SimpleNamespace(dir=directory, started=True, log=up.stdout)
    finally:
        subprocess.run(["bash", str(SLURM_SCRIPTS / "slurm-down.sh")], env={**env, "PURGE": "1"},
                       capture_output=True, timeout=180)


@pytest.fixture
def tiny_sweep(tmp_path):
    """Factory of a small grid (tiny-xs x fractions 0.1, 1.0; 32x32, 4 frames, batch 2, 12 steps, checkpoint and
    evaluation every 4 steps) writing under tmp_path: `tiny_sweep(data, steps=..., slurm={...})` -> SweepSpec.
    `data` is the `synth_data` fixture (None: paths that do not exist, for tests that train nothing)."""
    from sweeps.spec import spec_from_mapping

    def make(data=None, *, fractions=(0.1, 1.0), slurm=None, **base):
        b = {"steps": 12, "batch_size": 2, "precision": "fp32", "device": "cpu", "checkpoint_every": 4,
             "log_every": 2, "optim": {"warmup_steps": 2},
             "data": {"frames": 4, "resolution": 32, "manifest": str(data.manifest) if data else "none.json"},
             "eval": {"every": 4, "from_step": 4, "probe_iters": 5, "lpips": False,
                      "benchmarks": [
                          {"name": "re10k-synth", "path": str(data.re10k) if data else "x", "kind": "re10k"},
                          {"name": "probe-synth", "path": str(data.probe) if data else "y", "kind": "probe"}]}}
        for key, value in base.items():
            b[key] = {**b[key], **value} if isinstance(value, dict) and isinstance(b.get(key), dict) else value
        return spec_from_mapping({"name": "t", "out_dir": str(tmp_path / "runs"), "db": str(tmp_path / "r.duckdb"),
                                  "base": b, "grid": {"presets": ["tiny-xs"], "fractions": list(fractions)},
                                  "local": {"parallel": 2, "threads_per_run": 1},
                                  "slurm": slurm or {"cpus_per_task": 1, "time_min": 30}}, source="test-grid")

    return make
