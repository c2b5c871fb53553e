"""Issue 25: rayder-fit on other people's results (--where, --frontier, --score, start counts, weak-identification
warnings) and the one fitting entry point `fitting.fit_study` (store-path laws unchanged by the refactor).

References are independent of the fitting code: brute-force frontiers, scipy curve_fit, closed-form objectives and
R^2, the closed-form probability of a degenerate bootstrap resample, and numbers recorded from the pre-refactor code.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import optimize

sys.path.insert(0, str(Path(__file__).parent))
from fitting import fit_law  # noqa: E402
from fitting.cli import main  # noqa: E402


# ------------------------------------------------------------------------------------------------ CSVs written here
def _mixed_csv(path: Path) -> pd.DataFrame:
    """Two datasets evaluated on the same runs (C in FLOP, 3 checkpoints per model): 'web' follows
    0.5 + 20 C^-0.25 at the final checkpoint, earlier checkpoints are worse; 'code' is a different curve."""
    rows = []
    for model, c_final in enumerate(np.geomspace(1e15, 1e19, 8)):
        for frac, penalty in ((0.25, 1.6), (0.5, 1.2), (1.0, 1.0)):
            C = c_final * frac
            rows.append({"model": f"m{model}", "dataset": "web", "C": C, "loss": 0.5 + 20 * C ** -0.25 * penalty})
            rows.append({"model": f"m{model}", "dataset": "code", "C": C, "loss": 0.2 + 3e3 * C ** -0.4 * penalty})
    df = pd.DataFrame(rows)
    df.to_csv(path, index=False)
    return df


def _brute_frontier(df: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """Rows with no other row at smaller or equal x and lower or equal y (per the definition, O(n^2))."""
    keep = [i for i, r in df.iterrows()
            if not any((o[x] <= r[x]) and (o[y] <= r[y]) and j != i for j, o in df.iterrows())]
    return df.loc[keep]


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_where_and_frontier_fit_one_series_like_scipy(tmp_path, capsys):
    csv = tmp_path / "runs.csv"
    df = _mixed_csv(csv)
    base = ["--csv", str(csv), "--x", "C", "--y", "loss", "--law", "single", "--bootstrap", "0", "--json",
            "--delta", "1e6"]
    assert main(base + ["--where", 'dataset == "web"', "--frontier", "C"]) == 0
    rec = _json(capsys)
    web = df[df["dataset"] == "web"]
    front = _brute_frontier(web, "C", "loss")
    assert rec["n_points"] == len(front) == 10  # 8 finals + the 2 cheapest partial checkpoints beat no one
    assert not any("dataset" in w for w in rec["warnings"])
    # independent: scipy curve_fit of the same log-least-squares problem on the brute-force frontier
    logc, logy = np.log(front["C"].to_numpy()), np.log(front["loss"].to_numpy())
    (l_inf, log_a, alpha), _ = optimize.curve_fit(lambda lc, l, la, a: np.log(l + np.exp(la - a * lc)), logc, logy,
                                                  p0=(0.4, 2.0, 0.3), maxfev=20000)
    assert rec["params"]["alpha"] == pytest.approx(alpha, rel=1e-4)
    assert rec["params"]["L_inf"] == pytest.approx(l_inf, rel=1e-4)
    # one frontier per dataset: the union of the brute-force frontiers of each group
    assert main(["--csv", str(csv), "--x", "C", "--y", "loss", "--law", "single", "--bootstrap", "0", "--json",
                 "--frontier", "C", "--frontier-by", "dataset"]) == 0
    rec = _json(capsys)
    assert rec["n_points"] == sum(len(_brute_frontier(g, "C", "loss")) for _, g in df.groupby("dataset")) == 10 + 17
    assert any("column 'dataset' has 2 values" in w for w in rec["warnings"])  # still two series in one law


def test_mixed_datasets_warn_and_low_r2_warns(tmp_path, capsys):
    """A zero-shot-style table: the same models on 41 datasets whose errors do not follow one curve."""
    rng = np.random.default_rng(0)
    rows = [{"dataset": f"ds{k}", "C": C, "err": float(rng.uniform(0.05, 0.95))}
            for k in range(41) for C in np.geomspace(1e18, 1e21, 5)]
    csv = tmp_path / "zeroshot.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    assert main(["--csv", str(csv), "--x", "C", "--y", "err", "--law", "single", "--bootstrap", "0", "--json"]) == 0
    rec = _json(capsys)
    y = pd.DataFrame(rows)["err"].to_numpy()
    pred = np.array([rec["params"]["L_inf"] + rec["params"]["A"] * c ** -rec["params"]["alpha"]
                     for c in pd.DataFrame(rows)["C"]])
    r2 = 1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)  # closed form
    assert rec["r2"] == pytest.approx(r2, abs=1e-12) and r2 < 0.5
    assert any(w.startswith("R^2 = ") and "< 0.5" in w for w in rec["warnings"])
    assert any("column 'dataset' has 41 values" in w and "--where" in w for w in rec["warnings"])


def test_bad_where_and_condition_in_eval_are_clear_errors(tmp_path, capsys):
    csv = tmp_path / "runs.csv"
    _mixed_csv(csv)
    base = ["--csv", str(csv), "--x", "C", "--y", "loss", "--law", "single", "--bootstrap", "0"]
    with pytest.raises(SystemExit, match=r"--where 'datset == \"web\"' failed.*columns are \['model', 'dataset', "
                                         r"'C', 'loss'\]"):
        main(base + ["--where", 'datset == "web"'])
    with pytest.raises(SystemExit, match=r"keeps none of the 48 rows"):
        main(base + ["--where", 'dataset == "imagenet1k"'])
    with pytest.raises(SystemExit, match=r"--eval 'dataset == \"web\"' is not an assignment.*--where"):
        main(base + ["--eval", 'dataset == "web"'])
    assert main(base + ["--frontier", "flops"]) == 2
    assert "no column(s) ['flops']" in capsys.readouterr().err


def test_help_says_which_objective_published_fits_used(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--delta 1e6 is least squares on log residuals" in text
    assert "Hoffmann et al. 2022" in text and "plain least squares on the metric itself" in text


# ------------------------------------------------------------------------------------------------ scoring a given law
def test_score_a_published_law_objective_r2_residuals(tmp_path, capsys):
    rng = np.random.default_rng(1)
    N, D = np.geomspace(1e7, 1e10, 12), np.geomspace(1e9, 1e12, 12)
    loss = 1.69 + 406.4 * N ** -0.34 + 410.7 * D ** -0.28 + 0.01 * rng.standard_normal(12)
    csv = tmp_path / "lm.csv"
    pd.DataFrame({"N": N, "D": D, "loss": loss}).to_csv(csv, index=False)
    law = {"L_inf": 1.69, "A": 406.4, "alpha": 0.34, "B": 410.7, "beta": 0.28}
    fixes = ["--fix", ",".join(f"{k}={v}" for k, v in law.items())]
    base = ["--csv", str(csv), "--law", "additive", "--x", "N,D", "--y", "loss"]
    assert main(base + fixes + ["--score", "--json"]) == 0
    rec = _json(capsys)
    pred = 1.69 + 406.4 * N ** -0.34 + 410.7 * D ** -0.28
    r = np.log(pred) - np.log(loss)
    huber = np.where(np.abs(r) <= 1e-3, 0.5 * r ** 2, 1e-3 * np.abs(r) - 0.5e-6).sum()  # closed form, delta 1e-3
    assert rec["scored"] and rec["n_starts"] == 0 and rec["objective"] == pytest.approx(huber, rel=1e-12)
    assert rec["r2"] == pytest.approx(1 - np.sum((loss - pred) ** 2) / np.sum((loss - loss.mean()) ** 2), rel=1e-12)
    assert [row["residual"] for row in rec["residuals"]] == pytest.approx(pred - loss, rel=1e-12)
    assert main(base + fixes) == 0  # every parameter fixed: scored, not refused
    out = capsys.readouterr().out
    assert "scored: every parameter given" in out and "residuals (predicted - measured)" in out
    with pytest.raises(SystemExit, match=r"--score .* missing \['beta'\]"):
        main(base + ["--fix", "L_inf=1.69,A=406.4,alpha=0.34,B=410.7", "--score"])


def test_fixed_zero_l_inf_is_not_printed(capsys):
    C = np.geomspace(1e3, 1e6, 20)
    r = fit_law(pd.DataFrame({"C": C, "y": 5.9 * C ** -0.11}), law="single", x=["C"], fix={"L_inf": 0.0},
                bootstrap=0, holdout=False)
    assert r.formula().startswith("y(C) ~ 5.9 C^-0.11,")  # not '0.0 + 5.9 C^-0.11'


# ------------------------------------------------------------------------------------------------ starts
def _pure_power(seed: int, n: int = 12) -> pd.DataFrame:
    """A pure power law 5 C^-0.3 with 1% log noise: L_inf is not identified (its true value is 0)."""
    rng = np.random.default_rng(seed)
    C = np.geomspace(1e2, 1e6, n)
    return pd.DataFrame({"C": C, "y": 5 * C ** -0.3 * np.exp(0.01 * rng.standard_normal(n))})


def test_few_starts_at_the_best_are_reported_and_warned():
    """A flat L_inf valley (seed 3): only 1 of the default 8 grid starts reaches the best objective."""
    df = _pure_power(3)
    r = fit_law(df, law="single", x=["C"], bootstrap=0, holdout=False)
    assert (r.n_starts_at_best, r.n_starts) == (1, 8)
    assert any(w.startswith("only 1 of 8 starts reached the best objective") for w in r.warnings)
    assert "1/8 starts reached the best" in r.summary()


def test_starts_n_means_n_random_starts_inside_bounds_and_seeded():
    df = _pure_power(3)
    grid = 14  # law single: 14 grid values of alpha
    a = fit_law(df, law="single", x=["C"], bootstrap=0, holdout=False, n_starts=60, seed=5)
    b = fit_law(df, law="single", x=["C"], bootstrap=0, holdout=False, n_starts=60, seed=5)
    assert a.n_starts == 60 > grid and a.params == b.params and a.n_starts_at_best == b.n_starts_at_best
    problem = a._problem
    starts, _ = problem.random_starts(200, np.random.default_rng(0))
    assert np.all(starts >= problem.lo) and np.all(starts <= problem.hi)
    alpha = problem.params(starts)["alpha"]
    assert 0 <= alpha.min() < 0.5 and 4.5 < alpha.max() <= 5  # uniform over the exponent's range [0, 5]
    # more starts never end worse than the grid's best
    assert a.objective <= fit_law(df, law="single", x=["C"], bootstrap=0, holdout=False).objective * (1 + 1e-9)


# ------------------------------------------------------------------------------------------------ weak identification
def test_l_inf_drifted_to_zero_warns_in_cli_json(tmp_path, capsys):
    csv = tmp_path / "pure.csv"
    _pure_power(0).to_csv(csv, index=False)
    assert main(["--csv", str(csv), "--x", "C", "--law", "single", "--bootstrap", "40", "--jobs", "1",
                 "--json"]) == 0
    rec = _json(capsys)
    assert 0 < rec["params"]["L_inf"] < 1e-6 and rec["ci_high"]["L_inf"] - rec["ci_low"]["L_inf"] < 1e-9
    note = next(w for w in rec["warnings"] if "drifted towards 0" in w)
    assert "~zero-width 95% bootstrap CI" in note and "bound" not in note  # study_checks counts 'bound' notes


def test_six_points_count_degenerate_resamples_and_ci_edges():
    from fitting import FitOptions, StudyOptions, fit_study

    df = _pure_power(2, n=6)
    n_boot, seed = 200, 4
    study = fit_study(df, StudyOptions(fit=FitOptions(law="single", x=("C",), bootstrap=n_boot, seed=seed,
                                                      n_jobs=1, holdout=False)))
    fit = study.fit
    sets = np.random.default_rng(seed).integers(0, 6, size=(n_boot, 6))  # the documented resamples
    expected = sum(len(set(s)) <= 3 for s in sets)
    assert fit.n_degenerate_resamples == expected
    # closed form: P(<= 3 distinct of 6 draws from 6) = sum_k S(6,k) 6!/(6-k)! / 6^6 = (6 + 930 + 10800) / 46656
    p = (6 + 930 + 10800) / 6 ** 6
    assert abs(expected - n_boot * p) < 4 * math.sqrt(n_boot * p * (1 - p))
    assert any(f"{expected} of {n_boot} bootstrap resamples have <= 3 distinct points" in w for w in study.warnings)


def test_ci_reaching_the_edge_of_a_range_warns_without_saying_bound():
    """The demo's beta CI [0.87, 4.99] of range [0, 5] (README) must warn; [0.87, 4.0] must not."""
    from fitting import get_law
    from fitting.bootstrap import ci_edge_notes

    law = get_law("kaplan")
    low, high = {"beta": 0.87, "L_inf": 1e-30}, {"beta": 4.99, "L_inf": 0.01}
    notes = ci_edge_notes(law, ["beta", "L_inf"], low, high, 0.95)
    assert len(notes) == 2 and "beta [0.87, 4.99] reaches the upper end 5" in notes[0]
    assert "L_inf" in notes[1] and "lower end 1e-30" in notes[1] and not any("bound" in n for n in notes)
    assert ci_edge_notes(law, ["beta"], {"beta": 0.87}, {"beta": 4.0}, 0.95) == []
    # gamma's range 0.05..20 is judged in log space: [0.2444, 0.7153] (a measured fit) is 5x above the edge 0.05
    assert ci_edge_notes(law, ["gamma"], {"gamma": 0.2444}, {"gamma": 0.7153}, 0.95) == []
    assert "gamma [0.051, 0.7] reaches the lower end 0.05" in ci_edge_notes(law, ["gamma"], {"gamma": 0.051},
                                                                             {"gamma": 0.7}, 0.95)[0]


