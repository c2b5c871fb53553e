"""RayDer's ablation baseline with three separate networks (paper Section 3.1, Configs A-C of Table B.2).

`model.architecture: three_network` builds this instead of the single network M (Configs D-H). The pipeline is the
RayZer-like one the paper starts from (Section 3.1, Eq. 1):

* **E_cam** maps all K views of a clip (RGB only) to a pose + focal per view, and with `dynamic_state` also a
  dynamic state s_i (Config B/C): `depth` RayDer backbone layers (global attention over all views + one camera
  register per view, per-frame attention with axial RoPE, SwiGLU), heads on the final registers.
* **E_scene** maps the input views with their poses, {(I_i, p_i)} (RGB + Plücker map of the predicted camera),
  to the latent scene representation z: `depth` backbone layers without registers (nothing is read out per view),
  full attention among the inputs. z = the final token grids of the input views (B, n_in, h, w, width).
* **D_render** maps z and a target pose (and state) to the target image: one sequence per target of
  [z grids, target Plücker tokens] through `depth` backbone layers with full attention (LVSM decoder style: no
  parallel targets, Config E introduces those), every view with a register; the target's register carries its
  state (`state_proj(s_target)`, "provided to the renderer as an additional token"), zeroed with probability
  `state_dropout` in training (Config C: 0.5, Config B: 0). z's grids enter without a patch embedding.

Each network patchifies with one `downsample` x `downsample` linear (16 x 16 at `patch: 4`, Table B.2's patch size
for Configs A-G) and has its own role-conditioning embeddings; D_render ends in RMSNorm + a zero-initialised linear
to pixels. No neighbourhood-attention layers (`local_layers` must be false) and no hourglass skips. Training: each
step a fresh random partition of the clip into K - n_targets inputs and n_targets targets (Table B.2: 6 + 2);
loss = MSE in [-1, 1] over the targets. The public interface is RayDer's (`training_loss`, `estimate_cameras`,
`predict_cameras` -> `.camera/.state/.camera_tokens`, `render`, `predict_views`, `compile_regions`, `backend`).

Our reading where the paper is silent: z as the inputs' token grids (RayZer uses a separate set of latent tokens),
E_scene without registers, every network built from RayDer's own layer (so the ablation changes only the
consolidation). Parameters at the Table B.2 size (width 512, depth 6 + 6 + 6): `rayder-flops` / `param_count`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rayder_core.models import attention
from rayder_core.models.attention import resolve_backend
from rayder_core.geometry import Camera, camera_from_params, plucker_rays

from .layers import (FF_EXPAND, AdaRMSNorm, CosineAttentionWeights, GlobalContext, GlobalLocalLayer, MLPHead,
                     PixelOutput, SwiGLU, TokenMerge)
from .tokens import (INTRINSICS_PARAMS, PLUCKER_DIM, POSE_PARAMS, RGB_DIM, ROLE_CAMERA, ROLE_NVS_INPUT,
                     ROLE_NVS_TARGET, TOKEN_CAMERA, TOKEN_REGISTER, TOKEN_VIEW, CameraEstimate)


class SceneLayer(nn.Module):
    """A RayDer backbone layer without registers: global attention over all tokens of all views (no positions),
    per-frame attention (axial RoPE), SwiGLU; adaptive norms on the role conditioning."""

    def __init__(self, width: int, d_cond: int, head_dim: int) -> None:
        super().__init__()
        self.global_norm = AdaRMSNorm(width, d_cond)
        self.global_attn = CosineAttentionWeights(width, head_dim)
        self.local_norm = AdaRMSNorm(width, d_cond)
        self.local_attn = CosineAttentionWeights(width, head_dim)
        self.ff_norm = AdaRMSNorm(width, d_cond)
        self.ff = SwiGLU(width)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        b, v, h, w, c = x.shape
        n = h * w
        q, k, val = (t.transpose(1, 2) for t in self.global_attn.project(self.global_norm(x, cond).reshape(b, v * n, c)))
        out = attention.dense_attention(q.to(val.dtype), k.to(val.dtype), val)
        x = x + self.global_attn.out(out.transpose(1, 2).reshape(b, v, h, w, c))

        q, k, val = self.local_attn.project(self.local_norm(x, cond).reshape(b * v, n, c))  # (BV, n, heads, D)
        angles = attention.rope_angles(self.local_attn.rope_freqs, h, w).reshape(n, *q.shape[-2:-1], -1)
        q, k = attention.apply_rope(q, angles).to(val.dtype), attention.apply_rope(k, angles).to(val.dtype)
        out = attention.dense_attention(q.transpose(1, 2), k.transpose(1, 2), val.transpose(1, 2))
        x = x + self.local_attn.out(out.transpose(1, 2).reshape(b, v, h, w, c))
        return x + self.ff(self.ff_norm(x, cond))


class _Conditioning(nn.Module):
    """Role (camera estimation / NVS input / NVS target) + token-type embeddings of one network."""

    def __init__(self, d_cond: int) -> None:
        super().__init__()
        self.role = nn.Embedding(3, d_cond)
        self.token_type = nn.Embedding(3, d_cond)

    def forward(self, roles: Tensor, reg_type: int) -> tuple[Tensor, Tensor]:
        role = self.role(roles)[None]
        types = self.token_type.weight
        return role + types[TOKEN_VIEW], role + types[reg_type]


class ThreeNetworkRayDer(nn.Module):
    """E_cam, E_scene and D_render as three transformers of `cfg.depth` layers each (see the module docstring)."""

    def __init__(self, cfg) -> None:
        super().__init__()
        cfg.validate()
        if cfg.architecture != "three_network":
            raise ValueError(f"ThreeNetworkRayDer needs architecture 'three_network', got {cfg.architecture!r}")
        self.cfg = cfg
        w, dc, p = cfg.width, cfg.d_cond, cfg.downsample

        # E_cam
        self.cam_cond = _Conditioning(dc)
        self.cam_embed = TokenMerge(RGB_DIM, w, p)
        self.camera_token = nn.Parameter(torch.empty(w))
        self.cam_layers = nn.ModuleList([GlobalLocalLayer(w, dc, cfg.head_dim) for _ in range(cfg.depth)])
        self.pose_head = MLPHead(w, POSE_PARAMS)
        self.focal_head = MLPHead(w, INTRINSICS_PARAMS, zero_init=True)
        if cfg.dynamic_state:
            self.state_head = MLPHead(w, cfg.d_state)
            self.state_proj = nn.Linear(cfg.d_state, w, bias=False)
        # E_scene
        self.scene_cond = _Conditioning(dc)
        self.scene_embed = TokenMerge(RGB_DIM + PLUCKER_DIM, w, p)
        self.scene_layers = nn.ModuleList([SceneLayer(w, dc, cfg.head_dim) for _ in range(cfg.depth)])
        # D_render
        self.render_cond = _Conditioning(dc)
        self.render_embed = TokenMerge(PLUCKER_DIM, w, p)
        self.nvs_token = nn.Parameter(torch.empty(w))
        self.render_layers = nn.ModuleList([GlobalLocalLayer(w, dc, cfg.head_dim) for _ in range(cfg.depth)])
        self.output = PixelOutput(w, p)
        for t in (self.camera_token, self.nvs_token):
            nn.init.trunc_normal_(t, std=1e-4, a=-2e-4, b=2e-4)

    # ------------------------------------------------------------------------------------------------------------
    @property
    def backend(self) -> str:
        """Attention backend of the parameters' device (only full attention here: the same exact path on both)."""
        return resolve_backend(self.cfg.attention_backend, self.camera_token.device)

    def _check_frames(self, frames: Tensor, name: str) -> None:
        if frames.ndim != 5 or frames.shape[2] != RGB_DIM:
            raise ValueError(f"{name}: expected (B, V, 3, H, W) images in [-1, 1], got shape {tuple(frames.shape)}")
        h, w = frames.shape[-2:]
        d = self.cfg.downsample
        if h % d or w % d:
            raise ValueError(f"{name}: image size {h}x{w} must be divisible by {d}")

    @staticmethod
    def _check_cams(cams: Camera, b: int, v: int, name: str) -> None:
        if tuple(cams.shape) != (b, v):
            raise ValueError(f"{name}: expected cameras with shape ({b}, {v}), got {tuple(cams.shape)}")

    @staticmethod
    def _run(layers: nn.ModuleList, x: Tensor, reg: Tensor, cond: Tensor, cond_reg: Tensor) -> tuple[Tensor, Tensor]:
        ctx = GlobalContext(None)  # full attention over all views of the sequence
        for i, layer in enumerate(layers):
            x, reg = layer(x, reg, cond, cond_reg, ctx, i)
        return x, reg

    # ------------------------------------------------------------------------------------------------------------
    # E_cam

    def estimate_cameras(self, frames: Tensor) -> CameraEstimate:
        """E_cam: cameras (and states) of all views of (B, V, 3, H, W) frames in [-1, 1] (differentiable)."""
        self._check_frames(frames, "estimate_cameras(frames)")
        b, v = frames.shape[:2]
        x = self.cam_embed(frames.permute(0, 1, 3, 4, 2))
        reg = self.camera_token.to(x.dtype).expand(b, v, -1)
        cond, cond_reg = self.cam_cond(torch.full((v,), ROLE_CAMERA, device=frames.device), TOKEN_CAMERA)
        _, tokens = self._run(self.cam_layers, x, reg, cond, cond_reg)
        camera = camera_from_params(self.pose_head(tokens).double(), self.focal_head(tokens).double())
        state = self.state_head(tokens) if self.cfg.dynamic_state else tokens.new_zeros(b, v, self.cfg.d_state)
        return CameraEstimate(camera=camera, state=state, camera_tokens=tokens)

    @torch.no_grad()
    def predict_cameras(self, frames: Tensor) -> CameraEstimate:
        """`estimate_cameras` without gradients."""
        return self.estimate_cameras(frames)

    # ------------------------------------------------------------------------------------------------------------
    # E_scene and D_render

    def encode_scene(self, inputs: Tensor, cams_in: Camera) -> Tensor:
        """E_scene: z (B, n_in, h, w, width) from input views (B, n_in, 3, H, W) and their cameras (B, n_in)."""
        b, n_in, _, h, w = inputs.shape
        rays = plucker_rays(cams_in, h, w, dtype=inputs.dtype)
        x = self.scene_embed(torch.cat([inputs.permute(0, 1, 3, 4, 2), rays], -1))
        cond, _ = self.scene_cond(torch.full((n_in,), ROLE_NVS_INPUT, device=inputs.device), TOKEN_REGISTER)
        for layer in self.scene_layers:
            x = layer(x, cond)
        return x

    def decode(self, z: Tensor, cams_target: Camera, state_target: Tensor | None, h: int, w: int) -> Tensor:
        """D_render: targets (B, n_t, 3, H, W) from z and target cameras (B, n_t), each target in its own sequence
        [z, target] (batched as B * n_t sequences); state_target (B, n_t, d_state) or None (zero state)."""
        b, n_in = z.shape[:2]
        n_t = cams_target.shape[1]
        dtype = z.dtype
        rays = plucker_rays(cams_target, h, w, dtype=dtype)                       # (B, n_t, H, W, 6)
        tgt = self.render_embed(rays).reshape(b * n_t, 1, *z.shape[2:])          # (B n_t, 1, h, w, C)
        zz = z[:, None].expand(b, n_t, *z.shape[1:]).reshape(b * n_t, *z.shape[1:])
        x = torch.cat([zz, tgt.to(zz.dtype)], 1)                                 # (B n_t, n_in + 1, h, w, C)
        reg = self.nvs_token.to(dtype).expand(b * n_t, n_in + 1, -1)
        if self.cfg.dynamic_state and state_target is not None:
            s = self.state_proj(state_target.to(self.state_proj.weight.dtype)).to(dtype).reshape(b * n_t, 1, -1)
            reg = reg + F.pad(s, (0, 0, n_in, 0))
        roles = torch.tensor([ROLE_NVS_INPUT] * n_in + [ROLE_NVS_TARGET], device=z.device)
        cond, cond_reg = self.render_cond(roles, TOKEN_REGISTER)
        x, _ = self._run(self.render_layers, x, reg, cond, cond_reg)
        rgb = self.output(x[:, n_in:])                                           # (B n_t, 1, H, W, 3)
        return rgb.reshape(b, n_t, h, w, RGB_DIM).permute(0, 1, 4, 2, 3)

    def render(self, inputs: Tensor, cams_in: Camera, cams_target: Camera, state_target: Tensor | None = None
               ) -> Tensor:
        """Render target views (differentiable): E_scene on the inputs, D_render per target. Shapes as RayDer."""
        self._check_frames(inputs, "render(inputs)")
        b, n_in, _, h, w = inputs.shape
        self._check_cams(cams_in, b, n_in, "render(cams_in)")
        n_t = cams_target.shape[1] if len(cams_target.shape) == 2 else -1
        self._check_cams(cams_target, b, n_t, "render(cams_target)")
        return self.decode(self.encode_scene(inputs, cams_in), cams_target, state_target, h, w)

    @torch.no_grad()
    def predict_views(self, inputs: Tensor, cams_in: Camera, cams_target: Camera, state: Tensor | None = None,
                      target_chunk: int | None = None) -> Tensor:
        """`render` without gradients; z is computed once, targets are decoded in chunks of `target_chunk`."""
        self._check_frames(inputs, "predict_views(inputs)")
        b, n_in, _, h, w = inputs.shape
        self._check_cams(cams_in, b, n_in, "predict_views(cams_in)")
        n_t = cams_target.shape[1] if len(cams_target.shape) == 2 else -1
        self._check_cams(cams_target, b, n_t, "predict_views(cams_target)")
        if target_chunk is not None and target_chunk < 1:
            raise ValueError(f"predict_views: target_chunk must be >= 1, got {target_chunk}")
        z = self.encode_scene(inputs, cams_in)
        chunk = n_t if target_chunk is None else target_chunk
        return torch.cat([self.decode(z, cams_target[:, s:s + chunk], None if state is None else state[:, s:s + chunk],
                                      h, w) for s in range(0, n_t, chunk)], 1)

    # ------------------------------------------------------------------------------------------------------------
    # Training

    def training_loss(self, frames: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Configs A-C: a fresh random partition of each clip (B, K, 3, H, W) into K - n_targets inputs and
        n_targets targets; E_cam on all K views, E_scene on the inputs, D_render per target; target states zeroed
        with probability `state_dropout` (training mode). Returns the keys of `RayDer.training_loss`."""
        self._check_frames(frames, "training_loss(frames)")
        b, k = frames.shape[:2]
        n_t = self.cfg.n_targets
        if not 1 <= n_t < k:
            raise ValueError(f"training_loss(frames): three_network needs 1 <= n_targets < views, got n_targets={n_t} "
                             f"with {k} views")
        device = frames.device
        gen_device = generator.device if generator is not None else device
        order = torch.rand(b, k, generator=generator, device=gen_device).argsort(dim=1).to(device)
        frames = frames[torch.arange(b, device=device)[:, None], order]
        est = self.estimate_cameras(frames)
        n_in = k - n_t
        state_target = None
        if self.cfg.dynamic_state:
            state_target = est.state[:, n_in:]
            p = self.cfg.state_dropout
            if self.training and p > 0:
                keep = torch.rand(state_target.shape[:2], generator=generator, device=gen_device) >= p
                state_target = state_target * keep.to(device=device, dtype=state_target.dtype)[..., None]
        h, w = frames.shape[-2:]
        z = self.encode_scene(frames[:, :n_in], est.camera[:, :n_in])
        pred = self.decode(z, est.camera[:, n_in:], state_target, h, w)
        target = frames[:, n_in:]
        loss = F.mse_loss(pred.float(), target.float())
        mse = loss.detach()
        return {"loss": loss, "mse": mse, "psnr": -10 * torch.log10(mse / 4), "focal_mean": est.camera.f.detach().mean(),
                "pred": pred.detach(), "render": pred, "target": target}

    def compile_regions(self) -> list[nn.Module]:
        """The modules worth compiling one by one: every layer of the three networks."""
        return [*self.cam_layers, *self.scene_layers, *self.render_layers]

    def extra_repr(self) -> str:
        return f"preset={self.cfg.preset!r}, architecture='three_network', backend={self.backend!r}"


# ----------------------------------------------------------------------------------------------------------------------
# Analytic FLOPs (the conventions of `flops.py`: 2 FLOPs per multiply-accumulate, attention 4 x width per pair,
# role-conditioning linears once per view, elementwise work not counted; all attention here is full, so allowed
# pairs = dense pairs).


def forward_flops(cfg, resolution: int | tuple[int, int], views: int) -> dict[str, float]:
    """Forward FLOPs of one training sample of K = `views` frames: {'camera', 'render', 'camera_dense',
    'render_dense', 'camera_attention', 'render_attention', 'camera_embed', 'render_embed'} (render = E_scene +
    D_render; *_embed = the linears outside the transformer layers inside the totals: patch embeddings, pixel
    output, camera/state heads, state projection)."""
    h, w = (resolution, resolution) if isinstance(resolution, int) else resolution
    d = cfg.downsample
    if h % d or w % d:
        raise ValueError(f"resolution {h}x{w} must be divisible by {d}")
    n_t = cfg.n_targets
    if not 1 <= n_t < views:
        raise ValueError(f"three_network needs 1 <= n_targets < views, got n_targets={n_t} with {views} views")
    n_in = views - n_t
    n, c, dc = (h // d) * (w // d), cfg.width, cfg.d_cond
    lin = lambda tokens, fi, fo: 2.0 * tokens * fi * fo  # noqa: E731
    attn = lambda pairs: 4.0 * pairs * c  # noqa: E731
    token_mm = 4 * c * c + FF_EXPAND * 3 * c * c  # qkv + out + SwiGLU (2 x 3c up, 3c down) per token, one attention

    def global_local(v: int, cond: bool = True) -> tuple[float, float]:  # a layer with registers, full attention
        m = n + 1
        mm = 6 * lin(v, dc, c) * cond + lin(v * m, c, token_mm // c) + lin(v * m, c, 4 * c)  # + 2nd attention qkv/out
        return mm, attn((v * m) ** 2) + attn(v * m * m)

    def scene(v: int) -> tuple[float, float]:  # one layer without registers
        mm = 3 * lin(v, dc, c) + lin(v * n, c, token_mm // c) + lin(v * n, c, 4 * c)
        return mm, attn((v * n) ** 2) + attn(v * n * n)

    heads = lin(views, c, POSE_PARAMS + INTRINSICS_PARAMS + (cfg.d_state if cfg.dynamic_state else 0))
    cam_embed = lin(views * n, RGB_DIM * d * d, c)
    mm, at = global_local(views)
    camera_mm, camera_at = cam_embed + cfg.depth * mm + heads, cfg.depth * at

    scene_embed = lin(n_in * n, (RGB_DIM + PLUCKER_DIM) * d * d, c)
    mm_s, at_s = scene(n_in)
    render_embed = n_t * (lin(n, PLUCKER_DIM * d * d, c) + lin(n, c, RGB_DIM * d * d))
    mm_r, at_r = global_local(n_in + 1, cond=False)
    # D_render's conditioning depends on the roles only (z views, one target): computed once for all targets
    render_cond = cfg.depth * 6 * lin(n_in + 1, dc, c)
    state = lin(n_t, cfg.d_state, c) if cfg.dynamic_state else 0.0
    render_mm = scene_embed + cfg.depth * mm_s + render_embed + state + n_t * cfg.depth * mm_r + render_cond
    render_at = cfg.depth * at_s + n_t * cfg.depth * at_r
    camera, render = camera_mm + camera_at, render_mm + render_at
    return {"camera": camera, "render": render, "camera_dense": camera, "render_dense": render,
            "camera_attention": camera_at, "render_attention": render_at,
            "camera_embed": cam_embed + heads, "render_embed": scene_embed + render_embed + state}
