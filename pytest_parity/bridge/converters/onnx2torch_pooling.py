"""An onnx2torch converter for ONNX GlobalMaxPool, which onnx2torch 1.5.15 lacks (it has GlobalAveragePool).

tf2onnx turns Keras GlobalMaxPooling1D/2D/3D (keepdims=False, followed by a Squeeze) into GlobalMaxPool. The op is
the maximum over every axis after the channel axis, kept as size-1 axes (ONNX spec, opset 1 onwards); its gradient
flows to the maximal element, as the gradient of TensorFlow's reduce_max does (ties: TensorFlow splits the gradient
among equal maxima, torch's amax too). Registered through onnx2torch's own add_converter.
"""

from __future__ import annotations

import torch
from onnx2torch.node_converters.registry import add_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult, onnx_mapping_from_node
from torch import nn


class OnnxGlobalMaxPool(nn.Module, OnnxToTorchModule):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.amax(x, dim=tuple(range(2, x.dim())), keepdim=True)


@add_converter(operation_type="GlobalMaxPool", version=1)
def _convert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=OnnxGlobalMaxPool(), onnx_mapping=onnx_mapping_from_node(node))