# ------------------------------------------------------------------------------------------------ one entry point
# Laws of the demo-shaped store (tests/test_first_hour.py) recorded with the code before the refactor (commit
# b1b2fd9): sweeps.demo.fit_study with 8 resamples (its options now go to fitting.fit_study), reports.fits.fit_metric(bootstrap=8), rayder-fit --starts 20
# --bootstrap 6; and reports.family_page._fit_family on the two-family store of tests/test_family_compare.py.
BEFORE = {
    "demo_psnr": {"L_inf": 0.09141856805135508, "A": 0.5271533862043383, "alpha": 0.3085236170055186,
                  "B": 0.21218455815708104, "beta": 0.20051402387098166, "gamma": 1.0935082762787902},
    "report_psnr": {"L_inf": 0.09141856832458607, "A": 0.527153386042703, "alpha": 0.30852361646809445,
                    "B": 0.21218455869807884, "beta": 0.20051402457989778, "gamma": 1.0935082778397318},
    "cli_mse": {"L_inf": 0.09141856784489534, "A": 0.5271533850438375, "alpha": 0.3085236154248779,
                "B": 0.21218455859515975, "beta": 0.2005140237755557, "gamma": 1.0935082783961227},
    "family_rayder": {"L_inf": 0.03677968636518238, "A": 32.39105201329858, "alpha": 0.9736734225375535,
                      "B": 4.997447782497693, "beta": 0.7996353275233412, "gamma": 1.0004976683554085},
}
BEFORE_CI_HIGH_DEMO_BETA = 0.2199477999729757  # 8 resamples, seed 0
BEFORE_OBJECTIVE_DEMO = 0.00016818902174826333
# recorded on an AMX Xeon; the same code on an AVX2-only EPYC lands ~2e-8 (relative) away, the optimiser's own
# tolerance meeting other float rounding, so "the same law" is judged at 1e-6 (a changed fit moves by far more)
SAME_CODE = 1e-6


