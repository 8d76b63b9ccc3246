"""An onnx2torch converter for a Clip of integers, whose bounds must keep the input's integer type.

onnx2torch 1.5.15's Clip converter stores constant bounds as Python floats; torch.clamp of an int64 tensor with float
bounds returns float32 (type promotion), so an index clamped on its way to a Gather arrives as float and the Gather
refuses it ("Expected types of indices ... got torch.float32": transformers' DeBERTa-v2 clamps its relative positions
this way). onnx_rewrites.route_integer_clips gives such nodes this module's op type, registered through onnx2torch's
own add_converter; onnx2torch's Clip converter keeps every floating Clip.
"""

from __future__ import annotations

import torch
from onnx2torch.node_converters.registry import add_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult, onnx_mapping_from_node
from torch import nn

from pytest_parity.bridge.onnx_rewrites import (
    CLIP_OF_INTEGERS,
    CONV_OF_INPUT_WEIGHT_DOMAIN,
    CONV_OF_INPUT_WEIGHT_VERSION,
)


class OnnxClipOfIntegers(nn.Module, OnnxToTorchModule):
    def forward(self, x: torch.Tensor, low: torch.Tensor | None = None, high: torch.Tensor | None = None
                ) -> torch.Tensor:
        # Tensor bounds of the input's type: torch.clamp keeps the integer dtype.
        return torch.clamp(x, min=low, max=high)


@add_converter(operation_type=CLIP_OF_INTEGERS, version=CONV_OF_INPUT_WEIGHT_VERSION,
               domain=CONV_OF_INPUT_WEIGHT_DOMAIN)
def _convert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=OnnxClipOfIntegers(), onnx_mapping=onnx_mapping_from_node(node))
