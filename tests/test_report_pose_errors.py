"""Report page 5 with the three camera protocols (cross-scene probe, per-scene probe, pose transfer) plotted vs
compute from the store, and the summary's line on skipped scenes."""
from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from reports import report as R
from rayder_core.store import ResultsStore

matplotlib.use("Agg")


def make_store(path):
    store = ResultsStore(path)
    for i, (preset, params) in enumerate((("tiny-xs", 1e6), ("tiny-s", 3e6))):
        run = f"run-{preset}"
        store.upsert_run(run, sweep="t", preset=preset, params=int(params), fraction=1.0, D=100, config={},
                         status="finished")
        for step in (100, 200, 400):
            flops = params * step * 6e3
            store.add_checkpoint(run, step=step, samples=step * 4, flops=flops, wall_time_s=1.0)
            err = 30.0 * (flops / 1e9) ** -0.2
            store.add_evals(run, step, bench="probe", values={"rot_err_deg": err, "trans_err": err / 100}, n=8)
            store.add_evals(run, step, bench="probe-per-scene", values={"rot_err_deg": err / 2,
                                                                        "trans_err": err / 200}, n=32)
            store.add_evals(run, step, bench="probe-transfer", values={"rot_err_deg": err * 1.5,
                                                                       "trans_err_deg": err * 2, "T@10": 10.0}, n=32)
            store.add_evals(run, step, bench="re10k", values={"psnr": 20.0 + step / 100}, n=61, skipped=3)
    return store


def test_camera_pages_for_every_protocol(tmp_path):
    make_store(tmp_path / "r.duckdb")
    study = R.load_study(tmp_path / "r.duckdb")
    assert study.probe_benches == ["probe", "probe-per-scene", "probe-transfer"]
    pts = study.eval_points("probe-transfer", "trans_err_deg")
    assert len(pts) == 6 and np.allclose(sorted(pts["value"])[:1], [2 * 30.0 * (3e6 * 400 * 6e3 / 1e9) ** -0.2])
    for bench, label, metric in (("probe", "cross-scene probe", "translation error"),
                                 ("probe-per-scene", "per-scene probe (Appendix B.2.3)", "translation error"),
                                 ("probe-transfer", "pose transfer (XFactor TPS)", "translation direction error")):
        fig = R.camera_page(study, bench)
        texts = " ".join(t.get_text() for t in fig.texts) + " ".join(ax.get_title() for ax in fig.axes)
        assert label in texts and metric in texts
        plotted = [ax for ax in fig.axes if ax.lines]
        assert len(plotted) == 4  # 2 metrics x (by data fraction, by model size), all with data
        matplotlib.pyplot.close(fig)
    lines = R.missing_summary(study)
    assert any(line.startswith("re10k: 3 unreadable scene(s) skipped (of 64) at 6 checkpoint(s)") for line in lines)


def test_where_keeps_only_the_selected_runs_and_their_rows(tmp_path):
    make_store(tmp_path / "r.duckdb")
    full = R.load_study(tmp_path / "r.duckdb")
    kept = R.load_study(tmp_path / "r.duckdb", where="preset != 'tiny-s'")
    assert list(kept.runs["run_id"]) == ["run-tiny-xs"] and len(full.runs) == 2
    for name in ("checkpoints", "evals"):
        rows, all_rows = getattr(kept, name), getattr(full, name)
        assert set(rows["run_id"]) == {"run-tiny-xs"}
        assert len(rows) == (all_rows["run_id"] == "run-tiny-xs").sum() > 0
    for key, points in full.points.items():
        assert kept.points[key].equals(points[points["run_id"] == "run-tiny-xs"].reset_index(drop=True))
    assert kept.presets == ["tiny-xs"]


def test_where_that_fails_or_keeps_nothing_names_the_store_and_the_columns(tmp_path):
    make_store(tmp_path / "r.duckdb")
    for expr, said in (("preset == 'tiny-xl'", "keeps none of the 2 rows"), ("nosuch > 1", "failed")):
        with pytest.raises(R.ReportError) as exc:
            R.load_study(tmp_path / "r.duckdb", where=expr)
        assert str(tmp_path / "r.duckdb") in str(exc.value) and said in str(exc.value) and "preset" in str(exc.value)
