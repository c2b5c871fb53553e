"""What a law's D term rests on (fitting/d_term.py), the demo check's data-limited line and the report page, against
brute force on curves with known minima."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from fitting import fit_law
from fitting.d_term import (MIN_CHECKPOINTS, TURNED_UP_TOL, data_limited_by_d, epochs_to_minimum,
                            format_data_limited, held_out_minima)
from reports.pages.d_term import beta_line, d_term_rows
from sweeps import study_checks as sc

BATCH = 32
STEPS = (200, 364, 663, 1207, 2197, 4000)  # the demo's 6 log-spaced evaluations


def _curves(turn_epochs: dict[float, float | None], rise: float = 0.10) -> pd.DataFrame:
    """One run per (D, width) evaluated at STEPS: the loss falls as steps^-0.3 and, where `turn_epochs[D]` is set,
    bottoms out at that many epochs and rises by `rise` per doubling after it (a run that memorises its clips)."""
    rows = []
    for D, turn in turn_epochs.items():
        for w in (32, 64):
            for step in STEPS:
                epochs = step * BATCH / D
                y = 0.02 * (step / 200) ** -0.3 * (32 / w) ** 0.1
                if turn is not None and epochs > turn:
                    bottom = 0.02 * (turn * D / BATCH / 200) ** -0.3 * (32 / w) ** 0.1
                    y = bottom * (1 + rise) ** np.log2(epochs / turn)
                rows.append({"run_id": f"w{w}-D{int(D)}", "D": D, "step": step, "samples": step * BATCH, "y": y})
    return pd.DataFrame(rows)


def test_held_out_minima_against_brute_force():
    pts = _curves({64.0: 150.0, 256.0: 300.0, 2048.0: None})
    fork = pd.DataFrame([{"run_id": "fork", "D": 64.0, "step": s, "samples": s * BATCH, "y": 0.05} for s in (1000,
                                                                                                          1250)])
    got = held_out_minima(pd.concat([pts, fork])).set_index("run_id")
    assert "fork" not in got.index and len(fork) < MIN_CHECKPOINTS  # too few checkpoints to show a minimum
    for run_id, g in pts.groupby("run_id"):
        g = g.sort_values("step")
        i = int(g["y"].to_numpy().argmin())
        row = got.loc[run_id]
        assert row["step_min"] == g["step"].iloc[i]
        assert row["epochs_min"] == g["samples"].iloc[i] / g["D"].iloc[0]
        assert row["turned_up"] == (g["y"].iloc[-1] > g["y"].iloc[i] * (1 + TURNED_UP_TOL))
    assert got.loc["w32-D64", "turned_up"] and not got.loc["w32-D2048", "turned_up"]
    # a plateau's wiggle below the tolerance is not overfitting; above it, it is
    for factor, expect in ((1 + TURNED_UP_TOL / 2, False), (1 + 2 * TURNED_UP_TOL, True)):
        y = [0.03, 0.02, 0.01, 0.01 * factor]
        flat = pd.DataFrame({"run_id": "p", "D": 128.0, "step": STEPS[:4], "samples": np.array(STEPS[:4]) * BATCH,
                             "y": y})
        assert bool(held_out_minima(flat)["turned_up"].iloc[0]) is expect


def test_data_limited_by_d_and_the_epochs_to_the_minimum():
    pts = _curves({64.0: 150.0, 256.0: 300.0, 2048.0: None})
    minima = held_out_minima(pts)
    by_d = data_limited_by_d(minima).set_index("D")
    assert by_d["data_limited"].to_dict() == {64.0: True, 256.0: True, 2048.0: False}
    assert by_d.loc[2048.0, "turned_up"] == 0 and np.isnan(by_d.loc[2048.0, "epochs_min"])
    for D in (64.0, 256.0):
        assert by_d.loc[D, "epochs_min"] == np.median(minima[minima["D"] == D]["epochs_min"])
    assert by_d.loc[2048.0, "epochs_last"] == 4000 * BATCH / 2048
    up = minima[minima["turned_up"]]["epochs_min"]
    assert epochs_to_minimum(minima) == np.median(up)
    text = format_data_limited(data_limited_by_d(minima))
    assert text.startswith("held-out minimum inside the runs at D = 64, 256") and "at D = 2048 (62 epochs)" in text
    assert np.isnan(epochs_to_minimum(held_out_minima(_curves({2048.0: None}))))


def test_d_term_check_reports_the_data_limited_sizes_and_the_steps_the_largest_d_needs():
    pts = _curves({64.0: 150.0, 256.0: 300.0, 2048.0: None})
    table = pts[pts["step"] == 4000].assign(on_frontier_d=True, trunk=lambda t: t["run_id"], C=lambda t: t["step"])
    fit = SimpleNamespace(params={"beta": 1.0}, fixed={"beta": 1.0}, inputs=None)  # beta fixed: no refit
    check = sc.check_d_term_runs(table, fit, points=pts)
    minima = held_out_minima(pts)
    steps = np.median(minima[minima["turned_up"]]["epochs_min"]) * 2048 / BATCH
    assert f"D = 2048 needs >= ~{steps:.3g} steps to reach its minimum ({steps / 4000:.2g}x the longest run)" in \
        check.measured, check.measured
    assert format_data_limited(data_limited_by_d(minima)) in check.measured
    assert check.ok is True  # two trunks on every D's frontier; the data-limited line is reported, never judged
    assert "held-out minimum" not in sc.check_d_term_runs(table, fit).measured  # no checkpoints given: no line


def test_report_rows_and_the_refit_without_the_smallest_d():
    pts = _curves({64.0: 150.0, 256.0: 300.0, 2048.0: None})
    frontier = pts[pts["step"] == 4000].assign(on_frontier_d=lambda t: t["run_id"].str.startswith("w64"),
                                               trunk=lambda t: t["run_id"])
    rows = {r[0]: r[1:] for r in d_term_rows(frontier, held_out_minima(pts))}
    at_min = []  # brute force: the epochs at each D = 64 run's lowest checkpoint
    for _, g in pts[pts["D"] == 64.0].groupby("run_id"):
        at_min.append(float(g["samples"].iloc[int(g["y"].to_numpy().argmin())]) / 64)
    assert rows["64"] == ["1", "2 / 2", f"{np.median(at_min):.0f}", "2000"]
    assert rows["2048"][:2] == ["1", "0 / 2"] and rows["2048"][2] == "-"

    rng = np.random.default_rng(0)
    C = np.tile(np.geomspace(1e3, 1e5, 5), 4)
    D = np.repeat([64.0, 256.0, 1024.0, 4096.0], 5)
    y = (0.03 * C ** -0.2 + 50 * D ** -1.5) * np.exp(rng.normal(0, 0.01, C.size))
    points = pd.DataFrame({"C": C, "D": D, "y": y})
    law = fit_law(points, bootstrap=0, n_starts=20, holdout=False, progress=False, fix={"L_inf": 0.0, "gamma": 1.0})
    without = fit_law(points[points["D"] > 64], bootstrap=0, n_starts=20, holdout=False, progress=False,
                      fix={"L_inf": 0.0, "gamma": 1.0})
    line = beta_line(SimpleNamespace(band_fit=law))
    assert line == f"beta {law.params['beta']:.3g}; refitted without D = 64: {without.params['beta']:.3g}"