def _huber_objective(P: dict, C: np.ndarray, D: np.ndarray, y: np.ndarray, delta: float = 1e-3) -> float:
    pred = P["L_inf"] + (P["A"] * C ** -P["alpha"] + P["B"] * D ** -P["beta"]) ** P["gamma"]
    r = np.abs(np.log(pred) - np.log(y))
    return float(np.sum(np.where(r <= delta, 0.5 * r * r, delta * r - 0.5 * delta ** 2)))


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    from tests.test_first_hour import _demo_like_store

    db = tmp_path_factory.mktemp("demo") / "results.duckdb"
    return db, _demo_like_store(db)


def test_store_path_laws_identical_to_before_the_refactor(demo_store, tmp_path, capsys):
    from fitting import FitOptions, StudyOptions, fit_study
    from reports.common import load_study
    from reports.fits import fit_metric
    from rayder_core.store import ResultsStore

    db, pts = demo_store
    # the demo's call (sweeps/demo.py, being redesigned, calls fit_study with these options; 8 resamples here)
    demo_options = StudyOptions(fit=FitOptions(bootstrap=8, seed=0, n_starts=20, metric="psnr", bench="re10k-synth",
                                               sweep="demo"), metric="psnr", checkpoints="all", drop_warmup=True)
    demo_fit = fit_study(ResultsStore(db).eval_points("re10k-synth", "psnr", sweep="demo"), demo_options).fit
    assert demo_fit.params == pytest.approx(BEFORE["demo_psnr"], rel=SAME_CODE)
    assert demo_fit.ci_high["beta"] == pytest.approx(BEFORE_CI_HIGH_DEMO_BETA, rel=SAME_CODE)
    report = fit_metric(load_study(db), "re10k-synth", "psnr", bootstrap=8, use_stored=False)
    assert report.params == pytest.approx(BEFORE["report_psnr"], rel=SAME_CODE)
    assert main(["--metric", "mse", "--bench", "re10k-synth", "--db", str(db), "--no-write", "--json",
                 "--bootstrap", "6", "--starts", "20"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == pytest.approx(BEFORE["cli_mse"], rel=SAME_CODE)
    # the family page (two-family store of tests/test_family_compare.py)
    from reports.family_page import _fit_family
    from tests.test_family_compare import _write_two_families

    two = _write_two_families(tmp_path / "two.duckdb")
    _, res, why = _fit_family(ResultsStore(two).eval_points("b", "psnr", family="rayder"), "psnr", "b", 6, 0)
    assert why is None and res.n_points == 30
    assert res.params == pytest.approx(BEFORE["family_rayder"], rel=SAME_CODE)
    # the same law through the entry point directly
    study = fit_study(load_study(db).eval_points("re10k-synth", "psnr"),
                      StudyOptions(fit=FitOptions(bootstrap=0, n_starts=20, holdout=False), metric="psnr"))
    assert study.fit.params == pytest.approx(BEFORE["demo_psnr"], rel=1e-6)
    # independent: the brute-force per-D frontier and scipy Nelder-Mead on the closed-form summed log-Huber find
    # nothing better near the recorded optimum
    df = pd.DataFrame(pts)
    front = pd.concat(_brute_frontier(g, "C", "mse") for _, g in df.groupby("D"))
    assert len(front) == study.fit.n_points == 42
    y = 4 * 10 ** (-(-10 * np.log10(front["mse"].to_numpy() / 4)) / 10)
    C, D = front["C"].to_numpy(), front["D"].to_numpy(float)
    names = list(BEFORE["demo_psnr"])
    p0 = np.array([math.log(BEFORE["demo_psnr"][n]) for n in names])
    obj = lambda u: _huber_objective(dict(zip(names, np.exp(u))), C, D, y)  # noqa: E731
    assert obj(p0) == pytest.approx(BEFORE_OBJECTIVE_DEMO, rel=1e-9)
    nm = optimize.minimize(obj, p0, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 4000})
    assert nm.fun >= BEFORE_OBJECTIVE_DEMO * (1 - 1e-6)


def test_fit_study_too_few_points_is_a_problem_not_an_exception():
    from fitting import FitOptions, StudyOptions, fit_study

    df = pd.DataFrame({"C": [1.0, 2.0, 3.0, 4.0], "D": [5.0] * 4, "y": [1.0, 0.9, 0.8, 0.7]})
    study = fit_study(df, StudyOptions(fit=FitOptions(bootstrap=0)))
    assert study.fit is None and study.problem.startswith("too few points to fit kaplan L(C, D)")
    assert "1 value(s) of D" in study.problem
