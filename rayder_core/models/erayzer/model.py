"""E-RayZer: self-supervised camera + explicit 3D Gaussian reconstruction, behind the model-family interface.

Images are (B, V, 3, H, W) in [-1, 1] (the loader's layout); H and W must be divisible by the patch size.

Training (`training_loss`), as the official code: the camera transformer predicts the cameras of all V views of a
clip (fed in temporal order, so the canonical view V // 2 is the temporal middle); `n_ref` views are the references
(default V // 2, at least 2: the paper's 5 of 10). With `ref_split: bracketed` (official `random_split`) the first and
last view are always references and the others are drawn at random (seeded by the `generator`), so every target lies
between references. The scene transformer turns the references' image tokens (the camera transformer's embedding,
reused) + Plücker rays of their predicted cameras into pixel-aligned Gaussians, which are splatted to the predicted
target cameras. Loss (official units): MSE between the render clamped to [0, 1] and the target in [0, 1] pixel units,
+ perceptual_weight (0.2) x the official VGG19 perceptual distance (`perceptual.py`) where its weights exist; where
they do not, the term is recorded missing with its reason (`perceptual_status`, a warning, `perceptual` = NaN in the
output), never silently dropped. The shared focal gets no gradient during the first `focal_detach_steps` training
calls (counted in the buffer `train_steps`, which checkpoints with the weights).

Evaluation: `predict_cameras` on all views of a scene sorted by time (`eval_view_order = "temporal"`: the evaluator
sorts context + target views by frame index, as the official evaluation, so the canonical view is the temporal
middle), then `predict_views(context, cams_context, cams_target)`.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rayder_core.geometry import Camera

from . import perceptual
from .perceptual import perceptual_distance
from .pose_network import CameraPrediction, CameraTransformer
from .config import ERayZerConfig
from .render import choose_renderer, render_views
from .scene import SceneTransformer

log = logging.getLogger(__name__)


class ERayZer(nn.Module):
    family = "erayzer"
    eval_view_order = "temporal"  # the evaluator feeds context + target views sorted by frame index

    def __init__(self, cfg: ERayZerConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.camera_net = CameraTransformer(cfg)
        self.scene_net = SceneTransformer(cfg)
        self.register_buffer("train_steps", torch.zeros((), dtype=torch.long))
        # The frozen VGG19 is kept outside the module tree (not a parameter, not in checkpoints or param counts).
        self._vgg: list = []
        self.perceptual_status = "off (perceptual_weight 0)" if cfg.perceptual_weight == 0 else "not loaded yet"

    @property
    def backend(self) -> str:
        """Renderer used on the parameters' device: 'gsplat' (CUDA + gsplat importable, or forced) or 'torch'."""
        return choose_renderer(self.cfg.renderer, self.camera_net.camera_token.device)

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

    def reconstruct(self, inputs: Tensor, cams_in: Camera, image_tokens: Tensor | None = None) -> dict[str, Tensor]:
        """Pixel-aligned Gaussians (see scene.py) of reference images (B, Vi, 3, H, W) with cameras (B, Vi);
        `image_tokens` (B, Vi, N, C): their embedding when already computed by the camera transformer."""
        self._check_frames(inputs, "reconstruct(inputs)")
        if tuple(cams_in.shape) != tuple(inputs.shape[:2]):
            raise ValueError(f"reconstruct: cams_in has shape {tuple(cams_in.shape)}, "
                             f"expected {tuple(inputs.shape[:2])}")
        tokens = self.camera_net.embed(inputs) if image_tokens is None else image_tokens
        return self.scene_net(tokens, cams_in, *inputs.shape[-2:])

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
        """Reference and target view indices (B, n_ref), (B, K - n_ref), each sorted, drawn per sample. 'bracketed':
        views 0 and K - 1 are always references, the other n_ref - 2 drawn from 1 .. K - 2 (official
        `random_split`); 'random': all n_ref drawn from 0 .. K - 1."""
        n_ref = self.cfg.n_ref_for(k)
        if not 1 <= n_ref < k:
            raise ValueError(f"training_loss: n_ref = {n_ref} reference views needs a clip of more than {n_ref} views, "
                             f"got {k}")
        gen_device = generator.device if generator is not None else torch.device("cpu")
        if self.cfg.ref_split == "bracketed":
            if n_ref < 2:
                raise ValueError(f"training_loss: ref_split 'bracketed' keeps the first and last view as references "
                                 f"and needs n_ref >= 2, got {n_ref}")
            inner = torch.rand(b, k - 2, generator=generator, device=gen_device).argsort(1).to(device) + 1
            ends = torch.tensor([0, k - 1], device=device).expand(b, 2)
            perm = torch.cat([ends, inner], 1)
        else:
            perm = torch.rand(b, k, generator=generator, device=gen_device).argsort(1).to(device)
        return perm[:, :n_ref].sort(1).values, perm[:, n_ref:].sort(1).values

    def _perceptual_net(self, device: torch.device):
        """The frozen VGG19 on `device`, or None with `perceptual_status` saying why (loaded once, warned once)."""
        if self.cfg.perceptual_weight == 0:
            return None
        if not self._vgg:
            try:
                path = perceptual.find_weights(self.cfg.perceptual_weights)
                self._vgg.append(perceptual.load_vgg19(path))
                self.perceptual_status = f"on: VGG19 weights {path}"
            except (OSError, KeyError, RuntimeError, ValueError, IndexError, ImportError) as err:
                self._vgg.append(None)
                self.perceptual_status = f"missing: {err}"
                log.warning("E-RayZer perceptual term (weight %g) missing: %s", self.cfg.perceptual_weight, err)
        net = self._vgg[0]
        if net is not None and next(net.parameters()).device != device:
            self._vgg[0] = net = net.to(device)
        return net

    def training_loss(self, frames: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Self-supervised objective on clips (B, K, 3, H, W) in [-1, 1], sorted by time (module docstring).

        Returns dict: loss (scalar, differentiable; MSE in [0, 1] pixel units of the render clamped to [0, 1],
        + perceptual_weight x perceptual), mse (detached, the same MSE in [-1, 1] units = 4 x the [0, 1] MSE, the
        trainer's convention), psnr (dB, = -10 log10(mse / 4)), perceptual (detached; NaN when its weights are
        missing, 0 when off), focal_mean (detached), pred (detached (B, Vt, 3, H, W) in [-1, 1]), render (the same,
        differentiable), target ((B, Vt, 3, H, W) in [-1, 1])."""
        self._check_frames(frames, "training_loss(frames)")
        b, k, _, h, w = frames.shape
        if k < 3 and self.cfg.ref_split == "bracketed":
            raise ValueError(f"training_loss(frames): need at least 3 views per clip (first and last as references, "
                             f"one target), got {k}")
        if k < 2:
            raise ValueError(f"training_loss(frames): need at least 2 views per clip, got {k}")
        detach = bool(self.train_steps < self.cfg.focal_detach_steps) if self.training else False
        est = self.estimate_cameras(frames, detach_focal=detach)
        ref, tgt = self.split_views(k, b, generator, frames.device)
        rows = torch.arange(b, device=frames.device)[:, None]
        gaussians = self.scene_net(est.image_tokens[rows, ref], est.camera[rows, ref], h, w)
        pred = self.render(gaussians, est.camera[rows, tgt], h, w)
        target = frames[rows, tgt]
        pred01 = ((pred.float() + 1) / 2).clamp(0.0, 1.0)  # official: render.clamp(0, 1)
        target01 = (target.float() + 1) / 2
        mse01 = F.mse_loss(pred01, target01)
        loss = mse01
        perceptual = torch.zeros((), device=frames.device)
        if self.cfg.perceptual_weight > 0:
            net = self._perceptual_net(frames.device)
            if net is None:
                perceptual = torch.full((), float("nan"), device=frames.device)
            else:
                with torch.autocast(device_type=frames.device.type, enabled=False):
                    term = perceptual_distance(net, pred01, target01)
                loss = loss + self.cfg.perceptual_weight * term
                perceptual = term.detach()
        if self.training:
            self.train_steps += 1
        mse = 4 * mse01.detach()
        return {
            "loss": loss,
            "mse": mse,
            "psnr": -10 * torch.log10(mse / 4),
            "perceptual": perceptual,
            "focal_mean": est.camera.f.detach().float().mean(),
            "pred": pred.detach(),
            "render": pred,
            "target": target,
        }

    def extra_repr(self) -> str:
        return f"preset={self.cfg.preset!r}, renderer={self.backend!r}, perceptual={self.perceptual_status!r}"
