"""A run's model from one of its checkpoints (for evaluation after the fact)."""
from __future__ import annotations

from pathlib import Path

import torch

from rayder_core.models import build_model
from rayder_core.train_config import load_train_config


def load_model_from_checkpoint(run_dir: Path, checkpoint: Path, device: torch.device) -> torch.nn.Module:
    """Rebuild the run's model from its config.yaml and load a checkpoint (weights_only=True)."""
    cfg = load_train_config(run_dir / "config.yaml")
    model = build_model(dict(cfg.model), source=str(run_dir / "config.yaml")).to(device)  # any model.family
    state = torch.load(checkpoint, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    return model.eval()


