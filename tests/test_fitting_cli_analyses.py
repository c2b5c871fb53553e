"""rayder-fit's issue-12 options end to end: on a results store (filters, comparison, validation records) and CSVs."""
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_fitting_synth import eval_points  # noqa: E402
from test_fitting_data_constrained import _data as dc_data  # noqa: E402
from test_fitting_isoflop import A_TRUE, _design  # noqa: E402

from fitting.cli import main  # noqa: E402
from rayder_core.store import ResultsStore  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The Eq. 4-like synthetic study; the first checkpoint of every run is in warmup, the last one decayed."""
    db = tmp_path_factory.mktemp("store") / "results.duckdb"
    st = ResultsStore(db)
    pts = eval_points("mse", seed=0)
    with st.batch():
        for (run_id, preset, frac, D), g in pts.groupby(["run_id", "preset", "fraction", "D"]):
            st.upsert_run(run_id, sweep="s", preset=preset, params=1, fraction=frac, D=int(D), config={},
                          status="finished")
            last = g.step.max()
            for row in g.itertuples():
                phase = "warmup" if row.step == g.step.min() else "decay" if row.step == last else "stable"
                st.add_checkpoint(run_id, step=row.step, samples=row.samples, flops=row.compute_gflop * 1e9,
                                  wall_time_s=0, lr=1e-4, lr_phase=phase)
                st.add_evals(run_id, row.step, bench="synth", values={"psnr": -10 * np.log10(row.value / 4)}, n=10)
    return db


def test_store_filters_report_counts(store, capsys):
    base = ["--metric", "psnr", "--bench", "synth", "--db", str(store), "--bootstrap", "0", "--no-write", "--starts", "4"]
    assert main(base + ["--law", "additive"]) == 0
    err = capsys.readouterr().err
    assert "checkpoints: 132 -> 120 (warmup checkpoints: -12)" in err
    assert main(base + ["--law", "additive", "--checkpoints", "final", "--keep-warmup"]) == 0
    assert "checkpoints: 132 -> 12 (--checkpoints final: -120)" in capsys.readouterr().err
    assert main(base + ["--law", "additive", "--checkpoints", "cooldown", "--min-step", "60000"]) == 0
    assert ("checkpoints: 132 -> 12 (--min-step 60000: -12, warmup checkpoints: -0, --checkpoints cooldown: -108)"
            in capsys.readouterr().err)


def test_store_compare_and_validation_are_stored(store, capsys):
    base = ["--metric", "psnr", "--bench", "synth", "--db", str(store), "--bootstrap", "0"]
    assert main(base + ["--compare", "additive,kaplan,single", "--no-cv"]) == 0
    out = capsys.readouterr().out
    assert out.index("kaplan") < out.index("single")  # kaplan generated the data
    st = ResultsStore(store)
    comp = st.law_comparisons(metric="psnr")
    assert sorted(comp.law) == ["additive", "kaplan", "single"] and comp.sort_values("aic").law.iloc[0] == "kaplan"
    assert main(base + ["--validate", "prefix", "--starts", "4"]) == 0
    assert "growing-prefix extrapolation" in capsys.readouterr().out
    pre = st.extrapolations(kind="prefix")
    assert len(pre) > 3 and pre.mean_abs_rel_err.notna().all()
    assert main(base + ["--holdout-above", "1e9", "--law", "additive", "--bootstrap", "20"]) == 0
    out = capsys.readouterr().out
    assert "inside the 95% lack-of-fit interval" in out
    hold = st.extrapolations(kind="holdout")
    detail = json.loads(hold.detail.iloc[0])
    assert len(hold) == 1 and hold.n_test.iloc[0] == len(detail) > 0 and {"lo", "hi", "inside"} <= set(detail[0])


def test_csv_constraints_isoflop_and_two_stage(tmp_path, capsys):
    csv = tmp_path / "single.csv"
    C = np.geomspace(1e3, 1e6, 30)
    pd.DataFrame({"C": C, "loss": 30 * C ** -0.4}).to_csv(csv, index=False)
    assert main(["--csv", str(csv), "--law", "single", "--x", "C", "--y", "loss", "--bootstrap", "0", "--fix",
                 "L_inf=0", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["law"] == "single[L_inf=0]" and rec["n_free"] == 2 and rec["params"]["alpha"] == pytest.approx(0.4)
    with pytest.raises(SystemExit, match="expected NAME=VALUE"):
        main(["--csv", str(csv), "--law", "single", "--x", "C", "--y", "loss", "--fix", "L_inf"])
    assert main(["--csv", str(csv), "--law", "single", "--x", "C", "--y", "loss", "--fix", "nope=1"]) == 2
    assert "has no parameter" in capsys.readouterr().err

    iso = tmp_path / "iso.csv"
    _design(lambda k: 1.0).to_csv(iso, index=False)
    png = tmp_path / "iso.png"
    assert main(["--csv", str(iso), "--isoflop", "--x", "N,C", "--y", "y", "--bootstrap", "100", "--plot", str(png),
                 "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["a_N"] == pytest.approx(A_TRUE, abs=3e-4) and png.stat().st_size > 10_000

    dc = tmp_path / "dc.csv"
    dc_data().to_csv(dc, index=False)
    assert main(["--csv", str(dc), "--law", "data_constrained", "--two-stage", "--x", "N,D,U", "--bootstrap", "0"]) == 0
    out = capsys.readouterr().out
    assert "stage 2, R* with the base fixed" in out and "joint fit" in out
