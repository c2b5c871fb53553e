"""Comparing model families (issue 11): grid.families expansion, the store's runs.family column (and the migration of
schema-3 stores), `rayder-fit --family`, and the report page that overlays both families' frontiers and laws."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pytest

from rayder_core.store import ResultsStore, schema
from rayder_core.models import family_of
from rayder_core.yamlconf import ConfigError
from sweeps.spec import spec_from_mapping


def _grid(**grid):
    return {"name": "cmp", "base": {"steps": 10, "data": {"resolution": 16, "frames": 4}},
            "grid": {"presets": ["tiny-xs", "tiny-s"], "fractions": [0.5, 1.0], **grid}}


# ------------------------------------------------------------------------------------------------ grid expansion
def test_grid_families_axis_expands_every_run_per_family():
    spec = spec_from_mapping(_grid(families=["rayder", "erayzer"], family_overrides={"erayzer": {"model": {"patch": 4}},
                                                                                 "rayder": {"steps": 12}}))
    runs = spec.runs()
    assert len(runs) == 2 * 2 * 2
    fams = [family_of(dict(r.model)) for r in runs]
    assert fams == ["rayder"] * 4 + ["erayzer"] * 4
    assert {r.sweep for r in runs} == {"cmp"}  # one sweep; the store's runs.family tells the families apart
    assert all(r.model.get("patch") == 4 for r in runs[4:]) and all("patch" not in r.model for r in runs[:4])
    assert [r.steps for r in runs] == [12] * 4 + [10] * 4  # family overrides are TrainConfig keys
    assert len({r.run_id for r in runs}) == 8
    assert all(r.run_id.startswith("cmp-tiny-") for r in runs[:4])  # RayDer ids as before families existed
    assert all(r.run_id.startswith("cmp-erayzer-tiny-") for r in runs[4:])
    # merge order base < preset_overrides < family_overrides: a family's setting holds for every preset
    d = _grid(families=["rayder", "erayzer"], family_overrides={"erayzer": {"optim": {"lr": 1e-3}}})
    d["base"]["optim"] = {"lr": 4e-3}
    d["preset_overrides"] = {"tiny-s": {"optim": {"lr": 2e-3}, "steps": 7}}
    got = {(family_of(dict(r.model)), r.model["preset"]): (r.optim.lr, r.steps) for r in spec_from_mapping(d).runs()}
    assert got == {("rayder", "tiny-xs"): (4e-3, 10), ("rayder", "tiny-s"): (2e-3, 7),
                   ("erayzer", "tiny-xs"): (1e-3, 10), ("erayzer", "tiny-s"): (1e-3, 7)}
    # without the axis nothing changes: the base family (rayder), as before
    assert [family_of(dict(r.model)) for r in spec_from_mapping(_grid()).runs()] == ["rayder"] * 4


@pytest.mark.parametrize("mutate,match", [
    (lambda d: d["base"].update(model={"family": "erayzer"}), r"base\.model\.family: set by the grid"),
    (lambda d: d["grid"].update(families=["rayder", "nerf"]), r"unknown model family \['nerf'\]"),
    (lambda d: d["grid"].update(presets=["tiny-2x256"]), r"unknown erayzer preset 'tiny-2x256'"),
    (lambda d: d["grid"].update(ablations={"x": {"family": "rayder"}}), r"ablations\.x\.family: set by the grid"),
    (lambda d: d["grid"].update(family_overrides={"rayder": {"model": {"bogus": 1}}}), r"bogus"),
    (lambda d: d["grid"].update(family_overrides={"erayzer": {"model": {"family": "rayder"}}}), r"set by the grid"),
])
def test_grid_families_errors(mutate, match):
    d = _grid(families=["rayder", "erayzer"])
    mutate(d)
    with pytest.raises((ConfigError, ValueError), match=match):
        spec_from_mapping(d, source="g.yaml").runs()


# ------------------------------------------------------------------------------------------------ store column
def _schema3_store(path):
    """A store as schema 3 wrote it (no runs.family), with one RayDer run (no model.family) and one E-RayZer run."""
    con = duckdb.connect(str(path))
    for stmt in schema.SCHEMA_V1:
        con.execute(stmt)
    for v in (1, 2):
        for stmt in schema.MIGRATIONS[v]:
            con.execute(stmt)
    con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', '3')")
    for run_id, model in (("old-r", {"preset": "tiny-xs"}), ("old-e", {"family": "erayzer", "preset": "tiny-xs"})):
        con.execute("INSERT INTO runs VALUES (?, 's', 'tiny-xs', 1, 1.0, 4, ?, 'finished', '', '', now(), now())",
                    [run_id, json.dumps({"model": model})])
        con.execute("INSERT INTO checkpoints VALUES (?, 5, 10, 1e9, 1.0, 1.0, 1e-3, 'stable')", [run_id])
        con.execute("INSERT INTO evals VALUES (?, 5, 'b', 'psnr', 20.0, 3, NULL, 0)", [run_id])
    con.close()


def test_store_family_column_and_migration_keep_every_row(tmp_path):
    db = tmp_path / "old.duckdb"
    _schema3_store(db)
    store = ResultsStore(db)
    # read-only: the family comes from each run's stored config, the file is not migrated
    assert dict(zip(store.runs()["run_id"], store.runs()["family"])) == {"old-r": "rayder", "old-e": "erayzer"}
    assert list(store.eval_points("b", "psnr", family="erayzer")["run_id"]) == ["old-e"]
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "3"
    con.close()
    # the first write migrates: the column exists, filled from the configs, and no row is lost
    store.upsert_run("new-e", sweep="s", preset="tiny-s", params=2, fraction=1.0, D=4,
                     config={"model": {"family": "erayzer", "preset": "tiny-s"}}, status="running")
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == str(schema.SCHEMA_VERSION)
    cols = {r[0]: r[1] for r in con.execute("SELECT column_name, data_type FROM information_schema.columns "
                                            "WHERE table_name = 'runs'").fetchall()}
    rows = dict(con.execute("SELECT run_id, family FROM runs").fetchall())
    counts = [con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("checkpoints", "evals")]
    con.close()
    assert cols["family"] == "VARCHAR"
    assert rows == {"old-r": "rayder", "old-e": "erayzer", "new-e": "erayzer"} and counts == [2, 2]
    assert store.families() == ["erayzer", "rayder"]
    assert list(store.runs(family="rayder")["run_id"]) == ["old-r"]


def test_new_store_records_family_default_rayder(tmp_path):
    store = ResultsStore(tmp_path / "r.duckdb")
    store.upsert_run("r1", sweep="s", preset="tiny-xs", params=1, fraction=1.0, D=4, config={"model": {}},
                     status="finished")
    store.upsert_run("e1", sweep="s", preset="tiny-xs", params=1, fraction=1.0, D=4, config={}, status="finished",
                     family="erayzer")
    assert dict(zip(store.runs()["run_id"], store.runs()["family"])) == {"r1": "rayder", "e1": "erayzer"}


# ------------------------------------------------------------------------------------------------ two-family store
LAWS = {"rayder": dict(alpha=0.5, beta=0.8), "erayzer": dict(alpha=0.25, beta=0.8)}


def _write_two_families(db, coef=None):
    """Both families on the same grid (3 sizes x 3 D, 6 checkpoints each); MSE = 1e-3 + a C^-alpha (1 + 3/size)
    + 5 D^-beta with a compute exponent (and coefficient a, default 2) per family (C in GFLOP)."""
    coef = coef or {}
    store = ResultsStore(db)
    with store.batch():
        for fam, law in LAWS.items():
            for size in (1, 3, 9):
                for D in (4, 16, 64):
                    run = f"{fam}-{size}-{D}"
                    store.upsert_run(run, sweep="cmp", preset=f"p{size}", params=size * 1000, fraction=D / 64, D=D,
                                     config={"model": {"family": fam}}, status="finished")
                    for step in (10, 20, 40, 80, 160, 320):
                        C = size * step * 2.0
                        mse = 1e-3 + coef.get(fam, 2) * C ** -law["alpha"] * (1 + 3 / size) + 5 * D ** -law["beta"]
                        store.add_checkpoint(run, step=step, samples=step * 4, flops=C * 1e9, wall_time_s=1.0,
                                             lr=1e-3, lr_phase="stable")
                        store.add_evals(run, step, bench="b", values={"psnr": -10 * np.log10(mse / 4)}, n=4)
    return db


@pytest.fixture(scope="module")
def two_family_store(tmp_path_factory):
    return _write_two_families(tmp_path_factory.mktemp("fam") / "two.duckdb")


def test_rayder_fit_family_filter(two_family_store, capsys):
    from fitting.cli import main

    out = {}
    for fam in ("rayder", "erayzer"):
        assert main(["--metric", "psnr", "--bench", "b", "--db", str(two_family_store), "--family", fam,
                     "--no-write", "--json", "--bootstrap", "0"]) == 0
        out[fam] = json.loads(capsys.readouterr().out)
    store = ResultsStore(two_family_store)
    for fam in LAWS:
        assert set(store.eval_points("b", "psnr", family=fam)["family"]) == {fam}
    print({f: (round(o["params"]["alpha"], 3), o["n_points"]) for f, o in out.items()})
    # each fit saw its own family only: the compute exponents differ as generated
    assert out["rayder"]["params"]["alpha"] > out["erayzer"]["params"]["alpha"] + 0.1


def test_report_law_never_shows_one_familys_stored_fit(tmp_path):
    """The report's (pooled) law uses a stored fit only when it was fitted on the same points: a stored
    `rayder-fit --family rayder` fit is not shown as the law of both families; a pooled stored fit is."""
    from fitting.cli import main
    from reports.common import load_study
    from reports.fits import fit_metric

    # E-RayZer's smaller coefficient makes it win below C ~ 256 GFLOP, RayDer above: the pooled frontier mixes both
    db = _write_two_families(tmp_path / "crossing.duckdb", coef={"erayzer": 0.5})
    args = ["--metric", "psnr", "--bench", "b", "--db", str(db), "--bootstrap", "0"]
    assert main(args + ["--family", "rayder"]) == 0
    rayder_fit = ResultsStore(db).fits().sort_values("created").iloc[-1]
    got = fit_metric(load_study(db), "b", "psnr", bootstrap=0)
    assert set(got.frontier.loc[got.frontier["on_frontier_d"], "family"]) == {"rayder", "erayzer"}
    assert got.source.startswith("fitted now") and got.formula != rayder_fit["formula"]
    assert any("1 stored fit(s)" in n for n in got.notes)
    assert main(args) == 0  # pooled over both families: the same points as the report's frontier
    got = fit_metric(load_study(db), "b", "psnr", bootstrap=0)
    assert got.source.startswith("stored fit") and got.n_points == got.band_fit.n_points


def test_family_page_overlays_two_frontiers(two_family_store, tmp_path):
    from matplotlib.figure import Figure

    from reports.family_page import family_page

    fig = family_page(ResultsStore(two_family_store), bench="b", bootstrap=10)
    assert isinstance(fig, Figure)
    labels = [line.get_label() for ax in fig.axes for line in ax.get_lines()]
    assert any(lb.startswith("rayder: frontier") for lb in labels)
    assert any(lb.startswith("erayzer: frontier") for lb in labels)
    assert sum(lb.endswith("law at D = 64") for lb in labels) == 2
    cells = {k: c.get_text().get_text() for ax in fig.axes for tb in ax.tables for k, c in tb.get_celld().items()}
    assert sorted(v for (r, c), v in cells.items() if r == 0) == ["erayzer", "rayder"]  # one column per family
    assert {v for (r, c), v in cells.items() if c == -1} >= {"alpha [95% CI]", "beta [95% CI]", "R^2"}
    assert sum("[" in v for (r, c), v in cells.items() if r > 0 and c >= 0) >= 4  # exponents with CIs, both
    text = "\n".join(t.get_text() for t in fig.texts)
    assert "rayder: MSE(C,D)" in text and "erayzer: MSE(C,D)" in text
    fig.savefig(tmp_path / "families.png")
    # a store with one family has no such page
    one = ResultsStore(tmp_path / "one.duckdb")
    one.upsert_run("r", sweep="s", preset="p", params=1, fraction=1.0, D=4, config={}, status="finished")
    assert family_page(one) is None


def test_report_lists_the_family_page(two_family_store, monkeypatch):
    """reports.report.PAGES includes the family page; it yields one page per NVS benchmark of a two-family store."""
    from reports import family_page as page
    from reports.common import load_study
    from reports.report import PAGES

    assert page in PAGES
    monkeypatch.setattr(page, "FAMILY_BOOTSTRAP", 5)
    names = [name for name, _fig in page.figures(load_study(two_family_store), {})]
    assert names == ["09_families_b"]
