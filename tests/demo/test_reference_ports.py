"""The demo parity suite, port mode: each seed model against its hand-written port in the other framework.

Keras reference models are checked against their PyTorch ports, and the seed PyTorch models against their Keras
ports; the source's weights are carried into the port through ONNX layouts.
"""

from __future__ import annotations

import pytest

from fixtures.ports import GOOD_PORTS
from pytest_parity.layouts import parse_layouts

SEED_PORTS = [case for case in GOOD_PORTS if not case.name.startswith("zoo_")]
BATCH = 8


@pytest.mark.parity
@pytest.mark.parametrize("case", SEED_PORTS, ids=str)
def test_reference_port_agrees(parity, case):
    keras_inputs = parity.randn(BATCH, *case.keras_input_shape)
    if case.source == "keras":
        source, target, inputs, layouts = case.build_keras(), case.build_torch(), keras_inputs, case.layouts
    else:
        inputs = keras_inputs if case.layouts is None else parse_layouts(case.layouts).source_to_target(keras_inputs)
        layouts = None if case.layouts is None else (case.layouts[1], case.layouts[0])
        source, target = case.build_torch(), case.build_keras()
    result = parity.check(source, target, inputs=inputs, layouts=layouts)
    assert result.passed and result.route.startswith("port: ")
    assert not result.unmatched_weights
