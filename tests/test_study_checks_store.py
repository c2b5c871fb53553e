"""The demo's plain study checks (learning, baseline, frontier points, 1-SSIM law, skipped steps) on real DuckDB stores
with known values: each check passes on a store built to pass and fails on one built to fail it."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from rayder_core.store import ResultsStore, RunSubset
from sweeps import study_checks as sc


def _store(tmp_path: Path, runs: dict[str, list[float]], skipped: dict[str, int] | None = None,
           sweep: str = "demo", configs: dict[str, dict] | None = None, first_step: dict[str, int] | None = None
           ) -> ResultsStore:
    """A store with one finished run per key of `runs`, whose logged training losses are the given values (one per
    step from `first_step[run]`, default 1); `skipped[run]` of its steps are marked skipped."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    store = ResultsStore(tmp_path / "results.duckdb")
    for run_id, losses in runs.items():
        store.upsert_run(run_id, sweep=sweep, preset="tiny-w16", params=1000, fraction=1.0, D=64,
                         config=(configs or {}).get(run_id, {}), status="finished")
        n_skip = (skipped or {}).get(run_id, 0)
        first = (first_step or {}).get(run_id, 1)
        store.add_train_log(run_id, [{"step": first + i, "loss": loss, "skipped": int(i < n_skip)}
                                     for i, loss in enumerate(losses)])
    return store


def test_learning_passes_when_every_run_falls_and_fails_on_one_flat_run(tmp_path):
    falling = list(np.linspace(1.0, 0.2, 50))
    store = _store(tmp_path, {"a": falling, "b": [2 * x for x in falling]})
    check = sc.check_learning(store, "demo")
    k = 5  # 10% of 50 logged steps
    ratio = np.mean(falling[-k:]) / np.mean(falling[:k])  # the same in both runs (b is a x 2)
    assert check.ok is True and f"{ratio:.2f}..{ratio:.2f} over 2 runs" in check.measured

    store = _store(tmp_path / "flat", {"a": falling, "flat": [0.5] * 50})
    check = sc.check_learning(store, "demo")
    assert check.ok is False and "..1.00 over 2 runs" in check.measured
    assert sc.check_learning(store, "another-sweep").ok is None  # no logs: not computed, never passed


def test_learning_counts_a_run_started_from_its_trunk_from_step_1(tmp_path):
    """A run that starts from its trunk's step-40 checkpoint logs only its own steps 41..50 (flat, a short decay);
    with the trunk's steps 1..40 before them its loss falls like the trunk's."""
    trunk = list(np.linspace(1.0, 0.2, 50))
    start = str(tmp_path / "runs" / "trunk" / "checkpoints" / "step_0000040.pt")
    store = _store(tmp_path, {"trunk": trunk, "branch": [0.25] * 10}, configs={"branch": {"start_from": start}},
                   first_step={"branch": 41})
    whole = sc.whole_train_log(store, "branch", store.runs("demo").set_index("run_id").loc["branch", "config"])
    assert list(whole["step"]) == list(range(1, 51)) and list(whole["loss"])[-10:] == [0.25] * 10
    k = 5
    expected = 0.25 / np.mean(trunk[:k])
    check = sc.check_learning(store, "demo")
    assert check.ok is True and f"{expected:.2f}" in check.measured
    # the same run's own steps alone are flat (what the check read before: it failed the demo's 24 shorter runs)
    alone = _store(tmp_path / "alone", {"branch": [0.25] * 10}, first_step={"branch": 41})
    assert sc.check_learning(alone, "demo").ok is False


def test_learning_follows_a_chain_of_trunks(tmp_path):
    """A run forked at step 20 from a run that was itself forked at step 40 from the trunk (e.g. a run of an
    earlier design reused by its id): its steps 1..20 come from the trunk, through the middle run."""
    trunk = list(np.linspace(1.0, 0.2, 50))
    ckpt = lambda run, step: str(tmp_path / "runs" / run / "checkpoints" / f"step_{step:07d}.pt")  # noqa: E731
    store = _store(tmp_path, {"trunk": trunk, "middle": [0.22] * 10, "short": [0.5] * 5},
                   configs={"middle": {"start_from": ckpt("trunk", 40)}, "short": {"start_from": ckpt("middle", 20)}},
                   first_step={"middle": 41, "short": 21})
    whole = sc.whole_train_log(store, "short", store.runs("demo").set_index("run_id").loc["short", "config"])
    assert list(whole["step"]) == list(range(1, 26))
    assert list(whole["loss"]) == trunk[:20] + [0.5] * 5


