"""Evaluation records of a run directory: `evals.jsonl` (metrics per checkpoint and benchmark) and
`eval_scenes.jsonl` (one line per scene)."""
from __future__ import annotations

import json
from pathlib import Path

from rayder_core.fileio import append_jsonl, atomic_write_text, read_jsonl

EVAL_SCENES_FILE = "eval_scenes.jsonl"


def write_eval_records(run_dir: Path, step: int, records: list[dict], *, replace: bool = False) -> None:
    """Append a checkpoint's records to `evals.jsonl` (metrics) and `eval_scenes.jsonl` (one line per scene:
    step, bench, scene, index and that scene's metrics). `replace` first drops earlier lines of the same
    (step, bench), as a re-evaluation does."""
    run_dir = Path(run_dir)
    if replace:
        names = {r["bench"] for r in records}
        for name in ("evals.jsonl", EVAL_SCENES_FILE):
            path = run_dir / name
            if path.exists():
                kept = [r for r in read_jsonl(path) if not (r["step"] == step and r["bench"] in names)]
                atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    for rec in records:
        append_jsonl(run_dir / "evals.jsonl", {"step": step, **{k: v for k, v in rec.items() if k != "scenes"}})
        if rec.get("scenes"):
            with open(run_dir / EVAL_SCENES_FILE, "a") as fh:
                fh.write("".join(json.dumps({"step": step, "bench": rec["bench"], **row}) + "\n"
                                 for row in rec["scenes"]))


