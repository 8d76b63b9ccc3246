"""How far apart two frameworks' float32 gradients are, measured in one side's own float32 rounding (issue 13).

A gradient tensor whose largest element lies within twice the check's rounding floor (1e-7 of the check's largest
gradient element, tolerances.NOISE_SHARE) would pass a halved target, and below the floor a zeroed one. The check
judges such tensors again against their own rounding: r = max|own32 - own64| of the PyTorch side (source, or else the
converted model) run in float64,
with the tolerance min(grad_atol, max(SCALE_SHARE * max|source|, ROUNDING_MARGIN * r))
(float64_referee.rejudge_near_zero). This
benchmark records, for every such tensor of every model, the ratio max|source32 - target32| / r that ROUNDING_MARGIN
must cover, whether the tensor is zero in exact arithmetic (its float64 gradient within that tolerance of zero) or a
real gradient that vanished, and whether the re-judged comparison still passes unmutated (a false failure if not).

    python benchmarks/rounding_reference.py            # every model of benchmarks/mutants.py plus keras.applications
    python benchmarks/rounding_reference.py --only apps,timm:convnext_atto
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import mutants  # noqa: E402 - the model list
import numpy as np  # noqa: E402

# keras.applications at 32x32 with their softmax head: saturated, so most gradients vanish (MobileNet's early layers
# reach 1e-16 of the largest).
APPLICATIONS = ["MobileNet", "MobileNetV3Small", "EfficientNetB0", "DenseNet121", "ResNet50"]


def worker(group: str, name: str) -> None:
    from pytest_parity import import_guard

    import_guard.install_guard()
    from pytest_parity.check import run_check
    from pytest_parity.settings import ParitySettings
    from pytest_parity.verdict import float64_referee, tolerances

    judge = float64_referee.rejudge_near_zero

    def recorded(grads: Any, source32: Any, target32: Any, own32: Any, own64: Any, **options: Any) -> Any:
        outcome = judge(grads, source32, target32, own32, own64, **options)
        for label, comparison in grads.items():
            if not tolerances.halved_would_pass(comparison):
                continue
            a, b = (own32 or {}).get(label), (own64 or {}).get(label)
            s, t = source32.get(label), target32.get(label)
            rounding = None if a is None or b is None else float(np.max(np.abs(np.asarray(a, np.float64) - b)))
            apart = None if s is None or t is None else float(np.max(np.abs(np.asarray(s, np.float64) - t)))
            print(json.dumps({"model": f"{group}:{name}", "tensor": label, "scale": comparison.source_max_abs,
                              "rounding": rounding, "apart": apart, "passed": outcome.grads[label].passed,
                              "exact_zero": label in outcome.zero_in_exact_arithmetic,
                              "unresolved": label in outcome.unresolved}), flush=True)
        return outcome

    float64_referee.rejudge_near_zero = recorded
    if group == "apps":
        import keras

        model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=4)
        inputs: Any = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    else:
        build, make_inputs = mutants.GROUPS[group]()[name]
        model, inputs = build(), make_inputs()
    try:
        result = run_check(model, None, inputs, ParitySettings(), "cpu", f"{group}:{name}")
        verdict = f"PASS {result.weight_account.describe()}"
    except Exception as error:
        verdict = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:150]}"
    print(json.dumps({"model": f"{group}:{name}", "verdict": verdict}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--only", help="groups (apps, demo, blocks, timm, ...) or group:model, comma-separated")
    parser.add_argument("--timeout", type=float, default=1200)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker.split(":", 1))
        return
    picked = None if not args.only else set(args.only.split(","))
    chosen = [("apps", name) for name in APPLICATIONS
              if picked is None or "apps" in picked or f"apps:{name}" in picked]
    chosen += mutants.rows(args.only) if picked is None or picked - {"apps"} else []
    tensors: list[dict[str, Any]] = []
    verdicts = {}
    for group, name in chosen:
        try:
            done = subprocess.run([sys.executable, __file__, "--worker", f"{group}:{name}"], cwd=ROOT,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=args.timeout)
            lines = done.stdout.splitlines()
        except subprocess.TimeoutExpired:
            lines = []
        entries = [json.loads(line) for line in lines if line.startswith("{")]
        tensors += [entry for entry in entries if "tensor" in entry]
        verdicts[f"{group}:{name}"] = next((e["verdict"] for e in entries if "verdict" in e), "no verdict (crash)")
        mine = [entry for entry in entries if "tensor" in entry]
        print(f"{group}:{name:<28} near zero {len(mine):>3}  {verdicts[f'{group}:{name}']}", flush=True)
    resolved = [t for t in tensors if t["rounding"] is not None and not t["unresolved"]]
    ratios = sorted(t["apart"] / t["rounding"] for t in resolved if t["rounding"] > 0)
    print(f"\nmodels: {len(chosen)}; with gradients a halved (or zeroed) target would pass: "
          f"{len({t['model'] for t in tensors})}; such tensors: {len(tensors)}")
    print(f"  real but vanished (now judged at their own scale): "
          f"{sum(not t['exact_zero'] for t in resolved)}")
    print(f"  zero in exact arithmetic: {sum(t['exact_zero'] for t in resolved)}")
    print(f"  unresolved (no float64 run): {len(tensors) - len(resolved)} "
          f"{sorted({t['model'] for t in tensors if t not in resolved})}")
    print(f"  false failures after the re-judge: {sum(not t['passed'] for t in tensors)}")
    if ratios:
        print(f"  |source32 - target32| / own rounding: median {ratios[len(ratios) // 2]:.2f}, "
              f"99th percentile {ratios[int(0.99 * (len(ratios) - 1))]:.2f}, max {ratios[-1]:.2f} "
              f"(ROUNDING_MARGIN must exceed it; {len(ratios)} tensors with rounding > 0)")
    failing = {model: verdict for model, verdict in verdicts.items() if not verdict.startswith("PASS")}
    print(f"  unmutated checks not passing: {len(failing)} {failing}")


if __name__ == "__main__":
    main()
