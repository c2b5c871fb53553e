"""The results store's schema: the tables of a fresh store (version 1), the migrations that bring an older store to
`SCHEMA_VERSION` (applied in order by the first write), and the column vocabularies. See `rayder_core.store` for
what each table holds."""

from __future__ import annotations

import duckdb

from rayder_core.family import DEFAULT_FAMILY  # runs.family of a config without model.family

SCHEMA_VERSION = 5
# the family of a run from its stored config (stores read before their schema-4 migration)
FAMILY_FROM_CONFIG = f"coalesce(json_extract_string(config, '$.model.family'), '{DEFAULT_FAMILY}')"
FLOPS_CONVENTION = "exact"  # the unit of checkpoints.flops / compute_gflop (models.rayder.flops.CONVENTIONS)

SCHEMA_V1 = [
    """CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS runs (
        run_id VARCHAR PRIMARY KEY, sweep VARCHAR, preset VARCHAR, params BIGINT, fraction DOUBLE, D BIGINT,
        config VARCHAR, status VARCHAR, host VARCHAR, run_dir VARCHAR, created TIMESTAMP, updated TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        run_id VARCHAR, step BIGINT, samples BIGINT, flops DOUBLE, compute_gflop DOUBLE, wall_time_s DOUBLE,
        PRIMARY KEY (run_id, step))""",
    """CREATE TABLE IF NOT EXISTS evals (
        run_id VARCHAR, step BIGINT, bench VARCHAR, metric VARCHAR, value DOUBLE, n INTEGER, missing_reason VARCHAR,
        PRIMARY KEY (run_id, step, bench, metric))""",
    """CREATE TABLE IF NOT EXISTS train_log (
        run_id VARCHAR, step BIGINT, loss DOUBLE, psnr DOUBLE, lr DOUBLE, grad_norm DOUBLE, skipped BIGINT,
        focal_mean DOUBLE, flops DOUBLE, PRIMARY KEY (run_id, step))""",
    """CREATE TABLE IF NOT EXISTS fits (
        fit_id VARCHAR PRIMARY KEY, sweep VARCHAR, law VARCHAR, metric VARCHAR, bench VARCHAR, x_cols VARCHAR,
        y_col VARCHAR, params VARCHAR, ci_low VARCHAR, ci_high VARCHAR, r2 DOUBLE, r2_log DOUBLE, rmse DOUBLE,
        n_points INTEGER, objective DOUBLE, n_starts INTEGER, n_starts_at_best INTEGER, n_bootstrap INTEGER,
        data_hash VARCHAR, holdout VARCHAR, formula VARCHAR, created TIMESTAMP)""",
]

# Migrations from version k to k+1, applied in order when an older store is opened for writing.
MIGRATIONS: dict[int, list[str]] = {
    1: ["ALTER TABLE evals ADD COLUMN skipped INTEGER DEFAULT 0",
        f"INSERT OR REPLACE INTO meta VALUES ('flops_convention', '{FLOPS_CONVENTION}')"],
    # schema 3 (issue 12): LR and LR phase per checkpoint, cooldown branches, law comparisons, extrapolation checks
    2: ["ALTER TABLE checkpoints ADD COLUMN IF NOT EXISTS lr DOUBLE",
        "ALTER TABLE checkpoints ADD COLUMN IF NOT EXISTS lr_phase VARCHAR",
        """CREATE TABLE IF NOT EXISTS branches (
            run_id VARCHAR PRIMARY KEY, parent_run VARCHAR, parent_step BIGINT, cooldown_steps BIGINT,
            schedule VARCHAR)""",
        """CREATE TABLE IF NOT EXISTS law_comparisons (
            comparison_id VARCHAR, law VARCHAR, sweep VARCHAR, metric VARCHAR, bench VARCHAR, x_cols VARCHAR,
            y_col VARCHAR, data_hash VARCHAR, n_points INTEGER, k INTEGER, loglik DOUBLE, aic DOUBLE, aicc DOUBLE,
            bic DOUBLE, d_aic DOUBLE, akaike_weight DOUBLE, loo_err DOUBLE, lodo_err DOUBLE, r2 DOUBLE, params VARCHAR,
            formula VARCHAR, created TIMESTAMP, PRIMARY KEY (comparison_id, law))""",
        """CREATE TABLE IF NOT EXISTS extrapolations (
            record_id VARCHAR, row_index INTEGER, kind VARCHAR, law VARCHAR, sweep VARCHAR, metric VARCHAR,
            bench VARCHAR, x_cols VARCHAR, y_col VARCHAR, data_hash VARCHAR, train_max DOUBLE, target_x0 DOUBLE,
            steps_ahead INTEGER, n_train INTEGER, n_test INTEGER, mean_abs_rel_err DOUBLE, max_abs_rel_err DOUBLE,
            coverage DOUBLE, detail VARCHAR, created TIMESTAMP, PRIMARY KEY (record_id, row_index))"""],
    # schema 4 (issue 11): the model family of every run, from its config (no row is dropped or rewritten otherwise)
    3: [f"ALTER TABLE runs ADD COLUMN IF NOT EXISTS family VARCHAR DEFAULT '{DEFAULT_FAMILY}'",
        f"UPDATE runs SET family = {FAMILY_FROM_CONFIG}"],
    # schema 5: what a fit's bootstrap resampled ('point', or the column whose groups it resampled whole, e.g.
    # 'trunk'); NULL for the fits stored before (not recorded, not guessed)
    4: ["ALTER TABLE fits ADD COLUMN IF NOT EXISTS bootstrap_unit VARCHAR"],
}

LR_PHASES = ("warmup", "stable", "decay")  # checkpoints.lr_phase: schedule phase of the checkpoint's last step
RUN_STATUSES = ("pending", "running", "finished", "failed", "preempted", "cancelled")  # cancelled: by the user, resumable


def create_or_migrate(con: duckdb.DuckDBPyConnection, version: int | None) -> None:
    """Bring the open database from schema `version` (None: empty) to `SCHEMA_VERSION` in the current transaction."""
    if version is None:
        for stmt in SCHEMA_V1:
            con.execute(stmt)
        version = 1
    while version < SCHEMA_VERSION:
        for stmt in MIGRATIONS[version]:
            con.execute(stmt)
        version += 1
    con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(SCHEMA_VERSION)])
