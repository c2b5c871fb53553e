"""`sweeps.study_checks.check_larger_wins` on known evaluation points (a stand-in store that returns them)."""

import pandas as pd

from sweeps.study_checks import check_larger_wins


class _Points:
    """Supplies `eval_points` as the real store does (the columns the check reads)."""

    def __init__(self, rows):
        self.df = pd.DataFrame(rows, columns=["run_id", "preset", "params", "D", "step", "value"])

    def eval_points(self, bench, metric, sweep=None):
        assert metric == "psnr"
        return self.df


def _run(run_id, preset, params, D, values):
    return [(run_id, preset, params, D, 100 * (i + 1), v) for i, v in enumerate(values)]


def test_one_seed_compares_each_presets_best_checkpoint_at_the_largest_D():
    rows = (_run("a", "xs", 1, 64, [18.0, 21.0]) + _run("b", "l", 9, 64, [19.0, 21.5])
            + _run("c", "l", 9, 4, [30.0]))  # the smaller D never counts
    check = check_larger_wins(_Points(rows), "demo", "bench")
    assert check.ok is True
    assert "xs 21.00, l 21.50" in check.measured
    rows = _run("a", "xs", 1, 64, [18.0, 22.0]) + _run("b", "l", 9, 64, [19.0, 21.5])
    assert check_larger_wins(_Points(rows), "demo", "bench").ok is False


def test_several_seeds_are_averaged_not_maximised():
    # the large preset's single luckiest seed (23.0) beats every small run, but its mean over seeds (21.0) does not
    rows = (_run("x0", "xs", 1, 64, [21.5]) + _run("x1", "xs", 1, 64, [22.0]) + _run("x2", "xs", 1, 64, [22.5])
            + _run("l0", "l", 9, 64, [23.0]) + _run("l1", "l", 9, 64, [20.0]) + _run("l2", "l", 9, 64, [19.0, 20.0]))
    check = check_larger_wins(_Points(rows), "demo", "bench")
    assert check.ok is False
    assert "xs 22.00 [21.50, 22.50], l 21.00 [20.00, 23.00]" in check.measured
    assert "3 seeds" in check.measured
