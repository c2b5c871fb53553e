"""GPU step hygiene and the record of how a run actually executed (attention kernels, TF32, devices).

`apply_gpu_settings(tf32, device)` turns TF32 matmuls/convolutions on or off for fp32 work on CUDA (on CPU it does
nothing: TF32 is a tensor-core format) and asks NATTEN (0.17-0.19, which still have an unfused path) for its fused
neighbourhood-attention kernels. `runtime_info(model, device, ...)` returns what a run records in `state.json`
(key `runtime`) and the store's run config (`config.runtime`): the attention backend actually used, NATTEN's version
and whether its fused path is on, TF32, device name, torch version and world size, so two runs that differ only in
kernels can be told apart afterwards.
"""
from __future__ import annotations

from typing import Any, Callable

import torch


def natten_status() -> dict[str, Any]:
    """{"natten_version": str | None, "natten_fused": bool | None} (None: NATTEN not importable / unknown).

    NATTEN >= 0.20 only has fused kernels; 0.17-0.19 report `is_fused_na_enabled()`."""
    try:
        import natten  # optional dependency
    except Exception:  # noqa: BLE001 - not installed, or built for another torch/CUDA
        return {"natten_version": None, "natten_fused": None}
    version = str(getattr(natten, "__version__", "unknown"))
    fused: bool | None = None
    for owner in (natten, getattr(natten, "context", None)):
        probe = getattr(owner, "is_fused_na_enabled", None)
        if callable(probe):
            try:
                fused = bool(probe())
            except Exception:  # noqa: BLE001
                fused = None
            break
    else:
        try:
            major, minor = (int(x) for x in version.split(".")[:2])
            fused = (major, minor) >= (0, 20) or None
        except ValueError:
            fused = None
    return {"natten_version": version, "natten_fused": fused}


def apply_gpu_settings(tf32: bool, device: torch.device) -> dict[str, Any]:
    """Set TF32 for matmuls and cuDNN convolutions on CUDA, and enable NATTEN's fused path where it is optional.

    No effect on CPU. Returns the settings now in force ({"tf32": bool | None}, None on CPU)."""
    if device.type != "cuda":
        return {"tf32": None}
    torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
    torch.backends.cudnn.allow_tf32 = bool(tf32)
    try:
        import natten  # optional dependency

        use_fused = getattr(natten, "use_fused_na", None)
        if callable(use_fused):
            use_fused(True)
    except Exception:  # noqa: BLE001 - NATTEN absent: the sdpa backend is used and recorded as such
        pass
    return {"tf32": bool(torch.backends.cuda.matmul.allow_tf32)}


def runtime_info(model: torch.nn.Module, device: torch.device, world: int = 1) -> dict[str, Any]:
    """How this process executes the model: attention backend, NATTEN fused path, TF32, device, torch, world size.

    TF32 is reported only on CUDA (None on CPU, where it does not exist)."""
    backend = getattr(model, "backend", None)
    info: dict[str, Any] = {"attention_backend": backend, "device": str(device),
                            "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"),
                            "torch": torch.__version__, "world_size": int(world),
                            "tf32": bool(torch.backends.cuda.matmul.allow_tf32) if device.type == "cuda" else None}
    info |= natten_status() if backend == "natten" else {"natten_version": None, "natten_fused": None}
    return info


def compile_training_loss(model: torch.nn.Module) -> Callable[..., dict]:
    """`torch.compile` of the model's whole `training_loss` (forward and backward through AOTAutograd; `compile:
    loss`): the first call compiles, later processes reuse inductor's on-disk cache. A graph that fails to compile runs
    eagerly (dynamo's suppress_errors). The model is not wrapped: its state_dict and other methods are unchanged."""
    torch._dynamo.config.suppress_errors = True
    return torch.compile(model.training_loss, dynamic=False)


def compile_layers(model: torch.nn.Module) -> int:
    """`torch.compile` the model's transformer layers in place (regional compilation: small graphs without the
    data-dependent mask checks of the full loss, shared by all layers of one class; inductor's on-disk cache makes
    later runs reuse them). A region that fails to compile runs eagerly (dynamo's suppress_errors). Returns the
    number of compiled modules (0 for a family without `compile_regions`)."""
    torch._dynamo.config.suppress_errors = True  # eager fallback for any region that cannot be compiled
    regions = list(getattr(model, "compile_regions", lambda: [])())
    for module in regions:
        module.compile(dynamic=False)
    return len(regions)
