"""Camera-token pose probe (paper Appendix B.2.3, following RayZer/XFactor): how much pose a frozen camera token holds.

Protocol implemented here:
- Input: frozen camera tokens `(S, T, width)` for S sequences of T consecutive frames (paper: T = 24 DL3DV frames at
  frame distance 1) and their ground-truth cameras `Camera` of shape (S, T) (camera-to-world, OpenCV axes).
- Targets (`probe_targets`): every sequence is aligned at its middle frame m = T // 2 with
  `geometry.relative_to(gt, m)` (pose of frame i in the camera frame of frame m: R = R_m^T R_i,
  t = R_m^T (t_i - t_m); frame m becomes the identity), then translations are divided by
  `max_i |t_i| + 1e-6` over the sequence, so every aligned translation has length <= 1 (dimensionless).
- Probe (`PoseProbe`): a 2-layer MLP width -> 128 -> 6 (Linear, ReLU, Linear) applied to each frame's token,
  giving a twist xi = (omega, v); the pose is `geometry.se3_exp(xi)` (Rodrigues rotation, t = J_left(omega) v).
- Training (`train_pose_probe`): AdamW (lr 1e-4, weight decay 0.01) for `iters` steps (paper: 10k) on random
  batches of frames; loss per frame = geodesic rotation angle in radians + Euclidean translation error (L2 norm,
  normalised units), averaged over the batch.
- Metrics (`evaluate_pose_probe`, `pose_metrics`), per frame over all frames of all sequences: rotation error =
  geodesic angle in degrees, translation error = |t_pred - t_gt| in normalised units;
  "R@10/20/30" and "t@0.1/0.2/0.3" are percentages of frames with error below the threshold;
  "rot_err_deg" and "trans_err" are the mean errors. Train on some sequences and evaluate on held-out ones
  (`split_sequences`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from rayder_core.geometry import Camera, relative_to, rotation_angle_deg, se3_exp

PROBE_HIDDEN = 128
TWIST_DIM = 6
TRANSLATION_NORM_EPS = 1e-6
ROTATION_THRESHOLDS_DEG = (10, 20, 30)
TRANSLATION_THRESHOLDS = (0.1, 0.2, 0.3)


class PoseProbe(nn.Module):
    """MLP width -> 128 -> 6 from a camera token to an se(3) twist; `forward` returns the pose (R, t) in float64."""

    def __init__(self, width: int, hidden: int = PROBE_HIDDEN) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, TWIST_DIM))

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (..., width) -> (R (..., 3, 3), t (..., 3)), float64, t in normalised units."""
        return se3_exp(self.mlp(tokens.float()))


@dataclass
class PoseProbeResult:
    """A trained probe, its per-iteration training loss and its metrics on the training sequences."""

    probe: PoseProbe
    losses: list[float]
    train_metrics: dict[str, float]
    iters: int
    lr: float
    seed: int
    n_sequences: int
    n_frames: int
    config: dict[str, float] = field(default_factory=dict)


def _check_inputs(tokens: torch.Tensor, gt: Camera, where: str) -> None:
    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 3:
        raise ValueError(f"{where}: tokens must be a tensor (S, T, width), got "
                         f"{tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__}")
    if not isinstance(gt, Camera) or tuple(gt.shape) != tuple(tokens.shape[:2]):
        raise ValueError(f"{where}: gt must be a Camera of shape (S, T) = {tuple(tokens.shape[:2])}, got "
                         f"{tuple(gt.shape) if isinstance(gt, Camera) else type(gt).__name__}")
    if tokens.shape[0] == 0 or tokens.shape[1] < 2:
        raise ValueError(f"{where}: need at least one sequence of >= 2 frames, got tokens {tuple(tokens.shape)}")
    if not bool(torch.isfinite(tokens).all()):
        bad = (~torch.isfinite(tokens)).any(dim=-1).nonzero()[0].tolist()
        raise ValueError(f"{where}: non-finite camera token at (sequence, frame) = {tuple(bad)}")


def probe_targets(gt: Camera) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth probe targets for cameras (S, T): poses aligned at the middle frame T // 2 and translations
    divided by (max over the sequence of |t| + 1e-6). Returns float64 (R (S,T,3,3), t (S,T,3))."""
    aligned = relative_to(gt.to(dtype=torch.float64), ref_index=gt.shape[-1] // 2, dim=-1)
    scale = torch.linalg.vector_norm(aligned.t, dim=-1).amax(dim=-1)  # (S,)
    return aligned.R, aligned.t / (scale[:, None, None] + TRANSLATION_NORM_EPS)


def pose_errors(R_pred: torch.Tensor, t_pred: torch.Tensor, R_gt: torch.Tensor, t_gt: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame errors: (geodesic rotation angle in degrees, Euclidean translation distance in t's units)."""
    return rotation_angle_deg(R_pred, R_gt), torch.linalg.vector_norm(t_pred - t_gt, dim=-1)


