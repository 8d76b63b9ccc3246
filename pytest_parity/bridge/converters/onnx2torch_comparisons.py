"""onnx2torch converters for LessOrEqual and GreaterOrEqual at opset 16, which onnx2torch 1.5.15 registers for version
12 only (ENOT-AutoDL/onnx2torch#240). Opset 16 changed nothing in what they compute (it added bfloat16 to the types),
so the version 12 module is reused; registered through onnx2torch's own add_converter. transformers' DeBERTa-v2
computes its relative position buckets with them.
"""

from __future__ import annotations

from onnx2torch.node_converters.comparisons import OnnxCompare
from onnx2torch.node_converters.registry import add_converter
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OperationConverterResult, onnx_mapping_from_node


@add_converter(operation_type="LessOrEqual", version=16)
@add_converter(operation_type="GreaterOrEqual", version=16)
def _convert(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return OperationConverterResult(torch_module=OnnxCompare(operation_type=node.operation_type),
                                    onnx_mapping=onnx_mapping_from_node(node))
