"""TensorFlow ops tf2onnx 1.17 has no handler for, registered through its own decorator (tf2onnx.handler.tf_op).

Imported by the TensorFlow adapter just before an export; importing it twice registers nothing twice (Python keeps
the module), and tf2onnx's own handlers are left alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tf2onnx import utils
from tf2onnx.handler import tf_op


@tf_op("Erfc")
class Erfc:
    """erfc(x) = 1 - erf(x). TensorFlow computes exact GELU (keras.activations.gelu(approximate=False), the Keras
    default for "gelu") as 0.5 * x * erfc(-x / sqrt(2)); without this, every such model stopped at the export.

    1 - erf(x) loses relative precision where erfc(x) is tiny (x > ~3), but in absolute terms it is off by under
    1e-7 there, and GELU multiplies it by 0.5 * x: far inside any tolerance a parity check uses."""

    @classmethod
    def version_9(cls, ctx: Any, node: Any, **kwargs: Any) -> None:  # ONNX Erf exists from opset 9
        node.type = "Erf"
        dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
        one = ctx.make_const(utils.make_name(f"{node.name}_one"), np.array(1, dtype=dtype))
        complement = ctx.insert_new_node_on_output("Sub", node.output[0], name=utils.make_name(f"{node.name}_erfc"),
                                                   inputs=[one.output[0], node.output[0]])
        ctx.copy_shape(node.output[0], complement.output[0])
