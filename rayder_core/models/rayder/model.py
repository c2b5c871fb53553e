"""RayDer: one transformer that estimates cameras (and a dynamic state) per view and renders novel views.

Images are (B, V, 3, H, W) floats in [-1, 1] (the loader's layout); inside the network everything is channels-last.
H and W must be divisible by 16 (patch 4, then 2x2, then 2x2).

Hourglass (per view, 9 input channels = RGB + Plücker, zero-filled where absent):
  merge 4x4 -> local_widths[0], NA layers | merge 2x2 -> local_widths[1], NA layers | merge 2x2 -> width,
  backbone layers (global attention over all views + one register per view, per-frame attention, SwiGLU) |
  split + lerp skip, NA layers | split + lerp skip, NA layers | RMSNorm + zero-init linear -> RGB.
Camera estimation runs the encoder side and the backbone only (the heads read the final camera-mode registers);
novel view synthesis runs the whole hourglass.

Randomness in `training_loss` (view order, state dropout) comes only from the `generator` argument.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rayder_core.models.attention import resolve_backend
from rayder_core.geometry import Camera, camera_from_params, plucker_rays

from . import masks
from .layers import GlobalContext, GlobalLocalLayer, MLPHead, NeighborhoodLayer, PixelOutput, TokenMerge, TokenSplit
from .config import ModelConfig
from .tokens import (INTRINSICS_PARAMS, PLUCKER_DIM, POSE_PARAMS, RGB_DIM, ROLE_CAMERA, ROLE_NVS_INPUT,
                     ROLE_NVS_TARGET, TOKEN_CAMERA, TOKEN_REGISTER, TOKEN_VIEW, CameraEstimate)

class RayDer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        cfg.validate()
        if cfg.architecture != "single":
            raise ValueError(f"RayDer is the single network; architecture {cfg.architecture!r} is built by "
                             "rayder_core.models.rayder.build (or rayder_core.models.build_model)")
        self.cfg = cfg
        w, dc = cfg.width, cfg.d_cond
        (w0, w1), (n0, n1) = cfg.local_widths, cfg.local_depths
        if not cfg.local_layers:
            n0 = n1 = 0
        in_ch = RGB_DIM + PLUCKER_DIM

        self.role_embedding = nn.Embedding(3, dc)
        self.token_type_embedding = nn.Embedding(3, dc)
        self.camera_token = nn.Parameter(torch.empty(w))
        self.nvs_token = nn.Parameter(torch.empty(w))
        for p in (self.camera_token, self.nvs_token):
            nn.init.trunc_normal_(p, std=1e-4, a=-2e-4, b=2e-4)

        self.merges = nn.ModuleList([TokenMerge(in_ch, w0, cfg.patch), TokenMerge(w0, w1, 2)])
        na_level = lambda c, n: nn.ModuleList([NeighborhoodLayer(c, dc, cfg.kernel, cfg.head_dim) for _ in range(n)])  # noqa: E731
        self.down = nn.ModuleList([na_level(c, n) for c, n in ((w0, n0), (w1, n1))])
        self.mid_merge = TokenMerge(w1, w, 2)
        self.backbone = nn.ModuleList([GlobalLocalLayer(w, dc, cfg.head_dim) for _ in range(cfg.depth)])
        self.mid_split = TokenSplit(w, w1, 2)
        self.up = nn.ModuleList([na_level(c, n) for c, n in ((w0, n0), (w1, n1))])
        self.split = TokenSplit(w1, w0, 2)
        self.output = PixelOutput(w0, cfg.patch)

        self.pose_head = MLPHead(w, POSE_PARAMS)
        self.focal_head = MLPHead(w, INTRINSICS_PARAMS, zero_init=True)
        if cfg.dynamic_state:
            self.state_head = MLPHead(w, cfg.d_state)
            self.state_proj = nn.Linear(cfg.d_state, w, bias=False)

    # ------------------------------------------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        """Attention backend used on the parameters' current device: 'natten' (natten.na2d + flex attention, CUDA)
        or 'sdpa' (exact masked SDPA, CPU)."""
        return resolve_backend(self.cfg.attention_backend, self.camera_token.device)

    def _check_frames(self, frames: Tensor, name: str) -> None:
        if frames.ndim != 5 or frames.shape[2] != RGB_DIM:
            raise ValueError(f"{name}: expected (B, V, 3, H, W) images in [-1, 1], got shape {tuple(frames.shape)}")
        h, w = frames.shape[-2:]
        d = self.cfg.downsample
        if h % d or w % d:
            raise ValueError(f"{name}: image size {h}x{w} must be divisible by {d}")

    def _cond(self, roles: Tensor, reg_type: int) -> tuple[Tensor, Tensor]:
        """Conditioning of view tokens and registers for per-view roles (V,): each (1, V, d_cond)."""
        role = self.role_embedding(roles)[None]
        types = self.token_type_embedding.weight
        return role + types[TOKEN_VIEW], role + types[reg_type]

    def _global_context(self, view_mask: Tensor | None, n_tokens: int, n_prefix: int = 0, **kw) -> GlobalContext:
        if view_mask is None or bool(view_mask.all()):
            return GlobalContext(None, **kw)
        if self.backend == "natten":
            return GlobalContext(None, masks.flex_block_mask(view_mask, n_tokens, n_prefix), **kw)
        return GlobalContext(masks.token_mask(view_mask, n_tokens, n_prefix), **kw)

    def _hourglass(
        self,
        x: Tensor,
        roles: Tensor,
        reg: Tensor,
        reg_type: int,
        view_mask: Tensor | None,
        prefix_kv: list | None = None,
        record_kv: bool = False,
        decode: bool = True,
        decode_from: int = 0,
    ) -> tuple[Tensor | None, Tensor, list]:
        """x (B, V, H, W, 9), roles (V,), registers (B, V, width). view_mask (V, Vp + V) over [prefix, current]
        views or None for full attention. Returns (RGB (B, V - decode_from, H, W, 3) of views decode_from.. or None
        when decode=False, final registers (B, V, width), recorded per-layer (k, v) when record_kv)."""
        backend = self.backend
        cond, cond_reg = self._cond(roles, reg_type)
        skips = []
        for merge, layers in zip(self.merges, self.down):
            x = merge(x)
            for layer in layers:
                x = layer(x, cond, backend)
            skips.append(x)
        x = self.mid_merge(x)
        n_prefix = 0 if prefix_kv is None else view_mask.shape[1] - view_mask.shape[0]
        ctx = self._global_context(view_mask, x.shape[2] * x.shape[3], n_prefix, prefix_kv=prefix_kv, record=record_kv)
        for i, layer in enumerate(self.backbone):
            x, reg = layer(x, reg, cond, cond_reg, ctx, i)
        if not decode:
            return None, reg, ctx.recorded
        # The decoder side is per frame: decode only the views whose pixels are wanted.
        x, cond = x[:, decode_from:], cond[:, decode_from:]
        skips = [s[:, decode_from:] for s in skips]
        x = self.mid_split(x, skips.pop())
        for layer in self.up[1]:
            x = layer(x, cond, backend)
        x = self.split(x, skips.pop())
        for layer in self.up[0]:
            x = layer(x, cond, backend)
        return self.output(x), reg, ctx.recorded

    # ------------------------------------------------------------------------------------------------------------
    # Camera estimation

    def estimate_cameras(self, frames: Tensor) -> CameraEstimate:
        """Cameras and dynamic states of all views of (B, V, 3, H, W) frames in [-1, 1] (differentiable).

        Full bidirectional global attention, no view positions: permuting the views permutes the outputs."""
        self._check_frames(frames, "estimate_cameras(frames)")
        b, v = frames.shape[:2]
        rgb = frames.permute(0, 1, 3, 4, 2)
        x = torch.cat([rgb, rgb.new_zeros(*rgb.shape[:-1], PLUCKER_DIM)], -1)
        reg = self.camera_token.to(x.dtype).expand(b, v, -1)
        roles = torch.full((v,), ROLE_CAMERA, device=frames.device)
        _, tokens, _ = self._hourglass(x, roles, reg, TOKEN_CAMERA, None, decode=False)
        camera = camera_from_params(self.pose_head(tokens).double(), self.focal_head(tokens).double())
        if self.cfg.dynamic_state:
            state = self.state_head(tokens)
        else:
            state = tokens.new_zeros(b, v, self.cfg.d_state)
        return CameraEstimate(camera=camera, state=state, camera_tokens=tokens)

    @torch.no_grad()
    def predict_cameras(self, frames: Tensor) -> CameraEstimate:
        """`estimate_cameras` without gradients."""
        return self.estimate_cameras(frames)

    # ------------------------------------------------------------------------------------------------------------
    # Novel view synthesis

    def _nvs_inputs(self, images: Tensor | None, cams: Camera, h: int, w: int, dtype: torch.dtype) -> Tensor:
        """(B, V, H, W, 9) = [RGB (zeros for targets), Plücker]."""
        rays = plucker_rays(cams, h, w, dtype=dtype)
        rgb = rays.new_zeros(*rays.shape[:-1], RGB_DIM) if images is None else images.permute(0, 1, 3, 4, 2)
        return torch.cat([rgb.to(dtype), rays], -1)

    def _nvs_registers(self, b: int, n_in: int, state_target: Tensor | None, n_target: int, dtype) -> Tensor:
        reg = self.nvs_token.to(dtype).expand(b, n_in + n_target, -1)
        if self.cfg.dynamic_state and state_target is not None and n_target:
            state_reg = self.state_proj(state_target.to(self.state_proj.weight.dtype)).to(dtype)
            reg = reg + F.pad(state_reg, (0, 0, n_in, 0))
        return reg

    def _check_cams(self, cams: Camera, b: int, v: int, name: str) -> None:
        if tuple(cams.shape) != (b, v):
            raise ValueError(f"{name}: expected cameras with shape ({b}, {v}), got {tuple(cams.shape)}")

    def _render(
        self, inputs: Tensor, cams_in: Camera, cams_target: Camera, state_target: Tensor | None, view_mask: Tensor
    ) -> Tensor:
        b, n_in, _, h, w = inputs.shape
        n_t = cams_target.shape[1]
        dtype = inputs.dtype
        x = torch.cat(
            [self._nvs_inputs(inputs, cams_in, h, w, dtype), self._nvs_inputs(None, cams_target, h, w, dtype)], 1
        )
        roles = torch.tensor([ROLE_NVS_INPUT] * n_in + [ROLE_NVS_TARGET] * n_t, device=inputs.device)
        reg = self._nvs_registers(b, n_in, state_target, n_t, x.dtype)
        rgb, _, _ = self._hourglass(x, roles, reg, TOKEN_REGISTER, view_mask, decode_from=n_in)
        return rgb.permute(0, 1, 4, 2, 3)

    def render(
        self, inputs: Tensor, cams_in: Camera, cams_target: Camera, state_target: Tensor | None = None
    ) -> Tensor:
        """Render target views (differentiable, inference rule B.1: every target sees all inputs).

        inputs (B, Vi, 3, H, W) in [-1, 1]; cams_in (B, Vi); cams_target (B, Vt); state_target (B, Vt, d_state) or
        None (zero state). Returns (B, Vt, 3, H, W) in [-1, 1] units (not clamped)."""
        self._check_frames(inputs, "render(inputs)")
        b, n_in = inputs.shape[:2]
        self._check_cams(cams_in, b, n_in, "render(cams_in)")
        n_t = cams_target.shape[1] if len(cams_target.shape) == 2 else -1
        self._check_cams(cams_target, b, n_t, "render(cams_target)")
        mask = masks.inference_view_mask(n_in, n_t, inputs.device)
        return self._render(inputs, cams_in, cams_target, state_target, mask)

    @torch.no_grad()
    def predict_views(
        self,
        inputs: Tensor,
        cams_in: Camera,
        cams_target: Camera,
        state: Tensor | None = None,
        target_chunk: int | None = None,
    ) -> Tensor:
        """Like `render`, without gradients: the inputs' keys/values are computed once and the targets are rendered
        in chunks of `target_chunk` views (all at once when None). state: (B, Vt, d_state) target states or None."""
        self._check_frames(inputs, "predict_views(inputs)")
        b, n_in, _, h, w = inputs.shape
        self._check_cams(cams_in, b, n_in, "predict_views(cams_in)")
        n_t = cams_target.shape[1] if len(cams_target.shape) == 2 else -1
        self._check_cams(cams_target, b, n_t, "predict_views(cams_target)")
        if target_chunk is not None and target_chunk < 1:
            raise ValueError(f"predict_views: target_chunk must be >= 1, got {target_chunk}")
        dtype, device = inputs.dtype, inputs.device
        x_in = self._nvs_inputs(inputs, cams_in, h, w, dtype)
        roles_in = torch.full((n_in,), ROLE_NVS_INPUT, device=device)
        reg_in = self._nvs_registers(b, n_in, None, 0, x_in.dtype)
        mask_in = masks.inference_view_mask(n_in, 0, device)
        _, _, kv = self._hourglass(x_in, roles_in, reg_in, TOKEN_REGISTER, mask_in, record_kv=True, decode=False)

        chunk = n_t if target_chunk is None else target_chunk
        outputs = []
        for start in range(0, n_t, chunk):
            stop = min(start + chunk, n_t)
            x_t = self._nvs_inputs(None, cams_target[:, start:stop], h, w, dtype)
            roles_t = torch.full((stop - start,), ROLE_NVS_TARGET, device=device)
            st = None if state is None else state[:, start:stop]
            reg_t = self._nvs_registers(b, 0, st, stop - start, x_t.dtype)
            mask_t = masks.inference_view_mask(n_in, stop - start, device)[n_in:]
            rgb, _, _ = self._hourglass(x_t, roles_t, reg_t, TOKEN_REGISTER, mask_t, prefix_kv=kv)
            outputs.append(rgb.permute(0, 1, 4, 2, 3))
        return torch.cat(outputs, 1)

    # ------------------------------------------------------------------------------------------------------------
    # Training

    def training_loss(self, frames: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Self-supervised training objective on clips (B, K, 3, H, W) in [-1, 1].

        Cameras and states come from camera estimation on the full clip. With autoregression 'random' ('ordered')
        the views are put in a random (the given) order; inputs = views[:-1], targets = views[1:], target j is
        rendered from inputs 0..j, all targets in one sequence (mask B.2). With 'none' the first K//2 views are
        inputs and the rest targets (mask B.1). With 'parallel' (Config E) a fresh random partition into
        K - n_targets inputs and n_targets targets, inputs attending to all inputs and each target to itself and the
        inputs, all targets in one sequence; with 'per_target' (Config D) the same partition, each target rendered in
        its own full-attention sequence of the inputs plus that target. Target states are zeroed with probability `state_dropout` per sample
        and view (training mode only). Loss = MSE in [-1, 1] over all targets.

        Returns dict: loss (scalar, differentiable), mse, psnr (dB, = -10 log10(mse / 4)), focal_mean (detached
        scalars), pred (detached (B, Vt, 3, H, W) predictions), render (the same, differentiable) and target
        ((B, Vt, 3, H, W) ground truth), both in [-1, 1]."""
        self._check_frames(frames, "training_loss(frames)")
        b, k = frames.shape[:2]
        if k < 2:
            raise ValueError(f"training_loss(frames): need at least 2 views per clip, got {k}")
        device = frames.device
        if self.backend == "natten" and device.type != "cuda" and torch.is_grad_enabled():
            raise ValueError(
                "training_loss: attention_backend='natten' cannot train on CPU (flex attention has no CPU backward); "
                "use attention_backend='auto' or 'sdpa'"
            )
        gen_device = generator.device if generator is not None else device

        mode = self.cfg.autoregression
        if mode in ("parallel", "per_target") and not 1 <= self.cfg.n_targets < k:
            raise ValueError(f"training_loss(frames): autoregression {mode!r} needs 1 <= n_targets < views, got "
                             f"n_targets={self.cfg.n_targets} with {k} views")
        if mode in ("random", "parallel", "per_target"):  # parallel/per_target: a fresh random partition per step
            order = torch.rand(b, k, generator=generator, device=gen_device).argsort(dim=1).to(device)
            frames = frames[torch.arange(b, device=device)[:, None], order]
        est = self.estimate_cameras(frames)

        if mode in ("parallel", "per_target"):
            n_in = k - self.cfg.n_targets
            in_idx, tgt_idx = slice(0, n_in), slice(n_in, k)
            view_mask = masks.parallel_view_mask(n_in, k - n_in, device)
        elif mode == "none":
            n_in = k // 2
            in_idx, tgt_idx = slice(0, n_in), slice(n_in, k)
            view_mask = masks.inference_view_mask(n_in, k - n_in, device)
        else:
            in_idx, tgt_idx = slice(0, k - 1), slice(1, k)
            view_mask = masks.training_view_mask(k, device)

        state_target = None
        if self.cfg.dynamic_state:
            state_target = est.state[:, tgt_idx]
            p = self.cfg.state_dropout
            if self.training and p > 0:
                keep = torch.rand(state_target.shape[:2], generator=generator, device=gen_device) >= p
                state_target = state_target * keep.to(device=device, dtype=state_target.dtype)[..., None]

        target = frames[:, tgt_idx]
        if mode == "per_target":  # Config D: one sequence [inputs, target t] per target, full attention
            n_in = k - self.cfg.n_targets
            full = masks.full_view_mask(n_in + 1, device)
            cams_t = est.camera[:, tgt_idx]
            pred = torch.cat([self._render(frames[:, in_idx], est.camera[:, in_idx], cams_t[:, t:t + 1],
                                           None if state_target is None else state_target[:, t:t + 1], full)
                              for t in range(k - n_in)], dim=1)
        else:
            pred = self._render(frames[:, in_idx], est.camera[:, in_idx], est.camera[:, tgt_idx], state_target,
                                view_mask)
        loss = F.mse_loss(pred.float(), target.float())
        mse = loss.detach()
        return {
            "loss": loss,
            "mse": mse,
            "psnr": -10 * torch.log10(mse / 4),
            "focal_mean": est.camera.f.detach().mean(),
            "pred": pred.detach(),
            "render": pred,      # the same predictions, differentiable (for extra loss terms, e.g. perceptual)
            "target": target,
        }

    def compile_regions(self) -> list[nn.Module]:
        """The modules worth compiling one by one (`compile: true`): every neighbourhood and backbone layer."""
        return [m for m in self.modules() if isinstance(m, (NeighborhoodLayer, GlobalLocalLayer))]

    def extra_repr(self) -> str:
        return f"preset={self.cfg.preset!r}, backend={self.backend!r}"
