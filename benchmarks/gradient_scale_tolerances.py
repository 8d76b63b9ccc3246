"""Issue 13: scale-aware gradient tolerances. How large are honest gradient differences relative to their own tensor
and to the largest gradient of the check, and which mutants does each tolerance rule catch?

Runs convert mode with the gradient tolerances wide open on the demo's Keras models, the PyTorch convert-mode models,
a set of torchvision architectures and, when installed, timm and transformers models (small configs, random weights),
and keeps per gradient tensor: its largest |source| element (own), the largest |source| over every gradient of the
check (overall), and the largest |target - source| (diff). Then, per rule:

- false failures: unmutated tensors the rule fails (diff above its tolerance);
- mutants caught: a target gradient zeroed, halved or sign-flipped fails the rule when
  max|source| * (1 - grad_rtol) (zeroed), * (0.5 - grad_rtol) (halved), * (2 - grad_rtol) (negated) exceeds its atol;
- tensors below the rounding floor (own < NOISE_SHARE * overall): zero in all but rounding, not distinguishable from a
  zeroed target by any rule; counted apart.

    python benchmarks/gradient_scale_tolerances.py [--seeds 2] [--only keras,torch,torchvision,timm,transformers]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pytest_parity import import_guard

import_guard.install_guard()

import numpy as np  # noqa: E402
import torch  # noqa: E402 - before TensorFlow (PITFALLS: import order)

from pytest_parity.check import run_check  # noqa: E402
from pytest_parity.settings import ParitySettings  # noqa: E402
from pytest_parity.verdict import tolerances  # noqa: E402

GRAD_ATOL, GRAD_RTOL = ParitySettings().grad_atol, ParitySettings().grad_rtol
WIDE_OPEN = ParitySettings(atol=1.0, rtol=1.0, grad_atol=1e30, grad_rtol=GRAD_RTOL, unmatched_weights="allow")

TORCHVISION = {"resnet18": 32, "mobilenet_v3_small": 32, "efficientnet_b0": 32, "convnext_tiny": 32,
               "regnet_y_400mf": 32, "shufflenet_v2_x0_5": 32, "swin_t": 32, "squeezenet1_1": 32}
TIMM = {"convnext_atto": 32, "tf_efficientnet_b0": 32, "regnety_002": 32, "levit_128s": 224, "coat_lite_tiny": 224,
        "resmlp_12_224": 224, "mixer_s16_224": 224, "poolformer_s12": 32, "efficientformer_l1": 224,
        "mobilevit_xxs": 64}


def _keras_cases(seeds: int):
    from fixtures.keras_models import BUILDERS, INPUT_SHAPES

    for name, build in BUILDERS.items():
        for seed in range(seeds):
            x = np.random.default_rng(seed).standard_normal((8, *INPUT_SHAPES[name])).astype(np.float32)
            yield f"keras:{name}", seed, build, x


def _torch_cases(seeds: int):
    from fixtures.torch_convert_models import CASES

    for name, (build, make_inputs) in CASES.items():
        for seed in range(seeds):
            yield f"torch:{name}", seed, build, make_inputs(np.random.default_rng(seed))


def _image_cases(prefix: str, sizes: dict[str, int], factory, seeds: int):
    for name, size in sizes.items():
        for seed in range(seeds):
            x = np.random.default_rng(seed).standard_normal((2, 3, size, size)).astype(np.float32)
            yield f"{prefix}:{name}", seed, lambda name=name: factory(name).eval(), x


def _transformers_cases(seeds: int):
    import transformers

    configs = {
        "bert": (transformers.BertModel, transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                                                 num_attention_heads=4, intermediate_size=37,
                                                                 max_position_embeddings=32)),
        "gpt2": (transformers.GPT2Model, transformers.GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4,
                                                                 n_positions=32, use_cache=False)),
    }

    class Hidden(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, ids):
            return self.model(input_ids=ids).last_hidden_state

    for name, (cls, config) in configs.items():
        config._attn_implementation = "eager"
        for seed in range(seeds):
            ids = np.random.default_rng(seed).integers(0, 64, (2, 8)).astype(np.int64)
            yield f"transformers:{name}", seed, lambda cls=cls, config=config: Hidden(cls(config).eval()), ids


def _rows(case_name: str, seed: int, build, inputs) -> list[dict]:
    torch.manual_seed(seed)
    result = run_check(build(), None, inputs, WIDE_OPEN, "cpu", f"scale-tolerances-{case_name}-{seed}")
    grads = result.grads or {}
    overall = max((c.source_max_abs for c in grads.values()), default=0.0)
    account = result.weight_account
    return [{"case": case_name, "seed": seed, "tensor": name, "own": c.source_max_abs, "overall": overall,
             "diff": c.max_abs, "weights_compared": account.compared, "weights_total": account.total,
             "weights_unused": len(account.unused)} for name, c in grads.items()]


def _judge(rows: list[dict], rule) -> dict[str, int]:
    figures = {"tensors": len(rows), "false_failures": 0, "zeroed": 0, "halved": 0, "negated": 0, "below_floor": 0}
    for row in rows:
        atol = rule(row)
        if row["diff"] > atol + GRAD_RTOL * row["own"]:
            figures["false_failures"] += 1
        if row["own"] < tolerances.NOISE_SHARE * row["overall"]:
            figures["below_floor"] += 1
        for mutant, factor in (("zeroed", 1.0), ("halved", 0.5), ("negated", 2.0)):
            if row["own"] * (factor - GRAD_RTOL) > atol:
                figures[mutant] += 1
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--only", default="keras,torch,torchvision,timm,transformers")
    parser.add_argument("--json", default=None, help="write every tensor's figures here")
    args = parser.parse_args()
    families = args.only.split(",")
    cases = []
    if "torch" in families:
        cases += list(_torch_cases(args.seeds))
    if "torchvision" in families:
        import torchvision

        cases += list(_image_cases("torchvision", TORCHVISION, lambda n: torchvision.models.get_model(n, weights=None),
                                   args.seeds))
    if "timm" in families:
        try:
            import timm

            cases += list(_image_cases("timm", TIMM, lambda n: timm.create_model(n, pretrained=False), args.seeds))
        except ImportError:
            print("timm not installed: skipped")
    if "transformers" in families:
        try:
            cases += list(_transformers_cases(args.seeds))
        except ImportError:
            print("transformers not installed: skipped")
    if "keras" in families:
        cases += list(_keras_cases(args.seeds))
    rows: list[dict] = []
    for case_name, seed, build, inputs in cases:
        try:
            new_rows = _rows(case_name, seed, build, inputs)
        except Exception as error:  # a conversion gap is not this benchmark's subject: say so and go on
            print(f"{case_name} seed {seed}: not measured ({type(error).__name__}: {str(error).splitlines()[0][:120]})")
            continue
        rows += new_rows
        worst = max(new_rows, key=lambda r: r["diff"] / max(r["own"], 1e-30), default=None)
        if worst:
            print(f"{case_name:<32} seed {seed}: weights compared {worst['weights_compared']:>3} of "
                  f"{worst['weights_total']:<3} ({worst['weights_unused']} unused); "
                  f"{len(new_rows):>4} gradients, overall {worst['overall']:.2e}, "
                  f"worst diff/own {worst['diff'] / max(worst['own'], 1e-30):.2e} ({worst['tensor']}, own "
                  f"{worst['own']:.2e}, diff {worst['diff']:.2e})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows))

    above_floor = [r for r in rows if r["own"] >= tolerances.NOISE_SHARE * r["overall"] and r["own"] > 0]
    own_ratios = sorted(r["diff"] / r["own"] for r in above_floor)
    overall_ratios = sorted(r["diff"] / r["overall"] for r in rows if r["overall"] > 0)
    print(f"\n{len(rows)} gradient tensors from {len({(r['case'], r['seed']) for r in rows})} checks")
    if own_ratios:
        print(f"diff / own (tensors above the floor): median {np.median(own_ratios):.2e}, 99th percentile "
              f"{np.percentile(own_ratios, 99):.2e}, max {own_ratios[-1]:.2e}")
    if overall_ratios:
        print(f"diff / overall: median {np.median(overall_ratios):.2e}, max {overall_ratios[-1]:.2e}")
    rules = {
        f"fixed atol {GRAD_ATOL:g} (before)": lambda row: GRAD_ATOL,
        f"scaled: min({GRAD_ATOL:g}, max({tolerances.SCALE_SHARE:g} own, {tolerances.NOISE_SHARE:g} overall)) (now)":
            lambda row: tolerances.gradient_atol(row["own"], GRAD_ATOL, row["overall"]),
        "scaled without the floor: min(1e-4, 1e-2 own)": lambda row: min(GRAD_ATOL, 1e-2 * row["own"]),
        **{f"scaled, floor {floor:g}: min(1e-4, max(1e-2 own, {floor:g} overall))":
           (lambda row, floor=floor: min(GRAD_ATOL, max(1e-2 * row["own"], floor * row["overall"])))
           for floor in (1e-6, 1e-8, 3e-9)},
    }
    print(f"\n{'rule':<78} {'false fail':>10} {'zeroed':>12} {'halved':>12} {'negated':>12} {'below floor':>11}")
    for label, rule in rules.items():
        f = _judge(rows, rule)
        n = f["tensors"]
        print(f"{label:<78} {f['false_failures']:>10} {f['zeroed']:>5}/{n:<6} {f['halved']:>5}/{n:<6} "
              f"{f['negated']:>5}/{n:<6} {f['below_floor']:>11}")


if __name__ == "__main__":
    main()
