"""Schema 2 of the results store: evals.skipped (scenes skipped as unreadable) and the recorded FLOP convention;
a schema-1 store stays readable and migrates on its first write."""

import duckdb

from rayder_core.store import ResultsStore, schema


def _v1_store(path):
    con = duckdb.connect(str(path))
    for stmt in schema.SCHEMA_V1:
        con.execute(stmt)
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    con.execute("INSERT INTO evals VALUES ('old', 10, 'b', 'psnr', 21.5, 7, NULL)")
    con.close()


def test_old_store_readable_then_migrated(tmp_path):
    db = tmp_path / "old.duckdb"
    _v1_store(db)
    store = ResultsStore(db)
    ev = store.evals()
    assert list(ev["skipped"]) == [0] and float(ev["value"].iloc[0]) == 21.5 and int(ev["n"].iloc[0]) == 7
    assert store.flops_convention() == "exact"
    con = duckdb.connect(str(db), read_only=True)  # reading did not migrate the file
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "1"
    con.close()
    ResultsStore(db).add_evals("new", 20, bench="b", values={"psnr": 19.0}, n=5, skipped=1)
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(schema.SCHEMA_VERSION)
    rows = con.execute("SELECT run_id, n, skipped FROM evals ORDER BY run_id").fetchall()
    con.close()
    assert rows == [("new", 5, 1), ("old", 7, 0)]


def test_new_store_records_convention_and_skipped(tmp_path):
    store = ResultsStore(tmp_path / "r.duckdb")
    store.add_evals("r", 1, bench="b", values={"psnr": 20.0}, n=3, skipped=2, missing={"lpips": "no weights"})
    ev = store.evals("r")
    assert sorted(ev["skipped"]) == [2, 2] and sorted(ev["n"]) == [3, 3]
    assert store.flops_convention() == "exact" == schema.FLOPS_CONVENTION
