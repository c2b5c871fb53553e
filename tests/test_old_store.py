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
    assert store.meta_values("schema_version") == {"schema_version": str(SCHEMA_VERSION)}
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
