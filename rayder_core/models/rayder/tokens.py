"""What the RayDer networks share about their tokens: input channels, camera parameters, the indices of the view-role
and token-type embeddings, and `CameraEstimate` (the output of camera estimation). Used by the single network
(`model.py`), the three-network ablation (`three_network.py`) and the analytic FLOP count (`flops.py`)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from rayder_core.geometry import Camera

RGB_DIM, PLUCKER_DIM = 3, 6
POSE_PARAMS, INTRINSICS_PARAMS = 6, 1

# View roles and token types (indices of the two conditioning embeddings).
ROLE_CAMERA, ROLE_NVS_INPUT, ROLE_NVS_TARGET = 0, 1, 2
TOKEN_VIEW, TOKEN_CAMERA, TOKEN_REGISTER = 0, 1, 2


@dataclass
class CameraEstimate:
    """Per-view output of camera estimation.

    camera: Camera with leading dims (B, V), float64. state: (B, V, d_state) dynamic state (zeros when the config has
    no dynamic state). camera_tokens: (B, V, width) final camera-mode registers (the heads' input).
    """

    camera: Camera
    state: Tensor
    camera_tokens: Tensor
