"""What makes two runs the same run, and two runs replicates of one grid cell (no torch: the store imports this).

`identity_of` is `TrainConfig.identity()` on a plain mapping (a config as `to_mapping` writes it, or as the store
keeps it in `runs.config`): the fields that define what is trained, not where it is written or how it is logged.
Run ids hash it. `replicate_key` hashes it without the seed: runs with equal keys differ only in their seed, so a
fit may average them (`rayder-fit --replicates mean`) instead of letting the frontier pick the luckiest seed.
"""
from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import PurePath
from typing import Any, Mapping

NOT_IDENTITY = ("out_dir", "log_every", "keep_checkpoints", "device", "tf32", "dist_timeout_min", "store_mode",
                "compile", "compile_min_steps", "checkpoint_steps", "start_from", "runtime")
"""Top-level config keys that say where or how a run is executed, not what is trained (`runtime` is what the store
adds to a run's config: the backend and precision actually used)."""


def identity_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """The identity fields of a config mapping (a deep copy; the mapping is not changed). Keys an older config lacks
    are skipped, so stored configs of earlier versions give their identity too."""
    d = copy.deepcopy(dict(config))
    for k in NOT_IDENTITY:
        d.pop(k, None)
    # the eval schedule decides which checkpoints exist; log_points only when used (older run ids stay valid)
    if isinstance(d.get("eval"), Mapping):
        d["eval"] = {k: v for k, v in d["eval"].items()
                     if k in ("every", "from_step") or (k == "log_points" and v)}
    model = d.get("model")
    if isinstance(model, Mapping) and model.get("parametrization") == "standard":  # the default: as without the key
        d["model"] = {k: v for k, v in model.items() if k != "parametrization"}
    data = d.get("data")
    if isinstance(data, dict):
        data.pop("decoded_dir", None)  # where decoded pixels are kept, not what is trained
        curriculum = data.get("curriculum")
        if isinstance(curriculum, Mapping) and curriculum.get("mode") == "none":  # fps sampling: older ids stay valid
            data.pop("curriculum")
    return d


def identity_digest(identity: Mapping[str, Any]) -> str:
    """The 10-hex-digit digest of an identity mapping (the tail of a run id)."""
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]


def trunk_of(start_from: str | None) -> tuple[str | None, int]:
    """(run id, step) of the checkpoint path `start_from` (<run_dir>/checkpoints/step_XXXXXXX.pt); (None, 0) for
    none, step 0 for a path not named as a step checkpoint."""
    if not start_from:
        return None, 0
    path = PurePath(start_from)
    match = re.fullmatch(r"step_(\d+)\.pt", path.name)
    return path.parent.parent.name, int(match.group(1)) if match else 0


def replicate_key(config: Mapping[str, Any] | str) -> str:
    """Digest of the identity without `seed`: equal for runs that differ only in their seed (a mapping, or the JSON
    text of one as `runs.config` holds it)."""
    mapping = json.loads(config) if isinstance(config, str) else config
    ident = identity_of(mapping)
    ident.pop("seed", None)
    return identity_digest(ident)
