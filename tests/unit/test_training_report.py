"""A training check in the reports: JSON carries every step, the HTML report draws the two loss curves and the
tolerance usage per step and names the configuration differences and the first divergence, JUnit gets key figures."""

from __future__ import annotations

import json

import numpy as np

from pytest_parity.reports import html, records
from pytest_parity.result import ParityResult, TrainingFigures, TrainingStep, TreeComparison
from pytest_parity.verdict.compare import compare_arrays


def _step(step: int, source_loss: float, target_loss: float, update_off: float) -> TrainingStep:
    weight = np.linspace(-1, 1, 12)
    update = np.full(12, 1e-3)
    return TrainingStep(
        step, source_loss, target_loss,
        compare_arrays(f"step {step} loss", np.float64(target_loss), np.float64(source_loss), atol=1e-5, rtol=1e-4),
        {"dense/kernel": compare_arrays("dense/kernel", weight, weight, atol=1e-5, rtol=1e-4)},
        {"dense/kernel (update)": compare_arrays("dense/kernel (update)", update * (1 + update_off), update,
                                                 atol=1e-6, rtol=0.0)})


def _record(failing: bool) -> dict:
    steps = [_step(1, 2.30, 2.30, 0.0), _step(2, 2.10, 2.10 if not failing else 2.2, 0.5 if failing else 0.0)]
    figures = TrainingFigures(steps, ["learning rate at step 1: 0.1 in the source, 0.05 in the target: use lr=0.1"]
                              if failing else [],
                              "step 2 of 2: 'dense/kernel (update)' diverges first" if failing else None, 1)
    losses = TreeComparison({f"step {s.step} loss": s.loss for s in steps}, 1e-5, 1e-4)
    result = ParityResult(route="training: tensorflow -> torch", device="cpu", outputs=losses, training=figures)
    return records.record("test_train.py::test_port[cpu]", result)


def test_the_json_record_carries_every_step_and_the_verdict():
    entry = json.loads(json.dumps(records.document([_record(failing=True)])))["results"][0]
    assert entry["passed"] is False and entry["outcome"] == "fail"
    training = entry["training"]
    assert [step["step"] for step in training["steps"]] == [1, 2]
    assert training["steps"][1]["failing"] == ["step 2 loss", "dense/kernel (update)"]
    assert training["steps"][1]["worst_update"]["name"] == "dense/kernel (update)"
    assert training["configuration"] and training["first_divergence"].startswith("step 2 of 2")
    assert records.document([_record(failing=False)])["results"][0]["passed"] is True


def test_the_html_report_draws_the_loss_curves_and_names_the_divergence():
    page = html.render(records.document([_record(failing=True)]))
    assert 'aria-label="loss curves"' in page and 'aria-label="tolerance usage per step"' in page
    assert page.count("<polyline") == 4  # source and target losses, worst weights and worst updates
    assert "use lr=0.1" in page and "diverges first" in page
    assert "<dt>losses per step</dt>" in page


def test_junit_key_figures_of_a_training_check():
    figures = records.key_figures(_record(failing=True))
    assert figures["training_steps"] == 2 and figures["training_configuration_differences"] == 1
    assert figures["training_worst_update_usage"] > 1.0  # the failing update: above its tolerance
    assert figures["training_first_divergence"].startswith("step 2 of 2")
    assert "training_steps" not in records.key_figures(records.refused_record("t", "cpu", "-", "bad input"))
