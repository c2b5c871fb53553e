"""The results store package: `store` (ResultsStore), `schema` (tables, migrations), `runs` (recording and
collecting run directories). The results store: one DuckDB file (default `results.duckdb`) that every run, evaluation and fit writes to.

Tables (schema version `SCHEMA_VERSION`, kept in table `meta`):

- `runs(run_id, sweep, preset, params, fraction, D, config, status, host, run_dir, created, updated, family)` —
  `family` is the run's model family (`model.family` of its config, `rayder_core.models.FAMILIES`; schema 4:
  migrating an older store fills it from each run's stored config, 'rayder' where the config names none).
- `checkpoints(run_id, step, samples, flops, compute_gflop, wall_time_s, lr, lr_phase)` — `flops` is cumulative
  training compute in FLOPs (2 per multiply-accumulate, training = 3 x forward); `compute_gflop = flops / 1e9`, the
  paper's unit for C. `lr` and `lr_phase` (warmup | stable | decay) are those of the checkpoint's last optimizer step
  (schema 3; NULL in older stores, which stay readable as they are).
- `evals(run_id, step, bench, metric, value, n, missing_reason, skipped)` — `value` is NULL when the metric could
  not be computed, and `missing_reason` then says why (never a substitute number); `n` counts the scenes evaluated,
  `skipped` the scenes skipped as unreadable (schema 2; stores of schema 1 read as skipped = 0).
- `meta` holds `schema_version` and `flops_convention` (the convention of C: always `exact`, see
  `rayder_core.models.rayder.flops`; `rayder-flops --convention paper` converts for comparison with the paper).
- `train_log(run_id, step, loss, psnr, lr, grad_norm, skipped, focal_mean, flops)`
- `fits(fit_id, sweep, law, metric, bench, x_cols, y_col, params, ci_low, ci_high, r2, r2_log, rmse, n_points,
  objective, n_starts, n_starts_at_best, n_bootstrap, data_hash, holdout, formula, created)`
- schema 3: `branches(run_id, parent_run, parent_step, cooldown_steps, schedule)` (cooldown branches of
  `rayder-train --cooldown-from`), `law_comparisons(...)` (`rayder-fit --compare`, one row per law) and
  `extrapolations(...)` (`rayder-fit --validate prefix` / `--holdout-above`).

Concurrency: DuckDB lets one process write a file at a time (and no reader may open it meanwhile). Every operation
here therefore opens the database for the duration of one transaction under an advisory `fcntl.flock` on
`<db>.lock` (exclusive for writes, shared for reads) and closes it again, so any number of jobs can write to the same
store: they queue on the lock instead of failing. Each write is one transaction with primary keys and
`INSERT OR REPLACE`, so re-writing the same record (a resumed run, a second `collect`) never duplicates rows, and a
writer killed mid-transaction leaves the previous committed state (DuckDB's WAL). flock is reliable on local disks;
on network filesystems where it is not, set `store_mode: index`: runs then write only their own run directory and
`collect_runs` (`rayder-sweep collect`) ingests them into the store from one process (see "index mode" below).
"""
from rayder_core.store.runs import COLLECTED_PREFIX, CollectReport, collect_runs, record_run_dir, run_dir_signature
from rayder_core.store.schema import FLOPS_CONVENTION, LR_PHASES, RUN_STATUSES, SCHEMA_VERSION
from rayder_core.store.store import (DEFAULT_DB, LOCK_TIMEOUT_S, BenchLookupError, ResultsStore, RunSubset,
                                     StoreError, describe_bench_counts)

__all__ = ["COLLECTED_PREFIX", "DEFAULT_DB", "FLOPS_CONVENTION", "LOCK_TIMEOUT_S", "LR_PHASES", "RUN_STATUSES",
           "SCHEMA_VERSION", "BenchLookupError", "CollectReport", "ResultsStore", "RunSubset", "StoreError",
           "collect_runs", "describe_bench_counts", "record_run_dir", "run_dir_signature"]
