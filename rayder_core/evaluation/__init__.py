"""Zero-shot evaluation of checkpoints: NVS on RE10K-format benchmarks and the camera pose probe.

Modules: `nvs` (NVS protocol), `probe_protocols` (the probe protocols of a probe set), `suite` (`evaluate_model`:
every benchmark of a config), `records` (evals.jsonl / eval_scenes.jsonl), `checkpoint` (a run's model from a
checkpoint), `cli` (`rayder-eval`); the process-group helpers are in `rayder_core.distributed`.

NVS protocol (pixelSplat / LVSM / RayZer): for each scene the model predicts the cameras of the 2 context and 3
target views from the images themselves (no ground-truth poses; E-RayZer gets them sorted by frame index, as its
official evaluation), then renders the targets from the context.
Per image: PSNR (both images clamped to [0,1]), MSE on [-1,1] (the quantity the paper fits), SSIM (Gaussian window 11,
sigma 1.5), LPIPS (VGG, inputs in [0,1]; recorded as missing with the reason when no weights exist). Aggregation:
mean per scene, then mean over scenes; `n` is the scene count. Three baselines that need no model are scored the
same way (`baselines`): the mean colour of the context views (`baseline_psnr`), the nearest context view
(`copy_psnr`) and the two context views blended linearly in frame index (`blend_psnr`). The context views re-rendered
from their own estimated cameras give `recon_psnr` (reconstruction fidelity: nothing to synthesise).

Probe protocol (Appendix B.2.3): frozen camera tokens of 24-frame sequences -> 2-layer MLP -> pose, trained on a
split of the sequences and scored on the held-out rest (see `rayder_core.probe`).

Distributed: every rank calls `evaluate_model`; scenes (and probe sequences) are split into contiguous blocks by
rank, per-image values and tokens are gathered, metrics aggregated in the global scene order (the same numbers as
one process), and the probe MLP is trained on rank 0 from the gathered tokens, its metrics broadcast.

`rayder-eval RUN_DIR [--step S | --all | --pending] [--db results.duckdb]` evaluates a run's checkpoints after the
fact (under torchrun/srun with several processes: sharded as above). `--pending` is the job of `eval.mode: job`.
"""
