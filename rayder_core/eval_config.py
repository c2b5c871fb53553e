"""The evaluation part of a run's configuration (the `eval:` section of a run or grid YAML): the evaluation sets
(`BenchmarkSpec`) and when and how checkpoints are evaluated (`EvalConfig`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np


@dataclass
class BenchmarkSpec:
    """One evaluation set: `kind` re10k (NVS, pixelSplat format) or probe (camera probe sequences)."""

    name: str
    path: str
    kind: Literal["re10k", "probe"] = "re10k"
    max_scenes: int | None = None
    index: str | None = None  # re10k: evaluation-index JSON (default: path/evaluation_index.json)
    # probe: which protocols to report (rayder_core.probe), each under its own benchmark name: per_scene (the
    # paper's, Appendix B.2.3; the default) -> <name>-per-scene, cross_scene -> <name>, transfer (XFactor TPS) ->
    # <name>-transfer
    protocols: list[str] = field(default_factory=lambda: ["per_scene"])

    def __post_init__(self) -> None:
        bad = [p for p in self.protocols if p not in PROBE_PROTOCOLS]
        if bad or not self.protocols:
            raise ValueError(f"benchmark {self.name}: protocols {self.protocols!r} must be a non-empty list from "
                             f"{list(PROBE_PROTOCOLS)}")


PROBE_PROTOCOLS = ("cross_scene", "per_scene", "transfer")


@dataclass
class EvalConfig:
    """Zero-shot evaluation of checkpoints, run automatically every `every` steps from `from_step`, or, with
    `log_points` > 0, at `log_points` log-spaced steps from `from_step` to the last step (see `eval_steps`), so
    that every run contributes frontier points across its whole compute range. The last step is always evaluated."""

    every: int = 1000
    from_step: int = 0
    log_points: int = 0
    benchmarks: list[BenchmarkSpec] = field(default_factory=lambda: [
        BenchmarkSpec("re10k-synth", "data/synth/bench/re10k-synth", "re10k"),
        BenchmarkSpec("probe-synth", "data/synth/bench/probe-synth", "probe"),
    ])
    probe_iters: int = 10000
    lpips: bool = True
    # inline: the training job evaluates its checkpoints itself, sharded over its ranks; job: training only saves
    # the checkpoints and `rayder-eval RUN_DIR --pending` (a separate job, also sharded) evaluates them.
    mode: Literal["inline", "job"] = "inline"

    def __post_init__(self) -> None:
        if self.log_points < 0 or self.every < 0 or self.from_step < 0:
            raise ValueError("eval.every, eval.from_step and eval.log_points must be >= 0")

    def steps_for(self, steps: int) -> list[int]:
        """The steps (1..steps) this schedule evaluates for a run of `steps` optimizer steps, ascending.

        log_points > 0: round(geomspace(max(from_step, 1), steps, log_points)), duplicates removed (so short runs get
        fewer points); otherwise every multiple of `every` from `from_step`. Both include `steps` itself."""
        start = max(self.from_step, 1)
        if start > steps:
            return []
        if self.log_points > 0:
            due = {int(round(s)) for s in np.geomspace(start, steps, self.log_points)}
        else:
            due = {s for s in range(start, steps + 1) if self.every > 0 and s % self.every == 0}
        return sorted(due | {steps})