def test_baseline_compares_the_best_checkpoint_with_its_own_mean_colour_psnr(tmp_path):
    store = _store(tmp_path, {"a": [1.0] * 20, "b": [1.0] * 20})
    # run a reaches 23.5 dB over a 20 dB baseline at step 200; run b 21 dB over 19 dB
    for run_id, step, psnr, base in (("a", 100, 21.0, 20.0), ("a", 200, 23.5, 20.0), ("b", 200, 21.0, 19.0)):
        store.add_evals(run_id, step, bench="indist-synth", values={"psnr": psnr, "baseline_psnr": base}, n=4)
    check = sc.check_baseline(store, "demo", "indist-synth")
    assert check.ok is True and "23.50 dB vs baseline 20.00 dB (+3.50 dB)" in check.measured

    weak = _store(tmp_path / "weak", {"a": [1.0] * 20})
    weak.add_evals("a", 100, bench="indist-synth", values={"psnr": 22.9, "baseline_psnr": 20.0}, n=4)
    check = sc.check_baseline(weak, "demo", "indist-synth")
    assert check.ok is False and "(+2.90 dB)" in check.measured
    assert sc.check_baseline(weak, "demo", "other-bench").ok is None


def below_with_points(tmp_path: Path) -> ResultsStore:
    """One run evaluated below its frame blend (28.4 vs 28.5 dB) at step 100, 2 GFLOP of training, D = 64."""
    store = _store(tmp_path / "points", {"a": [1.0] * 20})
    store.add_checkpoint("a", step=100, samples=3200, flops=2e9, wall_time_s=1.0)
    store.add_evals("a", 100, bench="indist-synth", n=4, values={"psnr": 28.4, "blend_psnr": 28.5})
    return store


def test_frame_blend_check_passes_fails_and_says_when_it_cannot_judge(tmp_path):
    store = _store(tmp_path, {"a": [1.0] * 20, "b": [1.0] * 20})
    # the best checkpoint (a at 200: 29.0 dB) beats its frame blend (28.5 dB); 1 of 3 checkpoints does
    for run_id, step, psnr in (("a", 100, 27.0), ("a", 200, 29.0), ("b", 200, 28.0)):
        store.add_evals(run_id, step, bench="indist-synth", n=4, values={
            "psnr": psnr, "baseline_psnr": 17.0, "copy_psnr": 28.2, "blend_psnr": 28.5})
    check = sc.check_beats_blend(store, "demo", "indist-synth")
    assert check.ok is True
    assert "29.00 dB (a at step 200) vs frame blend 28.50 dB (+0.50 dB)" in check.measured
    assert "nearest context view 28.20 dB" in check.measured and "1 of 3 evaluated checkpoints" in check.measured

    below = _store(tmp_path / "below", {"a": [1.0] * 20})
    below.add_evals("a", 100, bench="indist-synth", n=4, values={"psnr": 28.4, "blend_psnr": 28.5})
    check = sc.check_beats_blend(below, "demo", "indist-synth")
    assert check.ok is False and "(-0.10 dB)" in check.measured and "0 of 1" in check.measured

    # with a law: where it reaches the blend at the largest D, from the store's largest compute
    law = SimpleNamespace(predict=lambda C, D: 0.05 * np.asarray(C, float) ** -0.5)  # MSE on [-1, 1]
    blend_mse = 4 * 10 ** (-28.5 / 10)
    reach = (blend_mse / 0.05) ** -2.0  # GFLOP: 0.05 C^-0.5 = blend_mse
    check = sc.check_beats_blend(below_with_points(tmp_path), "demo", "indist-synth", law)
    assert check.ok is False
    assert f"the law reaches it at D=64 at {reach:.3g} GFLOP, {reach / 2.0:.3g}x the largest C" in check.measured
    never = SimpleNamespace(predict=lambda C, D: np.full(np.shape(C), 0.01))
    check = sc.check_beats_blend(below_with_points(tmp_path / "never"), "demo", "indist-synth", never)
    assert "the law does not reach it at D=64" in check.measured

    old = _store(tmp_path / "old", {"a": [1.0] * 20})  # evaluated before the blend was recorded
    old.add_evals("a", 100, bench="indist-synth", n=4, values={"psnr": 28.4, "baseline_psnr": 17.0})
    check = sc.check_beats_blend(old, "demo", "indist-synth")
    assert check.ok is None and "no frame-blend baseline recorded" in check.measured
    assert sc.check_beats_blend(old, "demo", "other-bench").ok is None
    assert sc.check_baseline(old, "demo", "indist-synth").ok is True  # the mean-colour check still reads it


