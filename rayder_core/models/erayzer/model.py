"""E-RayZer: self-supervised camera + explicit 3D Gaussian reconstruction, behind the model-family interface.

Images are (B, V, 3, H, W) in [-1, 1] (the loader's layout); H and W must be divisible by the patch size.

Training (`training_loss`): the camera transformer predicts the cameras of all V views of a clip (canonical = the
middle view); `n_ref` views (default V // 2, the paper's 5 of 10) drawn at random from the clip (seeded by the
`generator`) are the references, the rest are targets. The scene transformer turns the references (+ Plücker rays of
their predicted cameras) into pixel-aligned Gaussians, which are splatted to the predicted target cameras.
Loss = MSE in [-1, 1] units over the target images (the trainer adds the optional perceptual term from `render` and
`target`). The shared focal gets no gradient during the first `focal_detach_steps` training calls (counted in the
buffer `train_steps`, which checkpoints with the weights).

Evaluation: `predict_cameras` on context + target images (target cameras predicted from the target images, E-RayZer's
protocol), then `predict_views(context, cams_context, cams_target)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rayder_core.geometry import Camera

from .camera import CameraPrediction, CameraTransformer
from .config import ERayZerConfig
from .render import render_views
from .scene import SceneTransformer


class ERayZer(nn.Module):
    family = "erayzer"

    def __init__(self, cfg: ERayZerConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.camera_net = CameraTransformer(cfg)
        self.scene_net = SceneTransformer(cfg)
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))

    @property
    def backend(self) -> str:
        """Renderer used on the parameters' device: 'gsplat' (CUDA + gsplat importable, or forced) or 'torch'."""
        from .render import _gsplat_available

        if self.cfg.renderer != "auto":
            return self.cfg.renderer
        cuda = self.camera_net.camera_token.device.type == "cuda"
        return "gsplat" if cuda and _gsplat_available() else "torch"

    def _check_frames(self, frames: Tensor, name: str) -> None:
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"{name}: expected (B, V, 3, H, W) images in [-1, 1], got shape {tuple(frames.shape)}")
        h, w = frames.shape[-2:]
        p = self.cfg.patch
        if h % p or w % p:
            raise ValueError(f"{name}: image size {h}x{w} must be divisible by the patch size {p}")

    # ------------------------------------------------------------------------------------------------------------
    def estimate_cameras(self, frames: Tensor, detach_focal: bool = False) -> CameraPrediction:
        """Cameras (B, V) and camera tokens (B, V, C) of frames (B, V, 3, H, W) (differentiable)."""
        self._check_frames(frames, "estimate_cameras(frames)")
        return self.camera_net(frames, detach_focal=detach_focal)

    @torch.no_grad()
    def predict_cameras(self, frames: Tensor) -> CameraPrediction:
        """`estimate_cameras` without gradients; `.camera`, `.camera_tokens` as RayDer's CameraEstimate."""
        return self.estimate_cameras(frames)

    def reconstruct(self, inputs: Tensor, cams_in: Camera) -> dict[str, Tensor]:
        """Pixel-aligned Gaussians (see scene.py) of reference images (B, Vi, 3, H, W) with cameras (B, Vi)."""
        self._check_frames(inputs, "reconstruct(inputs)")
        if tuple(cams_in.shape) != tuple(inputs.shape[:2]):
            raise ValueError(f"reconstruct: cams_in has shape {tuple(cams_in.shape)}, "
                             f"expected {tuple(inputs.shape[:2])}")
        return self.scene_net(inputs, cams_in)

    def render(self, gaussians: dict[str, Tensor], cams: Camera, height: int, width: int) -> Tensor:
        """Splat Gaussians to cameras (B, Vt): (B, Vt, 3, H, W) in [-1, 1] units (2 rgb - 1, not clamped).
        Rendering always runs in fp32, also inside a bf16 autocast region (as the official code)."""
        with torch.autocast(device_type=gaussians["means"].device.type, enabled=False):
            rgb = render_views(
                {k: v.float() for k, v in gaussians.items()}, cams.to(dtype=torch.float32), height, width,
                near_plane=self.cfg.render_near, background=self.cfg.background, backend=self.backend,
            )
        return (rgb * 2 - 1).permute(0, 1, 4, 2, 3)

    @torch.no_grad()
    def predict_views(
        self, inputs: Tensor, cams_in: Camera, cams_target: Camera, state: Tensor | None = None,
        target_chunk: int | None = None,
    ) -> Tensor:
        """Render target cameras (B, Vt) from context images (B, Vi, 3, H, W) and their cameras (B, Vi): (B, Vt, 3,
        H, W) in [-1, 1] units. `state` and `target_chunk` exist for interface compatibility (no dynamic state; the
        renderer already works per view)."""
        h, w = inputs.shape[-2:]
        if len(cams_target.shape) != 2 or cams_target.shape[0] != inputs.shape[0]:
            raise ValueError(f"predict_views: cams_target must be (B, Vt) with B = {inputs.shape[0]}, "
                             f"got {tuple(cams_target.shape)}")
        return self.render(self.reconstruct(inputs, cams_in), cams_target, h, w)

    # ------------------------------------------------------------------------------------------------------------
    def split_views(self, k: int, b: int, generator: torch.Generator | None, device: torch.device
                    ) -> tuple[Tensor, Tensor]:
        """Reference and target view indices (B, n_ref), (B, K - n_ref), each sorted, drawn per sample."""
        n_ref = self.cfg.n_ref if self.cfg.n_ref is not None else k // 2
        if not 1 <= n_ref < k:
            raise ValueError(f"training_loss: n_ref = {n_ref} reference views needs a clip of more than {n_ref} views, "
                             f"got {k}")
        gen_device = generator.device if generator is not None else torch.device("cpu")
        perm = torch.rand(b, k, generator=generator, device=gen_device).argsort(1).to(device)
        return perm[:, :n_ref].sort(1).values, perm[:, n_ref:].sort(1).values

    def training_loss(self, frames: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Self-supervised objective on clips (B, K, 3, H, W) in [-1, 1] (see the module docstring).

        Returns dict: loss (scalar, differentiable), mse, psnr (dB, = -10 log10(mse / 4)), focal_mean (detached),
        pred (detached (B, Vt, 3, H, W)), render (the same, differentiable), target ((B, Vt, 3, H, W))."""
        self._check_frames(frames, "training_loss(frames)")
        b, k, _, h, w = frames.shape
        if k < 2:
            raise ValueError(f"training_loss(frames): need at least 2 views per clip, got {k}")
        detach = bool(self.train_steps < self.cfg.focal_detach_steps) if self.training else False
        est = self.estimate_cameras(frames, detach_focal=detach)
        ref, tgt = self.split_views(k, b, generator, frames.device)
        rows = torch.arange(b, device=frames.device)[:, None]
        gaussians = self.reconstruct(frames[rows, ref], est.camera[rows, ref])
        pred = self.render(gaussians, est.camera[rows, tgt], h, w)
        target = frames[rows, tgt]
        loss = F.mse_loss(pred.float(), target.float())
        if self.training:
            self.train_steps += 1
        mse = loss.detach()
        return {
            "loss": loss,
            "mse": mse,
            "psnr": -10 * torch.log10(mse / 4),
            "focal_mean": est.camera.f.detach().float().mean(),
            "pred": pred.detach(),
            "render": pred,
            "target": target,
        }

    def extra_repr(self) -> str:
        return f"preset={self.cfg.preset!r}, renderer={self.backend!r}"


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
