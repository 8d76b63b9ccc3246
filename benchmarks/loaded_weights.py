"""target_weights='loaded' (issue 24, item 1): converter bugs caught with the fix named, and false failures on correct
converters.

    PYTHONPATH=. python benchmarks/loaded_weights.py

1. The issue's four converter bugs (tests/e2e/test_port_as_is.py's converters, Keras checkpoint -> PyTorch port): for
   each, whether the check fails, whether the failing tensor's message names the fix, and the same for carried mode
   (the default), which never runs the converter.
2. False failures: every correct fixture port (fixtures/ports.GOOD_PORTS) in both directions, the source's constant
   tensors given random values (a trained checkpoint has no zero biases), "converted" by the check's own transfer
   written into the target, then checked with target_weights='loaded': a failure here is a false failure. Each is
   also checked in carried mode, to tell a failure of loaded mode from one of these weights.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _randomize(model: object, seed: int) -> None:
    """Constant tensors (zero biases, unit scales, identity statistics) get random values of scale 0.1; the others keep
    their random initialisation: a trained checkpoint's scales, without the zeros that would hide bias bugs."""
    from pytest_parity.modes.steps import initializer_pattern

    rng = np.random.default_rng(seed)

    def value_for(name: str, shape: tuple[int, ...]) -> np.ndarray:
        value = 0.1 * rng.standard_normal(shape)
        return np.abs(value) + 0.5 if "var" in name else value

    if hasattr(model, "state_dict"):
        import torch

        with torch.no_grad():
            for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
                if tensor.is_floating_point() and initializer_pattern(tensor.numpy()):
                    tensor.copy_(torch.from_numpy(value_for(name, tuple(tensor.shape))))
        return
    for weight in getattr(model, "weights", None) or model.variables:  # a Keras model, or a tf.Module
        name = str(getattr(weight, "path", None) or weight.name)
        if initializer_pattern(np.asarray(weight.numpy())):
            weight.assign(value_for(name, tuple(weight.shape)).astype(getattr(weight.dtype, "name", weight.dtype)))


def _converted_by_the_checks_transfer(source: object, target: object, inputs: np.ndarray,
                                      layouts: tuple[str, str] | None) -> None:
    from pytest_parity.check import flatten_inputs
    from pytest_parity.frameworks import detect_framework
    from pytest_parity.frameworks.adapters import load_adapter
    from pytest_parity.layouts import parse_layouts
    from pytest_parity.modes.port.run import carry_weights, target_inputs_of
    from pytest_parity.modes.steps import prepare_source

    source_adapter = load_adapter(detect_framework(source), source)
    target_adapter = load_adapter(detect_framework(target), target)
    model_inputs = prepare_source(source_adapter, flatten_inputs(inputs), "cpu")
    target_inputs = target_inputs_of(model_inputs, parse_layouts(layouts), None)
    target_adapter.build(target_inputs, "cpu")
    carry_weights(source_adapter, target_adapter, model_inputs, target_inputs, "cpu")


def converter_bugs() -> None:
    import test_port_as_is as cases

    from pytest_parity import ParityError
    from pytest_parity.settings import ParitySettings

    print("converter bug                  loaded: fails / fix named    carried: fails")
    caught = named = carried_caught = 0
    for checkpoint, bug, tensor, fix in cases.CONVERTER_BUGS:
        case = cases.CHECKPOINTS[checkpoint]
        outcome = []
        for settings in (cases.LOADED, ParitySettings(devices=("cpu",))):
            keras_model = case.build_keras()
            try:
                cases._check(keras_model, case.convert(keras_model, bug), cases._inputs(case), settings,
                             layouts=case.layouts)
                outcome.append((False, False))
            except ParityError as error:
                comparison = error.result.weights.get(tensor)
                outcome.append((True, comparison is not None and all(p in (comparison.problem or "") for p in fix)))
        caught += outcome[0][0]
        named += outcome[0][1]
        carried_caught += outcome[1][0]
        print(f"{checkpoint + ' ' + bug:<30} {outcome[0][0]!s:>5} / {outcome[0][1]!s:<5}              "
              f"{outcome[1][0]}")
    total = len(cases.CONVERTER_BUGS)
    print(f"caught {caught} of {total} (fix named in {named}); carried mode catches {carried_caught} of {total}")
    correct = 0
    for case in cases.CHECKPOINTS.values():
        keras_model = case.build_keras()
        correct += cases._check(keras_model, case.convert(keras_model, None), cases._inputs(case),
                                layouts=case.layouts).passed
    print(f"correct converters passing: {correct} of {len(cases.CHECKPOINTS)}")


def false_failures() -> None:
    import test_port_mode as ports

    from fixtures.ports import GOOD_PORTS
    from pytest_parity import ParityError
    from pytest_parity.check import run_check
    from pytest_parity.settings import ParitySettings

    failures, runs, noted = [], 0, 0
    for case in GOOD_PORTS:
        for direction in ports.DIRECTIONS:
            source, target, inputs, layouts = ports._oriented(case, direction,
                                                              ports._inputs(case, np.random.default_rng(7)))
            _randomize(source, 3)
            _randomize(target, 4)  # a tf.Module target read through ONNX loses zero biases (as run_port does)
            _converted_by_the_checks_transfer(source, target, inputs, layouts)
            runs += 1
            try:
                result = run_check(source, target, inputs, ParitySettings(devices=("cpu",), layouts=layouts,
                                                                          target_weights="loaded"), "cpu", case.name)
                noted += any("uses only the sum" in note for note in result.notes)
            except ParityError as error:
                try:
                    run_check(source, target, inputs, ParitySettings(devices=("cpu",), layouts=layouts), "cpu",
                              case.name)
                    carried = "passes carried"
                except ParityError:
                    carried = "fails carried too"
                failures.append(f"{case.name} {direction} ({carried}): {str(error).splitlines()[1]}")
    print(f"correct ports checked with target_weights='loaded': {runs}; false failures: {len(failures)}")
    for line in failures:
        print("  " + line)


def main() -> int:
    sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "e2e")]
    started = time.perf_counter()
    converter_bugs()
    false_failures()
    print(f"wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
