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

Two probe protocols (`rayder_core.evaluation.probe_protocols` records them under separate benchmark names):
- cross-scene (`train_pose_probe` on some sequences, `evaluate_pose_probe` on held-out sequences; the toolkit's
  first protocol, kept as the option `cross_scene`; targets aligned with `alignment="camera"` as above);
- per-scene, as Appendix B.2.3 describes it (`per_scene_probe`): one probe per sequence, fit on the frames of that
  sequence and scored on its held-out frames. Split: frames i with i % 2 == 1 (12 of 24) are held out, the even
  frames (including the middle frame 12) train. Poses are aligned as the paper writes them (`alignment="paper"`):
  R_i <- R_i R_mid^T, t_i <- t_i - t_mid, then t_i <- t_i / (max_i |t_i| + eps); geodesic + L2 loss, AdamW.
  All S probes train at once as one batched MLP (independent parameters, the loss is a sum of per-scene means,
  so each probe follows exactly the updates it would get alone).

Pose transferability (XFactor's TPS protocol, paper Table 4 / Figure 13 bottom rows; `transfer_errors`,
`transfer_trajectory`): the trajectory estimated on scene A is applied to scene B (B's context frames, A's camera
motion re-anchored on B's estimated middle camera), B is rendered along it, the cameras are re-estimated from the
renders and compared with A's trajectory, both relative to the middle frame: rotation error = geodesic angle (deg),
translation error = angle between the translation directions (deg; scale is not identifiable). "R@10/20/30" and
"T@10/20/30" are % of frames under the threshold in degrees; "rot_err_deg", "trans_err_deg" the means.
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


ALIGNMENTS = ("camera", "paper")


def align_at_middle(gt: Camera, alignment: str = "camera") -> tuple[torch.Tensor, torch.Tensor]:
    """Poses (..., T) aligned at the middle frame m = T // 2, float64 (R (..., T, 3, 3), t (..., T, 3)).

    'camera': pose of frame i in frame m's camera (R_m^T R_i, R_m^T (t_i - t_m)); 'paper' (Appendix B.2.3):
    R_i R_m^T and t_i - t_m."""
    gt = gt.to(dtype=torch.float64)
    m = gt.shape[-1] // 2
    if alignment == "camera":
        aligned = relative_to(gt, ref_index=m, dim=-1)
        return aligned.R, aligned.t
    if alignment == "paper":
        return gt.R @ gt.R[..., m:m + 1, :, :].transpose(-1, -2), gt.t - gt.t[..., m:m + 1, :]
    raise ValueError(f"unknown pose alignment {alignment!r}; choose from {ALIGNMENTS}")


def probe_targets(gt: Camera, alignment: str = "camera") -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth probe targets for cameras (S, T): poses aligned at the middle frame T // 2 (`align_at_middle`)
    and translations divided by (max over the sequence of |t| + 1e-6). Returns float64 (R (S,T,3,3), t (S,T,3))."""
    R, t = align_at_middle(gt, alignment)
    scale = torch.linalg.vector_norm(t, dim=-1).amax(dim=-1)  # (S,)
    return R, t / (scale[:, None, None] + TRANSLATION_NORM_EPS)


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


# ------------------------------------------------------------------------------------------ per-scene probe


def per_scene_split(n_frames: int, every: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) frame indices of the per-scene probe: frames with i % every == every - 1 are held out
    (default: the 12 odd frames of 24), the others (with the middle frame for even n_frames) train."""
    if n_frames < 2 or every < 2:
        raise ValueError(f"per_scene_split: need >= 2 frames and every >= 2, got {n_frames}, {every}")
    i = torch.arange(n_frames)
    held = i % every == every - 1
    return i[~held], i[held]


class _BatchedProbe(nn.Module):
    """S independent `PoseProbe` MLPs evaluated as batched matmuls: tokens (S, N, width) -> twists (S, N, 6)."""

    def __init__(self, n: int, width: int, hidden: int = PROBE_HIDDEN) -> None:
        super().__init__()
        probes = [PoseProbe(width, hidden) for _ in range(n)]  # the same initialisation as n separate probes
        self.w1 = nn.Parameter(torch.stack([p.mlp[0].weight.T for p in probes]).detach().clone())
        self.b1 = nn.Parameter(torch.stack([p.mlp[0].bias for p in probes])[:, None].detach().clone())
        self.w2 = nn.Parameter(torch.stack([p.mlp[2].weight.T for p in probes]).detach().clone())
        self.b2 = nn.Parameter(torch.stack([p.mlp[2].bias for p in probes])[:, None].detach().clone())

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(torch.baddbmm(self.b1, tokens.float(), self.w1))
        return se3_exp(torch.baddbmm(self.b2, h, self.w2))


def per_scene_probe(tokens: torch.Tensor, gt: Camera, *, iters: int = 10_000, lr: float = 1e-4, seed: int = 0,
                    weight_decay: float = 0.01, holdout_every: int = 2, alignment: str = "paper",
                    progress: bool = False, by_scene: bool = False) -> dict[str, float] | list[dict[str, float]]:
    """Per-scene pose probe (Appendix B.2.3): for every sequence s a fresh 2-layer MLP (width -> 128 -> 6) is fit
    on the training frames of s (`per_scene_split`) and scored on the held-out frames of s.

    tokens (S, T, width) frozen camera tokens; gt Camera (S, T). Full-batch AdamW (lr, weight_decay) for `iters`
    steps, loss per frame = geodesic angle (rad) + |t - t_gt| (normalised units). Returns `pose_metrics` over all
    held-out frames of all sequences (by_scene: a list with each sequence's own metrics)."""
    _check_inputs(tokens, gt, "per_scene_probe")
    if iters < 1:
        raise ValueError(f"per_scene_probe: iters must be >= 1, got {iters}")
    device = tokens.device
    R_gt, t_gt = (x.to(device) for x in probe_targets(gt, alignment))
    train, test = per_scene_split(tokens.shape[1], holdout_every)
    x = tokens.detach().float()
    torch.manual_seed(seed)
    probe = _BatchedProbe(tokens.shape[0], tokens.shape[-1]).to(device)
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    for step in tqdm(range(iters), desc="per-scene probe", disable=not progress, leave=False):
        R, t = probe(x[:, train])
        per_frame = torch.deg2rad(rotation_angle_deg(R, R_gt[:, train])) + \
            torch.linalg.vector_norm(t - t_gt[:, train], dim=-1)
        loss = per_frame.mean(dim=1).sum()  # sum over scenes of each scene's mean: independent probes
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"per_scene_probe: loss became {loss.item()} at iteration {step}")
    with torch.no_grad():
        R, t = probe(x[:, test])
    rot, trans = pose_errors(R, t, R_gt[:, test], t_gt[:, test])
    if by_scene:
        return [pose_metrics(rot[s], trans[s]) for s in range(rot.shape[0])]
    return pose_metrics(rot, trans)