def pose_metrics(rot_err_deg: torch.Tensor, trans_err: torch.Tensor) -> dict[str, float]:
    """{"R@10","R@20","R@30": % of frames with rotation error < threshold (degrees), "t@0.1","t@0.2","t@0.3": % with
    translation error < threshold (normalised units), "rot_err_deg", "trans_err": mean errors}."""
    rot, trans = rot_err_deg.flatten().double(), trans_err.flatten().double()
    out = {f"R@{a}": 100.0 * (rot < a).double().mean().item() for a in ROTATION_THRESHOLDS_DEG}
    out |= {f"t@{a}": 100.0 * (trans < a).double().mean().item() for a in TRANSLATION_THRESHOLDS}
    out |= {"rot_err_deg": rot.mean().item(), "trans_err": trans.mean().item()}
    return out


def _loss(probe: PoseProbe, tokens: torch.Tensor, R_gt: torch.Tensor, t_gt: torch.Tensor) -> torch.Tensor:
    R, t = probe(tokens)
    rot_err_rad = torch.deg2rad(rotation_angle_deg(R, R_gt))
    return (rot_err_rad + torch.linalg.vector_norm(t - t_gt, dim=-1)).mean()


def train_pose_probe(tokens: torch.Tensor, gt: Camera, *, iters: int = 10_000, lr: float = 1e-4, seed: int = 0,
                     batch_size: int = 256, weight_decay: float = 0.01, progress: bool = True) -> PoseProbeResult:
    """Train `PoseProbe` on frozen camera tokens (S, T, width) against ground-truth cameras (S, T).

    Each of the `iters` AdamW steps uses `batch_size` frames drawn uniformly (with replacement, from a generator
    seeded with `seed`) from all S*T frames. Runs on `tokens.device`; the tokens are not modified."""
    _check_inputs(tokens, gt, "train_pose_probe")
    if iters < 1 or batch_size < 1:
        raise ValueError(f"train_pose_probe: iters and batch_size must be >= 1, got {iters}, {batch_size}")
    device = tokens.device
    R_gt, t_gt = (x.to(device) for x in probe_targets(gt))
    x = tokens.detach().float().reshape(-1, tokens.shape[-1])
    R_gt, t_gt = R_gt.reshape(-1, 3, 3), t_gt.reshape(-1, 3)

    torch.manual_seed(seed)  # the probe's initialisation
    probe = PoseProbe(tokens.shape[-1]).to(device)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    losses: list[float] = []
    bar = tqdm(range(iters), desc="pose probe", disable=not progress, leave=False)
    for step in bar:
        index = torch.randint(0, x.shape[0], (batch_size,), generator=generator).to(device)
        loss = _loss(probe, x[index], R_gt[index], t_gt[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"train_pose_probe: loss became {losses[-1]} at iteration {step}")
        if step % 100 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
    probe.eval()
    return PoseProbeResult(probe=probe, losses=losses, train_metrics=evaluate_pose_probe(probe, tokens, gt),
                           iters=iters, lr=lr, seed=seed, n_sequences=tokens.shape[0],
                           n_frames=tokens.shape[0] * tokens.shape[1],
                           config={"batch_size": batch_size, "weight_decay": weight_decay})


@torch.no_grad()
def evaluate_pose_probe(probe: PoseProbe | PoseProbeResult, tokens: torch.Tensor, gt: Camera) -> dict[str, float]:
    """Pose metrics (see `pose_metrics`) of a trained probe on camera tokens (S, T, width) and cameras (S, T)."""
    _check_inputs(tokens, gt, "evaluate_pose_probe")
    probe = probe.probe if isinstance(probe, PoseProbeResult) else probe
    R_gt, t_gt = (x.to(tokens.device) for x in probe_targets(gt))
    R, t = probe(tokens)
    return pose_metrics(*pose_errors(R, t, R_gt, t_gt))


def split_sequences(n_sequences: int, test_fraction: float = 0.2, seed: int = 0
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Random split of sequence indices into (train, test); the test part has round(n * test_fraction) >= 1."""
    if n_sequences < 2 or not 0.0 < test_fraction < 1.0:
        raise ValueError(f"split_sequences: need >= 2 sequences and 0 < test_fraction < 1, "
                         f"got {n_sequences}, {test_fraction}")
    n_test = min(max(1, round(n_sequences * test_fraction)), n_sequences - 1)
    order = torch.randperm(n_sequences, generator=torch.Generator().manual_seed(seed))
    return order[n_test:].sort().values, order[:n_test].sort().values
