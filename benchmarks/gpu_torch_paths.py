"""The PyTorch-side CUDA paths measured on a GPU: convert mode (PyTorch -> ONNX -> PyTorch) on cuda against cpu, speed
of the converted model against the original with device synchronisation, the cross-device check, and what TF32 does to
a float32 matmul. Needs torch, onnx and onnx2torch (no TensorFlow); exits with the reason where there is no GPU.

    python benchmarks/gpu_torch_paths.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fixtures.torch_convert_models import CASES, SmallCNN
from pytest_parity.check import run_check
from pytest_parity.frameworks import devices
from pytest_parity.modes.cross_device import check_across_devices
from pytest_parity.settings import ParitySettings


def convert_mode_table() -> None:
    print("convert mode torch -> onnx -> torch, median of 3 checks (conversion included), speed forward on cuda")
    print(f"{'model':<18} {'device':<6} {'check s':>8} {'conv s':>7} {'out max abs':>12} {'grad max abs':>13} "
          f"{'speed ratio (spread)':>24}")
    for name, (build, make_inputs) in sorted(CASES.items()):
        inputs = make_inputs(np.random.default_rng(0))
        for device in ("cpu", "cuda"):
            walls, result = [], None
            for repeat in range(3):
                speed = 1e3 if device == "cuda" and repeat == 0 else None
                started = time.perf_counter()
                result = run_check(build(), None, inputs, ParitySettings(devices=(device,), speed=speed), device,
                                   f"{name}-{repeat}")
                walls.append(time.perf_counter() - started)
                if speed:
                    speed_result = result.speed
            grads = max((c.max_abs for c in (result.grads or {}).values()), default=0.0)
            figure = (f"{speed_result.ratio:.2f}x ({speed_result.ratio_min:.2f}-{speed_result.ratio_max:.2f}, "
                      f"{speed_result.rounds})" if device == "cuda" else "")
            print(f"{name:<18} {device:<6} {statistics.median(walls):8.3f} {result.conversion_s:7.3f} "
                  f"{result.outputs.max_abs:12.2e} {grads:13.2e} {figure:>24}")


def cross_device() -> None:
    result = check_across_devices(SmallCNN(), np.random.default_rng(0).standard_normal((8, 3, 8, 8)).astype(np.float32),
                                  ParitySettings(), "cross")
    grads = max(c.max_abs for c in (result.grads or {}).values())
    print(f"cross-device SmallCNN cpu -> cuda: passed {result.passed}, outputs max abs {result.outputs.max_abs:.2e}, "
          f"gradients max abs {grads:.2e}")


def tf32_effect() -> None:
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(4096, 4096, generator=generator) for _ in range(2))
    exact = (a.double() @ b.double()).numpy()
    scale = np.abs(exact).max()
    matmul = torch.backends.cuda.matmul
    attribute = "fp32_precision" if hasattr(matmul, "fp32_precision") else "allow_tf32"
    before = getattr(matmul, attribute)
    setattr(matmul, attribute, "tf32" if attribute == "fp32_precision" else True)
    tf32 = np.abs((a.cuda() @ b.cuda()).cpu().numpy() - exact).max() / scale
    with devices.exact_float32({"torch"}, "cuda"):
        ieee = np.abs((a.cuda() @ b.cuda()).cpu().numpy() - exact).max() / scale
    setattr(matmul, attribute, before)
    print(f"4096x4096 float32 matmul, max error / max |value| against float64: TF32 on {tf32:.2e}, "
          f"inside exact_float32 {ieee:.2e}")


def main() -> None:
    reason = devices.cuda_skip_reason_torch()
    if reason:
        sys.exit(f"no GPU run: {reason}")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    tf32_effect()
    cross_device()
    convert_mode_table()


if __name__ == "__main__":
    main()