# ------------------------------------------------------------------------------------------ pose transfer

TRANSFER_THRESHOLDS_DEG = (10, 20, 30)


def translation_angle_deg(ta: torch.Tensor, tb: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Angle in degrees between translation vectors (..., 3) (0 where either is ~zero: the anchor frame)."""
    na, nb = torch.linalg.vector_norm(ta, dim=-1), torch.linalg.vector_norm(tb, dim=-1)
    cos = (ta * tb).sum(-1) / (na * nb).clamp_min(eps)
    ang = torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))
    return torch.where((na < 1e-9) | (nb < 1e-9), torch.zeros_like(ang), ang)


def transfer_errors(reference: Camera, transferred: Camera) -> dict[str, float]:
    """TPS metrics of trajectories (..., T): both aligned at their middle frame (pose in the middle camera's frame),
    rotation error = geodesic angle (deg), translation error = angle between translation directions (deg), over
    all frames except the middle one. Returns {"R@10/20/30", "T@10/20/30" (%), "rot_err_deg", "trans_err_deg"}."""
    if tuple(reference.shape) != tuple(transferred.shape) or reference.shape[-1] < 2:
        raise ValueError(f"transfer_errors: trajectories of equal shape (..., T >= 2) needed, got "
                         f"{tuple(reference.shape)} and {tuple(transferred.shape)}")
    Ra, ta = align_at_middle(reference, "camera")
    Rb, tb = align_at_middle(transferred, "camera")
    keep = torch.arange(reference.shape[-1]) != reference.shape[-1] // 2
    rot = rotation_angle_deg(Ra[..., keep, :, :], Rb[..., keep, :, :]).flatten()
    trans = translation_angle_deg(ta[..., keep, :], tb[..., keep, :]).flatten()
    out = {f"R@{a}": 100.0 * (rot < a).double().mean().item() for a in TRANSFER_THRESHOLDS_DEG}
    out |= {f"T@{a}": 100.0 * (trans < a).double().mean().item() for a in TRANSFER_THRESHOLDS_DEG}
    out |= {"rot_err_deg": rot.mean().item(), "trans_err_deg": trans.mean().item()}
    return out


def reanchor(trajectory: Camera, anchor: Camera) -> Camera:
    """Apply a trajectory's motion (T,) relative to its middle camera to another middle camera `anchor` (scalar):
    T_i' = T_anchor T_mid^-1 T_i (camera-to-world), focal taken from the anchor."""
    traj = trajectory.to(dtype=torch.float64)
    anc = anchor.to(dtype=torch.float64)
    m = traj.shape[-1] // 2
    R_rel = traj.R[m].T @ traj.R  # (T, 3, 3): R_mid^T R_i
    t_rel = (traj.R[m].T @ (traj.t - traj.t[m])[..., None])[..., 0]
    R = anc.R @ R_rel
    t = anc.t + (anc.R @ t_rel[..., None])[..., 0]
    return Camera(R=R, t=t, f=anc.f.expand(traj.shape[-1]).clone())


@torch.no_grad()
def transfer_trajectory(model: nn.Module, frames_a: torch.Tensor, frames_b: torch.Tensor,
                        context: tuple[int, ...] | None = None) -> tuple[Camera, Camera]:
    """XFactor TPS for one ordered pair of scenes (frames (T, 3, H, W) in [-1, 1] each).

    1. A's trajectory: cameras estimated from all T frames of A.
    2. B's context: frames `context` of B (default first, middle, last) with their estimated cameras; A's motion is
       re-anchored on B's estimated middle camera (`reanchor`).
    3. B is rendered at the other frames' re-anchored cameras; the cameras of [context, renders] are re-estimated.
    Returns (reference, transferred): A's trajectory and the re-estimated one, both (T,) in frame order."""
    t_len = frames_a.shape[0]
    m = t_len // 2
    context = tuple(context) if context is not None else (0, m, t_len - 1)
    if m not in context:
        raise ValueError(f"transfer_trajectory: the context {context} must include the middle frame {m}")
    targets = [i for i in range(t_len) if i not in context]
    ref = model.predict_cameras(frames_a[None]).camera[0].to(dtype=torch.float64)
    ctx = frames_b[list(context)][None]
    cam_ctx = model.predict_cameras(ctx).camera  # (1, C)
    moved = reanchor(ref, cam_ctx[0, context.index(m)])
    cam_t = moved[targets][None]
    renders = model.predict_views(ctx, cam_ctx.to(dtype=torch.float64), cam_t).clamp(-1, 1)
    views = torch.cat([ctx, renders.to(ctx.dtype)], dim=1)
    est = model.predict_cameras(views).camera[0].to(dtype=torch.float64)
    order = list(context) + targets
    inverse = [order.index(i) for i in range(t_len)]
    return ref, est[inverse]
