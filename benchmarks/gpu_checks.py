"""Every GPU check of the toolkit in one command: the CUDA-only tests, then the GPU train-step benchmark.

    .venv/bin/python benchmarks/gpu_checks.py [--skip-benchmark] [--benchmark-args "--presets XS --steps 3"]

Without CUDA it prints one line saying so and exits with status 2 (nothing run, no traceback). With CUDA it runs
`pytest` on CUDA_TESTS (each test skips itself where a dependency such as gsplat is missing; skips are listed with
their reasons, `-rs`) and then `benchmarks/train_step.py --device cuda` (unless --skip-benchmark), and exits with the
first non-zero status.

CUDA_TESTS (add a GPU test here when you write one):
- tests/test_erayzer_render.py: the gsplat path (`_render_gsplat`, `fold_focal`) against the dense renderer, images
  within 1e-4 and gradients of means, opacities and focal within 1e-3 relative; and the raw gsplat rasteriser.
- tests/test_gpu_hygiene.py: the CUDA runtime settings (TF32, device hygiene).
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CUDA_TESTS = (
    "tests/test_erayzer_render.py::test_dense_renderer_matches_gsplat_on_cuda",
    "tests/test_erayzer_render.py::test_gsplat_path_matches_the_dense_renderer_with_gradients_on_cuda",
    "tests/test_gpu_hygiene.py",
)
NO_CUDA_STATUS = 2


def cuda_status() -> str | None:
    """None when CUDA is usable, else one line saying why not."""
    import torch

    if torch.version.cuda is None:
        return f"torch {torch.__version__} is built without CUDA"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no CUDA device"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-benchmark", action="store_true", help="run the CUDA tests only")
    parser.add_argument("--benchmark-args", default="", help="extra arguments for benchmarks/train_step.py")
    args = parser.parse_args(argv)
    why = cuda_status()
    if why is not None:
        print(f"gpu_checks: no CUDA ({why}); no GPU check was run", file=sys.stderr)
        return NO_CUDA_STATUS
    steps = [[sys.executable, "-m", "pytest", "-q", "-rs", *CUDA_TESTS]]
    if not args.skip_benchmark:
        steps.append([sys.executable, "benchmarks/train_step.py", "--device", "cuda",
                      *shlex.split(args.benchmark_args)])
    status = 0
    for cmd in steps:
        print("gpu_checks: $ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
        rc = subprocess.call(cmd, cwd=ROOT)
        status = status or rc
    return status


if __name__ == "__main__":
    raise SystemExit(main())
