"""An old results store and an old run directory still load (issue 26: moves keep behaviour).

tests/data/store-f9747d9/ is `EXPORT DATABASE` (CSV) of the results.duckdb that commit f9747d9 (before the store
package existed) wrote for a 4-run demo study (2 presets x 2 fractions, 60 steps); tests/data/run-f9747d9/ holds the
record files of one of its run directories as that commit's trainer wrote them."""
from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pandas as pd

from rayder_core.store import SCHEMA_VERSION, ResultsStore, collect_runs

DATA = Path(__file__).resolve().parent / "data"
TABLES = ("branches", "checkpoints", "evals", "extrapolations", "fits", "law_comparisons", "meta", "runs",
          "train_log")
OLD_RUN = "demo-tiny-w16-f1-b98bc28140"


def old_store(path: Path) -> Path:
    """The f9747d9 store, re-created from its export (same schema statements, same rows)."""
    con = duckdb.connect(str(path))
    try:
        for stmt in (DATA / "store-f9747d9" / "schema.sql").read_text().split(";"):
            if stmt.strip():
                con.execute(stmt)
        for table in TABLES:
            con.execute(f"COPY {table} FROM '{DATA / 'store-f9747d9' / (table + '.csv')}' (FORMAT csv, HEADER)")
    finally:
        con.close()
    return path


def test_the_old_store_reads_as_it_was_written(tmp_path):
    store = ResultsStore(old_store(tmp_path / "old.duckdb"))
    counts = store.table_counts()
    assert counts["runs"] == 4 and counts["checkpoints"] == 12 and counts["evals"] == 216
    assert store.meta_values("schema_version") == {"schema_version": "4"}  # read as it is: not migrated
    runs = store.runs(sweep="demo")
    assert sorted(runs["preset"].unique()) == ["tiny-w16", "tiny-w32"] and set(runs["family"]) == {"rayder"}
    points = store.eval_points("indist-synth", "psnr", sweep="demo")
    assert len(points) == 12 and points["value"].between(10, 40).all()
    lpips = store.missing_evals(bench="re10k-synth", metric="lpips")
    assert len(lpips) == 12  # recorded as missing, with the reason, as before


def test_an_old_run_directory_is_collected_into_the_old_store_unchanged(tmp_path):
    """Re-collecting the old run directory (today's recording code) rewrites exactly the rows it had."""
    db = old_store(tmp_path / "old.duckdb")
    before = ResultsStore(db)
    rows = {t: before.query(f"SELECT * FROM {t} WHERE run_id = ? ORDER BY ALL", [OLD_RUN])
            for t in ("checkpoints", "evals", "train_log")}
    run_dir = tmp_path / OLD_RUN
    shutil.copytree(DATA / "run-f9747d9" / OLD_RUN, run_dir)
    report = collect_runs([run_dir], before, force=True)
    assert report.ingested == [OLD_RUN] and not report.errors
    after = ResultsStore(db)
    for table, old in rows.items():
        pd.testing.assert_frame_equal(after.query(f"SELECT * FROM {table} WHERE run_id = ? ORDER BY ALL", [OLD_RUN]),
                                      old, check_exact=True)
    run = after.runs(sweep="demo").set_index("run_id").loc[OLD_RUN]
    assert run["status"] == "finished" and run["preset"] == "tiny-w16" and int(run["D"]) == 64


def test_the_first_write_migrates_fits_to_record_their_bootstrap_unit(tmp_path):
    """Schema 5: `fits.bootstrap_unit` says what a stored fit's bootstrap resampled; a fit stored before is kept with
    NULL (not recorded, not guessed), a fit stored after carries its unit."""
    db = old_store(tmp_path / "old.duckdb")
    con = duckdb.connect(str(db))
    con.execute("INSERT INTO fits VALUES ('old-fit', 'demo', 'kaplan', 'psnr', 'indist-synth', '[\"C\", \"D\"]', "
                "'y', '{}', '{}', '{}', 0.99, 0.99, 0.001, 10, 0.1, 8, 8, 100, 'h0', '{}', 'f', now())")
    con.close()
    store = ResultsStore(db)
    assert "bootstrap_unit" not in store.fits().columns  # read before the migration: the column does not exist yet
    pts = pd.DataFrame({"C": [1e2, 1e3, 1e4] * 2, "D": [64.0] * 3 + [1024.0] * 3,
                        "y": [0.05, 0.03, 0.02, 0.04, 0.02, 0.01], "trunk": list("aabbcc")})
    from fitting import fit_law
    for groups, unit in ((None, "point"), ("trunk", "trunk")):
        fit = fit_law(pts, bootstrap=4, bootstrap_groups=groups, n_starts=2, holdout=False, progress=False,
                      sweep=unit, metric="psnr", bench="indist-synth", fix={"L_inf": 0.0, "gamma": 1.0})
        store.write_fit(fit.to_record())
    assert store.meta_values("schema_version") == {"schema_version": str(SCHEMA_VERSION)} and SCHEMA_VERSION == 5
    fits = store.fits()
    units = {sweep: (None if pd.isna(unit) else unit) for sweep, unit in zip(fits["sweep"], fits["bootstrap_unit"])}
    assert units == {"demo": None, "point": "point", "trunk": "trunk"}
    unbootstrapped = fit_law(pts, bootstrap=0, n_starts=2, holdout=False, progress=False, fix={"L_inf": 0.0})
    assert unbootstrapped.to_record()["bootstrap_unit"] is None  # no resamples: no unit
