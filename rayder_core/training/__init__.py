"""Training runs a scaling study can trust: exact compute, exact resume, stable steps, everything recorded.

Modules: `trainer` (`Trainer`, `run_training`), `schedule` (the LR schedule), `checkpoints` (checkpoint files),
`cooldown` (cooldown branches), `trunk` (a shorter run started from a longer run's checkpoint), `signals`
(preemption), `cli` (`rayder-train`).

`rayder-train CONFIG.yaml [--set key=value ...]` (or `run_training(cfg)`) trains one RayDer model on one data
fraction. A run lives in `cfg.run_dir` (`<out_dir>/<run_id>/`):

- `config.yaml`        the resolved config (its hash is the run id)
- `state.json`         heartbeat and progress, rewritten atomically at every log step (read by `rayder-sweep status`)
- `metrics.jsonl`      one JSON object per logged step: step, loss, psnr, lr, grad_norm, focal_mean, flops,
                       skipped (steps skipped since the previous line), skipped_total
- `checkpoints.jsonl`  one line per checkpoint: step, samples, flops, wall_time_s, lr and lr_phase (warmup | stable |
                       decay) of the checkpoint's last optimizer step
- `branch.json`        only in a cooldown branch (`rayder-train CONFIG --cooldown-from STEP --cooldown-steps K`, see
                       `fork_cooldown`): parent_run, parent_step, cooldown_steps, schedule
- `trunk.json`         only in a run started from another run's checkpoint (`start_from`, see `trunk`): trunk_run, step
- `evals.jsonl`        one line per (checkpoint, benchmark): step, bench, values, n, missing
- `checkpoints/step_XXXXXXX.pt`  model, optimizer, RNG and data-loader state, step, samples, cumulative FLOPs

Compute: C = (analytic training FLOPs per step of the family, `models`) x steps, in FLOPs (2 per multiply-accumulate,
training = 3 x forward); the store records it in GFLOP as the paper does. Skipped steps count: their compute was spent.

Resume is exact on CPU: all randomness (data order, frame sampling, view order, state dropout) comes from seeded
generators whose states are checkpointed, so a run killed and resumed yields bit-identical losses to an uninterrupted
one (tests/test_train.py checks this).
"""
