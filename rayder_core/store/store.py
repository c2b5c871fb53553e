"""`ResultsStore`: the DuckDB results store (one transaction per operation under a file lock; see `rayder_core.store`)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import duckdb
import pandas as pd

from rayder_core.run_identity import replicate_key, trunk_of
from rayder_core.store.schema import (DEFAULT_FAMILY, FAMILY_FROM_CONFIG, FLOPS_CONVENTION, LR_PHASES, RUN_STATUSES,
                                      SCHEMA_VERSION, create_or_migrate)

DEFAULT_DB = "results.duckdb"
LOCK_TIMEOUT_S = 600.0


def with_replicates(points: pd.DataFrame) -> pd.DataFrame:
    """`points` (with the runs' `config` JSON) with columns seed, replicate and trunk in place of config: one
    `replicate_key` per run, so runs that differ only in their seed share it. A run whose config has no seed (or
    does not parse) is keyed alone ("run:<run_id>"): nothing says what it replicates. `trunk` is the replicate key
    of the run whose first steps a run shares (following `start_from` to a run trained from step 0, its own key
    for such a run; "run:<id>" for a trunk not among the points): the run lengths forked from one trunk share its
    initialisation and data order, and so its luck (a cluster bootstrap resamples them together:
    `rayder-fit --bootstrap-by trunk`)."""
    keys: dict[str, tuple[Any, str]] = {}
    parents: dict[str, str | None] = {}
    for run_id, config in points[["run_id", "config"]].drop_duplicates("run_id").itertuples(index=False):
        try:
            mapping = json.loads(config)
            seed = mapping.get("seed")
            keys[run_id] = (seed, replicate_key(mapping) if isinstance(seed, int) else f"run:{run_id}")
            parents[run_id] = trunk_of(mapping.get("start_from"))[0]
        except (TypeError, ValueError, AttributeError):
            keys[run_id] = (None, f"run:{run_id}")
            parents[run_id] = None
    out = points.drop(columns="config")
    out["seed"] = pd.array([keys[r][0] for r in out["run_id"]], dtype="Int64")
    out["replicate"] = [keys[r][1] for r in out["run_id"]]
    trunks = {r: _trunk_key(r, keys, parents) for r in keys}
    out["trunk"] = [trunks[r] for r in out["run_id"]]
    return out


def _trunk_key(run_id: str, keys: dict[str, tuple[Any, str]], parents: dict[str, str | None]) -> str:
    """The replicate key of the run at the root of `run_id`'s `start_from` chain (see `with_replicates`)."""
    seen = {run_id}
    while parents.get(run_id):
        parent = parents[run_id]
        if parent not in keys:
            return f"run:{parent}"
        if parent in seen:  # a cycle cannot come from training; key it by where it was found
            break
        seen.add(parent)
        run_id = parent
    return keys[run_id][1]


class StoreError(RuntimeError):
    """The results store cannot be used as asked (newer schema, not a DuckDB file, lock timeout...)."""


class BenchLookupError(StoreError, LookupError):
    """A benchmark name given by the user matches no (or several) benchmarks of the store; the message lists them."""


def describe_bench_counts(counts: pd.DataFrame) -> str:
    """Human-readable table of `ResultsStore.bench_metric_counts()`: one line per benchmark, its metrics with the
    number of evaluated checkpoints (and of missing ones, if any)."""
    if counts.empty:
        return "  the store has no evaluations at all (run a sweep or rayder-eval first)"
    lines = ["  the store has (benchmark: metric = evaluated checkpoints):"]
    for bench, grp in counts.groupby("bench", sort=True):
        cells = [f"{r.metric} {int(r.evaluated)}" + (f" (+{int(r.missing)} missing)" if r.missing else "")
                 for r in grp.itertuples()]
        lines.append(f"    {bench}: " + ", ".join(cells))
    return "\n".join(lines)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _finite_or_none(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


ROWS_PER_STATEMENT = 256


def _upsert_rows(con: duckdb.DuckDBPyConnection, table: str, columns: str, rows: list[list], key_len: int) -> None:
    """INSERT OR REPLACE `rows` into `table` with one bound multi-row VALUES statement per ROWS_PER_STATEMENT rows.

    DuckDB's `executemany` runs one statement per row (measured ~0.1 s per row on the shared 2-core machine under
    load: a 200-line training log took 24 s); this is one statement per chunk. Rows sharing a key (their first
    `key_len` values) keep the last one, as a sequence of single-row upserts would."""
    unique = list({tuple(r[:key_len]): r for r in rows}.values())
    if not unique:
        return
    row = "(" + ", ".join(["?"] * len(unique[0])) + ")"
    for i in range(0, len(unique), ROWS_PER_STATEMENT):
        chunk = unique[i:i + ROWS_PER_STATEMENT]
        con.execute(f"INSERT OR REPLACE INTO {table} {columns} VALUES " + ", ".join([row] * len(chunk)),
                    [v for r in chunk for v in r])


class ResultsStore:
    """Process-safe access to a results DuckDB file. Cheap to create; every call is one short transaction."""

    def __init__(self, path: str | os.PathLike = DEFAULT_DB, *, lock_timeout_s: float = LOCK_TIMEOUT_S) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout_s = lock_timeout_s
        self._schema_checked = False
        self._batch_con: duckdb.DuckDBPyConnection | None = None

    def __enter__(self) -> "ResultsStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    # ------------------------------------------------------------------------------------------------ connections
    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            deadline = time.monotonic() + self.lock_timeout_s
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise StoreError(f"{self.path}: waited {self.lock_timeout_s:.0f} s for the store lock "
                                         f"{self.lock_path}; is another process stuck holding it?") from None
                    time.sleep(0.01)
            yield
        finally:
            os.close(fd)  # closing releases the flock

    @contextlib.contextmanager
    def batch(self) -> Iterator["ResultsStore"]:
        """Group many writes into one locked transaction: `with store.batch(): store.add_...(...)`.

        All-or-nothing: an exception inside the block rolls every write of the block back.
        """
        if self._batch_con is not None:
            yield self
            return
        with self._connect(write=True) as con:
            self._batch_con = con
            try:
                yield self
            finally:
                self._batch_con = None

    @contextlib.contextmanager
    def _connect(self, write: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        if self._batch_con is not None:  # inside `batch()`: reuse its connection and transaction
            yield self._batch_con
            return
        with self._locked(exclusive=write or not self.path.exists()):
            try:
                con = duckdb.connect(str(self.path), read_only=not write and self.path.exists())
            except duckdb.Error as exc:
                raise StoreError(f"{self.path}: cannot open as a DuckDB results store: {exc}") from None
            try:
                if not self._schema_checked:
                    self._ensure_schema(con, write)
                if write:
                    con.execute("BEGIN TRANSACTION")
                    try:
                        yield con
                        con.execute("COMMIT")
                    except BaseException:
                        con.execute("ROLLBACK")
                        raise
                else:
                    yield con
            finally:
                con.close()

    def _ensure_schema(self, con: duckdb.DuckDBPyConnection, write: bool) -> None:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        version = None
        if "meta" in tables:
            row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row else None
        if version is None and tables - {"meta"}:
            raise StoreError(f"{self.path}: has tables {sorted(tables)} but no schema version; "
                             "not a rayder results store")
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(f"{self.path}: schema version {version} is newer than this toolkit's "
                             f"({SCHEMA_VERSION}); upgrade rayder to read it")
        if version == SCHEMA_VERSION:
            self._schema_checked = True
            return
        if not write and self.path.exists() and version is not None:
            # An older store stays readable as it is (read-only: no migration); readers fill new columns
            # (evals.skipped) with their defaults. The first write migrates it.
            self._old_version = version
            return
        create_or_migrate(con, version)
        self._schema_checked = True

    def initialise(self) -> None:
        """Create the file and schema if absent (no-op otherwise)."""
        with self._connect(write=True):
            pass

    # ------------------------------------------------------------------------------------------------ writes
    def upsert_run(self, run_id: str, *, sweep: str, preset: str, params: int, fraction: float, D: int,
                   config: dict, status: str, host: str = "", run_dir: str = "", family: str | None = None) -> None:
        """Create or update a run. `fraction` is the data fraction (0.01 = 1%); D the number of videos in it;
        `family` its model family (default: `model.family` of `config`, else 'rayder')."""
        if status not in RUN_STATUSES:
            raise ValueError(f"run {run_id}: status must be one of {RUN_STATUSES}, got {status!r}")
        if family is None:
            model = config.get("model") if isinstance(config, dict) else None
            family = str(model.get("family", DEFAULT_FAMILY)) if isinstance(model, dict) else DEFAULT_FAMILY
        now = _now()
        with self._connect(write=True) as con:
            created = con.execute("SELECT created FROM runs WHERE run_id = ?", [run_id]).fetchone()
            con.execute(
                "INSERT OR REPLACE INTO runs (run_id, sweep, preset, params, fraction, D, config, status, host, "
                "run_dir, created, updated, family) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [run_id, sweep, preset, int(params), float(fraction), int(D), json.dumps(config, sort_keys=True),
                 status, host, str(run_dir), created[0] if created else now, now, family],
            )

    def set_run_status(self, run_id: str, status: str) -> None:
        if status not in RUN_STATUSES:
            raise ValueError(f"run {run_id}: status must be one of {RUN_STATUSES}, got {status!r}")
        with self._connect(write=True) as con:
            con.execute("UPDATE runs SET status = ?, updated = ? WHERE run_id = ?", [status, _now(), run_id])

    def add_checkpoint(self, run_id: str, *, step: int, samples: int, flops: float, wall_time_s: float,
                       lr: float | None = None, lr_phase: str | None = None) -> None:
        """Record a checkpoint with its cumulative training compute `flops` (FLOPs) and, when known, the learning
        rate of its last optimizer step `lr` and that step's schedule phase `lr_phase` (warmup | stable | decay)."""
        if lr_phase is not None and lr_phase not in LR_PHASES:
            raise ValueError(f"run {run_id} step {step}: lr_phase must be one of {LR_PHASES}, got {lr_phase!r}")
        with self._connect(write=True) as con:
            con.execute("INSERT OR REPLACE INTO checkpoints (run_id, step, samples, flops, compute_gflop, wall_time_s, "
                        "lr, lr_phase) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        [run_id, int(step), int(samples), float(flops), float(flops) / 1e9, float(wall_time_s),
                         _finite_or_none(lr), lr_phase])

    def add_branch(self, run_id: str, *, parent_run: str, parent_step: int, cooldown_steps: int,
                   schedule: str) -> None:
        """Record that run `run_id` is a cooldown branch forked from `parent_run` at `parent_step` and decayed over
        `cooldown_steps` steps with LR `schedule` (a description, e.g. 'halving every 10% of the cooldown')."""
        with self._connect(write=True) as con:
            con.execute("INSERT OR REPLACE INTO branches VALUES (?, ?, ?, ?, ?)",
                        [run_id, parent_run, int(parent_step), int(cooldown_steps), schedule])

    def write_law_comparison(self, table: pd.DataFrame, *, metric: str | None, bench: str | None,
                             sweep: str | None, x_cols: list[str], y_col: str, data_hash: str) -> str:
        """Store a `fitting.compare.compare_laws` table (one row per law); the same data and laws replace the older
        rows. Returns the comparison id."""
        key = json.dumps([sweep, metric, bench, list(x_cols), y_col, data_hash, sorted(table["law"])])
        cid = hashlib.sha1(key.encode()).hexdigest()[:16]
        now = _now()
        rows = [[cid, r["law"], sweep, metric, bench, json.dumps(list(x_cols)), y_col, data_hash, int(r["n"]),
                 int(r["k"]), _finite_or_none(r["loglik"]), _finite_or_none(r["aic"]), _finite_or_none(r["aicc"]),
                 _finite_or_none(r["bic"]), _finite_or_none(r["d_aic"]), _finite_or_none(r["akaike_weight"]),
                 _finite_or_none(r["loo_err"]), _finite_or_none(r["lodo_err"]), _finite_or_none(r["r2"]),
                 json.dumps(r["params"], sort_keys=True, default=float), r["formula"], now]
                for r in table.to_dict(orient="records")]
        with self._connect(write=True) as con:
            con.execute("DELETE FROM law_comparisons WHERE comparison_id = ?", [cid])
            con.executemany("INSERT INTO law_comparisons VALUES (" + ", ".join(["?"] * 22) + ")", rows)
        return cid

    def write_extrapolation(self, rows: list[dict], *, kind: str, law: str, metric: str | None, bench: str | None,
                            sweep: str | None, x_cols: list[str], y_col: str, data_hash: str) -> str:
        """Store extrapolation-validation rows (kind 'prefix': `fitting.extrapolation.growing_prefix` rows; 'holdout':
        one summary row of `holdout_above`, per-point table in `detail`). Same inputs replace older rows."""
        key = json.dumps([kind, law, sweep, metric, bench, list(x_cols), y_col, data_hash])
        rid = hashlib.sha1(key.encode()).hexdigest()[:16]
        now = _now()
        values = [[rid, i, kind, law, sweep, metric, bench, json.dumps(list(x_cols)), y_col, data_hash,
                   _finite_or_none(r.get("train_max")), _finite_or_none(r.get("budget_x0", r.get("target_x0"))),
                   r.get("steps_ahead"), r.get("n_train"), r.get("n_test"), _finite_or_none(r.get("mean_abs_rel_err")),
                   _finite_or_none(r.get("max_abs_rel_err")), _finite_or_none(r.get("coverage")),
                   json.dumps(r.get("detail"), default=float) if r.get("detail") is not None else None, now]
                  for i, r in enumerate(rows)]
        with self._connect(write=True) as con:
            con.execute("DELETE FROM extrapolations WHERE record_id = ?", [rid])
            con.executemany("INSERT INTO extrapolations VALUES (" + ", ".join(["?"] * 20) + ")", values)
        return rid

    def add_evals(self, run_id: str, step: int, *, bench: str, values: dict[str, float], n: int,
                  missing: dict[str, str] | None = None, skipped: int = 0) -> None:
        """Record evaluated metrics of one checkpoint on one benchmark; `missing` maps metric -> reason; `n` is the
        number of scenes evaluated and `skipped` the number skipped as unreadable."""
        rows = []
        for metric, value in values.items():
            v = _finite_or_none(value)
            reason = None if v is not None else f"non-finite value {value!r}"
            rows.append([run_id, int(step), bench, metric, v, int(n), reason, int(skipped)])
        for metric, reason in (missing or {}).items():
            rows.append([run_id, int(step), bench, metric, None, int(n), str(reason), int(skipped)])
        if not rows:
            return
        with self._connect(write=True) as con:
            _upsert_rows(con, "evals", "(run_id, step, bench, metric, value, n, missing_reason, skipped)", rows, 4)

    def add_train_log(self, run_id: str, rows: list[dict]) -> None:
        """Record logged training steps (keys: step, loss, psnr, lr, grad_norm, skipped, focal_mean, flops)."""
        if not rows:
            return
        values = [[run_id, int(r["step"]), _finite_or_none(r.get("loss")), _finite_or_none(r.get("psnr")),
                   _finite_or_none(r.get("lr")), _finite_or_none(r.get("grad_norm")), int(r.get("skipped", 0)),
                   _finite_or_none(r.get("focal_mean")), _finite_or_none(r.get("flops"))] for r in rows]
        with self._connect(write=True) as con:
            _upsert_rows(con, "train_log", "", values, 2)

    def write_fit(self, record: dict) -> str:
        """Store one fit; the same (sweep, law, metric, bench, x_cols, y_col, data_hash) replaces the older row.
        `bootstrap_unit` ('point' or the column whose groups were resampled whole) says what its CIs resampled."""
        key = json.dumps([record.get("sweep"), record["law"], record["metric"], record["bench"],
                          list(record.get("x_cols", [])), record.get("y_col"), record.get("data_hash")])
        fit_id = hashlib.sha1(key.encode()).hexdigest()[:16]
        dumps = lambda v: json.dumps(v, sort_keys=True, default=float)  # noqa: E731
        with self._connect(write=True) as con:
            con.execute(
                "INSERT OR REPLACE INTO fits (fit_id, sweep, law, metric, bench, x_cols, y_col, params, ci_low, "
                "ci_high, r2, r2_log, rmse, n_points, objective, n_starts, n_starts_at_best, n_bootstrap, data_hash, "
                "holdout, formula, created, bootstrap_unit) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [fit_id, record.get("sweep"), record["law"], record["metric"], record["bench"],
                 dumps(list(record.get("x_cols", []))), record.get("y_col"), dumps(record.get("params", {})),
                 dumps(record.get("ci_low", {})), dumps(record.get("ci_high", {})),
                 _finite_or_none(record.get("r2")), _finite_or_none(record.get("r2_log")),
                 _finite_or_none(record.get("rmse")), record.get("n_points"),
                 _finite_or_none(record.get("objective")), record.get("n_starts"), record.get("n_starts_at_best"),
                 record.get("n_bootstrap"), record.get("data_hash"), dumps(record.get("holdout", {})),
                 record.get("formula"), _now(), record.get("bootstrap_unit")],
            )
        return fit_id

    # ------------------------------------------------------------------------------------------------ reads
    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        """Run a read-only SQL query (with bound `params`) and return a DataFrame. Empty store -> empty frame."""
        if not self.path.exists():
            self.initialise()
        with self._connect(write=False) as con:
            return con.execute(sql, params or []).df()

    def _family_col(self, alias: str = "") -> str:
        """SQL for the runs' family: the column, or (a store read before its schema-4 migration) from the config."""
        if self._has_column("runs", "family"):
            return f"{alias}family"
        return FAMILY_FROM_CONFIG.replace("config", f"{alias}config")

    def runs(self, sweep: str | None = None, family: str | None = None) -> pd.DataFrame:
        """Runs (with column `family`), optionally of one sweep and/or one model family."""
        fam = self._family_col()
        sql = "SELECT * FROM runs" if fam == "family" else f"SELECT *, {fam} AS family FROM runs"
        params: list = []
        conds = []
        if sweep is not None:
            conds.append("sweep = ?")
            params.append(sweep)
        if family is not None:
            conds.append(f"{fam} = ?")
            params.append(family)
        where = f" WHERE {' AND '.join(conds)}" if conds else ""
        return self.query(sql + where + " ORDER BY sweep, preset, fraction", params)

    def families(self) -> list[str]:
        """The model families of the store's runs, sorted."""
        return sorted(self.query(f"SELECT DISTINCT {self._family_col()} AS family FROM runs")["family"])

    def checkpoints(self, run_id: str | None = None) -> pd.DataFrame:
        if run_id is None:
            return self.query("SELECT * FROM checkpoints ORDER BY run_id, step")
        return self.query("SELECT * FROM checkpoints WHERE run_id = ? ORDER BY step", [run_id])

    def evals(self, run_id: str | None = None) -> pd.DataFrame:
        """Evaluation rows (column `skipped` is 0 for stores of schema 1, which had no such column)."""
        if run_id is None:
            df = self.query("SELECT * FROM evals ORDER BY run_id, step, bench, metric")
        else:
            df = self.query("SELECT * FROM evals WHERE run_id = ? ORDER BY step, bench, metric", [run_id])
        if "skipped" not in df.columns:
            df["skipped"] = 0
        return df

    def flops_convention(self) -> str:
        """The convention of the store's compute C (`checkpoints.flops`): 'exact' (schema 1 stores were exact too)."""
        df = self.query("SELECT value FROM meta WHERE key = 'flops_convention'")
        return str(df["value"].iloc[0]) if len(df) else FLOPS_CONVENTION

    def train_log(self, run_id: str | None = None) -> pd.DataFrame:
        if run_id is None:
            return self.query("SELECT * FROM train_log ORDER BY run_id, step")
        return self.query("SELECT * FROM train_log WHERE run_id = ? ORDER BY step", [run_id])

    def fits(self, metric: str | None = None, bench: str | None = None) -> pd.DataFrame:
        """Stored fits, oldest first; `bootstrap_unit` is NULL for fits stored before schema 5 (and absent from a
        store read before its migration)."""
        sql, params = "SELECT * FROM fits WHERE 1=1", []
        if metric is not None:
            sql += " AND metric = ?"
            params.append(metric)
        if bench is not None:
            sql += " AND bench = ?"
            params.append(bench)
        return self.query(sql + " ORDER BY created", params)

    def eval_points(self, bench: str, metric: str, sweep: str | None = None,
                    family: str | None = None) -> pd.DataFrame:
        """One row per evaluated checkpoint with its compute: the input of frontiers and fits.

        Columns: run_id, sweep, family (the run's model family; `family` filters), preset, params, fraction, D, step,
        samples, compute_gflop (C, GFLOP), value (raw metric as evaluated), n (scenes), lr and lr_phase of the
        checkpoint (NULL before schema 3), status of the run, is_last (the run's newest checkpoint), seed (the run's
        training seed; NULL when its config has none), replicate (`run_identity.replicate_key`: equal for runs
        that differ only in their seed) and trunk (`with_replicates`: equal for the run lengths forked from one
        trunk). Checkpoints whose metric is missing are excluded (see `missing_evals`).
        """
        # schema 3 adds the LR phase per checkpoint; older stores (read as they are) give NULL there
        lr_cols = ("c.lr, c.lr_phase" if self._has_column("checkpoints", "lr_phase")
                   else "CAST(NULL AS DOUBLE) AS lr, CAST(NULL AS VARCHAR) AS lr_phase")
        fam = self._family_col("r.")
        sql = f"""
            SELECT r.run_id, r.sweep, {fam} AS family, r.preset, r.params, r.fraction, r.D, e.step, c.samples,
                   c.compute_gflop, e.value, e.n, {lr_cols}, r.status,
                   c.step = (SELECT max(c2.step) FROM checkpoints c2 WHERE c2.run_id = c.run_id) AS is_last,
                   r.config
            FROM evals e JOIN runs r USING (run_id) JOIN checkpoints c ON c.run_id = e.run_id AND c.step = e.step
            WHERE e.bench = ? AND e.metric = ? AND e.value IS NOT NULL"""
        params: list = [bench, metric]
        if sweep is not None:
            sql += " AND r.sweep = ?"
            params.append(sweep)
        if family is not None:
            sql += f" AND {fam} = ?"
            params.append(family)
        return with_replicates(self.query(sql + " ORDER BY r.run_id, e.step", params))

    def bench_metric_counts(self) -> pd.DataFrame:
        """What the store holds, per benchmark x metric: columns bench, metric, evaluated (checkpoints with a value),
        missing (rows recorded as missing, with a reason), runs (distinct runs with a value)."""
        return self.query("""
            SELECT bench, metric, count(value) AS evaluated, count(*) - count(value) AS missing,
                   count(DISTINCT CASE WHEN value IS NOT NULL THEN run_id END) AS runs
            FROM evals GROUP BY bench, metric ORDER BY bench, metric""")

    def resolve_bench(self, name: str, metric: str | None = None) -> str:
        """The concrete benchmark that `name` means in this store, for `metric` (None: any metric).

        An exact benchmark name is returned as is. Otherwise `name` is taken as a family: a benchmark matches when its
        name starts with `name` followed by `-`, `_` or `.` (case-insensitive), e.g. `re10k` -> `re10k-synth` in the
        demo store. Only benchmarks that have evaluated values of `metric` count. Raises `BenchLookupError` when no
        or several benchmarks match; its message lists the store's benchmarks x metrics with counts.
        """
        counts = self.bench_metric_counts()
        have = counts[counts["evaluated"] > 0]
        if metric is not None:
            have = have[have["metric"] == metric]
        benches = sorted(set(have["bench"]))
        if name in benches:
            return name
        low = name.lower()
        matches = [b for b in benches if b.lower() == low or any(b.lower().startswith(low + sep) for sep in "-_.")]
        if len(matches) == 1:
            return matches[0]
        what = f"{metric} evaluations" if metric else "evaluations"
        if matches:
            head = f"{self.path}: bench {name!r} is ambiguous for {what}: it matches {', '.join(matches)}; give one"
        else:
            head = f"{self.path} has no {what} on bench {name!r}"
            if metric is not None:  # all rows missing (e.g. LPIPS without weights): say why
                miss = self.missing_evals(metric=metric)
                miss = miss[[b.lower() == low or any(b.lower().startswith(low + s) for s in "-_.")
                             for b in miss["bench"]]]
                if len(miss):
                    head += (f" ({len(miss)} recorded as missing on {miss['bench'].iloc[0]}, e.g. "
                             f"{miss['missing_reason'].iloc[0]})")
        raise BenchLookupError(head + "\n" + describe_bench_counts(counts))

    def _has_column(self, table: str, column: str) -> bool:
        """Whether `table` has `column` (older stores read as they are may lack newer columns)."""
        df = self.query("SELECT count(*) AS n FROM information_schema.columns WHERE table_name = ? AND column_name = ?",
                        [table, column])
        return bool(df["n"].iloc[0])

    def branches(self) -> pd.DataFrame:
        """Cooldown branches: run_id, parent_run, parent_step, cooldown_steps, schedule (empty before schema 3)."""
        if not self._has_column("branches", "run_id"):
            return pd.DataFrame(columns=["run_id", "parent_run", "parent_step", "cooldown_steps", "schedule"])
        return self.query("SELECT * FROM branches ORDER BY parent_run, parent_step")

    def law_comparisons(self, metric: str | None = None) -> pd.DataFrame:
        """Stored `rayder-fit --compare` tables (empty before schema 3)."""
        if not self._has_column("law_comparisons", "law"):
            return pd.DataFrame()
        if metric is None:
            return self.query("SELECT * FROM law_comparisons ORDER BY created, comparison_id, aic")
        return self.query("SELECT * FROM law_comparisons WHERE metric = ? ORDER BY created, comparison_id, aic",
                          [metric])

    def extrapolations(self, kind: str | None = None) -> pd.DataFrame:
        """Stored extrapolation-validation rows (empty before schema 3)."""
        if not self._has_column("extrapolations", "kind"):
            return pd.DataFrame()
        if kind is None:
            return self.query("SELECT * FROM extrapolations ORDER BY created, record_id, row_index")
        return self.query("SELECT * FROM extrapolations WHERE kind = ? ORDER BY created, record_id, row_index", [kind])

    def missing_evals(self, bench: str | None = None, metric: str | None = None) -> pd.DataFrame:
        sql, params = "SELECT run_id, step, bench, metric, missing_reason FROM evals WHERE value IS NULL", []
        if bench is not None:
            sql += " AND bench = ?"
            params.append(bench)
        if metric is not None:
            sql += " AND metric = ?"
            params.append(metric)
        return self.query(sql + " ORDER BY run_id, step", params)

    def meta_values(self, prefix: str) -> dict[str, str]:
        """{key: value} of the `meta` rows whose key starts with `prefix` (e.g. the collect signatures)."""
        if not self.path.exists():
            return {}
        df = self.query("SELECT key, value FROM meta WHERE starts_with(key, ?)", [prefix])
        return dict(zip(df["key"], df["value"]))

    def set_meta(self, key: str, value: str) -> None:
        """Set one `meta` row (inside `batch()` it commits with the block's other writes)."""
        with self._connect(write=True) as con:
            con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [key, str(value)])

    def table_counts(self) -> dict[str, int]:
        """Row counts of every table (handy for idempotency checks and summaries)."""
        out = {}
        for table in ("runs", "checkpoints", "evals", "train_log", "fits"):
            out[table] = int(self.query(f"SELECT count(*) AS n FROM {table}")["n"].iloc[0])
        return out


class RunSubset:
    """A `ResultsStore` whose `eval_points` and `runs` keep only the given runs (e.g. one grid's run ids in a store
    that also holds runs of an earlier design of the same sweep); every other method is the store's own."""

    def __init__(self, store: ResultsStore, run_ids: Iterable[str]) -> None:
        self.store = store
        self.run_ids = frozenset(run_ids)

    def _keep(self, rows: pd.DataFrame) -> pd.DataFrame:
        return rows[rows["run_id"].isin(self.run_ids)].reset_index(drop=True)

    def eval_points(self, bench: str, metric: str, sweep: str | None = None,
                    family: str | None = None) -> pd.DataFrame:
        """`ResultsStore.eval_points` of the subset's runs."""
        return self._keep(self.store.eval_points(bench, metric, sweep=sweep, family=family))

    def runs(self, sweep: str | None = None, family: str | None = None) -> pd.DataFrame:
        """`ResultsStore.runs` of the subset's runs."""
        return self._keep(self.store.runs(sweep, family=family))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)