def test_frontier_points_against_the_minimum():
    assert sc.check_frontier(20, minimum=20).ok is True
    assert sc.check_frontier(19, minimum=20).ok is False


def _fit(r2: float, warnings: tuple[str, ...] = (), beta_ci: tuple[float, float] = (0.2, 0.6)):
    return SimpleNamespace(r2=r2, warnings=list(warnings), params={"beta": 0.4},
                           ci_low={"beta": beta_ci[0]}, ci_high={"beta": beta_ci[1]})


@pytest.mark.parametrize("fit, need_beta, ok", [
    (_fit(0.95), False, True),
    (_fit(0.92), False, False),                                       # R^2 short of 0.93
    (_fit(0.99, ("gamma at its lower bound 0.05",)), False, False),   # a parameter at a bound
    (_fit(0.99, beta_ci=(0.0, 0.6)), True, False),                    # beta's CI reaches 0
    (_fit(0.99, beta_ci=(0.0, 0.6)), False, True),                    # ... which the 1-SSIM check does not ask
])
def test_law_check(fit, need_beta, ok):
    check = sc.check_law(fit, "1-SSIM", 0.93, need_beta)
    assert check.ok is ok and f"R^2 {fit.r2:.3f}" in check.measured
    assert sc.check_law(None, "1-SSIM", 0.93, False).ok is None


def test_skipped_steps_are_counted_over_the_sweep(tmp_path):
    store = _store(tmp_path, {"a": [1.0] * 20, "b": [1.0] * 20})
    assert sc.check_skips(store, "demo").ok is True
    bad = _store(tmp_path / "bad", {"a": [1.0] * 20, "b": [1.0] * 20}, skipped={"b": 3})
    check = sc.check_skips(bad, "demo")
    assert check.ok is False and check.measured == "3"


def test_checks_on_a_run_subset_leave_out_an_earlier_designs_runs(tmp_path):
    """A store holding a run of the same sweep from an earlier design (a flat loss): the learning check on the whole
    store fails; on `RunSubset` of the grid's runs it passes, and `runs` / `eval_points` keep only those runs."""
    falling = list(np.linspace(1.0, 0.2, 50))
    store = _store(tmp_path, {"a": falling, "b": falling, "old": [0.5] * 50})
    for run_id in ("a", "old"):
        store.add_checkpoint(run_id, step=50, samples=50, flops=1e12, wall_time_s=1.0)
        store.add_evals(run_id, 50, bench="indist-synth", values={"psnr": 25.0}, n=4)
    grid = RunSubset(store, ["a", "b"])
    assert sc.check_learning(store, "demo").ok is False
    assert sc.check_learning(grid, "demo").ok is True
    assert sorted(grid.runs("demo")["run_id"]) == ["a", "b"]
    assert list(grid.eval_points("indist-synth", "psnr")["run_id"]) == ["a"]
    assert sorted(store.eval_points("indist-synth", "psnr")["run_id"]) == ["a", "old"]
    assert grid.path == store.path and len(grid.train_log("old")) == 50  # everything else is the store's own


def test_study_time_check_judges_only_a_study_trained_in_one_go():
    floor = SimpleNamespace(seconds=20.4 * 60)
    met = sc.check_study_time(11.9 * 60, 45, 45, floor)
    assert met.ok is True and "11.9 min" in met.measured and "floor on this CPU" in met.measured
    assert "20.4 min" in met.measured
    assert sc.check_study_time(12.1 * 60, 45, 45).ok is False
    resumed = sc.check_study_time(3.0 * 60, 5, 45, floor)
    assert resumed.ok is None and "5 of 45 runs trained now" in resumed.measured
